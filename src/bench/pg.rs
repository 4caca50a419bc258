//! The PostgreSQL store against SQLite (issue 19), side by side in one
//! run: two masters with the same builders, one on the embedded SQLite
//! store and one on a throwaway PostgreSQL server on loopback (TCP, SCRAM
//! password, as a deployment would be; see `crate::testkit::postgres`),
//! each with one remote `bbworker` on its Unix worker socket (a master on
//! PostgreSQL takes no local workers). The two are measured alternately,
//! so that a busy moment of the machine hits both alike.
//!
//! Figures: the durable `force-build` rate (4 concurrent clients, and one
//! loop) on a builder whose worker never connects (only accepting and
//! committing requests is measured), the dispatch latency (force-build
//! to the step's process running, and `force-build --wait` of a `true`
//! step), and the rate of `true` builds through one worker.
//!
//! Without PostgreSQL's binaries, the scenario prints one `n/a` row
//! saying so and succeeds.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::Ctx;
use super::harness::{self, Master};
use super::latency::{epoch_ns, parse_ns};
use super::remote::{SECRET, Worker};
use super::report::{Report, Row};
use super::stats::{median, ms};
use crate::testkit::postgres::{self, PASSWORD, PgServer};

/// Which store a master of this scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL (loopback)",
        }
    }
}

/// Samples per backend: SQLite, then PostgreSQL.
type PerBackend = [Vec<f64>; 2];

/// A master with its remote worker, and where its logs are.
struct Rig {
    /// Dropped first: the worker exits on the master's Goodbye.
    master: Master,
    _worker: Worker,
    logs: PathBuf,
}

/// The builders and workers both masters get: `w` (remote, connects, 4
/// builds at once) serves `D` (`date +%s%N`) and `T` (`true`); `r`
/// never connects and serves `Q`, where requests only queue.
fn body() -> String {
    let mut text = format!(
        "[[worker]]\nname = \"w\"\nsecret = \"{SECRET}\"\nmax_builds = 4\n\n\
         [[worker]]\nname = \"r\"\nsecret = \"{SECRET}\"\n\n"
    );
    for (name, worker, argv) in [
        ("D", "w", "\"date\", \"+%s%N\""),
        ("T", "w", "\"true\""),
        ("Q", "r", "\"true\""),
    ] {
        text += &format!(
            "[[builder]]\nname = \"{name}\"\nworkers = [\"{worker}\"]\n  [[builder.step]]\n  name = \"s\"\n  command = [{argv}]\n\n"
        );
    }
    text
}

/// Start the master of `backend` in a fresh dir, then its worker, and
/// wait until the worker is connected.
fn start(ctx: &Ctx, backend: Backend, pg: &PgServer) -> Result<Rig> {
    let dir = ctx.scratch.dir(match backend {
        Backend::Sqlite => "pg-sqlite",
        Backend::Postgres => "pg-pg",
    })?;
    let (master_table, logs) = match backend {
        Backend::Sqlite => (String::new(), dir.join("logs")),
        Backend::Postgres => {
            let database = "bench";
            pg.create_database(database)
                .context("cannot create the benchmark database")?;
            let pgpass = dir.join("pgpass");
            harness::write(&pgpass, &format!("{PASSWORD}\n"))?;
            fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod {}", pgpass.display()))?;
            let shared = dir.join("shared");
            fs::create_dir_all(&shared)
                .with_context(|| format!("cannot create {}", shared.display()))?;
            let table = format!(
                "[master]\nstore = {{ postgres = \"{}\", password_file = \"{}\", shared_dir = \"{}\" }}\n\n",
                pg.conninfo(database),
                pgpass.display(),
                shared.display()
            );
            (table, shared.join("logs"))
        }
    };
    let config = dir.join("master.toml");
    harness::write(&config, &format!("{master_table}{}", body()))?;
    let master = Master::start(&ctx.bins, &dir, Some(&config))?;
    if backend == Backend::Postgres {
        // It answers as a standby first, campaigns, wins (alone), and
        // then serves as the leader.
        let start = Instant::now();
        while !leads(&master) {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(anyhow!("the master on PostgreSQL did not lead within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let secret = dir.join("worker.secret");
    harness::write(&secret, SECRET)?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", secret.display()))?;
    let mut cmd = Command::new(&ctx.bins.bbworker);
    cmd.arg("--master")
        .arg(dir.join("worker.sock"))
        .args(["--name", "w", "--secret-file"])
        .arg(&secret)
        .arg("--dir")
        .arg(dir.join("work"));
    let worker = Worker::spawn(cmd, &dir.join("worker.log"))?;
    if let Err(e) = master.wait_local_workers(1, Duration::from_secs(30)) {
        let log =
            |name: &str| last_lines(&fs::read_to_string(dir.join(name)).unwrap_or_default(), 5);
        return Err(e.context(format!(
            "the worker did not connect; master.log: {}; worker.log: {}",
            log("master.log"),
            log("worker.log")
        )));
    }
    Ok(Rig {
        master,
        _worker: worker,
        logs,
    })
}

/// Whether `master` answers as the leader (a master on PostgreSQL).
pub(super) fn leads(master: &Master) -> bool {
    master
        .status()
        .is_ok_and(|s| s["leadership"]["role"] == "leader")
}

/// Run `measure` on each backend `rounds` times, alternating which goes
/// first; the first `skip` rounds are not kept (warm-up).
fn alternate(
    rigs: &[Rig; 2],
    rounds: usize,
    skip: usize,
    mut measure: impl FnMut(&Rig) -> Result<f64>,
) -> Result<PerBackend> {
    let mut out: PerBackend = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let value = measure(&rigs[k])?;
            if round >= skip {
                out[k].push(value);
            }
        }
    }
    Ok(out)
}

/// The SQLite row (the baseline) and the PostgreSQL row against it.
fn push_pair(report: &mut Report, metric: &str, unit: &'static str, samples: &PerBackend) {
    report.push(Row::measured(
        "pg",
        &format!("{metric}, {} (no target)", Backend::Sqlite.label()),
        unit,
        &samples[0],
    ));
    report.push(
        Row::measured(
            "pg",
            &format!(
                "{metric}, {} (baseline: SQLite; no target)",
                Backend::Postgres.label()
            ),
            unit,
            &samples[1],
        )
        .baseline(median(&samples[0])),
    );
}

/// `n` `force-build BUILDER` from `parallel` concurrent `bbctl` loops;
/// requests per second.
fn submit(master: &Master, builder: &str, n: usize, parallel: usize) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel)
            .map(|i| {
                let count = n / parallel + usize::from(i < n % parallel);
                scope.spawn(move || -> Result<()> {
                    for _ in 0..count {
                        let (_, out) = master.ctl_timed(&["force-build", builder])?;
                        if !out.status.success() {
                            return Err(anyhow!(
                                "force-build {builder} failed: {}",
                                String::from_utf8_lossy(&out.stderr)
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("a submit thread panicked"))?)
    })?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `force-build D --wait --json`: ms from just before `bbctl` is spawned
/// to when the step's process ran (the time it printed into its log).
fn to_step_ms(rig: &Rig) -> Result<f64> {
    let t0 = epoch_ns()?;
    let (_, out) = rig
        .master
        .ctl_timed(&["force-build", "D", "--wait", "--json"])?;
    let build = harness::last_json(&out.stdout)?["build_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("force-build --wait --json printed no build_id"))?;
    let log = rig.logs.join(format!("{build}/0.log"));
    let text =
        fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    Ok((parse_ns(&text)?.saturating_sub(t0)) as f64 / 1e6)
}

/// Why the scenario cannot run here, when PostgreSQL is not installed.
pub(super) fn missing_postgres() -> Option<String> {
    postgres::bin_dir().err().map(|e| e.to_string())
}

/// The `pg` scenario.
pub fn pg(ctx: &Ctx, report: &mut Report) -> Result<()> {
    if let Some(why) = missing_postgres() {
        eprintln!("   skipped: {why}");
        report.push(Row::not_available(
            "pg",
            "PostgreSQL store against SQLite",
            &format!("PostgreSQL is not installed: {why}"),
        ));
        return Ok(());
    }
    let server = PgServer::start().context("cannot start a PostgreSQL server")?;
    let rigs = [
        start(ctx, Backend::Sqlite, &server)?,
        start(ctx, Backend::Postgres, &server)?,
    ];
    let result = measure(ctx, report, &rigs);
    if result.is_err() {
        eprintln!(
            "   PostgreSQL's log (last lines):\n{}",
            last_lines(&server.log(), 10)
        );
    }
    drop(rigs);
    drop(server);
    result
}

/// Every figure, on the two running rigs.
fn measure(ctx: &Ctx, report: &mut Report, rigs: &[Rig; 2]) -> Result<()> {
    let s = &ctx.sizes;
    // `--quick` only checks that the scenario runs: one round, no warm-up.
    let (rounds, warm, per, n) = if s.quick {
        (1, 0, s.submit_per_client / 2, s.throughput_builds / 2)
    } else {
        (s.long_repeats, 1, s.submit_per_client, s.throughput_builds)
    };
    let concurrent = alternate(rigs, rounds + warm, warm, |rig| {
        submit(&rig.master, "Q", 4 * per, 4)
    })?;
    push_pair(
        report,
        "force-build rate, 4 concurrent clients (durable)",
        "req/s",
        &concurrent,
    );
    let single = alternate(rigs, rounds, 0, |rig| submit(&rig.master, "Q", per, 1))?;
    push_pair(report, "force-build rate, 1 client loop", "req/s", &single);

    let to_step = alternate(rigs, s.warmup + s.repeats, s.warmup, to_step_ms)?;
    push_pair(
        report,
        "force-build start -> step process running (wall)",
        "ms",
        &to_step,
    );
    let wait = alternate(rigs, s.warmup + s.repeats, s.warmup, |rig| {
        let (took, out) = rig.master.ctl_timed(&["force-build", "T", "--wait"])?;
        if !out.status.success() {
            return Err(anyhow!(
                "force-build T --wait failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(ms(&[took])[0])
    })?;
    push_pair(
        report,
        "force-build --wait, `true` step (wall)",
        "ms",
        &wait,
    );

    let builds = alternate(rigs, rounds, 0, |rig| {
        let start = Instant::now();
        submit(&rig.master, "T", n, 4)?;
        wait_builder_idle(&rig.master, "T", Duration::from_secs(3600))?;
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })?;
    push_pair(
        report,
        &format!("{n} `true` builds from 4 client loops, 1 worker x max_builds 4"),
        "builds/s",
        &builds,
    );
    Ok(())
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait until `builder` has nothing queued or running (the others may:
/// `Q`'s requests stay queued for good).
fn wait_builder_idle(master: &Master, builder: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let status = master.status()?;
        let idle = status["builders"].as_array().is_some_and(|bs| {
            bs.iter().any(|b| {
                b["name"] == builder
                    && b["queued"].as_u64() == Some(0)
                    && b["running"].as_u64() == Some(0)
            })
        });
        if idle {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(anyhow!("builder {builder} still busy after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
