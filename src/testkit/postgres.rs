//! A throwaway PostgreSQL server in a temp dir, from the machine's own
//! binaries (Debian's `postgresql` package; `.ci/run` installs it).
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the
//! `postgres` user through `setpriv`, which execs in place: the child this
//! module holds is the server itself, and dropping the [`PgServer`] stops
//! it (an immediate shutdown: a test's database is never worth a
//! checkpoint) and removes its files.
//!
//! The server trusts connections on its Unix socket and asks TCP clients
//! for the password [`PASSWORD`] (SCRAM), so that tests go through the
//! same password path as a real deployment.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The role every test server creates, owner of every database.
pub const USER: &str = "bb";

/// The role's password, asked of TCP clients.
pub const PASSWORD: &str = "bb-test-password";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a test server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The PostgreSQL binaries are not installed.
    #[error(
        "PostgreSQL's `{0}` (with postgres, createdb and psql beside it) was not found under /usr/lib/postgresql/*/bin nor on PATH \
         (install the `postgresql` package, or set BB_PG_BIN to its bin dir)"
    )]
    NotInstalled(&'static str),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL tool failed.
    #[error("{tool} failed: {output}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Its output.
        output: String,
    },
    /// The server did not become ready in time.
    #[error("the server did not accept connections within {0:?}; its log: {1}")]
    NotReady(Duration, String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

/// The directory holding `initdb`, `postgres`, `createdb`, `psql`.
pub fn bin_dir() -> Result<PathBuf, PgError> {
    if let Some(dir) = std::env::var_os("BB_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    // Debian keeps the server's tools out of PATH, one dir per version:
    // take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    // Elsewhere, a PATH dir that holds the server and its tools together
    // (not a lone wrapper script).
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has_tools(d))
        .ok_or(PgError::NotInstalled("initdb"))
}

fn has_tools(dir: &Path) -> bool {
    ["initdb", "postgres", "createdb", "psql"]
        .iter()
        .all(|t| dir.join(t).is_file())
}

/// A running throwaway server; stopped and removed on drop.
pub struct PgServer {
    child: Child,
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl PgServer {
    /// Create a cluster in a new temp dir and start a server on a free
    /// loopback port. About 0.7 s.
    pub fn start() -> Result<PgServer, PgError> {
        PgServer::start_inner(None)
    }

    /// Like [`PgServer::start`], with TLS on (`ssl = on`) with this
    /// certificate chain and key (PEM): for tests of `sslmode=require`.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<PgServer, PgError> {
        PgServer::start_inner(Some((cert_pem, key_pem)))
    }

    fn start_inner(tls: Option<(&str, &str)>) -> Result<PgServer, PgError> {
        let bin = bin_dir()?;
        let dir = tempdir()?;
        let data = dir.join("data");
        let as_root = nix::unistd::geteuid().is_root();
        let owner = if as_root {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(PgError::NotInstalled("the postgres user"))?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(io("cannot write the password file"))?;
        if let Some((uid, gid)) = owner {
            for p in [&dir, &pwfile] {
                nix::unistd::chown(p.as_path(), Some(uid), Some(gid))
                    .map_err(|e| io(format!("cannot chown {}", p.display()))(e.into()))?;
            }
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("cannot chmod the temp dir"))?;
        let out = as_owner(owner, &bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "-N", "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(io("cannot run initdb"))?;
        if !out.status.success() {
            return Err(PgError::Tool {
                tool: "initdb",
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut extra = Vec::new();
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = dir.join(name);
                std::fs::write(&path, pem).map_err(io(format!("cannot write {name}")))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(format!("cannot chmod {name}")))?;
                if let Some((uid, gid)) = owner {
                    nix::unistd::chown(path.as_path(), Some(uid), Some(gid))
                        .map_err(|e| io(format!("cannot chown {name}"))(e.into()))?;
                }
            }
            extra = vec![
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", dir.join("server.crt").display()),
                format!("ssl_key_file={}", dir.join("server.key").display()),
            ];
        }
        // A free port can be taken between our probe and the server's
        // bind: try a few.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match spawn_server(owner, &bin, &dir, &data, port, &extra) {
                Ok(child) => {
                    return Ok(PgServer {
                        child,
                        dir,
                        port,
                        bin,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.expect("three attempts"))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The dir holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A connection string for `dbname` over TCP, without the password
    /// (give it with `password_file` or [`PASSWORD`]).
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={dbname}",
            self.port
        )
    }

    /// A connection string for `dbname` over TCP with the password in it.
    pub fn conninfo_with_password(&self, dbname: &str) -> String {
        format!("{} password={PASSWORD}", self.conninfo(dbname))
    }

    /// Create a database (a fresh one per test keeps tests apart on one
    /// server).
    pub fn create_database(&self, name: &str) -> Result<(), PgError> {
        let out = Command::new(self.bin.join("createdb"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", USER, name])
            .output()
            .map_err(io("cannot run createdb"))?;
        if !out.status.success() {
            return Err(PgError::Tool {
                tool: "createdb",
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Run SQL with `psql` over the Unix socket and return what it
    /// printed (unaligned, tuples only): for tests that look at the
    /// database behind the master's back.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, PgError> {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", dbname])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(io("cannot run psql"))?;
        if !out.status.success() {
            return Err(PgError::Tool {
                tool: "psql",
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// The server's log so far (to print when a test fails).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, no checkpoint.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program`, run as the cluster's owner: ourselves, or (as root) the
/// `postgres` user by `setpriv`, which execs in place.
fn as_owner(owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>, program: &Path) -> Command {
    match owner {
        None => Command::new(program),
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
    }
}

/// Start `postgres` and wait for "ready to accept connections" in its log,
/// which a thread copies from its stderr to `postgres.log` for as long as
/// it runs.
fn spawn_server(
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    extra: &[String],
) -> Result<Child, PgError> {
    let mut command = as_owner(owner, &bin.join("postgres"));
    for setting in extra {
        command.args(["-c", setting]);
    }
    let mut child = command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200", "-c", "logging_collector=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("cannot start postgres"))?;
    let stderr = child.stderr.take().expect("piped");
    let log_path = dir.join("postgres.log");
    let mut log = std::fs::File::create(&log_path).map_err(io("cannot create postgres.log"))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if line.contains("ready to accept connections")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
        // The server is gone: whoever waits hears it by the dropped sender.
    });
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            match e {
                mpsc::RecvTimeoutError::Timeout => Err(PgError::NotReady(START_TIMEOUT, log)),
                mpsc::RecvTimeoutError::Disconnected => Err(PgError::Tool {
                    tool: "postgres",
                    output: log,
                }),
            }
        }
    }
}

fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("cannot find a free port"))?;
    Ok(l.local_addr()
        .map_err(io("cannot find a free port"))?
        .port())
}

/// A new empty dir under the temp dir, reachable by the `postgres` user.
fn tempdir() -> Result<PathBuf, PgError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bb-pg-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_and_is_gone_after_drop() {
        let pg = PgServer::start().expect("a test server");
        pg.create_database("t1").unwrap();
        assert_eq!(pg.psql("t1", "SELECT 40 + 2").unwrap(), "42");
        let dir = pg.socket_dir().to_path_buf();
        let pid = pg.child.id();
        drop(pg);
        assert!(!dir.exists(), "its files are removed");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err(),
            "the server is gone"
        );
    }
}
