//! Steps outliving the link: reconnect with the held steps listed, resume
//! from the master's offset, abandon, keepalive silence.
//!
//! Steps wait on a FIFO the test opens when it wants them to go on, so no
//! test sleeps to order events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fake_master::{FakeMaster, finished, step};
use super::spool::spool_path;
use super::test_util::{eventually, gone, live_members};
use crate::protocol::{MasterToWorker, StepEnd, WorkerToMaster};

/// A FIFO in the fake master's dir: a step reading it blocks until
/// [`release`] writes a line.
fn gate(master: &FakeMaster) -> PathBuf {
    let path = master.dir.path().join("gate");
    // Not a `mkfifo` child process: the worker under test reaps children
    // it did not spawn itself (see `reaper`), which would steal the exit
    // status from `Command::status`.
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    path
}

/// Let the step blocked on `gate` go on.
async fn release(gate: &Path) {
    let gate = gate.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::write(gate, b"go\n"))
        .await
        .expect("join")
        .expect("write the gate");
}

/// The pid a step wrote to `path`.
fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

#[tokio::test]
async fn a_step_outlives_the_link_and_resumes_from_the_masters_offset() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let gate = gate(&master);
    let mut conn = master.welcome().await;
    let line = format!("printf one; read x < '{}'; printf two", gate.display());
    conn.send(step(1, &line)).await;
    let WorkerToMaster::Output { offset, data, .. } = conn.recv().await else {
        panic!("expected output first");
    };
    assert_eq!((offset, data.as_slice()), (0, b"one".as_slice()));
    drop(conn);

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    // A held step sends nothing before the master resumes it.
    conn.send(MasterToWorker::Ping { seq: 7 }).await;
    assert_eq!(
        conn.try_recv().await.expect("pong"),
        WorkerToMaster::Pong { seq: 7 }
    );
    // This master kept only two bytes of the first link's output.
    conn.send(MasterToWorker::Resume {
        build: 1,
        step: 0,
        offset: 2,
    })
    .await;
    release(&gate).await;
    let (rest, end) = conn.until_end_from(2).await;
    assert_eq!([b"on".as_slice(), &rest].concat(), b"onetwo");
    assert_eq!(end, StepEnd::Exited { code: 0 });
    let spool = spool_path(&master.options().dir, 1, 0);
    eventually("the spool is deleted", || !spool.exists()).await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_step_that_ends_while_disconnected_is_listed_and_resumed() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let gate = gate(&master);
    let pidfile = master.dir.path().join("pid");
    let mut conn = master.welcome().await;
    let line = format!(
        "echo $$ > '{}'; printf one; read x < '{}'; printf two; exit 3",
        pidfile.display(),
        gate.display()
    );
    conn.send(step(1, &line)).await;
    assert!(matches!(conn.recv().await, WorkerToMaster::Output { .. }));
    drop(conn);
    // The step ends before any master takes the worker back.
    release(&gate).await;
    let pid = pid_in(&pidfile);
    eventually("the step's process ended", || gone(pid)).await;

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    conn.send(MasterToWorker::Resume {
        build: 1,
        step: 0,
        offset: 3,
    })
    .await;
    let (rest, end) = conn.until_end_from(3).await;
    assert_eq!(rest, b"two");
    assert_eq!(end, StepEnd::Exited { code: 3 });
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

/// The master read the step's end and was killed before storing it: the
/// worker still holds the end, lists the step in its next Hello, and sends
/// the end again when the next master resumes it. The step's process runs
/// once (it appends to a file each run).
#[tokio::test]
async fn an_end_no_master_stored_is_listed_and_sent_again_not_run_again() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let runs = master.dir.path().join("runs");
    let mut conn = master.welcome().await;
    let line = format!("echo ran >> '{}'; printf done", runs.display());
    conn.send(step(1, &line)).await;
    let (out, key, end) = conn.until_end_unkept(0).await;
    assert_eq!((out.as_slice(), key), (b"done".as_slice(), (1, 0)));
    assert_eq!(end, StepEnd::Exited { code: 0 });
    drop(conn);

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    conn.send(MasterToWorker::Resume {
        build: 1,
        step: 0,
        offset: 4,
    })
    .await;
    let (rest, end) = conn.until_end_from(4).await;
    assert_eq!(rest, b"");
    assert_eq!(end, StepEnd::Exited { code: 0 });
    let spool = spool_path(&master.options().dir, 1, 0);
    eventually("the spool is deleted once the end is kept", || {
        !spool.exists()
    })
    .await;
    drop(conn);
    // Kept: the next Hello lists nothing.
    let mut conn = master.welcome_with(&[], None).await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
    assert_eq!(std::fs::read_to_string(&runs).expect("runs"), "ran\n");
}

/// The master had stored the step's end but the worker never got the
/// receipt: the next master abandons the listed step and the worker
/// forgets it without a report.
#[tokio::test]
async fn an_ended_step_the_master_abandons_is_forgotten_without_a_report() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(1, "printf done")).await;
    let (_, _, end) = conn.until_end_unkept(0).await;
    assert_eq!(end, StepEnd::Exited { code: 0 });
    drop(conn);

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    conn.send(MasterToWorker::Abandon { build: 1, step: 0 })
        .await;
    let spool = spool_path(&master.options().dir, 1, 0);
    eventually("its spool is deleted", || !spool.exists()).await;
    conn.goodbye().await;
    while let Ok(msg) = conn.try_recv().await {
        assert!(
            matches!(
                msg,
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. }
            ),
            "nothing about the abandoned step: {msg:?}"
        );
    }
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn abandon_stops_and_forgets_a_held_step_without_a_report() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(1, "echo $$; sleep 30")).await;
    let WorkerToMaster::Output { data, .. } = conn.recv().await else {
        panic!("expected the step's pid first");
    };
    let pgid: i32 = String::from_utf8_lossy(&data)
        .trim()
        .parse()
        .expect("a pid");
    drop(conn);

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    conn.send(MasterToWorker::Abandon { build: 1, step: 0 })
        .await;
    conn.send(step(2, "echo other")).await;
    let spool = spool_path(&master.options().dir, 1, 0);
    eventually("the abandoned step's group is gone", || {
        live_members(pgid).is_empty()
    })
    .await;
    eventually("its spool is deleted", || !spool.exists()).await;
    conn.goodbye().await;
    // Everything up to the close: build 2's report, nothing of build 1.
    let mut other = Vec::new();
    while let Ok(msg) = conn.try_recv().await {
        match msg {
            WorkerToMaster::Output { build, data, .. } => {
                assert_eq!(build, 2, "no output of the abandoned step");
                other.extend_from_slice(&data);
            }
            WorkerToMaster::StepEnded { build, end, .. } => {
                assert_eq!(build, 2, "no end of the abandoned step");
                assert_eq!(end, StepEnd::Exited { code: 0 });
            }
            WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(other, b"other\n");
    finished(worker).await.expect("Ok after Goodbye");
}

/// A step the master abandons (its build ended or was retried elsewhere
/// while the worker was away) is killed at once: a step that ignores
/// SIGTERM is gone well before the stop grace period would end.
#[tokio::test]
async fn abandon_kills_the_step_group_at_once() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(
        1,
        "trap '' TERM; echo $$; while :; do sleep 0.05; done",
    ))
    .await;
    let WorkerToMaster::Output { data, .. } = conn.recv().await else {
        panic!("expected the step's pid first");
    };
    let pgid: i32 = String::from_utf8_lossy(&data)
        .trim()
        .parse()
        .expect("a pid");
    drop(conn);

    let mut conn = master.welcome_with(&[(1, 0)], None).await;
    let abandoned = Instant::now();
    conn.send(MasterToWorker::Abandon { build: 1, step: 0 })
        .await;
    eventually("the abandoned step's group is gone", || {
        live_members(pgid).is_empty()
    })
    .await;
    let took = abandoned.elapsed();
    assert!(
        took < crate::worker::runner::STOP_GRACE / 2,
        "an abandoned step that ignores SIGTERM took {took:?} to die: it got the stop grace period"
    );
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_silent_master_is_dropped_after_three_keepalive_intervals() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome_with(&[], Some(100)).await;
    let welcomed = Instant::now();
    let mut pings = 0;
    // Read (never answer) until the worker closes the link.
    while let Ok(msg) = conn.try_recv().await {
        assert!(matches!(msg, WorkerToMaster::Ping { .. }), "{msg:?}");
        pings += 1;
    }
    let silent = welcomed.elapsed();
    assert!(pings >= 2, "only {pings} pings");
    assert!(
        silent >= Duration::from_millis(300) && silent < Duration::from_secs(2),
        "dropped after {silent:?}"
    );
    // It comes back on its own.
    let mut conn = master.welcome().await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}
