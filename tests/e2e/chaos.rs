//! Chaos: 200 requests across 3 remote workers while `kill -9` hits a
//! worker 5 times and the master twice, each restarted; at the end every
//! request has exactly one final result and every successful log is whole.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use bbctl::testkit::postgres::{PASSWORD, PgServer};

use crate::harness::{
    BBCTL_TIMEOUT, Background, Master, Transport, code, describe, over_unix_and_tls, start_worker,
    wait_until, with_master_line,
};

const CONFIG: &str = r#"
[master]
worker_grace = "2s"
max_retries = 5

[[worker]]
name = "w1"
secret_file = "@DIR@/w.secret"
max_builds = 2

[[worker]]
name = "w2"
secret_file = "@DIR@/w.secret"
max_builds = 2

[[worker]]
name = "w3"
secret_file = "@DIR@/w.secret"
max_builds = 2

[[builder]]
name = "c"
workers = ["w1", "w2", "w3"]

  [[builder.step]]
  name = "s"
  shell = "echo start $BB_BUILD_ID; sleep 0.0$((RANDOM%5)); echo end $BB_BUILD_ID"
"#;

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const BATCHES: usize = 10;
const BATCH: usize = 20;
/// The whole test, start to finish, stays under this.
const BUDGET: Duration = Duration::from_secs(90);

/// What happens after a batch is submitted.
#[derive(Clone, Copy, PartialEq)]
enum Event {
    None,
    KillWorker,
    KillMaster,
}

/// After batch `i`: five worker kills and two master kills, spaced out.
const EVENTS: [Event; BATCHES] = [
    Event::KillWorker,
    Event::KillWorker,
    Event::KillMaster,
    Event::KillWorker,
    Event::None,
    Event::KillWorker,
    Event::KillMaster,
    Event::KillWorker,
    Event::None,
    Event::None,
];

/// xorshift64: a fixed seed makes every run choose the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

/// Submit one batch of requests at once (concurrent `bbctl force-build`
/// runs, so that a backlog forms); returns their request ids.
fn submit_batch(m: &Master) -> Vec<u64> {
    let runs: Vec<Background> = (0..BATCH)
        .map(|_| m.bbctl_spawn(&["--json", "force-build", "c"]))
        .collect();
    runs.into_iter()
        .map(|run| {
            let out = run.finish(BBCTL_TIMEOUT);
            assert_eq!(code(&out), 0, "force-build: {}", describe(&out));
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            v["request_id"].as_u64().expect("a request id")
        })
        .collect()
}

/// Wait (bounded) until some build runs, or every build is done (a fast
/// batch may be over before we look); returns the workers running one
/// (none if everything is done).
fn wait_busy(m: &Master) -> Vec<String> {
    let mut busy = Vec::new();
    wait_until(
        "a build to run, or all done",
        Duration::from_secs(20),
        || {
            let s = m.bbctl_json(&["status"]);
            busy = s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| {
                    w["running_builds"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
                })
                .map(|w| w["name"].as_str().unwrap().to_string())
                .collect();
            let idle = s["builders"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["queued"] == 0 && b["running"] == 0);
            !busy.is_empty() || idle
        },
    );
    busy
}

fn worker(m: &Master, name: &str) -> Background {
    start_worker(m, name, &m.path().join("w.secret"))
}

/// 200 requests in batches of 20 while builds flow on 3 remote workers
/// (2 slots each); between batches `kill -9` hits a (seeded) random worker
/// 5 times and the master twice, each restarted. At the end (bounded
/// wait for an empty queue and no running build) every request has exactly
/// one build with a final non-`retry` result and all its other builds are
/// recorded `retry`; no request is missing and no build belongs to an
/// unknown request; every successful build's log is exactly
/// `start N\nend N\n`.
fn every_request_gets_exactly_one_final_result(transport: Transport) {
    every_request_gets_exactly_one_final_result_on(transport, None);
}

/// The same on PostgreSQL (docs/postgres.md): every restart also claims
/// a new epoch, and the logs live in the shared dir.
#[test]
fn chaos_every_request_gets_exactly_one_final_result_on_postgresql() {
    let pg = PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)");
    pg.create_database("bb").unwrap();
    every_request_gets_exactly_one_final_result_on(Transport::Unix, Some(&pg));
    // The first start and each restart after a kill.
    assert_eq!(pg.psql("bb", "SELECT epoch FROM bb_leader").unwrap(), "3");
}

fn every_request_gets_exactly_one_final_result_on(transport: Transport, pg: Option<&PgServer>) {
    let started = Instant::now();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let config = match pg {
        None => CONFIG.to_string(),
        Some(pg) => with_master_line(
            CONFIG,
            &format!(
                "store = {{ postgres = \"{}\", password_file = \"@DIR@/pgpass\", shared_dir = \"@DIR@\" }}",
                pg.conninfo("bb")
            ),
        ),
    };
    let mut m = Master::start_over(
        transport,
        &config,
        &[
            ("w.secret", "chaos-secret-0123456789\n"),
            ("pgpass", PASSWORD),
        ],
    );
    let mut workers: Vec<Option<Background>> =
        WORKERS.iter().map(|n| Some(worker(&m, n))).collect();
    let mut requests = Vec::new();
    let (mut worker_kills, mut master_kills, mut idle_strikes) = (0, 0, 0);

    for event in EVENTS {
        requests.extend(submit_batch(&m));
        // Strike while builds run: wait for some, then a random delay.
        let busy = wait_busy(&m);
        thread::sleep(rng.millis(30));
        match event {
            Event::None => {}
            Event::KillWorker => {
                // A worker with builds running (any, if all is done),
                // chosen by the seed.
                let i = if busy.is_empty() {
                    idle_strikes += 1;
                    rng.below(WORKERS.len() as u64) as usize
                } else {
                    let name = &busy[rng.below(busy.len() as u64) as usize];
                    WORKERS.iter().position(|w| w == name).expect("ours")
                };
                workers[i].take().expect("running").kill9();
                thread::sleep(rng.millis(300));
                workers[i] = Some(worker(&m, WORKERS[i]));
                worker_kills += 1;
            }
            Event::KillMaster => {
                if busy.is_empty() {
                    idle_strikes += 1;
                }
                m.kill9();
                m.spawn();
                master_kills += 1;
            }
        }
    }
    assert_eq!((worker_kills, master_kills), (5, 2));

    let left = BUDGET.saturating_sub(started.elapsed());
    wait_until("every request to be done", left, || {
        let s = m.bbctl_json(&["status"]);
        s["builders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["queued"] == 0 && b["running"] == 0)
    });

    let builds = m.bbctl_json(&["builds", "--limit", "1000"]);
    let mut by_request: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    let mut retry_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for b in builds.as_array().unwrap() {
        if b["result"] == "retry" {
            let reason = b["reason"].as_str().unwrap_or("").to_string();
            *retry_reasons.entry(reason).or_default() += 1;
        }
        let result = b["result"]
            .as_str()
            .unwrap_or_else(|| panic!("a build without a result at the end: {b}"));
        by_request
            .entry(b["request_id"].as_u64().unwrap())
            .or_default()
            .push((b["id"].as_u64().unwrap(), result.to_string()));
    }
    let mut wanted = requests.clone();
    wanted.sort_unstable();
    wanted.dedup();
    assert_eq!(wanted.len(), BATCHES * BATCH, "request ids repeat");
    let got: Vec<u64> = by_request.keys().copied().collect();
    assert_eq!(
        got, wanted,
        "requests missing, or builds of unknown requests"
    );

    let (mut retries, mut successes, mut others) = (0, Vec::new(), Vec::new());
    for (request, list) in &by_request {
        let finals: Vec<&(u64, String)> = list.iter().filter(|(_, r)| r != "retry").collect();
        assert_eq!(
            finals.len(),
            1,
            "request {request} has not exactly one final result: {list:?}"
        );
        retries += list.len() - 1;
        let (id, result) = finals[0];
        if result == "success" {
            successes.push(*id);
        } else {
            others.push((*request, *id, result.clone()));
        }
    }
    for id in &successes {
        let log = m.bbctl_ok(&["log", &id.to_string()]);
        assert_eq!(
            log,
            format!("start {id}\nend {id}\n"),
            "the log of build {id}"
        );
    }
    let total: usize = by_request.values().map(Vec::len).sum();
    eprintln!(
        "chaos over {transport:?} ({}): {} requests, {total} builds, {retries} retries, {} successes, other final results {others:?}; \
         {worker_kills} worker kills, {master_kills} master kills ({idle_strikes} of them with no build running); {:.1} s; retried because {retry_reasons:?}",
        if pg.is_some() { "PostgreSQL" } else { "SQLite" },
        requests.len(),
        successes.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        others.is_empty(),
        "a step that cannot fail did not succeed: {others:?}"
    );
    drop(workers);
}
over_unix_and_tls!(every_request_gets_exactly_one_final_result =>
    chaos_every_request_gets_exactly_one_final_result,
    chaos_every_request_gets_exactly_one_final_result_over_tls);

/// Chaos with full disks on both sides: the master's state dir and the
/// workers' dirs are small tmpfs mounts (skipped with a message when the
/// test cannot mount them, i.e. not as root), and builds printing more
/// than fits run among small ones. Every request ends with exactly one
/// result; a success has its whole log; anything else is an `exception`
/// naming "disk full" whose log ends with the marker. Once the operator
/// frees space, a whole batch succeeds with no restart.
#[test]
fn chaos_full_disks_on_both_sides_lose_nothing_silently() {
    const DISKS: &str = r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w.secret"
max_builds = 3

[[worker]]
name = "w2"
secret_file = "@DIR@/w.secret"
max_builds = 3

[[builder]]
name = "c"
workers = ["w1", "w2"]
  [[builder.step]]
  name = "s"
  shell = "echo start $BB_BUILD_ID; sleep 0.0$((RANDOM%5)); echo end $BB_BUILD_ID"

[[builder]]
name = "big"
workers = ["w1", "w2"]
  [[builder.step]]
  name = "s"
  shell = "head -c 1500000 /dev/zero | tr '\\0' x; echo; echo end $BB_BUILD_ID"
"#;
    let mut m = Master::start_with_files(DISKS, &[("w.secret", "chaos-secret-0123456789\n")]);
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(crate::harness::EXIT_TIMEOUT);
    let Some(_master_disk) = crate::storage::mount_tmpfs(&m.state_dir(), "5m", "chaos_full_disks")
    else {
        return;
    };
    let work = m.path().join("work");
    let Some(_worker_disk) = crate::storage::mount_tmpfs(&work, "2m", "chaos_full_disks") else {
        return;
    };
    m.spawn();
    let secret = m.path().join("w.secret");
    let _workers: Vec<Background> = ["w1", "w2"]
        .iter()
        .map(|n| crate::harness::start_worker_in(&m, n, &secret, &work.join(n)))
        .collect();

    let mut requests = Vec::new();
    for _ in 0..3 {
        let runs: Vec<Background> = (0..12)
            .map(|i| {
                m.bbctl_spawn(&[
                    "--json",
                    "force-build",
                    if i % 4 == 0 { "big" } else { "c" },
                ])
            })
            .collect();
        for run in runs {
            let out = run.finish(BBCTL_TIMEOUT);
            assert_eq!(code(&out), 0, "force-build: {}", describe(&out));
            let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            requests.push(v["request_id"].as_u64().expect("a request id"));
        }
        wait_until("the batch to be done", Duration::from_secs(60), || {
            let s = m.bbctl_json(&["status"]);
            s["builders"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["queued"] == 0 && b["running"] == 0)
        });
    }

    let builds = m.bbctl_json(&["builds", "--limit", "1000"]);
    let builds = builds.as_array().unwrap();
    assert_eq!(builds.len(), requests.len(), "not one build per request");
    let (mut ok, mut lost) = (0, Vec::new());
    for b in builds {
        let id = b["id"].as_u64().unwrap();
        let log = m.bbctl_ok(&["log", &id.to_string()]);
        match b["result"].as_str() {
            Some("success") => {
                assert!(
                    log.starts_with(&format!("start {id}\n"))
                        && log.ends_with(&format!("end {id}\n"))
                        || log.len() == 1_500_000 + format!("\nend {id}\n").len(),
                    "build {id} succeeded with a log of {} bytes",
                    log.len()
                );
                ok += 1;
            }
            Some("exception") => {
                let reason = b["reason"].as_str().unwrap_or("");
                assert!(reason.contains("disk full"), "build {id}: {b}");
                assert!(
                    log.contains("[bbmaster: output lost from here: "),
                    "build {id} has no marker: {b}"
                );
                lost.push(reason.to_string());
            }
            other => panic!("build {id} ended {other:?}: {b}"),
        }
    }
    let on_worker = lost.iter().filter(|r| r.contains("spool")).count();
    eprintln!(
        "chaos with full disks: {} builds, {ok} successes, {} lost output ({on_worker} on a worker)",
        builds.len(),
        lost.len()
    );
    assert!(on_worker > 0, "no worker's disk filled: {lost:?}");

    // The operator frees space under the master; the workers' spools are
    // freed by themselves. A whole batch then succeeds.
    for b in builds {
        if b["result"] == "exception" {
            let dir = m.state_dir().join("logs").join(b["id"].to_string());
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let first = m.force_build("c");
    for _ in 1..6 {
        m.force_build("c");
    }
    wait_until("the last batch to be done", Duration::from_secs(60), || {
        let s = m.bbctl_json(&["status"]);
        s["builders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["queued"] == 0 && b["running"] == 0)
    });
    let after = m.bbctl_json(&["builds", "--builder", "c", "--limit", "6"]);
    for b in after.as_array().unwrap() {
        assert!(b["request_id"].as_u64().unwrap() >= first);
        assert_eq!(b["result"], "success", "after space came back: {b}");
    }
}
