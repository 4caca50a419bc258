//! sd_notify: tell systemd (a `Type=notify` unit) how the master is doing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines sent to the Unix
//! socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written
//! with a leading `@`). Without `$NOTIFY_SOCKET` every function here does
//! nothing; a failure to send is logged at debug level and never fatal: a
//! master that cannot reach systemd still serves.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// `READY=1`: the master serves (sockets bound), or a reload is over.
pub fn ready() {
    notify_env("READY=1\nSTATUS=serving\n");
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd requires: a reload
/// begins; send [`ready`] when it is over.
pub fn reloading() {
    notify_env(&reloading_state());
}

/// The datagram of [`reloading`].
fn reloading_state() -> String {
    match monotonic_usec() {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"),
        None => "RELOADING=1\n".to_string(),
    }
}

/// `STOPPING=1`: the master is shutting down.
pub fn stopping() {
    notify_env("STOPPING=1\n");
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it.
pub fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs * 1_000_000 + nanos / 1_000)
}

/// Send `state` to `$NOTIFY_SOCKET`, if set; never fails.
fn notify_env(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    let Some(socket) = socket.to_str().filter(|s| !s.is_empty()) else {
        debug!("{NOTIFY_SOCKET_ENV} is empty or not UTF-8; not notifying");
        return;
    };
    if let Err(e) = send(socket, state) {
        debug!(socket, state = state.trim_end(), "sd_notify failed: {e}");
    }
}

/// Send `state` as one datagram to the notify socket `socket`: a path, or
/// an abstract socket name when it starts with `@`.
pub fn send(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("no datagram arrived");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\n").unwrap();
        assert_eq!(receive(&listener), "READY=1\n");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("bbmaster-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1\n").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1\n");
    }

    #[test]
    fn reloading_carries_the_monotonic_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let before = monotonic_usec().unwrap();
        send(path.to_str().unwrap(), &reloading_state()).unwrap();
        let got = receive(&listener);
        let usec: u64 = got
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected datagram {got:?}"));
        assert!(usec >= before);
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.sock");
        assert!(send(path.to_str().unwrap(), "READY=1\n").is_err());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec().unwrap();
        assert!(b > a, "{a} then {b}");
    }

    #[test]
    fn without_notify_socket_nothing_happens() {
        // Reads the variable only; never sets it (tests run in parallel).
        if std::env::var_os(NOTIFY_SOCKET_ENV).is_none() {
            ready();
            reloading();
            stopping();
        }
    }
}
