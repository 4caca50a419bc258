//! Single-request latencies on a small master: dispatch, `status`, and the
//! memory of an idle master and of one `bbctl` call.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};

use super::harness::{self, Master, kb_to_mb, proc_kb, run_timed};
use super::report::{Report, Row, Target};
use super::sampling::{bbctl_version_ms, sample};
use super::stats::{median, ms};
use super::{Ctx, scale};

/// A config of local workers `w1..=wN` (each `max_builds`) and builders
/// given as (name, argv of their one step), each served by every worker.
pub(super) fn local_config(
    workers: usize,
    max_builds: u32,
    builders: &[(&str, &[&str])],
) -> String {
    let names: Vec<String> = (1..=workers).map(|i| format!("\"w{i}\"")).collect();
    let mut text = String::new();
    for i in 1..=workers {
        text +=
            &format!("[[worker]]\nname = \"w{i}\"\nlocal = true\nmax_builds = {max_builds}\n\n");
    }
    for (name, argv) in builders {
        let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        text += &format!(
            "[[builder]]\nname = \"{name}\"\nworkers = [{}]\n  [[builder.step]]\n  name = \"s\"\n  command = [{}]\n\n",
            names.join(", "),
            argv.join(", ")
        );
    }
    text
}

/// Start a master on a fresh dir with `config` and wait for its local workers.
pub(super) fn start_local(ctx: &Ctx, config: &str, workers: usize) -> Result<Master> {
    let dir = ctx.scratch.dir("m")?;
    let path = dir.join("master.toml");
    harness::write(&path, config)?;
    let master = Master::start(&ctx.bins, &dir, Some(&path))?;
    master.wait_local_workers(workers, Duration::from_secs(30))?;
    Ok(master)
}

/// Wall time of spawning `argv` and waiting for it, in ms.
pub(super) fn spawn_ms(argv: &[&str]) -> Result<f64> {
    let (took, _) = run_timed(Command::new(argv[0]).args(&argv[1..]))?;
    Ok(took.as_secs_f64() * 1e3)
}

pub(super) fn epoch_ns() -> Result<u128> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_nanos())
}

pub(super) fn parse_ns(text: &str) -> Result<u128> {
    text.trim()
        .parse()
        .with_context(|| format!("`{}` is not a time in ns", text.trim()))
}

/// `force-build B --wait` of a one-step `true` build, and `force-build D`
/// of a step `date +%s%N` to when that step's process ran; the master's own
/// view (ms precision) from its database.
pub fn dispatch(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let config = local_config(1, 2, &[("B", &["true"]), ("D", &["date", "+%s%N"])]);
    let master = start_local(ctx, &config, 1)?;

    let wait = sample(s.warmup, s.repeats, || {
        Ok(master.ctl_timed(&["force-build", "B", "--wait"])?.0)
    })?;
    let baseline = sample(s.warmup, s.repeats, || spawn_ms(&["sh", "-c", "true"]))?;
    report.push(
        Row::measured(
            "dispatch",
            "force-build --wait, `true` step (wall)",
            "ms",
            &ms(&wait),
        )
        .baseline(median(&baseline))
        .target(Target::median_below(5.0)),
    );

    let to_step = sample(s.warmup, s.repeats, || to_step_ms(&master, "D"))?;
    let date_baseline = sample(s.warmup, s.repeats, || {
        let t0 = epoch_ns()?;
        let (_, out) = run_timed(Command::new("date").arg("+%s%N"))?;
        Ok((parse_ns(&String::from_utf8_lossy(&out.stdout))?.saturating_sub(t0)) as f64 / 1e6)
    })?;
    report.push(
        Row::measured(
            "dispatch",
            "force-build start -> step process running (wall)",
            "ms",
            &to_step,
        )
        .baseline(median(&date_baseline))
        .target(Target::median_below(2.0)),
    );

    let (to_started, to_finished) = master_view(&master.dir.join("master.db"), "B")?;
    report.push(
        Row::measured(
            "dispatch",
            "master: accepted -> step sent (1 ms resolution)",
            "ms",
            &to_started,
        )
        .target(Target::median_below(2.0)),
    );
    report.push(
        Row::measured(
            "dispatch",
            "master: accepted -> finished (1 ms resolution)",
            "ms",
            &to_finished,
        )
        .target(Target::median_below(5.0)),
    );
    Ok(())
}

/// `force-build BUILDER --wait` of a builder whose one step is `date
/// +%s%N`: ms from just before `bbctl` is spawned to when the step's
/// process ran (the time it printed into its log).
pub(super) fn to_step_ms(master: &Master, builder: &str) -> Result<f64> {
    let t0 = epoch_ns()?;
    let (_, out) = master.ctl_timed(&["force-build", builder, "--wait", "--json"])?;
    let build = harness::last_json(&out.stdout)?["build_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("force-build --wait --json printed no build_id"))?;
    let log = master.dir.join(format!("logs/{build}/0.log"));
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    Ok((parse_ns(&text)?.saturating_sub(t0)) as f64 / 1e6)
}

/// From the master's database: per build of `builder`, ms from request
/// accepted to step started, and to build finished.
pub(super) fn master_view(db: &Path, builder: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", db.display()))?;
    let mut stmt = conn
        .prepare(
            "SELECT s.started_at - r.submitted_at, b.finished_at - r.submitted_at
             FROM builds b JOIN requests r ON r.id = b.request_id
                  JOIN steps s ON s.build_id = b.id AND s.idx = 0
             WHERE b.builder = ?1 AND b.finished_at IS NOT NULL ORDER BY b.id",
        )
        .context("cannot query the master's database")?;
    let rows = stmt
        .query_map([builder], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .context("cannot read the master's database")?;
    Ok(rows.iter().map(|&(s, f)| (s as f64, f as f64)).unzip())
}

/// `bbctl status --json` on an empty master, then on the scale master.
pub fn status(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let master = start_local(ctx, &local_config(1, 2, &[("B", &["true"])]), 1)?;
    let times = sample(s.warmup, s.repeats, || {
        Ok(master.ctl_timed(&["status", "--json"])?.0)
    })?;
    let baseline = bbctl_version_ms(ctx)?;
    report.push(
        Row::measured(
            "status",
            "bbctl status --json, empty master (wall)",
            "ms",
            &ms(&times),
        )
        .baseline(baseline)
        .target(Target::median_below(2.0)),
    );
    drop(master);
    scale::status_big(ctx, report, baseline)
}

/// Master RSS idle on the embedded default config; `bbctl status` peak RSS.
pub fn memory(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let dir = ctx.scratch.dir("m")?;
    let master = Master::start(&ctx.bins, &dir, None)?;
    master.wait_local_workers(1, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(if ctx.sizes.quick {
        300
    } else {
        1000
    }));
    let rss = sample(0, 5, || {
        std::thread::sleep(Duration::from_millis(50));
        Ok(kb_to_mb(master.rss_kb()?))
    })?;
    report.push(
        Row::measured("memory", "master RSS, idle, default config", "MB", &rss)
            .target(Target::median_below(15.0)),
    );
    let pid_file = dir.join("local-workers/local-1.pid");
    let worker = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?;
    let worker: u32 = worker.trim().parse().context("bad worker pid file")?;
    report.push(Row::measured(
        "memory",
        "local worker RSS, idle (no target)",
        "MB",
        &[kb_to_mb(proc_kb(worker, "VmRSS")?)],
    ));

    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        report.push(Row::not_available(
            "memory",
            "bbctl status peak RSS",
            "/usr/bin/time not installed",
        ));
        return Ok(());
    }
    let peak = |args: &[&str]| -> Result<f64> {
        let mut cmd = Command::new(time);
        cmd.args(["-f", "%M"]).arg(&ctx.bins.bbctl);
        if !args.is_empty() {
            cmd.arg("--socket").arg(&master.socket).args(args);
        } else {
            cmd.arg("--version");
        }
        let (_, out) = run_timed(&mut cmd)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let kb: u64 = stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow!("/usr/bin/time printed no peak RSS: {stderr}"))?;
        Ok(kb_to_mb(kb))
    };
    let status = sample(1, 5, || peak(&["status", "--json"]))?;
    let version = sample(1, 5, || peak(&[]))?;
    report.push(
        Row::measured("memory", "bbctl status --json peak RSS", "MB", &status)
            .baseline(median(&version))
            .target(Target::median_below(10.0)),
    );
    Ok(())
}
