//! Running one step's process: spawn it in its own process group, spool
//! its output, enforce its timeout, honour a stop, and settle exactly one
//! end.
//!
//! The runner knows nothing of links: it writes the output to the step's
//! spool and publishes its progress (bytes spooled, then the end) on a
//! watch channel that the step's sender follows. That is what lets a step
//! outlive the connection it was started on, and be tested on its own.

use std::ffi::OsStr;
use std::io::PipeReader;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::watch;
use tracing::{debug, info};

use super::gate::{self, Gate};
use super::git_step;
use super::group::signal_group;
use super::guard::Guard;
use super::output::OutputPump;
use super::spool::{Kept, Progress, SPOOL_DIR, SpoolWriter, spool_path};
use super::step_env::step_environment;
use super::stop::StopSignal;
use crate::protocol::{StepAssignment, StepEnd, WireAction};

/// How long a step gets between SIGTERM and SIGKILL when it is stopped or
/// times out.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long, after a step's process group is gone, we wait for its output
/// pipe to close before giving up on the rest of its output.
pub const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What every step of one worker shares: where to run, how much output to
/// keep, whom to tell about process groups.
pub(crate) struct StepContext {
    /// The work dir: steps run in `<dir>/<builder>`, spools live in
    /// `<dir>/.spool`.
    pub(crate) dir: PathBuf,
    /// Cap on one step's spooled output, in bytes.
    pub(crate) spool_limit: u64,
    /// Kills our steps' groups if this worker dies.
    pub(crate) guard: Guard,
}

/// Run one step's process to its end. Its output goes to the spool and
/// `progress` (bytes spooled, growing); once the process is gone and all
/// its output spooled, the end is set in `progress` and returned.
pub(crate) async fn run_step(
    assignment: &StepAssignment,
    ctx: &StepContext,
    progress: Arc<watch::Sender<Progress>>,
    stop: StopSignal,
    kept: Kept,
) -> StepEnd {
    let (build, step) = (assignment.build, assignment.step);
    info!(
        build,
        step,
        builder = %assignment.builder,
        name = %assignment.name,
        "starting step"
    );
    let end = execute(assignment, ctx, &progress, stop, kept).await;
    info!(build, step, ?end, "step ended");
    progress.send_modify(|p| p.end = Some(end.clone()));
    end
}

/// Everything between "assigned" and "ended", output included.
async fn execute(
    a: &StepAssignment,
    ctx: &StepContext,
    progress: &Arc<watch::Sender<Progress>>,
    stop: StopSignal,
    kept: Kept,
) -> StepEnd {
    let workdir = match prepare_workdir(&ctx.dir, &a.builder).await {
        Ok(path) => path,
        Err(error) => return StepEnd::SpawnFailed { error },
    };
    let spool_file = spool_path(&ctx.dir, a.build, a.step);
    let spool = match SpoolWriter::create(&spool_file, ctx.spool_limit) {
        // No point keeping more than the master will: its `max_log_size`.
        Ok(spool) => spool
            .with_total(a.max_output.unwrap_or(u64::MAX))
            .with_kept(kept),
        Err(e) => {
            return StepEnd::SpawnFailed {
                error: format!(
                    "cannot create the output spool {}: {e}",
                    spool_file.display()
                ),
            };
        }
    };
    let Spawned {
        output: pipe,
        mut child,
        gate,
    } = match spawn(a, &workdir) {
        Ok(spawned) => spawned,
        Err(error) => return StepEnd::SpawnFailed { error },
    };
    // With process_group(0) the child's pid is its group's id. The step
    // runs none of its code before the gate opens: once the guard knows
    // its group, a worker killed at any point leaves nothing behind.
    let pgid = child.id();
    if let Some(pgid) = pgid {
        ctx.guard.add(pgid);
    }
    gate.open();
    let output = OutputPump::start(pipe, spool, Arc::clone(progress), a.build, a.step);
    let end = supervise(&mut child, pgid, a.timeout_ms, stop).await;
    // Whatever the way the main process ended, nothing of the step may
    // outlive it (nor keep the output pipe open).
    match pgid {
        Some(pgid) => {
            signal_group(pgid, Signal::SIGKILL);
            ctx.guard.del(pgid);
        }
        None => debug!("step process id unknown; cannot clean up its group"),
    }
    output.finish(OUTPUT_DRAIN_LIMIT).await;
    if let Some(pid) = pgid {
        super::reaper::forget_own(pid);
    }
    // A step whose output could not all be spooled cannot be a success.
    let lost = progress.borrow().lost.clone();
    match lost {
        Some(error) => StepEnd::OutputLost { error },
        None => end,
    }
}

/// Refuse builder names that would escape `dir`, then create the work dir.
pub(crate) async fn prepare_workdir(dir: &Path, builder: &str) -> Result<PathBuf, String> {
    if builder.is_empty()
        || builder == "."
        || builder == ".."
        || builder == SPOOL_DIR
        || builder.contains('/')
        || builder.contains('\0')
    {
        return Err(format!(
            "invalid builder name {builder:?}: it cannot be used as a directory name"
        ));
    }
    let path = dir.join(builder);
    tokio::fs::create_dir_all(&path)
        .await
        .map_err(|e| format!("cannot create the work directory {}: {e}", path.display()))?;
    Ok(path)
}

/// A step's process, started and held at its gate.
struct Spawned {
    /// Its stdout and stderr.
    output: PipeReader,
    child: Child,
    /// Opened once the guard knows the process's group.
    gate: Gate,
}

/// Start the step's process, behind its gate (see [`super::gate`]), with
/// stdout and stderr on one pipe.
fn spawn(a: &StepAssignment, workdir: &Path) -> Result<Spawned, String> {
    let mut env = step_environment(std::env::vars_os(), &a.pass_env, &a.env);
    let (mut cmd, program) = match &a.action {
        WireAction::Shell(line) => (gate::shell_command(line), "/bin/sh"),
        WireAction::Command(argv) => {
            let first = argv
                .first()
                .ok_or_else(|| "the step's command is empty".to_string())?;
            // The shell behind the gate would find no program only once
            // started; say so now, as a spawn of the program itself would.
            let path = env.get(OsStr::new("PATH")).cloned().unwrap_or_default();
            gate::check_program(first, &path, workdir).map_err(|e| format!("{e}: `{first}`"))?;
            let pwd = env.get(OsStr::new("PWD")).map(|p| p.as_os_str());
            (gate::argv_command(argv, pwd), first.as_str())
        }
        WireAction::Git {
            repository,
            mode,
            submodules,
        } => {
            for (k, v) in git_step::git_env(repository, *mode, *submodules) {
                env.insert(k.into(), v.into());
            }
            env.entry("GIT_SSH_COMMAND".into())
                .or_insert_with(|| git_step::SSH_COMMAND.into());
            (gate::shell_command(git_step::SCRIPT), "/bin/sh")
        }
        WireAction::Upload { .. } | WireAction::Download { .. } => {
            return Err("a transfer step has no process to run".to_string());
        }
    };
    let (reader, writer) =
        std::io::pipe().map_err(|e| format!("cannot create the output pipe: {e}"))?;
    let writer_err = writer
        .try_clone()
        .map_err(|e| format!("cannot duplicate the output pipe: {e}"))?;
    let (gate_reader, gate) =
        Gate::new().map_err(|e| format!("cannot create the start gate's pipe: {e}"))?;
    cmd.current_dir(workdir)
        .env_clear()
        .envs(env)
        .stdin(gate_reader)
        .stdout(writer)
        .stderr(writer_err)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = super::reaper::spawn_own(|| cmd.spawn(), Child::id)
        .map_err(|e| format!("{e}: `{program}`"));
    // The Command holds our copies of the pipes' other ends: drop them
    // now, or the reader never sees EOF (and the step never sees the gate
    // close if we die).
    drop(cmd);
    Ok(Spawned {
        output: reader,
        child: spawned?,
        gate,
    })
}

/// Wait for the process, its timeout or a stop, whichever comes first.
async fn supervise(
    child: &mut Child,
    pgid: Option<u32>,
    timeout_ms: Option<u64>,
    mut stop: StopSignal,
) -> StepEnd {
    let timeout = async {
        match timeout_ms {
            Some(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        status = child.wait() => return exit_end(status),
        after_ms = timeout => StepEnd::TimedOut { after_ms },
        () = stop.stopped() => StepEnd::Stopped,
    };
    terminate(child, pgid, stop).await;
    end
}

/// SIGTERM to the group, a grace period, then SIGKILL; SIGKILL at once when
/// a kill is asked for (before or during the grace period). The main
/// process is reaped in every case.
async fn terminate(child: &mut Child, pgid: Option<u32>, mut stop: StopSignal) {
    let Some(pgid) = pgid else {
        // Cannot happen for a child we have not waited on; be safe anyway.
        if let Err(e) = child.start_kill() {
            debug!("cannot kill the step's process: {e}");
        }
        let _ = child.wait().await;
        return;
    };
    signal_group(pgid, Signal::SIGTERM);
    let grace = tokio::select! {
        exited = tokio::time::timeout(STOP_GRACE, child.wait()) => exited.is_ok(),
        () = stop.killed() => {
            info!(pgid, "the step is to be killed now; sending SIGKILL");
            false
        }
    };
    if !grace {
        info!(pgid, "sending SIGKILL to the step's process group");
        signal_group(pgid, Signal::SIGKILL);
        if let Err(e) = child.wait().await {
            debug!(pgid, "cannot reap the step's process: {e}");
        }
    }
}

/// Turn the exit status of a process that ended on its own into a [`StepEnd`].
fn exit_end(status: std::io::Result<ExitStatus>) -> StepEnd {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => StepEnd::Exited { code },
            (None, Some(signal)) => StepEnd::Signalled { signal },
            // Neither a code nor a signal: only stop/continue states give
            // that, and wait() does not report those.
            (None, None) => StepEnd::Exited { code: -1 },
        },
        Err(e) => StepEnd::SpawnFailed {
            error: format!("lost track of the step's process: {e}"),
        },
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
