//! Unit tests of the core: no I/O, no clock, no runtime. This file holds
//! what the topics share (a config from a table, a busy core, effect
//! filters); the tests live by topic: `dispatch.rs`, `requests.rs` (force
//! refusals, cancel, stop, drain), `workers.rs` (connections, reports,
//! lost workers, retries), `restore.rs` (a master restart), and the reload
//! contract of `docs/reload.md` row by row in `reload_builders.rs`,
//! `reload_workers.rs` and `reload_generations.rs`.

mod changes;
mod dispatch;
mod lock_model;
mod locks;
mod reload_builders;
mod reload_generations;
mod reload_workers;
mod requests;
mod restore;
mod schedulers;
mod timers;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{Secret, StepAction, StepDef};
use crate::protocol::{BuildResult, RunningStep, StepEnd};

/// Build a config: workers as (name, max_builds), builders as (name,
/// workers, number of steps).
pub(super) fn config(workers: &[(&str, u32)], builders: &[(&str, &[&str], usize)]) -> Arc<Config> {
    Arc::new(Config {
        master: Default::default(),
        workers: workers
            .iter()
            .map(|(name, max)| WorkerDef {
                name: name.to_string(),
                local: false,
                max_builds: *max,
                secret: Some(Secret("s".into())),
                user: None,
                tags: Vec::new(),
            })
            .collect(),
        builders: builders
            .iter()
            .map(|(name, workers, steps)| BuilderDef {
                name: name.to_string(),
                previous_names: vec![],
                workers: workers.iter().map(|w| w.to_string()).collect(),
                env: BTreeMap::new(),
                pass_env: Vec::new(),
                steps: (0..*steps)
                    .map(|i| StepDef {
                        name: format!("s{i}"),
                        action: StepAction::Shell(format!("step {i}")),
                        timeout: None,
                        env: BTreeMap::new(),
                        locks: Vec::new(),
                    })
                    .collect(),
                collapse: false,
                retry: true,
                force_properties: Vec::new(),
                ..BuilderDef::default()
            })
            .collect(),
        schedulers: vec![],
        pollers: vec![],
        origin: "test".into(),
        warnings: vec![],
        locks: vec![],
        irc: None,
        hash: format!("{workers:?}{builders:?}"),
    })
}

fn started_steps(effects: &[Effect]) -> Vec<(LinkId, u64, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToWorker {
                link,
                cmd: WorkerCmd::Start(a),
            } => Some((*link, a.build, a.step)),
            _ => None,
        })
        .collect()
}

fn finished(effects: &[Effect]) -> Vec<(u64, BuildResult, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(Record::BuildFinished {
                build,
                result,
                reason,
                ..
            }) => Some((*build, *result, reason.clone())),
            _ => None,
        })
        .collect()
}

fn force(core: &mut Core, builder: &str) -> RequestId {
    core.force_build(builder, None, BTreeMap::new(), 0).unwrap()
}

const OK: StepEnd = StepEnd::Exited { code: 0 };

fn held(build: u64, step: u32) -> RunningStep {
    RunningStep { build, step }
}

/// A core with worker `w` (2 slots) connected on link 1 and builder `b`
/// (one step): builds 1 and 2 run, request 3 waits in the queue.
fn busy_core() -> Core {
    let mut core = Core::new(
        config(&[("w", 2)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    for _ in 0..3 {
        core.force_build("b", None, BTreeMap::new(), 0).unwrap();
    }
    core.take_effects();
    core
}

fn with_steps(cfg: &Config, builder: &str, steps: usize) -> Arc<Config> {
    let mut cfg = cfg.clone();
    let b = cfg.builders.iter_mut().find(|b| b.name == builder).unwrap();
    let template = b.steps[0].clone();
    b.steps = (0..steps)
        .map(|i| StepDef {
            name: format!("new{i}"),
            ..template.clone()
        })
        .collect();
    cfg.hash.push('+');
    Arc::new(cfg)
}
