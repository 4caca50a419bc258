//! Locks (issue 16): the core's dispatch pass, in process (no processes,
//! no I/O), with builders sharing a few exclusive locks and a deep queue,
//! every lock held and every other request waiting for one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};

use super::Ctx;
use super::report::{Report, Row, Target};
use super::sampling::sample;
use super::stats::ms;
use crate::config;
use crate::daemon::core::{Core, LiveRequest, Restored};

/// The clock the core is given: fixed, the core has none of its own.
const NOW_MS: u64 = 1_000_000;

/// Workers `w0..` (10 slots each), builders `b0..` with one step, builder
/// `i` on worker `i % workers` claiming lock `l{i % locks}` exclusively.
fn config_text(builders: usize, workers: usize, locks: usize) -> String {
    let mut text = String::with_capacity(builders * 160);
    for j in 0..workers {
        text += &format!("[[worker]]\nname = \"w{j}\"\nlocal = true\nmax_builds = 10\n\n");
    }
    for l in 0..locks {
        text += &format!("[[lock]]\nname = \"l{l}\"\n\n");
    }
    for i in 0..builders {
        text += &format!(
            "[[builder]]\nname = \"b{i}\"\nworkers = [\"w{}\"]\nlocks = [{{ name = \"l{}\", access = \"exclusive\" }}]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n\n",
            i % workers,
            i % locks
        );
    }
    text
}

/// One dispatch pass: the last worker connects to a core whose locks are
/// all held by the other workers' builds, so the pass walks every queue
/// and finds each head blocked by a lock. The worker leaves and comes back
/// between samples (untimed).
pub(super) fn locks(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let (builders, workers, queued) = (s.builders, s.workers, s.queued);
    let locks = (builders / 20).max(1);
    let cfg = config::parse_str(
        &config_text(builders, workers, locks),
        "bench.toml",
        Path::new("/"),
    )
    .map_err(|e| anyhow!("the locks bench config is invalid: {e}"))?;
    let cfg = Arc::new(cfg);
    let queue = (0..queued)
        .map(|i| LiveRequest {
            id: i as u64 + 1,
            builder: format!("b{}", i % builders),
            reason: None,
            properties: BTreeMap::new(),
            build: None,
            ..LiveRequest::default()
        })
        .collect();
    let mut core = Core::new(
        cfg,
        Restored {
            queued: queue,
            next_request: queued as u64 + 1,
            ..Restored::default()
        },
        NOW_MS,
    );
    for j in 0..workers - 1 {
        core.worker_connected(&format!("w{j}"), j as u64 + 1, &[], NOW_MS)
            .map_err(|e| anyhow!("w{j} could not connect: {e}"))?;
    }
    core.take_effects();
    let held = core.running_builds().count();
    if held != locks {
        bail!("{held} builds run, not one per lock ({locks})");
    }
    let last = format!("w{}", workers - 1);
    let mut link = workers as u64;
    let times = sample(s.warmup, s.repeats.max(20), || {
        link += 1;
        let start = Instant::now();
        core.worker_connected(&last, link, &[], NOW_MS)
            .map_err(|e| anyhow!("{last} could not connect: {e}"))?;
        let took = start.elapsed();
        if core.running_builds().count() != locks || core.lock_waiters(NOW_MS).is_empty() {
            bail!("the pass did not leave every lock held and requests waiting");
        }
        core.worker_lost(link, NOW_MS);
        core.take_effects();
        Ok(took)
    })?;
    report.push(
        Row::measured(
            "locks",
            &format!(
                "core dispatch pass, {builders} builders sharing {locks} locks, {queued} queued, all locks held"
            ),
            "ms",
            &ms(&times),
        )
        .target(Target::median_below(5.0)),
    );
    Ok(())
}
