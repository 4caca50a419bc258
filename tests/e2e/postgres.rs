//! A master on PostgreSQL (`[master] store = { postgres = ... }`,
//! docs/postgres.md): builds recorded in a real throwaway server, logs in
//! the shared dir, and everything back after a restart and a `kill -9`
//! mid-build, the running build re-adopted with its log whole.

use std::fs;
use std::time::Duration;

use bbctl::testkit::postgres::{PASSWORD, PgServer};
use serde_json::Value;

use crate::harness::{Master, start_worker, text, wait_for_line_in, wait_until};

/// A config for a master on `pg`'s database `db`, with a remote worker
/// `w1` and two builders: `quick`, and `slow`, whose build 2 waits for
/// `@DIR@/go` between its two lines.
pub fn pg_config(pg: &PgServer, db: &str, body: &str) -> String {
    format!(
        r#"
[master]
store = {{ postgres = "{}", password_file = "@DIR@/pgpass", shared_dir = "@DIR@" }}
{body}"#,
        pg.conninfo(db)
    )
}

const BODY: &str = r#"worker_grace = "60s"

[[worker]]
name = "w1"
secret_file = "@DIR@/w.secret"
max_builds = 2

[[builder]]
name = "quick"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "echo quick $BB_BUILD_ID"

[[builder]]
name = "slow"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "echo before; echo $$ > @DIR@/pid.tmp; mv @DIR@/pid.tmp @DIR@/pid; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo after"
"#;

/// The files every such master needs beside its config.
pub const FILES: &[(&str, &str)] = &[("w.secret", "pg-secret-0123456789\n"), ("pgpass", PASSWORD)];

fn result_of(m: &Master, build: u64) -> Value {
    m.bbctl_json(&["build", &build.to_string()])["result"].clone()
}

#[test]
fn a_master_on_postgresql_builds_restarts_and_re_adopts_after_kill_9() {
    let pg = PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)");
    pg.create_database("bb").unwrap();
    let mut m = Master::start_with_files(&pg_config(&pg, "bb", BODY), FILES);
    let _worker = start_worker(&m, "w1", &m.path().join("w.secret"));

    // A build, recorded in PostgreSQL, its log in the shared dir.
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert_eq!(text(&m.bbctl_code(&["log", "1"], 0).stdout), "quick 1\n");
    assert_eq!(
        pg.psql("bb", "SELECT result FROM builds WHERE id = 1")
            .unwrap(),
        "success"
    );
    assert!(m.path().join("logs/1/0.log").is_file());
    assert!(
        !m.state_dir().join("master.db").exists() && !m.state_dir().join("logs").exists(),
        "nothing of the history in the state dir"
    );
    let epoch: u64 = pg
        .psql("bb", "SELECT epoch FROM bb_leader")
        .unwrap()
        .parse()
        .unwrap();
    assert!(epoch >= 1, "the master claimed an epoch");

    // A build running when the master is killed: re-adopted by the next
    // one, its log whole.
    assert_eq!(m.force_build("slow"), 2);
    wait_for_line_in(&m.path().join("pid"), Duration::from_secs(10));
    m.kill9();
    m.spawn();
    fs::write(m.path().join("go"), "").unwrap();
    let out = m.bbctl_code(&["log", "2", "--follow"], 0);
    assert_eq!(text(&out.stdout), "before\nafter\n");
    wait_until("build 2 to end", Duration::from_secs(20), || {
        result_of(&m, 2) == "success"
    });
    let later: u64 = pg
        .psql("bb", "SELECT epoch FROM bb_leader")
        .unwrap()
        .parse()
        .unwrap();
    assert!(later > epoch, "each start claims a new epoch");

    // A clean restart: the history is all there, ids go on.
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(Duration::from_secs(10));
    m.spawn();
    let builds = m.bbctl_json(&["builds"]);
    assert_eq!(builds.as_array().map(Vec::len), Some(2), "{builds}");
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert_eq!(text(&m.bbctl_code(&["log", "3"], 0).stdout), "quick 3\n");
    assert_eq!(
        pg.psql("bb", "SELECT count(*) FROM builds WHERE result = 'success'")
            .unwrap(),
        "3"
    );
}

/// A config with one builder and a remote worker, on `pg`'s `db`.
fn small(pg: &PgServer, db: &str) -> String {
    pg_config(
        pg,
        db,
        r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w.secret"

[[builder]]
name = "quick"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "echo quick $BB_BUILD_ID"
"#,
    )
}

/// Another master took over (the epoch moved on): this one's next write
/// is refused by the fence, nothing of it is recorded, the client hears
/// why, and the master stops non-zero saying it lost the leadership.
#[test]
fn a_master_whose_epoch_was_taken_writes_nothing_more_and_stops() {
    let pg = PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)");
    pg.create_database("fenced").unwrap();
    let mut m = Master::start_with_files(&small(&pg, "fenced"), FILES);
    m.bbctl_code(&["force-build", "quick"], 0);
    pg.psql("fenced", "UPDATE bb_leader SET epoch = epoch + 1")
        .unwrap();
    let out = m.bbctl(&["force-build", "quick"]);
    assert_eq!(
        crate::harness::code(&out),
        1,
        "{}",
        crate::harness::describe(&out)
    );
    assert!(
        text(&out.stderr).contains("lost the leadership"),
        "{}",
        crate::harness::describe(&out)
    );
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status:?}");
    assert!(m.stderr().contains("lost the leadership"), "{}", m.stderr());
    assert_eq!(
        pg.psql("fenced", "SELECT count(*) FROM requests").unwrap(),
        "1",
        "the fenced request was not recorded"
    );
}

/// The store's connection is lost while the master runs (the server
/// ended it): the next write fails, the client hears it, the master
/// stops; the next start connects again and has everything accepted.
#[test]
fn a_lost_database_connection_stops_the_master_and_a_restart_has_everything() {
    let pg = PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)");
    pg.create_database("lost").unwrap();
    let mut m = Master::start_with_files(&small(&pg, "lost"), FILES);
    let _worker = start_worker(&m, "w1", &m.path().join("w.secret"));
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    pg.psql(
        "lost",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'bbmaster store'",
    )
    .unwrap();
    // The server ends the backend a moment after psql returns: a request
    // may still be accepted before the master notices. Each accepted one
    // must be built after the restart.
    let mut accepted = 0;
    wait_until("the master to notice", Duration::from_secs(10), || {
        let out = m.bbctl(&["force-build", "quick"]);
        if crate::harness::code(&out) == 0 {
            accepted += 1;
            return false;
        }
        assert!(
            text(&out.stderr).contains("could not record"),
            "{}",
            crate::harness::describe(&out)
        );
        true
    });
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status:?}");
    assert!(m.stderr().contains("connection closed"), "{}", m.stderr());
    m.spawn();
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    let total = 2 + accepted;
    wait_until(
        "every accepted request built",
        Duration::from_secs(20),
        || {
            let builds = m.bbctl_json(&["builds"]);
            let list = builds.as_array().unwrap();
            list.len() == total && list.iter().all(|b| b["result"] == "success")
        },
    );
    let log = text(&m.bbctl_code(&["log", &total.to_string()], 0).stdout);
    assert_eq!(log, format!("quick {total}\n"));
}

/// A shared dir that is not there (an unmounted share) is refused at
/// start, naming it, before anything is written under its mount point.
#[test]
fn a_missing_shared_dir_is_refused_at_start() {
    use std::process::Stdio;

    use crate::harness::{BBMASTER, command, run_with_timeout, temp_dir};
    let dir = temp_dir();
    let config = dir.path().join("master.toml");
    let shared = dir.path().join("not-mounted");
    fs::write(dir.path().join("w.secret"), FILES[0].1).unwrap();
    fs::write(
        &config,
        format!(
            "[master]\nstore = {{ postgres = \"host=127.0.0.1 port=1 dbname=bb\", shared_dir = \"{}\" }}\n{}",
            shared.display(),
            BODY.replace("@DIR@", &dir.path().to_string_lossy())
        ),
    )
    .unwrap();
    let mut cmd = command(BBMASTER);
    cmd.arg("--state-dir")
        .arg(dir.path().join("s"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null());
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("master.store.shared_dir") && err.contains("not-mounted"),
        "{err}"
    );
    assert!(!shared.exists(), "nothing made under the mount point");
}
