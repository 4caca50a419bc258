//! `sendchange` to the first step of the build it starts (issue 15): a
//! branch scheduler with `tree_stable = "0s"` on a builder whose one step
//! prints the time it ran.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::harness::{Master, last_json};
use super::latency::{epoch_ns, local_config, master_view, parse_ns, start_local};
use super::report::{Report, Row, Target};
use super::sampling::sample;

/// The scheduler added to a one-builder config.
const SCHEDULER: &str = "[[scheduler]]\nname = \"on-main\"\nkind = \"branch\"\n\
builders = [\"D\"]\nbranches = [\"main\"]\ntree_stable = \"0s\"\n";

/// `bbctl sendchange` to the step's process running (wall, from just
/// before `bbctl` is spawned to the time the step printed), and the
/// master's own view: change stored -> step sent (1 ms resolution).
pub fn sendchange(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let config = local_config(1, 2, &[("D", &["date", "+%s%N"])]) + "\n" + SCHEDULER;
    let master = start_local(ctx, &config, 1)?;
    let mut revision = 0u64;
    let to_step = sample(s.warmup, s.repeats, || {
        revision += 1;
        change_to_step_ms(&master, revision)
    })?;
    report.push(
        Row::measured(
            "sendchange",
            "sendchange -> step process running (wall, tree_stable 0)",
            "ms",
            &to_step,
        )
        .target(Target::median_below(10.0)),
    );
    let (to_started, _) = master_view(&master.dir.join("master.db"), "D")?;
    report.push(
        Row::measured(
            "sendchange",
            "master: change stored -> step sent (1 ms resolution)",
            "ms",
            &to_started,
        )
        .target(Target::median_below(2.0)),
    );
    Ok(())
}

/// One change on `main`; waits (bounded) for the build it starts to end,
/// then reads the time its step printed.
fn change_to_step_ms(master: &Master, revision: u64) -> Result<f64> {
    let t0 = epoch_ns()?;
    let rev = format!("{revision:040x}");
    let (_, out) = master.ctl_timed(&[
        "--json",
        "sendchange",
        "--repository",
        "bench",
        "--branch",
        "main",
        "--revision",
        &rev,
    ])?;
    let change = last_json(&out.stdout)?["change_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("sendchange --json printed no change_id"))?;
    // The request exists once sendchange answered (same batch); ask for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let request = loop {
        let (_, out) = master.ctl_timed(&["--json", "changes", "-n", "1"])?;
        let v = last_json(&out.stdout)?;
        if v[0]["id"].as_u64() == Some(change)
            && let Some(r) = v[0]["requests"][0]["request_id"].as_u64()
        {
            break r;
        }
        if Instant::now() > deadline {
            bail!("change {change} started no request within 10 s: {v}");
        }
    };
    let (_, out) = master.ctl_timed(&["--json", "wait", &format!("r{request}")])?;
    let build = last_json(&out.stdout)?["build_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("wait --json printed no build_id"))?;
    let log = master.dir.join(format!("logs/{build}/0.log"));
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    Ok((parse_ns(&text)?.saturating_sub(t0)) as f64 / 1e6)
}
