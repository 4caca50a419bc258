//! The worker given several masters (a leader and its standbys): the
//! order of attempts, a standby's "not the leader" refusal sending it to
//! the leader, the one hop per cycle, pins for masters with their own
//! certificates, and held steps re-adopted by whichever master takes the
//! worker back.
//!
//! Tests that must see the worker go on *at once* give it a back-off whose
//! every delay is an hour: a worker that waited would miss the test's
//! bound.

use std::path::PathBuf;

use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::fake_master::{FakeMaster, ServerCert, finished, step};
use super::tls::Verify;
use super::{WorkerError, WorkerOptions, run_with};
use crate::net;
use crate::protocol::{MasterToWorker, Role, RunningStep, StepEnd, WorkerToMaster};

/// Options for a worker given `masters` in this order (the first one's
/// dir holds the work dir).
fn options(masters: &[&FakeMaster]) -> WorkerOptions {
    let mut opts = masters[0].options();
    opts.masters = masters.iter().map(|m| m.addr().clone()).collect();
    opts
}

/// Start a worker that never backs off within a test.
fn impatient(opts: WorkerOptions) -> JoinHandle<Result<(), WorkerError>> {
    tokio::spawn(run_with(opts, Backoff::hour_long()))
}

/// Start a worker with the real back-off.
fn patient(opts: WorkerOptions) -> JoinHandle<Result<(), WorkerError>> {
    tokio::spawn(super::run(opts))
}

/// Welcome the worker on `master`, say goodbye, and see it exit.
async fn ends_on(master: &FakeMaster, worker: JoinHandle<Result<(), WorkerError>>) {
    let mut conn = master.welcome().await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_standby_sends_the_worker_straight_to_the_leader() {
    let (a, b, c) = (FakeMaster::tcp(), FakeMaster::tcp(), FakeMaster::tcp());
    let worker = impatient(options(&[&a, &b, &c]));
    // The first master is a standby naming the third as the leader.
    a.refuse_not_leader(Some(&c.addr().to_string())).await;
    let mut conn = c.welcome().await;
    // The second was skipped: the hop went first.
    assert!(!b.was_dialled(), "the worker tried the second master");
    assert!(!a.was_dialled(), "the worker came back to the standby");
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn an_unreachable_master_moves_the_worker_on_at_once() {
    let (mut a, b) = (FakeMaster::tcp(), FakeMaster::tcp());
    a.close();
    let worker = impatient(options(&[&a, &b]));
    ends_on(&b, worker).await;
}

#[tokio::test]
async fn a_standby_without_a_usable_hint_moves_the_worker_on() {
    let (a, b, c) = (FakeMaster::tcp(), FakeMaster::tcp(), FakeMaster::tcp());
    let worker = impatient(options(&[&a, &b, &c]));
    // No leader known; then a leader that is none of ours.
    a.refuse_not_leader(None).await;
    b.refuse_not_leader(Some("tls://elsewhere.example:9989"))
        .await;
    ends_on(&c, worker).await;
}

#[tokio::test]
async fn two_standbys_naming_each_other_cost_one_hop_per_cycle() {
    let (a, b, c) = (FakeMaster::tcp(), FakeMaster::tcp(), FakeMaster::tcp());
    let worker = impatient(options(&[&a, &b, &c]));
    a.refuse_not_leader(Some(&b.addr().to_string())).await;
    // B names A back: no second hop in this cycle, on to C.
    b.refuse_not_leader(Some(&a.addr().to_string())).await;
    let mut conn = c.welcome().await;
    assert!(
        !a.was_dialled(),
        "the worker bounced back to the first standby"
    );
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_cycle_of_failures_backs_off_then_starts_over_from_the_first() {
    // The leader B is gone; A, a standby that still names it, takes over
    // and welcomes the worker on the next cycle.
    let (a, mut b) = (FakeMaster::tcp(), FakeMaster::tcp());
    let b_addr = b.addr().to_string();
    b.close();
    let worker = patient(options(&[&a, &b]));
    a.refuse_not_leader(Some(&b_addr)).await;
    ends_on(&a, worker).await;
}

#[tokio::test]
async fn a_master_given_twice_is_refused() {
    let a = FakeMaster::tcp();
    let e = super::run(options(&[&a, &a])).await.expect_err("refused");
    assert!(matches!(e, WorkerError::Options(_)), "{e:?}");
    assert!(e.to_string().contains("given twice"), "{e}");
}

#[tokio::test]
async fn masters_with_their_own_certificates_are_pinned_together() {
    let (cert_a, cert_b) = (
        ServerCert::self_signed(&["a.example"]),
        ServerCert::self_signed(&["b.example"]),
    );
    let pins = [cert_a.fingerprint(), cert_b.fingerprint()]
        .map(|fp| net::parse_fingerprint(&fp).unwrap())
        .to_vec();
    let (a, b) = (FakeMaster::tls(cert_a, None), FakeMaster::tls(cert_b, None));
    let mut opts = options(&[&a, &b]);
    opts.tls.verify = Verify::Fingerprints(pins);
    let worker = impatient(opts);
    a.refuse_not_leader(Some(&b.addr().to_string())).await;
    ends_on(&b, worker).await;
}

/// A FIFO the step blocks on until the test writes a line to it.
fn gate(master: &FakeMaster) -> PathBuf {
    let path = master.dir.path().join("gate");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    path
}

#[tokio::test]
async fn held_steps_are_listed_to_every_master_and_resumed_by_the_new_leader() {
    let (mut a, b) = (FakeMaster::tcp(), FakeMaster::tcp());
    let worker = patient(options(&[&a, &b]));
    let gate = gate(&a);
    let mut conn = a.welcome().await;
    let line = format!("printf one; read x < '{}'; printf two", gate.display());
    conn.send(step(1, &line)).await;
    let WorkerToMaster::Output { offset, data, .. } = conn.recv().await else {
        panic!("expected output first");
    };
    assert_eq!((offset, data.as_slice()), (0, b"one".as_slice()));
    // The leader A is killed: its link and its listener go.
    drop(conn);
    a.close();
    // B, still a standby for a moment, refuses (naming the dead leader),
    // and is told about the held step all the same.
    let hello = b.refuse_not_leader(Some(&a.addr().to_string())).await;
    let Role::Worker { running, .. } = &hello.role else {
        panic!("a worker's hello");
    };
    assert_eq!(running, &[RunningStep { build: 1, step: 0 }]);
    // Then B leads: it re-adopts the step from the offset it has.
    let mut conn = b.welcome_with(&[(1, 0)], None).await;
    conn.send(MasterToWorker::Resume {
        build: 1,
        step: 0,
        offset: 3,
    })
    .await;
    let gate_path = gate.clone();
    tokio::task::spawn_blocking(move || std::fs::write(gate_path, b"go\n"))
        .await
        .expect("join")
        .expect("write the gate");
    let (rest, end) = conn.until_end_from(3).await;
    assert_eq!(rest, b"two");
    assert_eq!(end, StepEnd::Exited { code: 0 });
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_full_cycle_of_failures_waits_before_the_next() {
    let (a, b) = (FakeMaster::tcp(), FakeMaster::tcp());
    let worker = impatient(options(&[&a, &b]));
    a.refuse_not_leader(Some(&b.addr().to_string())).await;
    b.refuse_not_leader(None).await;
    // The absence of an attempt has no event to wait on: a worker that
    // did not back off would be dialling again within this window.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!a.was_dialled() && !b.was_dialled(), "no back-off");
    worker.abort();
}

#[tokio::test]
async fn a_frozen_master_holds_a_round_up_for_a_few_seconds_only() {
    // A accepts connections (the kernel does) but never answers: a
    // paused process. The worker gives up on it within the shorter limit
    // of several masters and goes on to B.
    let (a, b) = (FakeMaster::tcp(), FakeMaster::tcp());
    let started = std::time::Instant::now();
    let worker = impatient(options(&[&a, &b]));
    let mut conn = b.welcome().await;
    let took = started.elapsed();
    assert!(took >= super::SEVERAL_MASTERS_STEP_LIMIT, "{took:?}");
    assert!(a.was_dialled(), "the worker tried the first master first");
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}
