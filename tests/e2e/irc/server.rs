//! A real IRC server for the tests (Debian's `ngircd`, from
//! `bbctl::testkit::ircd`, which the benchmarks share) in a temp dir, and
//! an IRC client that speaks to it; both panic with what they saw when
//! something does not come.

use std::path::Path;
use std::time::Duration;

use bbctl::testkit::ircd::{self, IrcClient, IrcdError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::harness::temp_dir;

/// A running ngircd, killed when dropped.
pub struct Ngircd {
    server: ircd::Ngircd,
    _dir: TempDir,
    /// The port it listens on.
    pub port: u16,
    /// Its TLS port, when started with [`Ngircd::start_tls`].
    pub tls_port: Option<u16>,
}

impl Ngircd {
    /// Starts ngircd, or `None` (with a line saying so) when it is not installed.
    pub fn start() -> Option<Ngircd> {
        Ngircd::with(ircd::Ngircd::start)
    }

    /// Starts ngircd with a TLS port too, serving `cert` and `key` (PEM),
    /// or `None` when ngircd is not installed.
    pub fn start_tls(cert: &Path, key: &Path) -> Option<Ngircd> {
        Ngircd::with(|dir| ircd::Ngircd::start_tls(dir, cert, key))
    }

    fn with(start: impl FnOnce(&Path) -> Result<ircd::Ngircd, IrcdError>) -> Option<Ngircd> {
        let dir = temp_dir();
        match start(dir.path()) {
            Ok(server) => Some(Ngircd {
                port: server.port,
                tls_port: server.tls_port,
                server,
                _dir: dir,
            }),
            Err(IrcdError::NotInstalled) => {
                eprintln!(
                    "SKIPPED: ngircd is not installed (apt-get install ngircd; .ci/run installs it)"
                );
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// What ngircd logged.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Sends a signal (SIGSTOP: a server that accepts and never answers).
    pub fn signal(&self, signal: Signal) {
        let pid = self.server.pid().expect("not running");
        kill(Pid::from_raw(pid as i32), signal).expect("cannot signal ngircd");
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.server.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// An IRC client for the tests: it answers PING by itself and keeps every
/// line it receives for [`Client::expect`].
pub struct Client(IrcClient);

impl Client {
    /// Connects to `port` as `nick` and waits for the welcome.
    pub fn connect(port: u16, nick: &str) -> Client {
        Client(IrcClient::connect(port, nick).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) {
        self.0.send(line).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits (bounded) for a line matching `pred`; returns it.
    pub fn expect(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.0.expect(what, timeout, pred) {
            Ok(got) => got.line,
            Err(e) => panic!("{e}"),
        }
    }

    /// Lines arriving within `window` (for checking that nothing comes).
    pub fn lines_for(&mut self, window: Duration) -> Vec<String> {
        self.0.lines_for(window)
    }

    /// How many connections the server has received in all (LUSERS 250).
    pub fn connections_received(&mut self) -> u64 {
        self.0
            .connections_received()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
