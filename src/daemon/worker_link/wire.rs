//! How the core's commands are said on the worker wire: a step's start
//! as a `StepAssignment`. What only the link knows (a resumed step's log
//! offset) is filled in by the link itself (`Link::wire`).

use crate::config::{GitMode, StepAction};
use crate::daemon::core::StepStart;
use crate::protocol::{self, StepAssignment, WireAction};

/// A step's start as the wire says it.
pub(super) fn assignment(start: StepStart) -> StepAssignment {
    StepAssignment {
        build: start.build,
        step: start.step,
        builder: start.builder,
        name: start.name,
        action: match start.action {
            StepAction::Shell(line) => WireAction::Shell(line),
            StepAction::Command(argv) => WireAction::Command(argv),
            StepAction::Upload(u) => WireAction::Upload {
                from: u.from,
                max_size: u.max_size,
                mode: u.mode,
            },
            StepAction::Download(d) => WireAction::Download {
                from: d.from,
                to: d.to,
                max_size: d.max_size,
                mode: d.mode,
            },
            StepAction::Git(g) => WireAction::Git {
                repository: g.repository,
                mode: match g.mode {
                    GitMode::Incremental => protocol::GitMode::Incremental,
                    GitMode::Full => protocol::GitMode::Full,
                },
                submodules: g.submodules,
            },
            StepAction::Trigger(_) => unreachable!("the core runs trigger steps itself"),
        },
        env: start.env,
        pass_env: start.pass_env,
        timeout_ms: start.timeout.map(|t| t.as_millis() as u64),
        max_output: start.max_output,
    }
}
