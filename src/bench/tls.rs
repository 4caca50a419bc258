//! Remote workers over TLS against the same on the Unix socket (issue 14):
//! dispatch latency (target: within 1 ms), log streaming and a file upload
//! (target: at least half the Unix-socket rate). One master, one
//! `bbworker` per transport (see [`remote`]); the two are measured
//! alternately so that a busy moment of the machine hits both alike.
//! The scale figures (1,000 TLS workers) are in `tls_scale`.

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::harness::{self, kb_to_mb};
use super::latency::to_step_ms;
use super::remote::{self, Link, Pair};
use super::report::{Report, Row, Target};
use super::stats::median;

/// Samples per link, in [`Link::BOTH`] order.
type PerLink = [Vec<f64>; 2];

/// Run `measure` on each link `rounds` times, alternating which goes
/// first; the first `skip` rounds are not kept (warm-up).
fn alternate(
    rounds: usize,
    skip: usize,
    mut measure: impl FnMut(Link) -> Result<f64>,
) -> Result<PerLink> {
    let mut out: PerLink = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let value = measure(Link::BOTH[k])?;
            if round >= skip {
                out[k].push(value);
            }
        }
    }
    Ok(out)
}

/// The Unix row (no target: it is the baseline) and the TLS row against it.
fn push_pair(
    report: &mut Report,
    scenario: &str,
    metric: &str,
    unit: &'static str,
    samples: &PerLink,
    target: Target,
) {
    report.push(Row::measured(
        scenario,
        &format!("{metric}, {} (no target)", Link::Unix.label()),
        unit,
        &samples[0],
    ));
    report.push(
        Row::measured(
            scenario,
            &format!("{metric}, {} (baseline: Unix)", Link::Tls.label()),
            unit,
            &samples[1],
        )
        .baseline(median(&samples[0]))
        .target(target),
    );
}

/// `tls-dispatch`: force-build start to the step's process running on a
/// remote worker, over TLS and over the Unix socket (the `dispatch`
/// scenario's method: the step `date +%s%N` prints when it ran).
pub fn dispatch(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let config = remote::config("", &[("D", &remote::command_step(&["date", "+%s%N"]))]);
    let pair = Pair::start(ctx, &config)?;
    let times = alternate(s.warmup + s.repeats, s.warmup, |link| {
        to_step_ms(&pair.master, &format!("D-{}", link.name()))
    })?;
    push_pair(
        report,
        "tls-dispatch",
        "force-build start -> step process running (wall)",
        "ms",
        &times,
        Target::excess_below(1.0),
    );
    Ok(())
}

/// The build id that `force-build --wait --json` printed.
fn build_id(stdout: &[u8]) -> Result<u64> {
    harness::last_json(stdout)?["build_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("force-build --wait --json printed no build_id"))
}

/// "1 GiB", "16 MiB".
fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// `tls-log`: one step writing `tls_bytes` (`head -c N /dev/zero`) into
/// the master's log, force-build to finished, over each link; each log is
/// checked to be whole, then removed.
pub fn log(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let bytes = s.tls_bytes;
    let count = bytes.to_string();
    let config = remote::config(
        &format!("max_log_size = \"{}\"", bytes * 2),
        &[(
            "L",
            &remote::command_step(&["head", "-c", &count, "/dev/zero"]),
        )],
    );
    let pair = Pair::start(ctx, &config)?;
    let mb = bytes as f64 / 1e6;
    let rates = alternate(s.long_repeats + 1, 1, |link| {
        let builder = format!("L-{}", link.name());
        let (took, out) = pair
            .master
            .ctl_timed(&["force-build", &builder, "--wait", "--json"])?;
        let build = build_id(&out.stdout)?;
        let logs = pair.master.dir.join(format!("logs/{build}"));
        let len = std::fs::metadata(logs.join("0.log"))
            .with_context(|| format!("no log in {}", logs.display()))?
            .len();
        if len != bytes {
            bail!("the log of build {build} ({builder}) has {len} bytes, not {bytes}");
        }
        std::fs::remove_dir_all(&logs)
            .with_context(|| format!("cannot remove {}", logs.display()))?;
        Ok(mb / took.as_secs_f64())
    })?;
    push_pair(
        report,
        "tls-log",
        &format!("{} step output into the master's log", size_label(bytes)),
        "MB/s",
        &rates,
        Target::ratio_above(0.5),
    );
    Ok(())
}

/// `tls-upload`: an `upload` step sending a file of `tls_bytes` random
/// bytes (made once per worker by the step before it) to the master's
/// artifacts, over each link; the rate is the size over the upload step's
/// duration as the master recorded it (hashes and fsync included, as in
/// the `upload` scenario).
pub fn upload(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let size = s.tls_bytes;
    let steps = format!(
        "  [[builder.step]]\n  name = \"make\"\n  shell = \"test -f big.bin || head -c {size} /dev/urandom > big.bin\"\n\
         \x20 [[builder.step]]\n  name = \"publish\"\n  upload = {{ from = \"big.bin\" }}\n"
    );
    let pair = Pair::start(ctx, &remote::config("", &[("up", &steps)]))?;
    let mib = size as f64 / (1 << 20) as f64;
    let rates = alternate(s.long_repeats + 1, 1, |link| {
        let builder = format!("up-{}", link.name());
        let out = pair
            .master
            .ctl()
            .args(["--json", "force-build", &builder, "--wait"])
            .output()
            .context("cannot run bbctl")?;
        if !out.status.success() {
            bail!(
                "the upload build of {builder} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let build = build_id(&out.stdout)?;
        let detail = pair
            .master
            .ctl()
            .args(["--json", "build", &build.to_string()])
            .output()
            .context("cannot run bbctl")?;
        let step = harness::last_json(&detail.stdout)?["steps"][1].clone();
        let (Some(started), Some(finished)) = (
            step["started_at_ms"].as_u64(),
            step["finished_at_ms"].as_u64(),
        ) else {
            bail!("build {build} has no timed upload step: {step}");
        };
        let artifacts = pair.master.dir.join("artifacts").join(build.to_string());
        std::fs::remove_dir_all(&artifacts)
            .with_context(|| format!("cannot remove {}", artifacts.display()))?;
        Ok(mib / (finished.saturating_sub(started).max(1) as f64 / 1000.0))
    })?;
    push_pair(
        report,
        "tls-upload",
        &format!("upload of {}", size_label(size)),
        "MiB/s",
        &rates,
        Target::ratio_above(0.5),
    );
    for link in Link::BOTH {
        report.push(Row::measured(
            "tls-upload",
            &format!("worker peak RSS, {} (no target)", link.label()),
            "MB",
            &[kb_to_mb(pair.worker_peak_kb(link)?)],
        ));
    }
    let _ = std::fs::remove_file(pair.work_dir(Link::Unix).join("up-unix/big.bin"));
    let _ = std::fs::remove_file(pair.work_dir(Link::Tls).join("up-tls/big.bin"));
    Ok(())
}
