//! Build events to notification lines, without I/O.
//!
//! The master's event stream says a build started, a step failed, a build
//! finished; this module remembers enough (each running build's builder,
//! start time and first failing step; each builder's last result) to say
//! it in one line, and names the kinds of notification that line answers
//! (`failure`, `broken`, ...), so that a channel listening to several of
//! them still hears about each build once.

use std::collections::HashMap;

use crate::protocol::{BuildId, BuildResult, Event, EventKind, SourceStamp};

use super::line::clean;

/// One notification: which kinds it answers and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The notify words it matches (`finished`, `failure`, `fixed`, ...).
    pub kinds: Vec<&'static str>,
    /// The line.
    pub text: String,
    /// A short form for merged summaries (`hello #12 failure`).
    pub short: String,
}

impl Note {
    /// Does a channel listening to `notify` want it?
    pub fn wanted_by(&self, notify: &[String]) -> bool {
        self.kinds.iter().any(|k| notify.iter().any(|n| n == k))
    }
}

#[derive(Debug, Clone)]
struct Running {
    builder: String,
    started_ms: u64,
    failing_step: Option<String>,
    steps: HashMap<u32, String>,
    source: Option<SourceStamp>,
}

/// What a finished build was (for `watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The build.
    pub build: BuildId,
    /// Its line.
    pub text: String,
}

/// Remembers what the notifications need (see the module comment).
#[derive(Debug, Default)]
pub struct Tracker {
    running: HashMap<BuildId, Running>,
    last: HashMap<String, BuildResult>,
}

impl Tracker {
    /// Seeds a builder's last result (from the history, at start).
    pub fn seed(&mut self, builder: &str, result: BuildResult) {
        self.last.entry(builder.to_owned()).or_insert(result);
    }

    /// The notification for one event, if it makes one; and, for a
    /// finished build, the line for its watchers.
    pub fn on_event(&mut self, event: &Event) -> (Option<Note>, Option<Finished>) {
        match &event.kind {
            EventKind::BuildStarted {
                build,
                builder,
                worker,
                source,
                ..
            } => {
                self.running.insert(
                    *build,
                    Running {
                        builder: builder.clone(),
                        started_ms: event.at_ms,
                        failing_step: None,
                        steps: HashMap::new(),
                        source: source.clone(),
                    },
                );
                let mut text = format!("{builder} #{build} started on {worker}");
                if let Some(stamp) = source {
                    text.push_str(&format!(" ({})", revision_words(stamp)));
                }
                let text = clean(&text);
                let short = clean(&format!("{builder} #{build} started"));
                (
                    Some(Note {
                        kinds: vec!["started"],
                        text,
                        short,
                    }),
                    None,
                )
            }
            EventKind::StepStarted { build, step, name } => {
                if let Some(r) = self.running.get_mut(build) {
                    r.steps.insert(*step, name.clone());
                }
                (None, None)
            }
            EventKind::StepFinished {
                build,
                step,
                result,
                ..
            } => {
                if let Some(r) = self.running.get_mut(build)
                    && matches!(result, BuildResult::Failure | BuildResult::Exception)
                    && r.failing_step.is_none()
                {
                    r.failing_step = Some(
                        r.steps
                            .get(step)
                            .cloned()
                            .unwrap_or_else(|| format!("step {step}")),
                    );
                }
                (None, None)
            }
            EventKind::BuildFinished {
                build,
                result,
                reason,
                source,
                ..
            } => {
                let running = self.running.remove(build);
                let builder = running
                    .as_ref()
                    .map(|r| r.builder.clone())
                    .unwrap_or_else(|| "build".into());
                let mut kinds = vec!["finished"];
                match result {
                    BuildResult::Success => kinds.push("success"),
                    BuildResult::Failure => kinds.push("failure"),
                    BuildResult::Exception => kinds.push("exception"),
                    BuildResult::Cancelled => kinds.push("cancelled"),
                    BuildResult::Retry | BuildResult::Skipped => {}
                }
                if running.is_some()
                    && matches!(result, BuildResult::Success | BuildResult::Failure)
                {
                    let previous = self.last.insert(builder.clone(), *result);
                    match (previous, result) {
                        (
                            Some(BuildResult::Failure | BuildResult::Exception),
                            BuildResult::Success,
                        ) => kinds.push("fixed"),
                        (Some(BuildResult::Success), BuildResult::Failure) => kinds.push("broken"),
                        _ => {}
                    }
                }
                let mut text = format!("{builder} #{build} {}", result.as_str());
                if kinds.contains(&"fixed") {
                    text.push_str(" (fixed)");
                } else if kinds.contains(&"broken") {
                    text.push_str(" (broken: it succeeded last time)");
                }
                if let Some(r) = &running {
                    let ms = event.at_ms.saturating_sub(r.started_ms);
                    text.push_str(&format!(" in {}", duration(ms)));
                }
                let stamp = source
                    .as_ref()
                    .or_else(|| running.as_ref().and_then(|r| r.source.as_ref()));
                if let Some(stamp) = stamp {
                    text.push_str(&format!(", {}", revision_words(stamp)));
                }
                if let Some(step) = running.as_ref().and_then(|r| r.failing_step.as_ref()) {
                    text.push_str(&format!("; step `{step}` failed"));
                }
                if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                    text.push_str(&format!(": {reason}"));
                }
                let text = clean(&text);
                let short = clean(&format!("{builder} #{build} {}", result.as_str()));
                (
                    Some(Note {
                        kinds,
                        text: text.clone(),
                        short,
                    }),
                    Some(Finished {
                        build: *build,
                        text,
                    }),
                )
            }
            EventKind::WorkerLost { worker, reason } => {
                let text = clean(&format!("worker {worker} lost: {reason}"));
                (
                    Some(Note {
                        kinds: vec!["worker_lost"],
                        short: clean(&format!("worker {worker} lost")),
                        text,
                    }),
                    None,
                )
            }
            _ => (None, None),
        }
    }
}

/// How many characters of a revision a notification shows (as `git log
/// --oneline` would, a little longer).
pub const SHORT_REVISION: usize = 12;

/// `revision 0123456789ab on main`, or `branch main` when the build takes
/// the branch's head.
pub fn revision_words(stamp: &SourceStamp) -> String {
    match &stamp.revision {
        Some(rev) => {
            let short: String = rev.chars().take(SHORT_REVISION).collect();
            format!("revision {short} on {}", stamp.branch)
        }
        None => format!("branch {}", stamp.branch),
    }
}

/// `850 ms`, `12.3 s`, `4 min 5 s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_ms: u64, kind: EventKind) -> Event {
        Event {
            at_ms,
            generation: 1,
            kind,
        }
    }

    fn run(t: &mut Tracker, build: BuildId, result: BuildResult, at: u64) -> Note {
        t.on_event(&ev(
            at,
            EventKind::BuildStarted {
                build,
                request: build,
                builder: "hello".into(),
                worker: "w1".into(),
                source: None,
            },
        ));
        t.on_event(&ev(
            at,
            EventKind::StepStarted {
                build,
                step: 0,
                name: "compile\r\nQUIT".into(),
            },
        ));
        t.on_event(&ev(
            at + 10,
            EventKind::StepFinished {
                build,
                step: 0,
                result,
                reason: None,
            },
        ));
        t.on_event(&ev(
            at + 1500,
            EventKind::BuildFinished {
                build,
                request: build,
                result,
                reason: None,
                source: None,
            },
        ))
        .0
        .unwrap()
    }

    #[test]
    fn failure_fixed_broken_with_duration_and_the_failing_step() {
        let mut t = Tracker::default();
        let n = run(&mut t, 1, BuildResult::Success, 0);
        assert_eq!(n.kinds, vec!["finished", "success"]);
        let n = run(&mut t, 2, BuildResult::Failure, 5000);
        assert_eq!(n.kinds, vec!["finished", "failure", "broken"]);
        assert_eq!(
            n.text,
            "hello #2 failure (broken: it succeeded last time) in 1.5 s; step `compile  QUIT` failed"
        );
        let n = run(&mut t, 3, BuildResult::Success, 9000);
        assert_eq!(n.kinds, vec!["finished", "success", "fixed"]);
        assert!(n.wanted_by(&["fixed".into()]));
        assert!(!n.wanted_by(&["failure".into()]));
    }

    #[test]
    fn a_seeded_last_result_makes_the_first_success_a_fix() {
        let mut t = Tracker::default();
        t.seed("hello", BuildResult::Failure);
        let n = run(&mut t, 1, BuildResult::Success, 0);
        assert!(n.kinds.contains(&"fixed"));
    }

    #[test]
    fn the_revision_is_named_short_when_the_build_has_a_source_stamp() {
        let mut t = Tracker::default();
        let stamp = SourceStamp {
            repository: "https://git.example/hello.git".into(),
            branch: "main".into(),
            revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
            changes: vec![4],
        };
        let (started, _) = t.on_event(&ev(
            0,
            EventKind::BuildStarted {
                build: 3,
                request: 3,
                builder: "hello".into(),
                worker: "w1".into(),
                source: Some(stamp.clone()),
            },
        ));
        assert_eq!(
            started.unwrap().text,
            "hello #3 started on w1 (revision 0123456789ab on main)"
        );
        let (note, finished) = t.on_event(&ev(
            2000,
            EventKind::BuildFinished {
                build: 3,
                request: 3,
                result: BuildResult::Failure,
                reason: None,
                source: Some(stamp.clone()),
            },
        ));
        assert_eq!(
            note.unwrap().text,
            "hello #3 failure in 2.0 s, revision 0123456789ab on main"
        );
        assert!(finished.unwrap().text.contains("0123456789ab on main"));
        // A stamp without a revision (the branch's head), known from the
        // start only (an event of an older master has none at the end).
        let head = SourceStamp {
            revision: None,
            ..stamp
        };
        t.on_event(&ev(
            0,
            EventKind::BuildStarted {
                build: 4,
                request: 4,
                builder: "hello".into(),
                worker: "w1".into(),
                source: Some(head),
            },
        ));
        let (note, _) = t.on_event(&ev(
            500,
            EventKind::BuildFinished {
                build: 4,
                request: 4,
                result: BuildResult::Success,
                reason: None,
                source: None,
            },
        ));
        assert_eq!(
            note.unwrap().text,
            "hello #4 success (fixed) in 500 ms, branch main"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(245_000), "4 min 5 s");
    }
}
