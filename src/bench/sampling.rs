//! Repeated timing shared by the benchmarks: a leaf, so that the benchmark
//! files that use it need not import each other.

use std::process::Command;

use anyhow::Result;

use super::Ctx;
use super::harness::run_timed;
use super::stats::{median, ms};

/// Time `f` `warmup + repeats` times, keeping the last `repeats`.
pub(super) fn sample<T>(
    warmup: usize,
    repeats: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<Vec<T>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..repeats).map(|_| f()).collect()
}

/// The median wall time of `bbctl --version`: a process start and no work.
pub(super) fn bbctl_version_ms(ctx: &Ctx) -> Result<Option<f64>> {
    let v = sample(ctx.sizes.warmup, ctx.sizes.repeats, || {
        Ok(run_timed(Command::new(&ctx.bins.bbctl).arg("--version"))?.0)
    })?;
    Ok(median(&ms(&v)))
}
