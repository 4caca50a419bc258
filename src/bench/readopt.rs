//! Re-adoption: a master killed with 100 builds running, restarted on the
//! same state dir; how long until every build is attached to its worker
//! again (issue 4: under 1 s after the workers reconnect).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Ctx;
use super::harness::{self, Master};
use super::report::{Row, Target};

/// Builds running when the master dies, and whether all are back.
fn running_state(master: &Master) -> Result<(usize, usize, bool)> {
    let status = master.status()?;
    let running = status["running"].as_array().map_or(0, |r| r.len());
    let attached = status["running"].as_array().map_or(0, |r| {
        r.iter()
            .filter(|b| b["waiting_for_worker"] == false)
            .count()
    });
    let connected = status["workers"][0]["connected"] == true;
    Ok((running, attached, connected))
}

/// The `readopt` scenario.
pub fn readopt(ctx: &Ctx, report: &mut super::report::Report) -> Result<()> {
    let n = if ctx.sizes.quick { 10 } else { 100 };
    let repeats = if ctx.sizes.quick { 1 } else { 3 };
    let mut to_serving = Vec::new();
    let mut to_connected = Vec::new();
    let mut to_adopted = Vec::new();
    for round in 0..repeats {
        let dir = ctx.scratch.dir(&format!("ra{round}"))?;
        let config = dir.join("master.toml");
        harness::write(
            &config,
            &format!(
                "[master]\nworker_grace = \"60s\"\n\n[[worker]]\nname = \"local-1\"\nlocal = true\nmax_builds = {n}\n\n\
                 [[builder]]\nname = \"long\"\nworkers = [\"local-1\"]\n  [[builder.step]]\n  name = \"s\"\n  command = [\"sleep\", \"600\"]\n"
            ),
        )?;
        let mut master = Master::start(&ctx.bins, &dir, Some(&config))?;
        master.wait_local_workers(1, Duration::from_secs(30))?;
        for _ in 0..n {
            let out = master
                .ctl()
                .args(["force-build", "long"])
                .output()
                .context("cannot run bbctl")?;
            if !out.status.success() {
                bail!(
                    "force-build failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        wait_for(Duration::from_secs(60), || {
            Ok(running_state(&master)? == (n, n, true))
        })?;

        master.kill9()?;
        let start = Instant::now();
        let mut master = Master::spawn(&ctx.bins, &dir, Some(&config))?;
        master.wait_serving(Duration::from_secs(60))?;
        to_serving.push(start.elapsed());
        wait_for(Duration::from_secs(30), || Ok(running_state(&master)?.2))?;
        let connected = start.elapsed();
        to_connected.push(connected);
        wait_for(Duration::from_secs(30), || {
            let (running, attached, _) = running_state(&master)?;
            Ok(running == n && attached == n)
        })?;
        to_adopted.push(start.elapsed() - connected);
        master.stop()?;
    }
    let ms = |v: &[Duration]| {
        v.iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>()
    };
    report.push(Row::measured(
        "readopt",
        &format!("kill -9 with {n} builds running: restart -> serving"),
        "ms",
        &ms(&to_serving),
    ));
    report.push(Row::measured(
        "readopt",
        "restart -> local worker reconnected",
        "ms",
        &ms(&to_connected),
    ));
    report.push(
        Row::measured(
            "readopt",
            &format!("worker reconnected -> all {n} builds re-adopted"),
            "ms",
            &ms(&to_adopted),
        )
        .target(Target::median_below(1000.0)),
    );
    Ok(())
}

/// Poll `cond` every 5 ms until it holds, or fail after `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > limit {
            bail!("condition not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
