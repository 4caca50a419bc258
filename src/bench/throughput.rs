//! Rates: builds per second through two local workers, `force-build`
//! requests per second, and log bytes per second into the master.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::Ctx;
use super::harness::{self, Master, kb_to_mb, proc_kb, run_timed};
use super::latency::{local_config, start_local};
use super::report::{Report, Row, Target};
use super::sampling::sample;
use super::stats::median;

/// Spawn `sh -c true` `n` times from `parallel` threads; runs per second.
fn spawn_rate(n: usize, parallel: usize) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel)
            .map(|i| {
                let count = n / parallel + usize::from(i < n % parallel);
                scope.spawn(move || -> Result<()> {
                    for _ in 0..count {
                        run_timed(Command::new("sh").args(["-c", "true"]))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("a spawn thread panicked"))?)
    })?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `n` requests for `builder` from `parallel` concurrent `bbctl` loops;
/// requests per second.
fn submit(master: &Master, builder: &str, n: usize, parallel: usize) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel)
            .map(|i| {
                let count = n / parallel + usize::from(i < n % parallel);
                scope.spawn(move || -> Result<()> {
                    for _ in 0..count {
                        master.ctl_timed(&["force-build", builder])?;
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

/// N one-step `true` builds through 2 local workers with `max_builds = 2`,
/// against `sh -c true` spawned with parallelism 4; and the `force-build`
/// rate from one loop and from 4 concurrent ones.
pub fn throughput(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let n = s.throughput_builds;
    let master = start_local(ctx, &local_config(2, 2, &[("T", &["true"])]), 2)?;
    let mut builds_per_s = Vec::new();
    let mut submit_per_s = Vec::new();
    // Warm-up: a tenth of a run.
    submit(&master, "T", n / 10, 1)?;
    master.wait_idle(Duration::from_millis(50), Duration::from_secs(600))?;
    for _ in 0..s.long_repeats {
        let start = Instant::now();
        submit_per_s.push(submit(&master, "T", n, 1)?);
        master.wait_idle(Duration::from_millis(50), Duration::from_secs(3600))?;
        builds_per_s.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let baseline = sample(1, s.long_repeats, || spawn_rate(n, 4))?;
    report.push(
        Row::measured(
            "throughput",
            &format!("{n} `true` builds, 2 workers x max_builds 2"),
            "builds/s",
            &builds_per_s,
        )
        .baseline(median(&baseline))
        .target(Target::ratio_above(0.5)),
    );
    report.push(
        Row::measured(
            "throughput",
            "force-build rate, 1 client loop (while building)",
            "req/s",
            &submit_per_s,
        )
        .target(Target::median_above(500.0)),
    );
    drop(master);
    drain(ctx, report, median(&baseline))?;

    // Concurrent clients on a master whose only worker never connects, so
    // that only accepting (and committing) requests is measured.
    let dir = ctx.scratch.dir("m")?;
    let path = dir.join("master.toml");
    harness::write(
        &path,
        "[[worker]]\nname = \"r\"\nsecret = \"s-0123456789abcdef\"\n\n[[builder]]\nname = \"Q\"\nworkers = [\"r\"]\n  [[builder.step]]\n  name = \"s\"\n  command = [\"true\"]\n",
    )?;
    let master = Master::start(&ctx.bins, &dir, Some(&path))?;
    let per = s.submit_per_client;
    let rates = sample(1, s.long_repeats, || submit(&master, "Q", 4 * per, 4))?;
    report.push(
        Row::measured(
            "throughput",
            "force-build rate, 4 concurrent clients (durable)",
            "req/s",
            &rates,
        )
        .target(Target::median_above(2000.0)),
    );
    let single = sample(0, s.long_repeats, || submit(&master, "Q", per, 1))?;
    report.push(
        Row::measured(
            "throughput",
            "force-build rate, 1 client loop (idle master)",
            "req/s",
            &single,
        )
        .target(Target::median_above(500.0)),
    );
    Ok(())
}

/// The same builds queued first (their builder's only worker never
/// connects), then released at once by a reload that gives the builder the
/// two local workers: the build rate without the submitting clients.
fn drain(ctx: &Ctx, report: &mut Report, baseline: Option<f64>) -> Result<()> {
    let s = &ctx.sizes;
    let n = s.throughput_builds;
    let released = format!(
        "[[worker]]\nname = \"r\"\nsecret = \"s-0123456789abcdef\"\n\n{}",
        local_config(2, 2, &[("T", &["true"])])
    );
    let held = released.replace("workers = [\"w1\", \"w2\"]", "workers = [\"r\"]");
    let master = start_local(ctx, &held, 2)?;
    let path = master.dir.join("master.toml");
    let mut rates = Vec::new();
    for i in 0..=s.long_repeats {
        let count = if i == 0 { n / 10 } else { n };
        submit(&master, "T", count, 4)?;
        harness::write(&path, &released)?;
        let start = Instant::now();
        master.ctl_timed(&["reload"])?;
        master.wait_idle(Duration::from_millis(20), Duration::from_secs(3600))?;
        if i > 0 {
            rates.push(count as f64 / start.elapsed().as_secs_f64());
        }
        harness::write(&path, &held)?;
        master.ctl_timed(&["reload"])?;
    }
    report.push(
        Row::measured(
            "throughput",
            &format!("{n} queued `true` builds released by a reload"),
            "builds/s",
            &rates,
        )
        .baseline(baseline)
        .target(Target::ratio_above(0.5)),
    );
    Ok(())
}

/// One step writing `log_bytes` with `head -c N /dev/zero`, force-build to
/// finished, against `head -c N /dev/zero > file`; the master's peak RSS.
pub fn log_streaming(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let bytes = s.log_bytes;
    let count = bytes.to_string();
    // Keep the whole output: the default `max_log_size` (256 MiB) would
    // cut the 1 GiB run short.
    let config = format!(
        "[master]\nmax_log_size = \"{}\"\n\n{}",
        bytes * 2,
        local_config(1, 1, &[("L", &["head", "-c", &count, "/dev/zero"])])
    );
    let master = start_local(ctx, &config, 1)?;
    let mb = bytes as f64 / 1e6;
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let pid = master.pid();
    let mut rates = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let poller = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Ok(kb) = proc_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let result = (|| -> Result<()> {
            for i in 0..=s.long_repeats {
                let (took, out) = master.ctl_timed(&["force-build", "L", "--wait", "--json"])?;
                if i > 0 {
                    rates.push(mb / took.as_secs_f64());
                }
                // Free the disk: the log is checked for its size, then removed.
                let build = harness::last_json(&out.stdout)?["build_id"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("force-build --wait --json printed no build_id"))?;
                let log = master.dir.join(format!("logs/{build}"));
                let len = std::fs::metadata(log.join("0.log"))
                    .with_context(|| format!("no log in {}", log.display()))?
                    .len();
                if len != bytes {
                    return Err(anyhow!(
                        "the log of build {build} has {len} bytes, not {bytes}"
                    ));
                }
                std::fs::remove_dir_all(&log)
                    .with_context(|| format!("cannot remove {}", log.display()))?;
            }
            Ok(())
        })();
        done.store(true, Ordering::Relaxed);
        poller
            .join()
            .map_err(|_| anyhow!("the RSS poller panicked"))?;
        result
    })?;
    let file = master.dir.join("baseline.out");
    let shell = format!("head -c {bytes} /dev/zero > '{}'", file.display());
    let baseline = sample(1, s.long_repeats, || {
        let (took, _) = run_timed(Command::new("sh").args(["-c", &shell]))?;
        Ok(mb / took.as_secs_f64())
    })?;
    let _ = std::fs::remove_file(&file);
    report.push(
        Row::measured(
            "log",
            &format!("{} MiB step output into the master's log", bytes >> 20),
            "MB/s",
            &rates,
        )
        .baseline(median(&baseline))
        .target(Target::ratio_above(0.5)),
    );
    let hwm = proc_kb(pid, "VmHWM")?;
    report.push(
        Row::measured(
            "log",
            "master peak RSS while streaming (VmHWM)",
            "MB",
            &[kb_to_mb(hwm.max(peak.load(Ordering::Relaxed)))],
        )
        .target(Target::median_below(50.0)),
    );
    Ok(())
}
