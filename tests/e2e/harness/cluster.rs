//! [`Cluster`]: N real `bbmaster` processes on one throwaway PostgreSQL
//! server (`bbctl::testkit::postgres`), sharing one config file and one
//! `shared_dir`, each with its own state dir, `--name m<i>` and
//! `--worker-listen 127.0.0.1:<port>` (plain TCP on loopback), as
//! docs/standby.md describes. Remote workers get every master's address
//! ([`Cluster::worker_args`]).
//!
//! Masters are started in order and the first one is waited for as the
//! leader before the others start, so `m0` leads at first.

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bbctl::testkit::postgres::{PASSWORD, PgServer};
use tempfile::TempDir;

use super::*;

/// The lease the cluster's masters run with (the minimum).
pub const CLUSTER_LEASE: Duration = Duration::from_secs(2);

/// N masters on one PostgreSQL database.
pub struct Cluster {
    /// The masters, `m0`, `m1`, ... (dropped first: stopped before the
    /// database is).
    pub masters: Vec<Master>,
    /// Each master's worker port.
    pub ports: Vec<u16>,
    /// The shared config file.
    pub config: PathBuf,
    /// Config, `shared_dir`, secrets, the password file.
    pub dir: TempDir,
    /// The database server.
    pub pg: PgServer,
}

/// A free TCP port on loopback (bound, then let go).
pub fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Cluster {
    /// `n` masters on a fresh database, with `body` (workers, builders;
    /// `@DIR@` is the cluster's dir) after a `[master]` table using the
    /// PostgreSQL store; `files` (name, contents) are written first.
    pub fn start(n: usize, body: &str, files: &[(&str, &str)]) -> Cluster {
        let pg = PgServer::start().expect("a PostgreSQL test server (apt-get install postgresql)");
        pg.create_database("bb").expect("createdb");
        let dir = temp_dir();
        for (name, contents) in files {
            fs::write(dir.path().join(name), contents).expect("cannot write a file");
        }
        fs::write(dir.path().join("pgpass"), format!("{PASSWORD}\n")).expect("pgpass");
        fs::create_dir(dir.path().join("shared")).expect("shared dir");
        let config = dir.path().join("master.toml");
        let text = format!(
            "[master]\nstore = {{ postgres = \"{}\", password_file = \"@DIR@/pgpass\", shared_dir = \"@DIR@/shared\", lease = \"{}s\" }}\nallow_plaintext = true\n\n{body}",
            pg.conninfo("bb"),
            CLUSTER_LEASE.as_secs()
        );
        fs::write(
            &config,
            text.replace("@DIR@", &dir.path().to_string_lossy()),
        )
        .expect("cannot write the config");
        let mut cluster = Cluster {
            masters: Vec::new(),
            ports: (0..n).map(|_| free_loopback_port()).collect(),
            config,
            dir,
            pg,
        };
        for i in 0..n {
            let master = Master::start_peer(&cluster.config, cluster.args(i));
            cluster.masters.push(master);
            if i == 0 {
                cluster.wait_leader_is(0, STARTUP_TIMEOUT);
            }
        }
        cluster
    }

    /// The `bbmaster` arguments of master `i`.
    fn args(&self, i: usize) -> Vec<OsString> {
        vec![
            "--name".into(),
            format!("m{i}").into(),
            "--worker-listen".into(),
            format!("127.0.0.1:{}", self.ports[i]).into(),
            "--advertise".into(),
            self.address(i).into(),
        ]
    }

    /// Master `i`'s worker address, as it advertises it.
    pub fn address(&self, i: usize) -> String {
        format!("tcp://127.0.0.1:{}", self.ports[i])
    }

    /// Master `i`.
    pub fn master(&self, i: usize) -> &Master {
        &self.masters[i]
    }

    /// Master `i`, to kill, signal or restart.
    pub fn master_mut(&mut self, i: usize) -> &mut Master {
        &mut self.masters[i]
    }

    /// `--master tcp://...` for every master, in order.
    pub fn worker_args(&self) -> Vec<OsString> {
        (0..self.ports.len())
            .flat_map(|i| ["--master".into(), self.address(i).into()])
            .collect()
    }

    /// The config file every master reads.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// The cluster's dir (config, shared dir, secrets).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Run SQL on the database (psql, unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.pg
            .psql("bb", sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// `(epoch, leader name)` from `bb_leader`.
    pub fn leader(&self) -> (u64, Option<String>) {
        let row = self.psql("SELECT epoch || '|' || coalesce(master, '') FROM bb_leader");
        let (epoch, name) = row
            .split_once('|')
            .unwrap_or_else(|| panic!("bb_leader: {row:?}"));
        let name = (!name.is_empty()).then(|| name.to_string());
        (epoch.parse().expect("an epoch"), name)
    }

    /// Wait (bounded) until master `i` leads and answers as the leader;
    /// returns the epoch.
    pub fn wait_leader_is(&self, i: usize, timeout: Duration) -> u64 {
        let name = format!("m{i}");
        let deadline = Instant::now() + timeout;
        loop {
            let (epoch, leader) = self.leader();
            if leader.as_deref() == Some(name.as_str()) {
                let out = self.masters[i].bbctl(&["--json", "status"]);
                if code(&out) == 0 {
                    let status: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    if status["leadership"]["role"] == "leader" {
                        return epoch;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not lead within {timeout:?}: bb_leader says {leader:?} epoch {epoch}\n{}",
                self.stderrs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Every master's stderr, for a failing assertion.
    pub fn stderrs(&self) -> String {
        self.masters
            .iter()
            .enumerate()
            .map(|(i, m)| format!("--- m{i} stderr\n{}", m.stderr()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
