//! Random configs for the simulator, the `master.toml` text they come from,
//! broken variants of it, and a one-line description for the history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::config::{
    BranchFilter, LockAccess, LockClaim, LockDef, LockScope, SchedulerDef, SchedulerKind, Secret,
    StepAction, StepDef, WorkerChoice,
};

pub(super) fn random_config(rng: &mut Rng, current: Option<&Config>) -> Arc<Config> {
    let mut workers: Vec<WorkerDef> = Vec::new();
    for name in WORKERS {
        if rng.chance(80) {
            workers.push(WorkerDef {
                name: name.to_string(),
                local: false,
                max_builds: 1 + rng.below(3) as u32,
                secret: Some(Secret(
                    if rng.chance(10) {
                        "new-0123456789abcdef"
                    } else {
                        "s-0123456789abcdef"
                    }
                    .into(),
                )),
                user: None,
                tags: ["a", "b"]
                    .iter()
                    .filter(|_| rng.chance(40))
                    .map(|t| t.to_string())
                    .collect(),
            });
        }
    }
    if workers.is_empty() {
        workers.push(WorkerDef {
            name: "w0".into(),
            local: false,
            max_builds: 1,
            secret: Some(Secret("s-0123456789abcdef".into())),
            user: None,
            tags: Vec::new(),
        });
    }
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    // Locks: each is taken by builds or by steps (never both, as
    // validation demands), master- or worker-scoped, small capacities.
    let mut locks: Vec<LockDef> = Vec::new();
    let mut for_steps: BTreeSet<String> = BTreeSet::new();
    for name in ["l0", "l1", "l2"] {
        if !rng.chance(60) {
            continue;
        }
        let scope = if rng.chance(35) {
            LockScope::Worker
        } else {
            LockScope::Master
        };
        let mut worker_max = BTreeMap::new();
        if scope == LockScope::Worker && rng.chance(30) {
            worker_max.insert(
                names[rng.below(names.len())].clone(),
                1 + rng.below(3) as u32,
            );
        }
        if rng.chance(40) {
            for_steps.insert(name.to_string());
        }
        locks.push(LockDef {
            name: name.to_string(),
            scope,
            max: 1 + rng.below(3) as u32,
            worker_max,
        });
    }
    let claim = |rng: &mut Rng, l: &LockDef| {
        let smallest = l
            .worker_max
            .values()
            .copied()
            .chain([l.max])
            .min()
            .unwrap_or(1);
        if rng.chance(40) {
            LockClaim {
                name: l.name.clone(),
                access: LockAccess::Exclusive,
                weight: 0,
            }
        } else {
            LockClaim {
                name: l.name.clone(),
                access: LockAccess::Counting,
                weight: 1 + rng.below(smallest as usize) as u32,
            }
        }
    };
    let mut builders: Vec<BuilderDef> = Vec::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for name in BUILDERS {
        if !rng.chance(70) || taken.contains(name) {
            continue;
        }
        let mut listed: Vec<String> = names.iter().filter(|_| rng.chance(60)).cloned().collect();
        if listed.is_empty() {
            listed.push(names[rng.below(names.len())].clone());
        }
        // Sometimes tags: those of one listed worker (so one is eligible),
        // and sometimes no list at all (any worker with the tags).
        let mut worker_tags = Vec::new();
        if rng.chance(30) {
            let one = &listed[rng.below(listed.len())];
            let tags = &workers
                .iter()
                .find(|w| w.name == *one)
                .expect("listed")
                .tags;
            worker_tags = tags.iter().filter(|_| rng.chance(70)).cloned().collect();
            if rng.chance(40) {
                listed.clear();
            }
        }
        if listed.is_empty() && worker_tags.is_empty() {
            listed.push(names[rng.below(names.len())].clone());
        }
        let build_locks: Vec<LockClaim> = locks
            .iter()
            .filter(|l| !for_steps.contains(&l.name))
            .fold(Vec::new(), |mut out, l| {
                if rng.chance(50) {
                    out.push(claim(rng, l));
                }
                out
            });
        // Sometimes a rename: this builder was one of the current ones.
        let mut previous_names = Vec::new();
        if let Some(cur) = current
            && rng.chance(15)
            && let Some(old) = rng.pick(&cur.builders)
            && old.name != name
            && !taken.contains(&old.name)
            && !BUILDERS
                .iter()
                .any(|b| *b == old.name && builders.iter().any(|x| x.name == *b))
        {
            previous_names.push(old.name.clone());
            taken.insert(old.name.clone());
        }
        taken.insert(name.to_string());
        builders.push(BuilderDef {
            name: name.to_string(),
            previous_names,
            workers: listed,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            steps: (0..1 + rng.below(3))
                .map(|i| StepDef {
                    name: format!("s{i}"),
                    action: StepAction::Shell(format!("v{}", rng.below(2))),
                    timeout: rng
                        .chance(30)
                        .then(|| std::time::Duration::from_millis(1000 + rng.below(60_000) as u64)),
                    env: BTreeMap::new(),
                    locks: locks.iter().filter(|l| for_steps.contains(&l.name)).fold(
                        Vec::new(),
                        |mut out, l| {
                            if rng.chance(40) {
                                out.push(claim(rng, l));
                            }
                            out
                        },
                    ),
                })
                .collect(),
            collapse: rng.chance(25),
            retry: !rng.chance(25),
            force_properties: Vec::new(),
            locks: build_locks,
            worker_tags,
            worker_choice: match rng.below(3) {
                0 => WorkerChoice::LeastBusy,
                1 => WorkerChoice::InOrder,
                _ => WorkerChoice::Random,
            },
            max_running: rng.chance(25).then(|| 1 + rng.below(2) as u32),
        });
    }
    // A builder's previous name must not be another builder's current name.
    let current_names: BTreeSet<String> = builders.iter().map(|b| b.name.clone()).collect();
    for b in &mut builders {
        b.previous_names.retain(|p| !current_names.contains(p));
    }
    let mut schedulers = random_schedulers(rng, current, &builders);
    schedulers.extend(super::timers::random_schedulers(
        rng,
        &mut builders,
        current,
    ));
    // A waiting trigger step that could never end is refused by
    // validation: such a step does not wait here.
    for f in crate::config::deadlocks::trigger_deadlocks(&builders, &schedulers, &locks, &workers) {
        if !f.refused {
            continue;
        }
        let step = builders
            .iter_mut()
            .find(|b| b.name == f.builder)
            .and_then(|b| b.steps.get_mut(f.step));
        if let Some(StepDef {
            action: StepAction::Trigger(spec),
            ..
        }) = step
        {
            spec.wait = false;
        }
    }
    let hash = format!("{:x}", rng.next());
    Arc::new(Config {
        master: Default::default(),
        workers,
        builders,
        schedulers,
        pollers: vec![],
        origin: "sim".into(),
        hash,
        warnings: vec![],
        locks,
        irc: None,
    })
}

/// Branch schedulers over the builders: filters on repository, branch and
/// files, tree-stable timers from 0 to a minute, and now and then a
/// rename of a current scheduler.
fn random_schedulers(
    rng: &mut Rng,
    current: Option<&Config>,
    builders: &[BuilderDef],
) -> Vec<SchedulerDef> {
    let mut out: Vec<SchedulerDef> = Vec::new();
    if builders.is_empty() {
        return out;
    }
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for name in SCHEDULERS {
        if !rng.chance(60) {
            continue;
        }
        let mut listed: Vec<String> = builders
            .iter()
            .filter(|_| rng.chance(40))
            .map(|b| b.name.clone())
            .collect();
        if listed.is_empty() {
            listed.push(builders[rng.below(builders.len())].name.clone());
        }
        let mut previous_names = Vec::new();
        if let Some(cur) = current
            && rng.chance(15)
            && let Some(old) = rng.pick(&cur.schedulers)
            && old.name != name
            && old.name.starts_with('s')
            && !claimed.contains(&old.name)
        {
            previous_names.push(old.name.clone());
            claimed.insert(old.name.clone());
        }
        let branches = match rng.below(3) {
            0 => vec![],
            1 => vec!["main".to_string()],
            _ => vec!["main".to_string(), "rel/*".to_string()],
        };
        let files = if rng.chance(50) {
            vec![]
        } else {
            vec!["src/**".to_string()]
        };
        let tree_stable = std::time::Duration::from_millis(match rng.below(4) {
            0 => 0,
            1 => 500,
            2 => 5_000,
            _ => 60_000,
        });
        out.push(SchedulerDef {
            name: name.to_string(),
            previous_names,
            builders: listed,
            kind: SchedulerKind::Branch(BranchFilter {
                repository: rng.chance(30).then(|| "repo".to_string()),
                branches,
                files,
                tree_stable,
            }),
        });
    }
    // A previous name must not be any scheduler's current name.
    let names: BTreeSet<String> = out.iter().map(|s| s.name.clone()).collect();
    for s in &mut out {
        s.previous_names.retain(|p| !names.contains(p));
    }
    out
}

/// The config as a `master.toml` would say it.
pub(super) fn to_toml(config: &Config) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let claims = |v: &[LockClaim]| {
        v.iter()
            .map(|c| match c.access {
                LockAccess::Exclusive => {
                    format!("{{ name = {:?}, access = \"exclusive\" }}", c.name)
                }
                LockAccess::Counting => format!(
                    "{{ name = {:?}, access = \"counting\", weight = {} }}",
                    c.name, c.weight
                ),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for w in &config.workers {
        let secret = w.secret.as_ref().map(|s| s.0.as_str()).unwrap_or("s");
        out.push_str(&format!(
            "[[worker]]\nname = {:?}\nmax_builds = {}\nsecret = {secret:?}\ntags = [{}]\n\n",
            w.name,
            w.max_builds,
            list(&w.tags)
        ));
    }
    for l in &config.locks {
        let scope = match l.scope {
            LockScope::Master => "master",
            LockScope::Worker => "worker",
        };
        out.push_str(&format!(
            "[[lock]]\nname = {:?}\nscope = {scope:?}\nmax = {}\n",
            l.name, l.max
        ));
        if !l.worker_max.is_empty() {
            let m: Vec<String> = l
                .worker_max
                .iter()
                .map(|(w, n)| format!("{w} = {n}"))
                .collect();
            out.push_str(&format!("worker_max = {{ {} }}\n", m.join(", ")));
        }
        out.push('\n');
    }
    for b in &config.builders {
        out.push_str(&format!("[[builder]]\nname = {:?}\n", b.name));
        if !b.previous_names.is_empty() {
            out.push_str(&format!("previous_names = [{}]\n", list(&b.previous_names)));
        }
        if !b.workers.is_empty() {
            out.push_str(&format!("workers = [{}]\n", list(&b.workers)));
        }
        if !b.worker_tags.is_empty() || b.workers.is_empty() {
            out.push_str(&format!("worker_tags = [{}]\n", list(&b.worker_tags)));
        }
        let choice = match b.worker_choice {
            WorkerChoice::LeastBusy => "least_busy",
            WorkerChoice::InOrder => "in_order",
            WorkerChoice::Random => "random",
        };
        out.push_str(&format!("worker_choice = {choice:?}\n"));
        if let Some(m) = b.max_running {
            out.push_str(&format!("max_running = {m}\n"));
        }
        if !b.locks.is_empty() {
            out.push_str(&format!("locks = [{}]\n", claims(&b.locks)));
        }
        if b.collapse {
            out.push_str("collapse = true\n");
        }
        if !b.retry {
            out.push_str("retry = false\n");
        }
        for step in &b.steps {
            out.push_str(&format!("  [[builder.step]]\n  name = {:?}\n", step.name));
            match &step.action {
                StepAction::Shell(line) => out.push_str(&format!("  shell = {line:?}\n")),
                StepAction::Trigger(t) => out.push_str(&super::timers::trigger_toml(t)),
                _ => unreachable!("the simulator makes shell and trigger steps only"),
            }
            if let Some(t) = step.timeout {
                out.push_str(&format!("  timeout = \"{}ms\"\n", t.as_millis()));
            }
            if !step.locks.is_empty() {
                out.push_str(&format!("  locks = [{}]\n", claims(&step.locks)));
            }
        }
        out.push('\n');
    }
    for s in &config.schedulers {
        let SchedulerKind::Branch(f) = &s.kind else {
            continue;
        };
        out.push_str(&format!(
            "[[scheduler]]\nname = {:?}\nkind = \"branch\"\nbuilders = [{}]\ntree_stable = \"{}ms\"\n",
            s.name,
            list(&s.builders),
            f.tree_stable.as_millis()
        ));
        if !s.previous_names.is_empty() {
            out.push_str(&format!("previous_names = [{}]\n", list(&s.previous_names)));
        }
        if let Some(r) = &f.repository {
            out.push_str(&format!("repository = {r:?}\n"));
        }
        if !f.branches.is_empty() {
            out.push_str(&format!("branches = [{}]\n", list(&f.branches)));
        }
        if !f.files.is_empty() {
            out.push_str(&format!("files = [{}]\n", list(&f.files)));
        }
        out.push('\n');
    }
    out.push_str(&super::timers::schedulers_toml(config));
    out
}

/// Break a config in one of the ways people do.
pub(super) fn corrupt(rng: &mut Rng, text: &str) -> String {
    match rng.below(4) {
        0 => format!(
            "{text}[[builder]]\nname = \"x\"\nworkers = [\"nobody\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n"
        ),
        1 => format!("{text}[[worker]]\nname = \"w9\"\nmax_builds = 0\nsecret = \"s\"\n"),
        2 => format!("{text}[[worker]]\nnmae = \"typo\"\n"),
        _ => format!("{text}[[builder]\nname = \"unclosed\n"),
    }
}

pub(super) fn describe(config: &Config) -> String {
    let workers: Vec<String> = config
        .workers
        .iter()
        .map(|w| format!("{}:{}{:?}", w.name, w.max_builds, w.tags))
        .collect();
    let locks: Vec<String> = config
        .locks
        .iter()
        .map(|l| format!("{}:{:?}:{}{:?}", l.name, l.scope, l.max, l.worker_max))
        .collect();
    let builders: Vec<String> = config
        .builders
        .iter()
        .map(|b| {
            let renamed = if b.previous_names.is_empty() {
                String::new()
            } else {
                format!("(was {})", b.previous_names.join(","))
            };
            let tags = if b.worker_tags.is_empty() {
                String::new()
            } else {
                format!("tags{:?}", b.worker_tags)
            };
            let locks: Vec<String> = b
                .locks
                .iter()
                .map(|c| format!("{}:{:?}{}", c.name, c.access, c.weight))
                .collect();
            let step_locks: Vec<String> = b
                .steps
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.locks
                        .iter()
                        .map(move |c| format!("s{i}:{}:{:?}{}", c.name, c.access, c.weight))
                })
                .collect();
            format!(
                "{}{renamed}[{}]{tags}x{}{}{}{}",
                b.name,
                b.workers.join(","),
                b.steps.len(),
                if locks.is_empty() {
                    String::new()
                } else {
                    format!(" locks{locks:?}")
                },
                if step_locks.is_empty() {
                    String::new()
                } else {
                    format!(" steplocks{step_locks:?}")
                },
                b.max_running
                    .map(|m| format!(" max_running={m}"))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let schedulers: Vec<String> = config
        .schedulers
        .iter()
        .map(|s| {
            let SchedulerKind::Branch(f) = &s.kind else {
                return format!("{}:{}[{}]", s.name, s.kind.name(), s.builders.join(","));
            };
            let renamed = if s.previous_names.is_empty() {
                String::new()
            } else {
                format!("(was {})", s.previous_names.join(","))
            };
            format!(
                "{}{renamed}[{}]{:?}{:?}{:?}/{}ms",
                s.name,
                s.builders.join(","),
                f.repository,
                f.branches,
                f.files,
                f.tree_stable.as_millis()
            )
        })
        .collect();
    format!(
        "workers {} locks {} builders {} schedulers {}",
        workers.join(" "),
        locks.join(" "),
        builders.join(" "),
        schedulers.join(" ")
    )
}
