//! [`Transport`]: how a test's remote workers reach its master, so that one
//! test body runs over the Unix socket and over TLS on loopback (see
//! [`over_unix_and_tls!`](crate::harness::over_unix_and_tls)).
//!
//! Over TLS the master listens on `127.0.0.1:0` (added to the config's
//! `[master]` table); the harness reads the real address and the
//! certificate's fingerprint back from `bbctl status --json` (`tls.listen`,
//! `tls.fingerprint`), then pins that port in the config file so a
//! restarted master listens where its workers dial. Workers get
//! `--master tls://127.0.0.1:PORT --fingerprint sha256:...`.

use std::ffi::OsString;
use std::net::SocketAddr;

/// How remote workers reach the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The master's Unix socket (`<state>/worker.sock`).
    Unix,
    /// TLS over TCP on 127.0.0.1, the master's self-signed certificate
    /// pinned by its fingerprint.
    Tls,
}

/// The listen address the harness gives a master over TLS, before the
/// port is known.
pub const TLS_LISTEN_ANY_PORT: &str = "127.0.0.1:0";

impl Transport {
    /// `config` made to serve this transport: over TLS, a `worker_listen`
    /// line in its `[master]` table (which is added if missing).
    pub fn config(self, config: &str) -> String {
        match self {
            Transport::Unix => config.to_string(),
            Transport::Tls => with_master_line(
                config,
                &format!("worker_listen = [\"{TLS_LISTEN_ANY_PORT}\"]"),
            ),
        }
    }
}

/// `config` with `line` first in its `[master]` table (added at the top
/// when the config has none).
pub fn with_master_line(config: &str, line: &str) -> String {
    let mut out = String::with_capacity(config.len() + line.len() + 10);
    let mut done = false;
    for l in config.split_inclusive('\n') {
        out.push_str(l);
        if !done && l.trim() == "[master]" {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if done {
        out
    } else {
        format!("[master]\n{line}\n\n{config}")
    }
}

/// The `bbworker` arguments that dial a TLS master at `addr`, pinning
/// `fingerprint`.
pub fn tls_worker_args(addr: SocketAddr, fingerprint: &str) -> Vec<OsString> {
    vec![
        "--master".into(),
        format!("tls://{addr}").into(),
        "--fingerprint".into(),
        fingerprint.into(),
    ]
}

/// Two `#[test]`s running `body(Transport)`: one over the Unix socket, one
/// over TLS. `over_unix_and_tls!(body => unix_name, tls_name);`
macro_rules! over_unix_and_tls {
    ($body:path => $unix:ident, $tls:ident) => {
        #[test]
        fn $unix() {
            $body($crate::harness::Transport::Unix)
        }

        #[test]
        fn $tls() {
            $body($crate::harness::Transport::Tls)
        }
    };
}
pub(crate) use over_unix_and_tls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_line_goes_into_the_master_table() {
        let got = with_master_line("[master]\nkeepalive = \"1s\"\n\n[[worker]]\n", "x = 1");
        assert_eq!(got, "[master]\nx = 1\nkeepalive = \"1s\"\n\n[[worker]]\n");
        let got = with_master_line("\n[[worker]]\nname = \"w\"\n", "x = 1");
        assert_eq!(got, "[master]\nx = 1\n\n\n[[worker]]\nname = \"w\"\n");
    }
}
