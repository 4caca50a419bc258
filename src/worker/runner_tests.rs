//! Tests of the step runner, through its spool and progress: no link
//! involved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Spawned, StepContext, prepare_workdir, run_step, spawn};
use crate::protocol::{StepAssignment, StepEnd, WireAction};
use crate::worker::gate::GATE_CLOSED_EXIT;
use crate::worker::guard::Guard;
use crate::worker::spool::{DEFAULT_SPOOL_LIMIT, Progress, prepare_spool_dir, spool_path};
use crate::worker::stop::{StopHandle, StopSignal, stop_pair};
use crate::worker::test_util::{BOUND, eventually, gone, live_members};

fn shell(line: &str) -> StepAssignment {
    StepAssignment {
        build: 7,
        step: 2,
        builder: "b1".to_string(),
        name: "test step".to_string(),
        action: WireAction::Shell(line.to_string()),
        env: Vec::new(),
        pass_env: Vec::new(),
        timeout_ms: None,
        max_output: None,
    }
}

/// A running step, its progress and its spool.
struct Running {
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<StepEnd>,
    stop: StopHandle,
    spool: PathBuf,
}

fn start(a: StepAssignment, dir: &Path) -> Running {
    prepare_spool_dir(dir).expect("spool dir");
    let (tx, progress) = watch::channel(Progress::default());
    let (stop, signal): (StopHandle, StopSignal) = stop_pair();
    let ctx = StepContext {
        dir: dir.to_path_buf(),
        spool_limit: DEFAULT_SPOOL_LIMIT,
        guard: Guard::disabled(),
    };
    let spool = spool_path(dir, a.build, a.step);
    let task =
        tokio::spawn(
            async move { run_step(&a, &ctx, Arc::new(tx), signal, Default::default()).await },
        );
    Running {
        progress,
        task,
        stop,
        spool,
    }
}

impl Running {
    /// The output once at least one byte is spooled, with a bound.
    async fn first_output(&mut self) -> Vec<u8> {
        tokio::time::timeout(BOUND, self.progress.wait_for(|p| p.written > 0))
            .await
            .expect("output in time")
            .expect("progress open");
        std::fs::read(&self.spool).expect("spool")
    }

    /// Wait for the end; check the progress names it and counts the spool.
    async fn finish(self) -> (Vec<u8>, StepEnd) {
        let end = tokio::time::timeout(BOUND, self.task)
            .await
            .expect("run_step returns")
            .expect("run_step does not panic");
        let progress = self.progress.borrow().clone();
        assert_eq!(progress.end.as_ref(), Some(&end), "the end is published");
        let out = std::fs::read(&self.spool).unwrap_or_default();
        assert_eq!(
            progress.written,
            out.len() as u64,
            "progress counts the spool"
        );
        (out, end)
    }
}

async fn run(a: StepAssignment) -> (Vec<u8>, StepEnd) {
    let dir = tempfile::tempdir().expect("temp dir");
    start(a, dir.path()).finish().await
}

#[tokio::test]
async fn shell_output_arrives_in_order_then_exit_zero() {
    let (out, end) = run(shell("for i in 1 2 3; do echo line$i; done")).await;
    assert_eq!(String::from_utf8_lossy(&out), "line1\nline2\nline3\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
}

#[tokio::test]
async fn failing_step_reports_its_code() {
    let (_, end) = run(shell("echo failing; exit 3")).await;
    assert_eq!(end, StepEnd::Exited { code: 3 });
}

#[tokio::test]
async fn env_pairs_reach_the_step() {
    let mut a = shell("echo \"$FOO\"; echo \"$BB_BUILD\"");
    a.env = vec![
        ("FOO".to_string(), "bar baz".to_string()),
        ("BB_BUILD".to_string(), "7".to_string()),
    ];
    let (out, end) = run(a).await;
    assert_eq!(String::from_utf8_lossy(&out), "bar baz\n7\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
}

#[tokio::test]
async fn stdout_and_stderr_share_one_ordered_stream() {
    let (out, end) = run(shell("echo out1; echo err1 >&2; echo out2; echo err2 >&2")).await;
    assert_eq!(String::from_utf8_lossy(&out), "out1\nerr1\nout2\nerr2\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
}

#[tokio::test]
async fn step_runs_in_the_builder_dir_with_null_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("not-yet");
    let (out, end) = start(shell("pwd; cat; echo eof"), &base).finish().await;
    let expected = base.join("b1").canonicalize().expect("work dir created");
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{}\neof\n", expected.display())
    );
    assert_eq!(end, StepEnd::Exited { code: 0 });
}

#[tokio::test]
async fn argv_form_runs_without_a_shell() {
    let mut a = shell("");
    a.action = WireAction::Command(vec!["echo".into(), "a  b".into(), "$HOME".into()]);
    let (out, end) = run(a).await;
    assert_eq!(String::from_utf8_lossy(&out), "a  b $HOME\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
}

#[tokio::test]
async fn missing_program_is_a_clear_spawn_failure() {
    let mut a = shell("");
    a.action = WireAction::Command(vec!["nosuchcmd-bbworker-test".into()]);
    let (out, end) = run(a).await;
    assert!(out.is_empty());
    let StepEnd::SpawnFailed { error } = end else {
        panic!("expected SpawnFailed, got {end:?}");
    };
    assert_eq!(
        error,
        "No such file or directory (os error 2): `nosuchcmd-bbworker-test`"
    );
}

#[tokio::test]
async fn a_program_that_is_not_executable_is_a_spawn_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workdir = dir.path().join("b1");
    std::fs::create_dir(&workdir).expect("work dir");
    std::fs::write(workdir.join("plain"), "echo should not run\n").expect("file");
    let mut a = shell("");
    a.action = WireAction::Command(vec!["./plain".into()]);
    let (out, end) = start(a, dir.path()).finish().await;
    assert!(out.is_empty());
    assert_eq!(
        end,
        StepEnd::SpawnFailed {
            error: "Permission denied (os error 13): `./plain`".to_string()
        }
    );
}

/// The gate puts the command's stdin on /dev/null, and the program's exit
/// status is the step's.
#[tokio::test]
async fn argv_form_has_null_stdin_and_its_own_status() {
    let mut a = shell("");
    a.action = WireAction::Command(vec![
        "sh".into(),
        "-c".into(),
        "cat; echo eof; exit 4".into(),
    ]);
    let (out, end) = run(a).await;
    assert_eq!(String::from_utf8_lossy(&out), "eof\n");
    assert_eq!(end, StepEnd::Exited { code: 4 });
}

/// The gate's shell adds nothing to a command's environment (it exports
/// a `PWD` of its own), and a `PWD` the step sets reaches it unchanged.
#[tokio::test]
async fn argv_form_gets_exactly_the_steps_environment() {
    let mut a = shell("");
    a.action = WireAction::Command(vec!["env".into()]);
    let (out, _) = run(a.clone()).await;
    let mut names: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    names.sort();
    let env = crate::worker::step_env::step_environment(std::env::vars_os(), &[], &[]);
    let want: Vec<String> = env
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, want);
    a.env = vec![("PWD".to_string(), "/not/the/dir".to_string())];
    let (out, _) = run(a).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.lines().any(|l| l == "PWD=/not/the/dir"), "{out}");
}

/// The gate's prefix shares the script's first line: the shell's error
/// messages give the step's own line numbers.
#[tokio::test]
async fn shell_errors_keep_the_steps_line_numbers() {
    let (out, end) = run(shell("nosuchcmd-bb-one\ntrue\nnosuchcmd-bb-three")).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains(" 1: nosuchcmd-bb-one: not found"), "{out}");
    assert!(out.contains(" 3: nosuchcmd-bb-three: not found"), "{out}");
    assert_eq!(end, StepEnd::Exited { code: 127 });
}

/// A worker killed between a step's spawn and the guard's `add` closes the
/// step's gate unopened (here: dropped). The step's process must then exit
/// having run none of the step: nobody would ever kill what it started.
/// Shell and command steps alike.
#[tokio::test]
async fn a_step_whose_gate_closes_unopened_runs_none_of_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut argv = shell("");
    argv.action = WireAction::Command(vec!["touch".into(), "ran-argv".into()]);
    for (a, marker) in [(shell("touch ran-shell"), "ran-shell"), (argv, "ran-argv")] {
        let workdir = prepare_workdir(dir.path(), &a.builder)
            .await
            .expect("work dir");
        let Spawned {
            output,
            mut child,
            gate,
        } = spawn(&a, &workdir).expect("spawn");
        let pid = child.id().expect("pid");
        drop(gate);
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .expect("the step exits in time")
            .expect("wait");
        crate::worker::reaper::forget_own(pid);
        drop(output);
        assert!(!workdir.join(marker).exists(), "{marker}: the step ran");
        assert_eq!(status.code(), Some(GATE_CLOSED_EXIT), "{marker}");
    }
}

#[tokio::test]
async fn empty_argv_and_bad_builder_names_are_spawn_failures() {
    let mut a = shell("");
    a.action = WireAction::Command(Vec::new());
    assert!(matches!(run(a).await.1, StepEnd::SpawnFailed { .. }));
    for bad in ["", ".", "..", "a/b", "/etc", ".spool"] {
        let mut a = shell("echo should not run");
        a.builder = bad.to_string();
        let (out, end) = run(a).await;
        assert!(out.is_empty());
        match end {
            StepEnd::SpawnFailed { error } => assert!(error.contains("invalid builder name")),
            other => panic!("builder {bad:?}: expected SpawnFailed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn killed_by_foreign_signal_is_signalled() {
    let (_, end) = run(shell("kill -9 $$")).await;
    assert_eq!(end, StepEnd::Signalled { signal: 9 });
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("pid");
    let mut a = shell(&format!(
        "sleep 30 & echo $! > '{}'; wait",
        pidfile.display()
    ));
    a.timeout_ms = Some(200);
    let started = Instant::now();
    let (_, end) = start(a, dir.path()).finish().await;
    assert_eq!(end, StepEnd::TimedOut { after_ms: 200 });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("a pid");
    eventually("the background sleep is gone", || gone(pid)).await;
}

#[tokio::test]
async fn stop_ends_the_step_and_its_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut running = start(shell("echo $$; sleep 30 & sleep 30; wait"), dir.path());
    let data = running.first_output().await;
    let pgid: i32 = String::from_utf8_lossy(&data)
        .trim()
        .parse()
        .expect("a pid");
    running.stop.stop();
    let started = Instant::now();
    let (_, end) = running.finish().await;
    assert_eq!(end, StepEnd::Stopped);
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("the step's group is empty", || {
        live_members(pgid).is_empty()
    })
    .await;
}

#[tokio::test]
async fn background_child_holding_the_pipe_does_not_delay_the_end() {
    let started = Instant::now();
    let (out, end) = run(shell("sleep 30 & echo done")).await;
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn large_output_arrives_whole() {
    // More than one chunk and more than a pipe buffer.
    let (out, end) = run(shell("head -c 300000 /dev/zero")).await;
    assert_eq!(out.len(), 300_000);
    assert_eq!(end, StepEnd::Exited { code: 0 });
}
