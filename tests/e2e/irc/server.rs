//! A real IRC server for the tests (Debian's `ngircd`) on a free loopback
//! port with its config in a temp dir, and an IRC client that speaks to it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::harness::temp_dir;

/// Where `ngircd` is, if installed.
pub fn ngircd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("ngircd"))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}

/// A running ngircd, killed when dropped.
pub struct Ngircd {
    dir: TempDir,
    exe: PathBuf,
    /// The port it listens on.
    pub port: u16,
    /// Its TLS port, when started with [`Ngircd::start_tls`].
    pub tls_port: Option<u16>,
    /// The certificate and key of its TLS port.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl Ngircd {
    /// Starts ngircd, or `None` (with a line saying so) when it is not installed.
    pub fn start() -> Option<Ngircd> {
        let Some(exe) = ngircd_binary() else {
            eprintln!(
                "SKIPPED: ngircd is not installed (apt-get install ngircd; .ci/run installs it)"
            );
            return None;
        };
        let dir = temp_dir();
        let mut s = Ngircd {
            port: free_port(),
            tls_port: None,
            tls: None,
            dir,
            exe,
            child: None,
        };
        s.spawn();
        Some(s)
    }

    /// Starts ngircd with a TLS port too (ngircd's `[SSL]`: Debian builds
    /// it with GnuTLS, which speaks TLS 1.3) serving `cert` and `key`
    /// (PEM), or `None` when ngircd is not installed.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Ngircd> {
        let exe = ngircd_binary();
        if exe.is_none() {
            return Ngircd::start();
        }
        let mut s = Ngircd {
            port: free_port(),
            tls_port: Some(free_port()),
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
            dir: temp_dir(),
            exe: exe.unwrap(),
            child: None,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let empty = self.dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let conf = self.dir.path().join("ngircd.conf");
        let mut text = format!(
            "[Global]\nName = irc.test\nInfo = bbmaster test server\nListen = 127.0.0.1\n\
             Ports = {}\nMotdPhrase = test\nIncludeDir = {}\n\
             [Limits]\nMaxConnectionsIP = 0\nPingTimeout = 120\nPongTimeout = 20\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\n",
            self.port,
            empty.display()
        );
        if let (Some(port), Some((cert, key))) = (self.tls_port, &self.tls) {
            text += &format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {port}\n",
                cert.display(),
                key.display()
            );
        }
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join("ngircd.log")).unwrap();
        let child = Command::new(&self.exe)
            .args(["-n", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start ngircd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let last_port = self.tls_port.unwrap_or(self.port);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", last_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "ngircd did not listen on {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What ngircd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }

    /// Sends a signal (SIGSTOP: a server that accepts and never answers).
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("not running").id();
        kill(Pid::from_raw(pid as i32), signal).expect("cannot signal ngircd");
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An IRC client for the tests: it answers PING by itself and keeps every
/// line it receives for [`Client::expect`].
pub struct Client {
    stream: TcpStream,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Client {
    /// Connects to `port` as `nick` and waits for the welcome.
    pub fn connect(port: u16, nick: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("client cannot connect");
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut ponger = stream.try_clone().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = write!(ponger, "PONG {token}\r\n");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = Client {
            stream,
            lines,
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}"));
        c.send(&format!("USER {nick} 0 * :test client"));
        c.expect("the welcome (001)", Duration::from_secs(10), |l| {
            l.contains(" 001 ")
        });
        c
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) {
        write!(self.stream, "{line}\r\n").expect("client cannot write");
    }

    /// Waits (bounded) for a line matching `pred`; returns it.
    pub fn expect(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {what} within {timeout:?}; the client got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Lines arriving within `window` (for checking that nothing comes).
    pub fn lines_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            got.push(line);
        }
        got
    }

    /// How many connections the server has received in all (LUSERS 250).
    pub fn connections_received(&mut self) -> u64 {
        self.send("LUSERS");
        let line = self.expect("LUSERS 250", Duration::from_secs(5), |l| {
            l.contains(" 250 ")
        });
        // ":irc.test 250 nick :Highest connection count: 2 (5 connections received)"
        line.rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the connection count in {line:?}"))
    }
}
