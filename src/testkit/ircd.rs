//! A throwaway IRC server (Debian's `ngircd`) on free loopback ports with
//! its config in a dir the caller owns, and a small IRC client that keeps
//! every line it receives with the time it arrived: the IRC bot's e2e
//! tests and its benchmarks both need them.
//!
//! As root, ngircd drops to `nobody` after reading its config (and its TLS
//! certificate and key); it writes no pid file. `MaxConnectionsIP = 0`
//! lets the tests connect many clients from 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long ngircd may take to listen (it generates DH parameters for its
/// TLS port first: about a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a server or client could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IrcdError {
    /// ngircd is not installed.
    #[error("ngircd is not installed (apt-get install ngircd; .ci/run installs it)")]
    NotInstalled,
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server did not listen in time.
    #[error("ngircd did not listen on {port} within {timeout:?}; its log:\n{log}")]
    NotListening {
        /// The port.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// What it logged.
        log: String,
    },
    /// The client did not get what it waited for.
    #[error("no line with {what} within {timeout:?}; the client got:\n{seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
        /// Every line the client got so far.
        seen: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IrcdError {
    let what = what.into();
    move |source| IrcdError::Io { what, source }
}

/// Where `ngircd` is, if installed (PATH, then /usr/sbin, /usr/local/sbin).
pub fn ngircd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("ngircd"))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16, IrcdError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("cannot find a free port"))
}

/// A running ngircd; killed when dropped.
pub struct Ngircd {
    dir: PathBuf,
    exe: PathBuf,
    /// The plain port.
    pub port: u16,
    /// The TLS port, when started with [`Ngircd::start_tls`].
    pub tls_port: Option<u16>,
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl Ngircd {
    /// Starts ngircd with its config and log in `dir`, on a free port.
    pub fn start(dir: &Path) -> Result<Ngircd, IrcdError> {
        Ngircd::with(dir, None)
    }

    /// Starts ngircd with a TLS port too (its `[SSL]` section: Debian
    /// builds it with GnuTLS, which speaks TLS 1.3) serving `cert` and
    /// `key` (PEM files).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Result<Ngircd, IrcdError> {
        Ngircd::with(dir, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn with(dir: &Path, tls: Option<(PathBuf, PathBuf)>) -> Result<Ngircd, IrcdError> {
        let exe = ngircd_binary().ok_or(IrcdError::NotInstalled)?;
        let tls_port = match tls {
            Some(_) => Some(free_port()?),
            None => None,
        };
        let mut s = Ngircd {
            dir: dir.to_path_buf(),
            exe,
            port: free_port()?,
            tls_port,
            tls,
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), IrcdError> {
        let empty = self.dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(io("cannot create ngircd's dir"))?;
        let conf = self.dir.join("ngircd.conf");
        let mut text = format!(
            "[Global]\nName = irc.test\nInfo = bbmaster test server\nListen = 127.0.0.1\n\
             Ports = {}\nMotdPhrase = test\n\
             [Limits]\nMaxConnectionsIP = 0\nPingTimeout = 120\nPongTimeout = 20\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {}\n",
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
        std::fs::write(&conf, text).map_err(io("cannot write ngircd.conf"))?;
        let log = std::fs::File::create(self.dir.join("ngircd.log"))
            .map_err(io("cannot create ngircd.log"))?;
        let log2 = log.try_clone().map_err(io("cannot open ngircd.log"))?;
        let child = Command::new(&self.exe)
            .args(["-n", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io("cannot start ngircd"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [Some(self.port), self.tls_port].into_iter().flatten() {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    return Err(IrcdError::NotListening {
                        port,
                        timeout: START_TIMEOUT,
                        log: self.log(),
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// What ngircd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ngircd.log")).unwrap_or_default()
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) -> Result<(), IrcdError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line as a client received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it was read, in ms since the Unix epoch (sub-ms precision).
    pub at_ms: f64,
    /// The line, without CR LF.
    pub line: String,
}

/// An IRC client: it answers PING by itself and keeps every line it
/// receives, with its arrival time, for [`IrcClient::expect`].
pub struct IrcClient {
    stream: TcpStream,
    lines: mpsc::Receiver<Received>,
    /// Every line taken from the connection so far.
    pub seen: Vec<String>,
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

impl IrcClient {
    /// Connects to `port` on 127.0.0.1 as `nick` and waits for the welcome.
    pub fn connect(port: u16, nick: &str) -> Result<IrcClient, IrcdError> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(io("the client cannot connect"))?;
        let _ = stream.set_nodelay(true);
        let reader = BufReader::new(stream.try_clone().map_err(io("cannot clone a socket"))?);
        let mut ponger = stream.try_clone().map_err(io("cannot clone a socket"))?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let at_ms = epoch_ms();
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = write!(ponger, "PONG {token}\r\n");
                }
                if tx.send(Received { at_ms, line }).is_err() {
                    break;
                }
            }
        });
        let mut c = IrcClient {
            stream,
            lines,
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}"))?;
        c.send(&format!("USER {nick} 0 * :test client"))?;
        c.expect("the welcome (001)", Duration::from_secs(10), |l| {
            l.contains(" 001 ")
        })?;
        Ok(c)
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) -> Result<(), IrcdError> {
        write!(self.stream, "{line}\r\n").map_err(io("the client cannot write"))
    }

    /// Waits (bounded) for a line matching `pred`.
    pub fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Received, IrcdError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(got) => {
                    self.seen.push(got.line.clone());
                    if pred(&got.line) {
                        return Ok(got);
                    }
                }
                Err(_) => {
                    return Err(IrcdError::Timeout {
                        what: what.to_string(),
                        timeout,
                        seen: self.seen.join("\n"),
                    });
                }
            }
        }
    }

    /// Lines arriving within `window` (for checking that nothing comes,
    /// or for collecting what came).
    pub fn lines_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(r) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(r.line.clone());
            got.push(r.line);
        }
        got
    }

    /// How many connections the server has received in all (`LUSERS`,
    /// numeric 250).
    pub fn connections_received(&mut self) -> Result<u64, IrcdError> {
        self.send("LUSERS")?;
        let got = self.expect("LUSERS 250", Duration::from_secs(5), |l| {
            l.contains(" 250 ")
        })?;
        // ":irc.test 250 nick :Highest connection count: 2 (5 connections received)"
        got.line
            .rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| IrcdError::Timeout {
                what: format!("a connection count in {:?}", got.line),
                timeout: Duration::ZERO,
                seen: self.seen.join("\n"),
            })
    }
}
