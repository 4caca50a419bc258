//! A step's log over HTTP beyond the plain read: the long poll the build
//! page's script uses (`?wait=1`, `X-Log-Complete`), and a followed log
//! ending when the master stops.

use std::time::{Duration, Instant};

use super::client::{get, open};
use super::{start, start_gated, wait_running};
use crate::harness::wait_until;

/// A long poll from the end of the output is answered once there is
/// more (`X-Log-Complete: false`), and at once with nothing more and
/// `true` once the step has ended.
#[test]
fn a_long_poll_answers_with_new_output_and_says_when_the_log_is_complete() {
    let (m, addr) = start();
    let (build, gate) = start_gated(&m, addr);
    let log = format!("/api/v1/builds/{build}/steps/0/log");
    let poll = {
        let path = format!("{log}?offset=7&wait=1");
        std::thread::spawn(move || get(addr, &path))
    };
    std::fs::write(&gate, "").unwrap();
    let a = poll.join().unwrap();
    assert_eq!(a.status, 200);
    assert!(a.text().starts_with("tick 2\n"), "{:?}", a.text());
    assert_eq!(a.header("x-log-offset"), Some("7"));
    assert_eq!(a.header("x-log-complete"), Some("false"));

    wait_until("the build's end", Duration::from_secs(20), || {
        !get(addr, &format!("/api/v1/builds/{build}")).json()["result"].is_null()
    });
    let whole = get(addr, &log).body.len();
    let start = Instant::now();
    let a = get(addr, &format!("{log}?offset={whole}&wait=1"));
    assert!(a.body.is_empty(), "{:?}", a.text());
    assert_eq!(a.header("x-log-complete"), Some("true"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a complete log waited"
    );
}

/// A followed log of a step that prints nothing ends within seconds of
/// `bbctl shutdown` (the step itself goes on, for the next master to
/// re-adopt). (Long polls end on the same signal; they are not tested
/// here: nothing outside the server says when one is waiting, so a test
/// could not know that its request was in before the shutdown.)
#[test]
fn a_followed_log_ends_when_the_master_stops() {
    let (mut m, addr) = start();
    m.force_build("slow");
    let build = wait_running(addr);
    let mut follow = open(
        addr,
        &format!("/api/v1/builds/{build}/steps/0/log?follow=1"),
        &[],
    );
    assert_eq!(follow.status, 200);
    let start = Instant::now();
    m.bbctl_ok(&["shutdown"]);
    assert_eq!(follow.line(), None, "the followed log went on");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "it ended {:?} after the shutdown",
        start.elapsed()
    );
    m.wait_exit(Duration::from_secs(10));
}

/// A log that cannot be read (here a FIFO put in its place) cuts the
/// followed answer off without its last chunk, and a long poll of it is
/// a 500: the client sees a failure, not an empty log that looks
/// complete.
#[test]
fn an_unreadable_log_breaks_the_followed_answer_instead_of_ending_it() {
    use std::io::Read;
    let (m, addr) = start();
    let build = super::run_build(&m, &["fast"], 0);
    let path = m.state_dir().join(format!("logs/{build}/0.log"));
    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut follow = open(
        addr,
        &format!("/api/v1/builds/{build}/steps/0/log?follow=1"),
        &[],
    );
    assert_eq!(follow.status, 200);
    let mut got = Vec::new();
    let err = follow
        .body
        .read_to_end(&mut got)
        .expect_err("the answer ended as if the log were whole");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert!(got.is_empty());
    // The long poll the page uses says so too, rather than "complete".
    let a = get(addr, &format!("/api/v1/builds/{build}/steps/0/log?wait=1"));
    assert_eq!(a.status, 500, "{}", a.text());
    assert!(a.text().contains("not a regular file"), "{}", a.text());
    // The master goes on serving.
    assert_eq!(get(addr, "/api/v1/status").status, 200);
}
