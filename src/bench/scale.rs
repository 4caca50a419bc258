//! The master at scale: many builders, many (remote, never connecting)
//! workers, a long queue and a long history, written straight into the
//! database through the store API before the master starts. Measures
//! `status`, `builds --limit 50`, reload (wall time, the core's apply in
//! process, memory across many reloads) and the time to start serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

use super::Ctx;
use super::harness::{self, Master, kb_to_mb};
use super::report::{Report, Row, Target};
use super::sampling::{bbctl_version_ms, sample};
use super::stats::ms;
use crate::config::{self, Config};
use crate::daemon::core::{Core, LiveRequest, Record, Restored};
use crate::daemon::store::{SqliteStore, Store};

/// A state dir holding the scale database, and the two versions of its
/// config (the second changes the step of every tenth builder).
pub(super) struct Fixture {
    dir: PathBuf,
    config: PathBuf,
    text_a: String,
    text_b: String,
}

/// The scale config: `builders` builders, each served by one of `workers`
/// remote workers; with `v2`, every tenth builder's step differs.
fn big_config(builders: usize, workers: usize, v2: bool) -> String {
    let mut text = String::with_capacity(builders * 120);
    for j in 0..workers {
        text += &format!(
            "[[worker]]\nname = \"r{j:03}\"\nsecret = \"s-0123456789abcdef\"\nmax_builds = 1\n\n"
        );
    }
    for i in 0..builders {
        let argv = if v2 && i % 10 == 0 {
            "\"true\", \"v2\""
        } else {
            "\"true\""
        };
        text += &format!(
            "[[builder]]\nname = \"b{i:04}\"\nworkers = [\"r{:03}\"]\n  [[builder.step]]\n  name = \"s\"\n  command = [{argv}]\n\n",
            i % workers
        );
    }
    text
}

fn now_ms() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis() as u64)
}

fn parse(text: &str, dir: &Path) -> Result<Config> {
    config::parse_str(text, "bench.toml", dir)
        .map_err(|e| anyhow!("the bench config is invalid: {e}"))
}

impl Fixture {
    /// Write the configs, and `finished` finished builds then `queued`
    /// queued requests into a fresh database.
    fn create(ctx: &Ctx) -> Result<Fixture> {
        let s = &ctx.sizes;
        let start = Instant::now();
        let dir = ctx.scratch.dir("big")?;
        let text_a = big_config(s.builders, s.workers, false);
        let text_b = big_config(s.builders, s.workers, true);
        let config = dir.join("master.toml");
        harness::write(&config, &text_a)?;
        let parsed = parse(&text_a, &dir)?;
        let defs: Vec<Arc<_>> = parsed.builders.iter().cloned().map(Arc::new).collect();
        let mut store =
            SqliteStore::open(&dir.join("master.db")).context("cannot create the database")?;
        let at = now_ms()?;
        let batch = 2_000;
        let mut id = 0u64;
        while (id as usize) < s.finished {
            let mut records = Vec::with_capacity(batch * 5);
            for _ in 0..batch.min(s.finished - id as usize) {
                id += 1;
                let def = &defs[id as usize % defs.len()];
                records.extend(finished_build(id, def, at));
            }
            store
                .apply(&records.iter().collect::<Vec<_>>())
                .context("cannot fill the database")?;
        }
        let queued: Vec<Record> = (0..s.queued)
            .map(|i| Record::RequestQueued {
                request: id + 1 + i as u64,
                builder: defs[i % defs.len()].name.clone(),
                reason: None,
                properties: BTreeMap::new(),
                priority: 0,
                source: None,
                at_ms: at,
            })
            .collect();
        for chunk in queued.chunks(batch) {
            store
                .apply(&chunk.iter().collect::<Vec<_>>())
                .context("cannot fill the database")?;
        }
        eprintln!(
            "   scale fixture: {} builders, {} workers, {} queued, {} finished builds ({:.1} s)",
            s.builders,
            s.workers,
            s.queued,
            s.finished,
            start.elapsed().as_secs_f64()
        );
        Ok(Fixture {
            dir,
            config,
            text_a,
            text_b,
        })
    }

    fn start(&self, ctx: &Ctx) -> Result<Master> {
        Master::start(&ctx.bins, &self.dir, Some(&self.config))
    }

    /// The scale master with more command-line `args` (the web benchmark's
    /// `--http`).
    pub(super) fn start_args(&self, ctx: &Ctx, args: &[&str]) -> Result<Master> {
        Master::start_args(&ctx.bins, &self.dir, Some(&self.config), args)
    }
}

/// The records of one finished one-step build (its request id is `id` too).
fn finished_build(id: u64, def: &Arc<crate::config::BuilderDef>, at: u64) -> [Record; 5] {
    [
        Record::RequestQueued {
            request: id,
            builder: def.name.clone(),
            reason: None,
            properties: BTreeMap::new(),
            priority: 0,
            source: None,
            at_ms: at,
        },
        Record::BuildStarted {
            build: id,
            request: id,
            builder: def.name.clone(),
            worker: def.workers.first().cloned().unwrap_or_default(),
            generation: 1,
            config_hash: "bench".into(),
            definition: Arc::clone(def),
            at_ms: at,
        },
        Record::StepStarted {
            build: id,
            step: 0,
            name: "s".into(),
            at_ms: at,
        },
        Record::StepFinished {
            build: id,
            step: 0,
            result: crate::protocol::StepResult::Success,
            reason: None,
            at_ms: at + 1,
        },
        Record::BuildFinished {
            build: id,
            request: id,
            result: crate::protocol::BuildResult::Success,
            reason: None,
            at_ms: at + 1,
        },
    ]
}

/// The scale fixture, created at first use and shared by the scenarios.
pub(super) fn fixture(ctx: &Ctx) -> Result<&Fixture> {
    if let Some(f) = ctx.fixture.get() {
        return Ok(f);
    }
    let f = Fixture::create(ctx)?;
    Ok(ctx.fixture.get_or_init(|| f))
}

fn sizes_label(ctx: &Ctx) -> String {
    let s = &ctx.sizes;
    format!(
        "{} builders, {} workers, {} queued",
        s.builders, s.workers, s.queued
    )
}

/// `bbctl status` on the scale master (called by the `status` scenario with
/// its `bbctl --version` baseline), and the master's RSS at that scale.
pub(super) fn status_big(ctx: &Ctx, report: &mut Report, baseline: Option<f64>) -> Result<()> {
    let s = &ctx.sizes;
    let f = fixture(ctx)?;
    let master = f.start(ctx)?;
    let (queued, _) = master.live_requests()?;
    if queued as usize != s.queued {
        bail!(
            "the scale master has {queued} queued requests, not {}",
            s.queued
        );
    }
    let json = sample(s.warmup, s.repeats, || {
        Ok(master.ctl_timed(&["status", "--json"])?.0)
    })?;
    report.push(
        Row::measured(
            "status",
            &format!("bbctl status --json, {} (wall)", sizes_label(ctx)),
            "ms",
            &ms(&json),
        )
        .baseline(baseline)
        .target(Target::median_below(5.0)),
    );
    let human = sample(s.warmup, s.repeats, || Ok(master.ctl_timed(&["status"])?.0))?;
    report.push(
        Row::measured(
            "status",
            "bbctl status (human), same master (wall)",
            "ms",
            &ms(&human),
        )
        .baseline(baseline)
        .target(Target::median_below(5.0)),
    );
    report.push(
        Row::measured(
            "status",
            &format!("master RSS, {}", sizes_label(ctx)),
            "MB",
            &[kb_to_mb(master.rss_kb()?)],
        )
        .target(Target::median_below(50.0)),
    );
    Ok(())
}

/// `bbctl builds --limit 50` with the scale history.
pub fn builds(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let master = fixture(ctx)?.start(ctx)?;
    let times = sample(s.warmup, s.repeats, || {
        Ok(master.ctl_timed(&["builds", "--limit", "50", "--json"])?.0)
    })?;
    report.push(
        Row::measured(
            "builds",
            &format!(
                "bbctl builds --limit 50 --json, {} finished (wall)",
                s.finished
            ),
            "ms",
            &ms(&times),
        )
        .baseline(bbctl_version_ms(ctx)?)
        .target(Target::median_below(10.0)),
    );
    Ok(())
}

/// `bbctl reload` changing 10% of the builders on the scale master; the
/// core's apply in process with the same sizes; RSS across many reloads.
pub fn reload(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let f = fixture(ctx)?;
    let master = f.start(ctx)?;
    let mut flip = false;
    let mut reload_once = || -> Result<Duration> {
        flip = !flip;
        harness::write(&f.config, if flip { &f.text_b } else { &f.text_a })?;
        let (took, out) = master.ctl_timed(&["reload", "--json"])?;
        let answer: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reload --json printed no JSON")?;
        let changed = answer["builders_changed"].as_array().map_or(0, Vec::len);
        if answer["generation_after"] == answer["generation_before"] || changed == 0 {
            bail!("the reload changed nothing: {answer}");
        }
        Ok(took)
    };
    for _ in 0..s.warmup.max(2) {
        reload_once()?;
    }
    let before = master.rss_kb()?;
    let mut times = Vec::with_capacity(s.reloads);
    for _ in 0..s.reloads {
        times.push(reload_once()?);
    }
    let after = master.rss_kb()?;
    harness::write(&f.config, &f.text_a)?;
    report.push(
        Row::measured(
            "reload",
            &format!(
                "bbctl reload, 10% of builders changed, {} (wall)",
                sizes_label(ctx)
            ),
            "ms",
            &ms(&times),
        )
        .target(Target::median_below(50.0)),
    );
    report.push(
        Row::measured(
            "reload",
            &format!(
                "master RSS growth over {} reloads ({:.1} -> {:.1} MB)",
                s.reloads,
                kb_to_mb(before),
                kb_to_mb(after)
            ),
            "MB",
            &[kb_to_mb(after) - kb_to_mb(before)],
        )
        .target(Target::median_below(1.0)),
    );
    drop(master);
    core_apply(ctx, f, report)
}

/// The core's apply with the scale sizes, in process (no parse, no I/O).
fn core_apply(ctx: &Ctx, f: &Fixture, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let parse_times = sample(s.warmup, s.repeats, || {
        let start = Instant::now();
        parse(&f.text_b, &f.dir)?;
        Ok(start.elapsed())
    })?;
    let a = Arc::new(parse(&f.text_a, &f.dir)?);
    let b = Arc::new(parse(&f.text_b, &f.dir)?);
    let now = now_ms()?;
    let queued = (0..s.queued)
        .map(|i| LiveRequest {
            id: i as u64 + 1,
            builder: a.builders[i % a.builders.len()].name.clone(),
            reason: None,
            properties: BTreeMap::new(),
            build: None,
            ..LiveRequest::default()
        })
        .collect();
    let mut core = Core::new(
        Arc::clone(&a),
        Restored {
            queued,
            next_request: s.queued as u64 + 1,
            ..Restored::default()
        },
        now,
    );
    core.take_effects();
    let mut flip = false;
    let times = sample(s.warmup, s.repeats.max(20), || {
        flip = !flip;
        let config = Arc::clone(if flip { &b } else { &a });
        let start = Instant::now();
        let answer = core.reload(config, now, false);
        let took = start.elapsed();
        core.take_effects();
        if answer.builders_changed.is_empty() {
            bail!("the in-process reload changed nothing");
        }
        Ok(took)
    })?;
    report.push(
        Row::measured(
            "reload",
            &format!("core apply in process, {}", sizes_label(ctx)),
            "ms",
            &ms(&times),
        )
        .target(Target::median_below(10.0)),
    );
    report.push(Row::measured(
        "reload",
        &format!(
            "config parse + validate, {} builders (no target)",
            s.builders
        ),
        "ms",
        &ms(&parse_times),
    ));
    Ok(())
}

/// Master start to serving, with the scale queue and history in the database.
pub fn startup(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let s = &ctx.sizes;
    let f = fixture(ctx)?;
    let repeats = if s.quick { 3 } else { 10 };
    let times = sample(1, repeats, || {
        let start = Instant::now();
        let mut master = Master::spawn(&ctx.bins, &f.dir, Some(&f.config))?;
        master.wait_serving(Duration::from_secs(60))?;
        let took = start.elapsed();
        master.stop()?;
        Ok(took)
    })?;
    report.push(
        Row::measured(
            "startup",
            &format!(
                "master start -> serving, {} queued + {} finished in db",
                s.queued, s.finished
            ),
            "ms",
            &ms(&times),
        )
        .target(Target::median_below(1000.0)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_configs_are_valid_and_differ_in_a_tenth() {
        let dir = Path::new("/");
        let a = parse(&big_config(20, 3, false), dir).unwrap();
        let b = parse(&big_config(20, 3, true), dir).unwrap();
        let differ = a
            .builders
            .iter()
            .zip(&b.builders)
            .filter(|(x, y)| x != y)
            .count();
        assert_eq!(differ, 2);
    }
}
