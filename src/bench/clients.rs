//! Many clients: concurrent `bbctl status` loops while builds flow, and
//! the dispatch latency under that load against the idle figure.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::Ctx;
use super::latency::{local_config, start_local};
use super::report::{Report, Row, Target};
use super::sampling::sample;
use super::stats::{median, ms};

/// `clients` loops of `bbctl status --json` for `clients_secs`, while one
/// loop runs `force-build --wait` of a `true` build.
pub fn many_clients(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let master = start_local(ctx, &local_config(2, 2, &[("B", &["true"])]), 2)?;
    let dispatch =
        || -> Result<Duration> { Ok(master.ctl_timed(&["force-build", "B", "--wait"])?.0) };
    let idle = sample(s.warmup, s.repeats, dispatch)?;

    let stop = AtomicBool::new(false);
    let status_times = Mutex::new(Vec::new());
    let mut loaded = Vec::new();
    let window = Duration::from_secs_f64(s.clients_secs);
    std::thread::scope(|scope| -> Result<()> {
        let loops: Vec<_> = (0..s.clients)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        mine.push(master.ctl_timed(&["status", "--json"])?.0);
                    }
                    status_times
                        .lock()
                        .map_err(|_| anyhow!("a status loop panicked"))?
                        .extend(mine);
                    Ok(())
                })
            })
            .collect();
        let start = Instant::now();
        let mut result = Ok(());
        while start.elapsed() < window {
            match dispatch() {
                Ok(d) => loaded.push(d),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for l in loops {
            l.join().map_err(|_| anyhow!("a status loop panicked"))??;
        }
        result
    })?;
    let status_times = status_times
        .into_inner()
        .map_err(|_| anyhow!("a status loop panicked"))?;
    report.push(
        Row::measured(
            "clients",
            &format!(
                "bbctl status --json under {} concurrent loops (wall)",
                s.clients
            ),
            "ms",
            &ms(&status_times),
        )
        .target(Target::p99_below(20.0)),
    );
    report.push(
        Row::measured(
            "clients",
            "force-build --wait under that load (baseline: idle)",
            "ms",
            &ms(&loaded),
        )
        .baseline(median(&ms(&idle)))
        .target(Target::ratio_below(2.0)),
    );
    Ok(())
}
