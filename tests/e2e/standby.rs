//! Several masters on one PostgreSQL store (docs/standby.md): one leads,
//! the others answer read-only and take over when it dies or is paused.
//! The harness is `harness::Cluster`; `multiworker` adds the big failover
//! test here.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::json_schema::assert_shape;

/// A remote worker `w1` and a builder whose step prints a line, waits for
/// the marker `@DIR@/go`, then prints 20 more and ends.
const BODY: &str = r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "count"
workers = ["w1"]

  [[builder.step]]
  name = "count"
  shell = "echo before; while [ ! -e @DIR@/go ]; do sleep 0.02; done; for i in $(seq 1 20); do echo line $i; done; echo after"

[[builder]]
name = "idle"
workers = ["w1"]

  [[builder.step]]
  name = "nothing"
  shell = "true"
"#;

const SECRET: (&str, &str) = ("w1.secret", "w1-secret-0123456789abcdef\n");

const WAIT: Duration = Duration::from_secs(20);

/// The log the `count` step writes, whole.
fn whole_log() -> String {
    let mut log = String::from("before\n");
    for i in 1..=20 {
        log.push_str(&format!("line {i}\n"));
    }
    log.push_str("after\n");
    log
}

fn worker(cluster: &Cluster) -> Background {
    start_worker_with(
        &cluster.worker_args(),
        "w1",
        &cluster.path().join("w1.secret"),
        &cluster.path().join("w-w1"),
        &[],
    )
}

fn connected(m: &Master, name: &str) -> bool {
    let s = m.bbctl_json(&["status"]);
    s["workers"].as_array().is_some_and(|ws| {
        ws.iter()
            .any(|w| w["name"] == name && w["connected"] == true)
    })
}

/// The standby answers `status` and `masters` from the database, naming
/// the leader; it refuses what changes state with exit 5, naming the
/// leader and its address; the leader's status says it leads.
#[test]
fn a_standby_answers_read_only_and_names_the_leader() {
    let mut cluster = Cluster::start(2, BODY, &[SECRET]);
    let (leader, standby) = (cluster.master(0), cluster.master(1));
    let epoch = cluster.wait_leader_is(0, STARTUP_TIMEOUT);
    assert_eq!(epoch, 1);

    // Queued on the leader (no worker yet): the standby sees it.
    let request = leader.force_build("count");
    let status = standby.bbctl_json(&["status"]);
    // (A standby measures no disk: `disk` is null, so only its
    // leadership is held to a shape here; the leader's whole status is.)
    assert_shape(&status["leadership"], "status:leadership");
    assert_eq!(status["leadership"]["role"], "standby", "{status}");
    assert_eq!(status["leadership"]["name"], "m1", "{status}");
    assert_eq!(status["leadership"]["leader"]["name"], "m0", "{status}");
    assert_eq!(status["leadership"]["leader"]["epoch"], 1, "{status}");
    assert_eq!(status["queued_total"], 1, "{status}");
    let text_status = standby.bbctl_ok(&["status"]);
    assert!(
        text_status.contains(&format!(
            "m1: a standby (read-only); the leader is m0 at {}, epoch 1",
            cluster.address(0)
        )),
        "{text_status}"
    );
    let queue = standby.bbctl_json(&["queue"]);
    assert_eq!(queue[0]["request"], request, "{queue}");
    let lead_status = leader.bbctl_json(&["status"]);
    assert_shape(&lead_status["leadership"], "status:leadership");
    assert_eq!(lead_status["leadership"]["role"], "leader", "{lead_status}");
    assert!(
        leader
            .bbctl_ok(&["status"])
            .contains("m0: the leader, epoch 1")
    );

    // Refused, exit 5, with the leader's name and address.
    let out = standby.bbctl_code(&["force-build", "count"], 5);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "this master is a standby; the leader is m0 at {} (epoch 1)",
            cluster.address(0)
        )),
        "{err}"
    );
    standby.bbctl_code(&["cancel", &request.to_string()], 5);
    standby.bbctl_code(&["reload"], 5);
    standby.bbctl_code(&["prune"], 5);
    standby.bbctl_code(&["drain"], 5);
    standby.bbctl_code(&["workers"], 5);
    // Nothing was written by the standby.
    assert_eq!(leader.bbctl_json(&["status"])["queued_total"], 1);
    // The leader records the config in force in bb_leader at its renewals.
    let in_force = format!(
        "{} {}",
        lead_status["generation"],
        lead_status["config_hash"].as_str().unwrap()
    );
    wait_until("bb_leader records the config in force", WAIT, || {
        cluster.psql("SELECT config_generation || ' ' || config_hash FROM bb_leader") == in_force
    });

    // `masters`, from both.
    for m in [leader, standby] {
        let masters = m.bbctl_json(&["masters"]);
        assert_shape(&masters, "masters");
        assert_shape(&masters["leader"], "masters:leader");
        assert_eq!(masters["store"], "postgres", "{masters}");
        assert_eq!(masters["leader"]["name"], "m0", "{masters}");
        let roles: Vec<(String, String)> = masters["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().into(),
                    m["role"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                ("m0".into(), "leader".into()),
                ("m1".into(), "standby".into())
            ],
            "{masters}"
        );
        assert!(masters["masters"][0]["heartbeat_age_ms"].as_u64().unwrap() < 10_000);
    }
    let table = standby.bbctl_ok(&["masters"]);
    assert!(table.contains("leader: m0 at"), "{table}");
    assert!(table.contains("m1 (this one)"), "{table}");

    // A worker given both masters, standby first, is sent to the leader.
    let mut args = vec!["--master".into(), cluster.address(1).into()];
    args.extend(["--master".into(), cluster.address(0).into()]);
    let w = start_worker_with(
        &args,
        "w1",
        &cluster.path().join("w1.secret"),
        &cluster.path().join("w-w1"),
        &[],
    );
    wait_until("w1 connected to the leader", WAIT, || {
        connected(leader, "w1")
    });
    drop(w);

    // `shutdown` stops a standby (exit 0); `masters` then says so.
    cluster.master(1).bbctl_code(&["shutdown"], 0);
    let status = cluster.master_mut(1).wait_exit(WAIT);
    assert!(status.success(), "{status}\n{}", cluster.stderrs());
    let masters = cluster.master(0).bbctl_json(&["masters"]);
    assert_eq!(masters["masters"][1]["role"], "stopped", "{masters}");
}

/// `kill -9` of the leader: the standby takes over at once (the lock is
/// freed with the session) with the next epoch, the worker follows, and
/// the build it was running finishes under the new leader with its log
/// whole, once.
#[test]
fn kill_9_of_the_leader_hands_its_running_build_to_the_standby() {
    let mut cluster = Cluster::start(2, BODY, &[SECRET]);
    let w = worker(&cluster);
    wait_until("w1 connected to m0", WAIT, || {
        connected(cluster.master(0), "w1")
    });
    let request = cluster.master(0).force_build("count");
    wait_until("the first line in the log", WAIT, || {
        text(&cluster.master(0).bbctl(&["log", "1"]).stdout) == "before\n"
    });
    // The standby reads the history and the shared logs too.
    assert_eq!(cluster.master(1).bbctl_ok(&["log", "1"]), "before\n");
    let builds = cluster.master(1).bbctl_json(&["builds"]);
    assert_eq!(builds[0]["id"], 1, "{builds}");
    let running = cluster.master(1).bbctl_json(&["status"]);
    assert_eq!(running["running"][0]["build"], 1, "{running}");

    let killed = Instant::now();
    cluster.master_mut(0).kill9();
    let epoch = cluster.wait_leader_is(1, WAIT);
    let took = killed.elapsed();
    eprintln!("takeover after kill -9 of the leader: {took:?}");
    assert_eq!(epoch, 2);
    assert!(
        took < CLUSTER_LEASE,
        "the takeover after kill -9 must not wait for the lease: {took:?}"
    );
    wait_until("w1 connected to m1", WAIT, || {
        connected(cluster.master(1), "w1")
    });
    std::fs::write(cluster.path().join("go"), "").unwrap();
    let m1 = cluster.master(1);
    let out = m1.bbctl_code(&["log", "1", "--follow"], 0);
    assert_eq!(
        text(&out.stdout),
        whole_log(),
        "{}\n{}",
        describe(&out),
        cluster.stderrs()
    );
    let build = m1.bbctl_json(&["build", "1"]);
    assert_eq!(build["result"], "success", "{build}");
    assert_eq!(build["request_id"], request, "{build}");
    // Built exactly once.
    assert_eq!(cluster.psql("SELECT count(*) FROM builds"), "1");
    // The killed leader reads as stopped, the new one leads epoch 2.
    let masters = m1.bbctl_json(&["masters"]);
    assert_eq!(masters["masters"][0]["role"], "stopped", "{masters}");
    assert_eq!(masters["masters"][1]["role"], "leader", "{masters}");
    assert_eq!(masters["masters"][1]["epoch"], 2, "{masters}");
    drop(w);
}

/// `kill -STOP` of the leader: the standby takes over after the lease
/// (terminating the paused leader's session), with the next epoch; after
/// `kill -CONT` the old leader exits non-zero saying it lost the
/// leadership, and writes nothing: a request sent to it while it was
/// paused is not stored.
#[test]
fn a_paused_leader_is_replaced_after_its_lease_and_exits_without_writing() {
    let mut cluster = Cluster::start(2, BODY, &[SECRET]);
    cluster.master(0).signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    // A client of the paused leader: its request waits in the socket.
    let late = cluster.master(0).bbctl_spawn(&[
        "force-build",
        "idle",
        "--reason",
        "sent-to-the-paused-leader",
    ]);
    let epoch = cluster.wait_leader_is(1, WAIT);
    let took = stopped.elapsed();
    eprintln!("takeover after kill -STOP of the leader (lease {CLUSTER_LEASE:?}): {took:?}");
    assert_eq!(epoch, 2);
    assert!(
        took >= CLUSTER_LEASE - Duration::from_millis(500),
        "the standby must wait for the lease: {took:?}"
    );
    let (_, leader) = cluster.leader();
    assert_eq!(leader.as_deref(), Some("m1"));

    cluster.master(0).signal(Signal::SIGCONT);
    let status = cluster.master_mut(0).wait_exit(WAIT);
    assert!(
        !status.success(),
        "the old leader must exit non-zero: {status}"
    );
    let err = cluster.master(0).stderr();
    assert!(err.contains("lost the leadership"), "{err}");
    let out = late.finish(WAIT);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        cluster.psql("SELECT count(*) FROM requests WHERE reason = 'sent-to-the-paused-leader'"),
        "0",
        "the paused leader wrote after it resumed\n{}",
        cluster.stderrs()
    );
    // The new leader serves.
    let m1 = cluster.master(1);
    let id = m1.force_build("idle");
    let queued: Value = m1.bbctl_json(&["queue"]);
    assert_eq!(queued[0]["request"], id, "{queued}");
    assert_eq!(cluster.leader().0, 2);
}

/// A second master started under the name of a live one is refused at
/// start, naming the holder; the first goes on leading.
#[test]
fn a_second_master_under_a_live_masters_name_is_refused() {
    let cluster = Cluster::start(1, BODY, &[SECRET]);
    let dir = temp_dir();
    let mut cmd = command(BBMASTER);
    cmd.arg("--state-dir")
        .arg(dir.path().join("s"))
        .arg("--config")
        .arg(cluster.config_path())
        .args(["--name", "m0"]);
    let out = run_with_timeout(cmd, WAIT);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("another master named `m0` is running on this database (pid ")
            && err.contains("give each master its own --name"),
        "{err}"
    );
    assert_eq!(cluster.wait_leader_is(0, WAIT), 1);
}

/// A standby follows a build the leader runs: `log --follow` reads the
/// shared log and the database again on a timer (a standby hears of no
/// build), and ends with the build. `events` happen on the leader: the
/// standby refuses them with exit 5, naming it, rather than stay silent.
#[test]
fn a_standby_follows_the_leaders_build_and_refuses_events() {
    let cluster = Cluster::start(2, BODY, &[SECRET]);
    let w = worker(&cluster);
    wait_until("w1 connected to m0", WAIT, || {
        connected(cluster.master(0), "w1")
    });
    cluster.master(0).force_build("count");
    let standby = cluster.master(1);
    let followed = cluster.path().join("followed");
    let mut cmd = standby.bbctl_command(&["log", "1", "--follow"]);
    cmd.stdout(std::fs::File::create(&followed).unwrap())
        .stderr(std::process::Stdio::null());
    let mut follower = cmd.spawn().expect("bbctl log --follow");
    wait_until(
        "the standby's follower to show the first line",
        WAIT,
        || std::fs::read_to_string(&followed).unwrap_or_default() == "before\n",
    );
    std::fs::write(cluster.path().join("go"), "").unwrap();
    let status = wait_child(&mut follower, WAIT).unwrap_or_else(|| {
        let _ = follower.kill();
        panic!("the standby's follower did not end with the build")
    });
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read_to_string(&followed).unwrap(), whole_log());

    for command in ["events", "watch"] {
        let out = standby.bbctl_code(&[command], 5);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "this master is a standby; the leader is m0 at {}",
                cluster.address(0)
            )),
            "{command}: {err}"
        );
    }
    drop(w);
}
