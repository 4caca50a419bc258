//! Tests of a step's sender against channels: a spool written by hand, a
//! progress watch, a route watch and a fake link writer.

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{LinkTx, Outgoing, Route, Sent, send_step};
use crate::protocol::{StepEnd, WorkerToMaster};
use crate::worker::output::CHUNK_SIZE;
use crate::worker::spool::{Progress, SpoolReader};
use crate::worker::test_util::BOUND;

struct Harness {
    _dir: tempfile::TempDir,
    spool: PathBuf,
    progress: watch::Sender<Progress>,
    route: watch::Sender<Route>,
    closing: watch::Sender<bool>,
    task: JoinHandle<Sent>,
}

fn harness(route: Route) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("s.out");
    std::fs::write(&spool, b"").expect("spool");
    let (progress, progress_rx) = watch::channel(Progress::default());
    let (route, route_rx) = watch::channel(route);
    let (closing, closing_rx) = watch::channel(false);
    let reader = SpoolReader::new(spool.clone());
    let task = tokio::spawn(send_step((5, 1), reader, progress_rx, route_rx, closing_rx));
    Harness {
        _dir: dir,
        spool,
        progress,
        route,
        closing,
        task,
    }
}

impl Harness {
    /// Append to the spool and announce it, as the pipe reader does.
    fn spool(&self, data: &[u8]) {
        let mut all = std::fs::read(&self.spool).expect("read");
        all.extend_from_slice(data);
        std::fs::write(&self.spool, &all).expect("write");
        self.progress.send_modify(|p| p.written = all.len() as u64);
    }

    fn end(&self) {
        self.progress
            .send_modify(|p| p.end = Some(StepEnd::Exited { code: 0 }));
    }

    async fn done(self) -> Sent {
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("sender finishes")
            .expect("no panic")
    }
}

fn link() -> (LinkTx, mpsc::Receiver<Outgoing>) {
    mpsc::channel(16)
}

async fn next(rx: &mut mpsc::Receiver<Outgoing>) -> Outgoing {
    tokio::time::timeout(BOUND, rx.recv())
        .await
        .expect("a frame in time")
        .expect("link open")
}

/// Output frames up to the end, which is acknowledged; returns the bytes
/// and the first offset.
async fn until_end(rx: &mut mpsc::Receiver<Outgoing>, mut expect: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Outgoing { msg, written } = next(rx).await;
        match msg {
            WorkerToMaster::Output {
                build,
                step,
                offset,
                data,
            } => {
                assert_eq!((build, step), (5, 1));
                assert_eq!(offset, expect, "contiguous offsets");
                assert!(data.len() <= CHUNK_SIZE);
                expect += data.len() as u64;
                out.extend_from_slice(&data);
            }
            WorkerToMaster::StepEnded { end, .. } => {
                assert_eq!(end, StepEnd::Exited { code: 0 });
                written.expect("the end asks for a receipt").send(()).ok();
                return out;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn output_then_end_then_delivered() {
    let (tx, mut rx) = link();
    let h = harness(Route::Attached { link: tx, from: 0 });
    h.spool(b"hello ");
    let first = next(&mut rx).await;
    assert!(matches!(
        first.msg,
        WorkerToMaster::Output { offset: 0, .. }
    ));
    let big = vec![b'x'; CHUNK_SIZE + 10];
    h.spool(&big);
    h.end();
    let rest = until_end(&mut rx, 6).await;
    assert_eq!(rest, big);
    h.route.send_replace(Route::Kept);
    assert_eq!(h.done().await, Sent::Kept);
}

#[tokio::test]
async fn a_written_end_is_held_until_kept_and_sent_again_on_the_next_link() {
    // The master read the end and was killed before its commit: the end
    // was written, but no receipt came. The next master resumes the step
    // and gets the end again (never a second run).
    let (tx, mut rx) = link();
    let h = harness(Route::Attached { link: tx, from: 0 });
    h.spool(b"0123456789");
    h.end();
    assert_eq!(until_end(&mut rx, 0).await, b"0123456789");
    drop(rx);
    h.route.send_replace(Route::Detached);
    let (tx, mut rx) = link();
    h.route.send_replace(Route::Attached { link: tx, from: 10 });
    assert_eq!(until_end(&mut rx, 10).await, b"");
    h.route.send_replace(Route::Kept);
    assert_eq!(h.done().await, Sent::Kept);
}

#[tokio::test]
async fn a_leaving_worker_lets_a_written_end_go_without_its_receipt() {
    let (tx, mut rx) = link();
    let h = harness(Route::Attached { link: tx, from: 0 });
    h.spool(b"abc");
    h.end();
    assert_eq!(until_end(&mut rx, 0).await, b"abc");
    h.closing.send_replace(true);
    assert_eq!(h.done().await, Sent::Written);
}

#[tokio::test]
async fn a_worker_already_leaving_does_not_wait_for_the_receipt() {
    let (tx, mut rx) = link();
    let h = harness(Route::Attached { link: tx, from: 0 });
    h.closing.send_replace(true);
    h.spool(b"abc");
    h.end();
    assert_eq!(until_end(&mut rx, 0).await, b"abc");
    assert_eq!(h.done().await, Sent::Written);
}

#[tokio::test]
async fn a_lost_end_is_sent_again_after_resume_from_the_masters_offset() {
    let (tx, mut rx) = link();
    let h = harness(Route::Attached { link: tx, from: 0 });
    h.spool(b"0123456789");
    h.end();
    // The first link dies before the end is written: its receipt is lost.
    let out = next(&mut rx).await;
    assert!(matches!(out.msg, WorkerToMaster::Output { offset: 0, .. }));
    let end = next(&mut rx).await;
    assert!(matches!(end.msg, WorkerToMaster::StepEnded { .. }));
    drop((end, rx));
    h.route.send_replace(Route::Detached);
    let (tx, mut rx) = link();
    h.route.send_replace(Route::Attached { link: tx, from: 4 });
    assert_eq!(until_end(&mut rx, 4).await, b"456789");
    h.route.send_replace(Route::Kept);
    assert_eq!(h.done().await, Sent::Kept);
}

#[tokio::test]
async fn detached_sends_nothing_and_forget_ends_without_a_report() {
    let (tx, mut rx) = link();
    let h = harness(Route::Detached);
    h.spool(b"data");
    h.end();
    h.route.send_replace(Route::Forget);
    assert_eq!(h.done().await, Sent::Forgotten);
    drop(tx);
    assert!(rx.recv().await.is_none(), "nothing was sent");
}
