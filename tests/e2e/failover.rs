//! The failover test of issue 19: two, then three masters on one
//! PostgreSQL store, two remote workers given every master, and 1,000
//! requests sent with `bbctl` to whichever master leads, while the leader
//! is `kill -9`'d twice and `kill -STOP`'d once. Every request must be
//! stored once and built exactly once, every log must be whole, the
//! epochs must strictly increase, and the paused leader must not write
//! after it resumes (it exits saying it lost the leadership).
//!
//! A `bbctl` call whose outcome is unknown (the leader died or froze
//! under it) is settled the way a careful client would: once a new
//! leader is in office, the database says whether the request was
//! stored; if not, it is sent again. A request the standby refused (exit
//! 5) was not stored, and is simply sent again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bbctl::testkit::postgres::PgServer;
use nix::sys::signal::Signal;

use crate::harness::*;

/// Requests per test.
const REQUESTS: usize = 1_000;

/// Concurrent `bbctl force-build` loops.
const CLIENTS: usize = 4;

/// A `bbctl` call that takes longer has its answer lost (a frozen
/// leader); it is killed and its request settled through the database.
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// Bound of every wait of the test.
const WAIT: Duration = Duration::from_secs(30);

/// Two workers of 8 builds each; the step prints a line, pauses (so that
/// builds are running when the leader dies), then 20 more.
const BODY: &str = r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w.secret"
max_builds = 8

[[worker]]
name = "w2"
secret_file = "@DIR@/w.secret"
max_builds = 8

[[builder]]
name = "b"
workers = ["w1", "w2"]

  [[builder.step]]
  name = "count"
  shell = "echo start; sleep 0.2; for i in $(seq 1 20); do echo line $i; done; echo end"
"#;

const SECRET: (&str, &str) = ("w.secret", "w-secret-0123456789abcdef\n");

/// What each build's log must be.
fn whole_log() -> String {
    let mut log = String::from("start\n");
    for i in 1..=20 {
        log.push_str(&format!("line {i}\n"));
    }
    log.push_str("end\n");
    log
}

/// Who leads, as the submitting clients see it.
struct Office {
    /// Index of the leading master.
    leader: AtomicUsize,
    /// Its epoch.
    epoch: AtomicU64,
}

/// How one `bbctl force-build` ended.
enum Sent {
    /// Stored (exit 0).
    Stored,
    /// Refused by a standby (exit 5): not stored.
    Refused,
    /// Unknown: the master died, froze, or failed under it.
    Unknown(String),
}

/// `bbctl force-build b --reason TAG` against the master with this state
/// dir, killed after [`CALL_LIMIT`].
fn send(state_dir: &PathBuf, tag: &str) -> Sent {
    let mut cmd = command(BBCTL);
    cmd.env("BBMASTER_STATE_DIR", state_dir)
        .args(["force-build", "b", "--reason", tag])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot start bbctl");
    let status = wait_child(&mut child, CALL_LIMIT);
    if status.is_none() {
        let _ = child.kill();
    }
    let out: Output = child.wait_with_output().expect("cannot reap bbctl");
    match status.and_then(|s| s.code()) {
        Some(0) => Sent::Stored,
        Some(5) => Sent::Refused,
        _ => Sent::Unknown(describe(&out)),
    }
}

/// How many requests carry `tag`, from the database.
fn stored(pg: &PgServer, tag: &str) -> usize {
    pg.psql(
        "bb",
        &format!("SELECT count(*) FROM requests WHERE reason = '{tag}'"),
    )
    .expect("psql")
    .trim()
    .parse()
    .expect("a count")
}

/// One client loop: take the next request number, send it until it is
/// stored once. Returns the number of calls whose outcome had to be
/// settled through the database.
fn client(
    pg: &PgServer,
    state_dirs: &[PathBuf],
    office: &Office,
    next: &AtomicUsize,
    failed: &AtomicBool,
) -> usize {
    let mut settled = 0;
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= REQUESTS || failed.load(Ordering::SeqCst) {
            return settled;
        }
        let tag = format!("req-{n:04}");
        let deadline = Instant::now() + 2 * WAIT;
        loop {
            assert!(
                Instant::now() < deadline && !failed.load(Ordering::SeqCst),
                "{tag} could not be stored within {:?}",
                2 * WAIT
            );
            let epoch = office.epoch.load(Ordering::SeqCst);
            let leader = office.leader.load(Ordering::SeqCst);
            match send(&state_dirs[leader], &tag) {
                Sent::Stored => break,
                Sent::Refused => thread::sleep(Duration::from_millis(10)),
                Sent::Unknown(why) => {
                    settled += 1;
                    // Settle it once a new leader is in office: only
                    // then can no old leader store it any more (one that
                    // froze is fenced).
                    let settle_by = Instant::now() + WAIT;
                    while office.epoch.load(Ordering::SeqCst) == epoch {
                        if Instant::now() > settle_by || failed.load(Ordering::SeqCst) {
                            failed.store(true, Ordering::SeqCst);
                            panic!("bbctl failed with no takeover under way: {tag}\n{why}");
                        }
                        thread::sleep(Duration::from_millis(10));
                    }
                    if stored(pg, &tag) > 0 {
                        break;
                    }
                }
            }
        }
    }
}

/// `(epoch, leader name)` from `bb_leader`.
fn office_row(pg: &PgServer) -> (u64, Option<String>) {
    let row = pg
        .psql(
            "bb",
            "SELECT epoch || '|' || coalesce(master, '') FROM bb_leader",
        )
        .expect("psql");
    let (epoch, name) = row
        .trim()
        .split_once('|')
        .unwrap_or_else(|| panic!("bb_leader: {row:?}"));
    let name = (!name.is_empty()).then(|| name.to_string());
    (epoch.parse().expect("an epoch"), name)
}

/// The role `status --json` of `master` shows, if it answers.
fn role(master: &Master) -> Option<String> {
    let out = master.bbctl(&["--json", "status"]);
    if code(&out) != 0 {
        return None;
    }
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status["leadership"]["role"].as_str().map(str::to_string)
}

/// Every master's stderr, for a failing assertion.
fn stderrs(masters: &[Master]) -> String {
    masters
        .iter()
        .enumerate()
        .map(|(i, m)| format!("--- m{i} stderr\n{}", m.stderr()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wait (bounded) until a master other than `old` leads with an epoch
/// above `epoch`, and answers as the leader; returns (index, epoch).
fn wait_new_leader(masters: &[Master], pg: &PgServer, old: usize, epoch: u64) -> (usize, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (now, name) = office_row(pg);
        if now > epoch
            && let Some(i) = name.and_then(|n| n.strip_prefix('m')?.parse::<usize>().ok())
            && i != old
            && role(&masters[i]).as_deref() == Some("leader")
        {
            return (i, now);
        }
        if Instant::now() > deadline {
            let sessions = pg.psql(
                "bb",
                "SELECT pid || ' ' || coalesce(application_name, '') || ' ' || coalesce(state, '') || ' ' \
                 || coalesce(wait_event_type, '') || ':' || coalesce(wait_event, '') || ' ' \
                 || coalesce(pg_blocking_pids(pid)::text, '') || ' ' || left(query, 100) \
                 FROM pg_stat_activity WHERE datname = 'bb'",
            );
            panic!(
                "no new leader within {WAIT:?} (epoch {now})\n--- sessions\n{}\n{}",
                sessions.unwrap_or_else(|e| e.to_string()),
                stderrs(masters)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `at_least` requests have been handed out to the clients.
fn wait_progress(next: &AtomicUsize, at_least: usize, failed: &AtomicBool) {
    let deadline = Instant::now() + WAIT;
    while next.load(Ordering::SeqCst) < at_least && !failed.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the clients are stuck below {at_least}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Bring master `i` back (as a standby) and wait until it says so.
fn restart_as_standby(masters: &mut [Master], i: usize) {
    masters[i].spawn();
    wait_until(&format!("m{i} back as a standby"), WAIT, || {
        role(&masters[i]).as_deref() == Some("standby")
    });
}

/// The whole run on `masters` masters.
fn failover(masters: usize) {
    let started = Instant::now();
    let mut cluster = Cluster::start(masters, BODY, &[SECRET]);
    let first = cluster.wait_leader_is(0, STARTUP_TIMEOUT);
    let secret = cluster.path().join("w.secret");
    let workers: Vec<Background> = ["w1", "w2"]
        .iter()
        .map(|name| {
            start_worker_with(
                &cluster.worker_args(),
                name,
                &secret,
                &cluster.path().join(format!("work-{name}")),
                &[],
            )
        })
        .collect();
    wait_until("both workers connected to m0", WAIT, || {
        let s = cluster.masters[0].bbctl_json(&["status"]);
        s["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().filter(|w| w["connected"] == true).count() == 2)
    });

    let state_dirs: Vec<PathBuf> = cluster.masters.iter().map(Master::state_dir).collect();
    let office = Office {
        leader: AtomicUsize::new(0),
        epoch: AtomicU64::new(first),
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut epochs = vec![first];
    let mut settled = 0;
    // The clients read the database and the state dirs; the chaos on this
    // thread kills, pauses and restarts the masters.
    let Cluster {
        masters: peers, pg, ..
    } = &mut cluster;
    let pg: &PgServer = pg;
    thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (state_dirs, office, next, failed) = (&state_dirs, &office, &next, &failed);
                scope.spawn(move || client(pg, state_dirs, office, next, failed))
            })
            .collect();
        // kill -9 at 15%, SIGSTOP at 45%, kill -9 at 75%.
        for (at, stop) in [(150, false), (450, true), (750, false)] {
            wait_progress(&next, at, &failed);
            let old = office.leader.load(Ordering::SeqCst);
            let epoch = office.epoch.load(Ordering::SeqCst);
            if stop {
                peers[old].signal(Signal::SIGSTOP);
            } else {
                peers[old].kill9();
            }
            let (leader, now) = wait_new_leader(peers, pg, old, epoch);
            // The leader first: a client that reads the new epoch (it
            // reads the epoch first) then reads the new leader too.
            office.leader.store(leader, Ordering::SeqCst);
            office.epoch.store(now, Ordering::SeqCst);
            epochs.push(now);
            if stop {
                // The old leader, resumed, finds it lost the leadership
                // and exits non-zero without writing.
                peers[old].signal(Signal::SIGCONT);
                let status = peers[old].wait_exit(WAIT);
                assert!(!status.success(), "the paused leader exited with {status}");
                let err = peers[old].stderr();
                assert!(err.contains("lost the leadership"), "{err}");
            }
            restart_as_standby(peers, old);
        }
        for c in clients {
            settled += c.join().expect("a client panicked");
        }
    });
    assert!(!failed.load(Ordering::SeqCst));

    // Everything builds; then the checks, from the database and the
    // shared logs.
    let leader = office.leader.load(Ordering::SeqCst);
    wait_until("every request built", Duration::from_secs(60), || {
        let s = cluster.masters[leader].bbctl_json(&["status"]);
        s["queued_total"] == 0 && s["running"].as_array().is_some_and(Vec::is_empty)
    });
    let per_tag = cluster
        .psql("SELECT reason || '=' || count(*) FROM requests GROUP BY reason ORDER BY reason");
    let per_tag: BTreeMap<String, usize> = per_tag
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(tag, n)| (tag.to_string(), n.parse().expect("a count")))
        .collect();
    let twice: Vec<_> = per_tag.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "requests stored more than once: {twice:?}"
    );
    assert_eq!(per_tag.len(), REQUESTS, "requests stored");
    // Per request, its builds in order: `id:result`. A build the old
    // leader recorded as started but whose step never reached the worker
    // (killed between the commit and the send) is retried by the new
    // leader ("came back without the build's step"): it ran nothing, so
    // the request still runs once. Exactly one build per request must
    // have run, and succeeded with its log whole; any other must be such
    // a retry, with no output at all.
    let builds = cluster.psql(
        "SELECT r.reason || '=' || coalesce(string_agg(b.id || ':' || coalesce(b.result, '-'), ',' ORDER BY b.id), '') \
         FROM requests r LEFT JOIN builds b ON b.request_id = r.id GROUP BY r.reason ORDER BY r.reason",
    );
    let whole = whole_log();
    let mut checked = 0;
    let mut never_ran = 0;
    for line in builds.lines() {
        let (tag, list) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad row {line:?}"));
        let runs: Vec<(&str, &str)> = list.split(',').filter_map(|b| b.split_once(':')).collect();
        let log_of = |build: &str| {
            let log = cluster.path().join(format!("shared/logs/{build}/0.log"));
            std::fs::read_to_string(&log).unwrap_or_default()
        };
        let ran: Vec<&(&str, &str)> = runs
            .iter()
            .filter(|(build, result)| *result != "retry" || !log_of(build).is_empty())
            .collect();
        if ran.len() != 1 {
            let rows = cluster.psql(&format!(
                "SELECT b.id || ' ' || b.worker || ' ' || coalesce(b.result, '-') || ' ' || coalesce(b.reason, '-') \
                 FROM builds b JOIN requests r ON r.id = b.request_id WHERE r.reason = '{tag}' ORDER BY b.id"
            ));
            let logs: Vec<String> = runs
                .iter()
                .map(|(build, _)| format!("build {build}: {:?}", log_of(build)))
                .collect();
            panic!(
                "{tag} ran {} times:\n{rows}\n{}\n{}",
                ran.len(),
                logs.join("\n"),
                stderrs(&cluster.masters)
            );
        }
        never_ran += runs.len() - 1;
        let (build, result) = ran[0];
        assert_eq!(*result, "success", "{tag}: build {build} ended {result:?}");
        assert_eq!(
            log_of(build),
            whole,
            "{tag}: the log of build {build} is not whole"
        );
        checked += 1;
    }
    assert_eq!(checked, REQUESTS);
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs not strictly increasing: {epochs:?}"
    );
    assert_eq!(cluster.leader().0, *epochs.last().unwrap());
    eprintln!(
        "failover with {masters} masters: {REQUESTS} requests, epochs {epochs:?}, {settled} calls settled through the database, \
         {never_ran} builds retried before their step ran, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(workers);
}

// Before protocol 5 this found a step run twice: its end had reached a
// leader killed before the commit, and the worker had forgotten the step
// once the end was written. Now the worker holds an end until the master
// says it stored it (`end_kept`) and sends it again to the next leader.
#[test]
fn two_masters_lose_their_leader_three_times_and_every_request_builds_once() {
    failover(2);
}

#[test]
fn three_masters_lose_their_leader_three_times_and_every_request_builds_once() {
    failover(3);
}
