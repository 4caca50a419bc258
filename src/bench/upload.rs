//! Upload: one file from a local worker to the master's artifacts through
//! an `upload` step (issue 8), against `cp` of the same file in the same
//! run (target: at least half of `cp`'s rate), with the peak resident
//! memory of the master and the worker (target: under 64 MiB each).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Ctx;
use super::harness::{self, Master, proc_kb, run_timed};
use super::report::{Report, Row, Target};
use super::stats::median;

/// The `upload` scenario.
pub fn upload(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let size: u64 = if ctx.sizes.quick { 64 << 20 } else { 1 << 30 };
    let repeats = ctx.sizes.long_repeats;
    let dir = ctx.scratch.dir("up")?;
    let config = dir.join("master.toml");
    harness::write(
        &config,
        &format!(
            "[[worker]]\nname = \"local-1\"\nlocal = true\n\n\
             [[builder]]\nname = \"up\"\nworkers = [\"local-1\"]\n\
             \x20 [[builder.step]]\n  name = \"make\"\n  shell = \"test -f big.bin || head -c {size} /dev/urandom > big.bin\"\n\
             \x20 [[builder.step]]\n  name = \"publish\"\n  upload = {{ from = \"big.bin\" }}\n"
        ),
    )?;
    let mut master = Master::start(&ctx.bins, &dir, Some(&config))?;
    master.wait_local_workers(1, Duration::from_secs(30))?;
    let mb = size as f64 / (1 << 20) as f64;
    let mut rates = Vec::new();
    let mut cp_rates = Vec::new();
    for round in 0..repeats + 1 {
        let out = master
            .ctl()
            .args(["--json", "force-build", "up", "--wait"])
            .output()
            .context("cannot run bbctl")?;
        if !out.status.success() {
            bail!(
                "the upload build failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let build = harness::last_json(&out.stdout)?["build_id"]
            .as_u64()
            .context("no build id")?;
        let detail = master
            .ctl()
            .args(["--json", "build", &build.to_string()])
            .output()
            .context("cannot run bbctl")?;
        let detail = harness::last_json(&detail.stdout)?;
        let step = &detail["steps"][1];
        let took_ms = step["finished_at_ms"].as_u64().unwrap_or(0)
            - step["started_at_ms"].as_u64().unwrap_or(0);
        // The same file, copied with cp on the same disk, right after.
        let source = crate::daemon::local_workers::work_root(&dir).join("local-1/up/big.bin");
        let copy = dir.join("cp-copy.bin");
        let (cp_took, cp_out) = run_timed(Command::new("cp").arg(&source).arg(&copy))?;
        if !cp_out.status.success() {
            bail!("cp failed");
        }
        let _ = std::fs::remove_file(&copy);
        let _ = std::fs::remove_dir_all(dir.join("artifacts").join(build.to_string()));
        if round == 0 {
            continue; // warm-up: the file is written, caches are warm
        }
        rates.push(mb / (took_ms.max(1) as f64 / 1000.0));
        cp_rates.push(mb / cp_took.as_secs_f64().max(1e-6));
    }
    let worker_pid: u32 = std::fs::read_to_string(dir.join("local-workers/local-1.pid"))
        .context("the local worker's pid file")?
        .trim()
        .parse()
        .context("the local worker's pid")?;
    let master_peak = proc_kb(master.pid(), "VmHWM")? as f64 / 1024.0;
    let worker_peak = proc_kb(worker_pid, "VmHWM")? as f64 / 1024.0;
    master.stop()?;
    let label = if size >= 1 << 30 {
        format!("{} GiB", size >> 30)
    } else {
        format!("{} MiB", size >> 20)
    };
    report.push(
        Row::measured(
            "upload",
            &format!("upload of {label} from a local worker (baseline: cp)"),
            "MiB/s",
            &rates,
        )
        .baseline(median(&cp_rates))
        .target(Target::ratio_above(0.5)),
    );
    report.push(
        Row::measured(
            "upload",
            "master peak RSS during uploads",
            "MiB",
            &[master_peak],
        )
        .target(Target::median_below(64.0)),
    );
    report.push(
        Row::measured(
            "upload",
            "worker peak RSS during uploads",
            "MiB",
            &[worker_peak],
        )
        .target(Target::median_below(64.0)),
    );
    Ok(())
}
