//! A compromised worker (issue 20): a small client that speaks the real
//! protocol with a valid secret and misbehaves. Each test says what the
//! attack was and what bounds it (see docs/security.md, "Threat model").

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use bbctl::protocol::transfer::sha256_hex;
use bbctl::protocol::{
    BuildId, FileBegin, FileChunk, FileEnd, Hello, MasterToWorker, Role, StepEnd, StepIndex,
    WorkerToMaster,
};
use serde_json::Value;

use crate::harness::{Master, process_gone, wait_until};
use crate::hostile::{Answer, Peer, assert_serves, builds, rss_kb, worker_connected};

/// `evil` is a remote worker whose secret the test knows; every builder
/// but `quick` runs on it. Deadlines and upload limits are small so that
/// the tests are quick.
const EVIL: &str = r#"
[master]
keepalive = "1s"
deadline_grace = "1s"
max_upload_size = "64KiB"
max_artifact_bytes_per_build = "100KiB"
max_artifacts_per_build = 5

[[worker]]
name = "local-1"
local = true

[[worker]]
name = "evil"
secret = "evil-but-correct"

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "true"

[[builder]]
name = "up"
workers = ["evil"]

  [[builder.step]]
  name = "upload"
  upload = { from = "out" }

[[builder]]
name = "timed"
workers = ["evil"]

  [[builder.step]]
  name = "slow"
  shell = "sleep 1000"
  timeout = "1s"

[[builder]]
name = "plain"
workers = ["evil"]

  [[builder.step]]
  name = "s"
  shell = "sleep 1000"
"#;

/// The evil worker, connected.
fn evil(m: &Master, what: &str) -> Peer {
    wait_until("evil to be seen as gone", Duration::from_secs(10), || {
        worker_connected(m, "evil") == Some(false)
    });
    Peer::worker(m, "evil", "evil-but-correct", what)
}

/// Queue a build of `builder` and take its first step on `w`.
fn take_step(m: &Master, w: &mut Peer, builder: &str) -> (BuildId, StepIndex) {
    m.force_build(builder);
    match w.next_to_worker() {
        Some(MasterToWorker::StartStep(a)) => (a.build, a.step),
        other => panic!("expected a StartStep of {builder}, got {other:?}"),
    }
}

/// The build `id` once it has ended (bounded wait).
fn ended(m: &Master, id: BuildId, within: Duration) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("build {id} to end"), within, || {
        found = builds(m)
            .into_iter()
            .find(|b| b["id"] == id && !b["result"].is_null())
            .unwrap_or(Value::Null);
        !found.is_null()
    });
    found
}

/// Upload one file of `data` named `name`: the master's answer (its ack
/// of the whole file, or the refusal).
fn upload(
    w: &mut Peer,
    (build, step): (BuildId, StepIndex),
    name: &str,
    data: &[u8],
) -> Result<(), String> {
    w.send_msg(&WorkerToMaster::FileBegin(FileBegin {
        build,
        step,
        name: name.into(),
        size: data.len() as u64,
        mode: 0o644,
    }));
    w.send_msg(&WorkerToMaster::FileChunk(FileChunk {
        build,
        step,
        offset: 0,
        data: data.to_vec(),
    }));
    w.send_msg(&WorkerToMaster::FileEnd(FileEnd {
        build,
        step,
        sha256: sha256_hex(data),
    }));
    loop {
        match w.next_to_worker() {
            Some(MasterToWorker::FileAck { received, .. }) if received == data.len() as u64 => {
                return Ok(());
            }
            Some(MasterToWorker::FileAck { .. }) => {}
            Some(MasterToWorker::FileRefused { reason, .. }) => return Err(reason),
            other => panic!("upload of {name:?}: expected an ack or a refusal, got {other:?}"),
        }
    }
}

/// End a step as a success and return the build's record.
fn end_ok(m: &Master, w: &mut Peer, (build, step): (BuildId, StepIndex)) -> Value {
    w.send_msg(&WorkerToMaster::StepEnded {
        build,
        step,
        end: StepEnd::Exited { code: 0 },
    });
    let b = ended(m, build, Duration::from_secs(10));
    expect_end_kept(w, (build, step));
    b
}

/// The master's receipt of a step's end (protocol 5), sent once stored.
fn expect_end_kept(w: &mut Peer, (build, step): (BuildId, StepIndex)) {
    match w.next_to_worker() {
        Some(MasterToWorker::EndKept { build: b, step: s }) if (b, s) == (build, step) => {}
        other => panic!("expected the end_kept of build {build} step {step}, got {other:?}"),
    }
}

/// Item 4: no upload over `max_upload_size` (whatever the step says), no
/// more than `max_artifacts_per_build` files or
/// `max_artifact_bytes_per_build` bytes per build, and no name with a
/// control character; each refusal fails the build with the limit's name,
/// and nothing partial stays.
#[test]
fn uploads_are_bounded_by_size_quota_and_names() {
    let m = Master::start(EVIL);
    let mut w = evil(&m, "the uploading worker");

    // One file over max_upload_size (the step itself sets no max_size).
    let step = take_step(&m, &mut w, "up");
    let e = upload(&mut w, step, "big", &vec![7u8; 65 * 1024]).unwrap_err();
    assert!(e.contains("max_upload_size"), "{e}");
    let b = end_ok(&m, &mut w, step);
    assert_eq!(b["result"], "failure", "{b}");
    assert!(
        b["reason"].as_str().unwrap().contains("max_upload_size"),
        "{b}"
    );

    // Five small files are fine, the sixth is over max_artifacts_per_build.
    let step = take_step(&m, &mut w, "up");
    for i in 0..5 {
        upload(&mut w, step, &format!("f{i}"), b"x").unwrap();
    }
    let e = upload(&mut w, step, "f5", b"x").unwrap_err();
    assert!(e.contains("max_artifacts_per_build"), "{e}");
    let b = end_ok(&m, &mut w, step);
    assert_eq!(b["result"], "failure", "{b}");
    let artifacts = m.bbctl_json(&["artifacts", &step.0.to_string()]);
    assert_eq!(artifacts.as_array().map(Vec::len), Some(5), "{artifacts}");

    // Two files of 50 KiB fit in 100 KiB, a third byte does not.
    let step = take_step(&m, &mut w, "up");
    upload(&mut w, step, "a", &vec![1u8; 50 * 1024]).unwrap();
    upload(&mut w, step, "b", &vec![2u8; 50 * 1024]).unwrap();
    let e = upload(&mut w, step, "c", b"!").unwrap_err();
    assert!(e.contains("max_artifact_bytes_per_build"), "{e}");
    end_ok(&m, &mut w, step);

    // Names that would forge log lines or fool a reader.
    for name in [
        "a\nINFO forged line",
        "evil\u{202e}txt.exe",
        "\x1b]0;title\x07",
    ] {
        let step = take_step(&m, &mut w, "up");
        let e = upload(&mut w, step, name, b"x").unwrap_err();
        assert!(e.contains("control character"), "{e}");
        assert!(!e.contains('\n') && !e.contains('\x1b'), "{e:?}");
        end_ok(&m, &mut w, step);
    }
    let log = m.stderr();
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged line")),
        "an artifact name forged a line of the master's log:\n{log}"
    );
    // Nothing partial is left anywhere.
    let leftovers: Vec<_> = walk(&m.state_dir().join("artifacts"))
        .into_iter()
        .filter(|p| p.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_serves(&m, "uploads over the limits");
}

/// Item 4: an upload that would leave less than `min_free_space` on the
/// master's disk is refused (a floor no test disk has: every upload is).
#[test]
fn an_upload_that_would_cross_the_free_space_floor_is_refused() {
    let m = Master::start(&EVIL.replace(
        "max_artifacts_per_build = 5\n",
        "max_artifacts_per_build = 5\nmin_free_space = \"1000000GiB\"\n",
    ));
    let mut w = evil(&m, "a worker filling the disk");
    let step = take_step(&m, &mut w, "up");
    let e = upload(&mut w, step, "small", b"tiny").unwrap_err();
    assert!(e.contains("min_free_space"), "{e}");
    let b = end_ok(&m, &mut w, step);
    assert_eq!(b["result"], "failure", "{b}");
}

/// Item 4: after the handshake a worker's frames are limited near the real
/// chunk size (128 KiB), whatever `max_frame` says (here its 16 MiB
/// default): a bigger frame closes the link with the limit in the reason.
#[test]
fn a_worker_frame_over_the_chunk_size_limit_closes_the_link() {
    let m = Master::start(EVIL);
    let mut w = evil(&m, "a worker sending a 200 KiB frame");
    w.send_msg(&WorkerToMaster::Output {
        build: 999,
        step: 0,
        offset: 0,
        data: vec![b'x'; 200 << 10],
    });
    w.expect_goodbye("over the limit of 131072 bytes");
    assert_serves(&m, "a 200 KiB frame from a worker");
}

/// Send `frame` up to `times` times, stopping at the first write the
/// master does not take within half a second (it stopped reading).
fn flood(w: &mut Peer, frame: &[u8], times: usize) -> usize {
    use std::io::Write;
    w.stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (0..times)
        .take_while(|_| w.stream.write_all(frame).is_ok())
        .count()
}

/// The peak resident memory of `pid` over `span`.
fn peak_rss(pid: u32, span: Duration) -> u64 {
    let until = Instant::now() + span;
    let mut peak = rss_kb(pid);
    while Instant::now() < until {
        peak = peak.max(rss_kb(pid));
        thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// Item 4: a worker that stops reading, so that its link task blocks
/// writing a download to it, then floods the link: what the master reads
/// ahead is bounded in bytes (about 1 MiB, not 64 frames of any size), and
/// frames over the worker limit (128 KiB) are not read at all, so neither
/// 100 frames of 120 KiB nor 40 frames of 8 MiB grow its memory.
#[test]
fn a_worker_that_stops_reading_and_floods_cannot_grow_the_masters_memory() {
    let config = EVIL.replace("[master]\n", "[master]\ntransfer_dir = \"@DIR@/files\"\n")
        + r#"
[[builder]]
name = "down"
workers = ["evil"]

  [[builder.step]]
  name = "fetch"
  download = { from = "big.bin", to = "big.bin" }
"#;
    let m = Master::start(&config);
    fs::create_dir_all(m.path().join("files")).unwrap();
    fs::write(m.path().join("files/big.bin"), vec![9u8; 4 << 20]).unwrap();
    let pid = m.pid();
    for (what, size, times, slack_kb) in [
        ("100 frames of 120 KiB", 120 << 10, 100, 4 * 1024),
        ("40 frames of 8 MiB", 8 << 20, 40, 16 * 1024),
    ] {
        let mut w = evil(&m, what);
        // The download's chunks fill the socket: the link task blocks
        // writing to a worker that never reads.
        take_step(&m, &mut w, "down");
        let frame = bbctl::protocol::frame::encode(&WorkerToMaster::Output {
            build: 999,
            step: 0,
            offset: 0,
            data: vec![b'y'; size],
        })
        .unwrap();
        let before = rss_kb(pid);
        let sent = flood(&mut w, &frame, times);
        let peak = peak_rss(pid, Duration::from_millis(500));
        assert!(
            peak < before + slack_kb,
            "{what}: the master's RSS went from {before} KiB to {peak} KiB ({sent} frames sent)"
        );
        drop(w);
        assert_serves(&m, what);
    }
}

/// Items 4 and 6: a worker's strings are capped and escaped before they
/// are stored or logged: a 100 KB error with escape sequences and
/// newlines in a step end, a host name with a newline, and a worker name
/// with a newline before authentication.
#[test]
fn a_workers_strings_are_capped_and_escaped() {
    let m = Master::start(EVIL);

    // Before authentication: a name that would forge a log line.
    let mut p = Peer::connect(&m.worker_socket(), "a forging worker name");
    p.send_worker_hello("x\nERROR forged by a worker name", "wrong");
    match p.answer() {
        Answer::Refused(_) | Answer::Closed => {}
        Answer::Welcome => panic!("a wrong secret was welcomed"),
    }

    // A host name with a newline and a terminal escape, very long.
    wait_until("evil to be seen as gone", Duration::from_secs(10), || {
        worker_connected(&m, "evil") == Some(false)
    });
    let mut w = Peer::connect(&m.worker_socket(), "a worker with a long host name");
    w.send_hello_proving(
        &Hello::new(Role::Worker {
            name: "evil".into(),
            running: vec![],
            host: Some(format!("host\n\x1b[2J{}", "h".repeat(20_000))),
        }),
        "evil-but-correct",
    );
    assert!(matches!(w.answer(), Answer::Welcome));
    let workers = m.bbctl_json(&["workers"]);
    let host = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "evil")
        .and_then(|w| w["host"].as_str())
        .expect("evil's host")
        .to_string();
    assert!(host.len() < 512, "host kept at {} bytes", host.len());
    assert!(!host.contains('\n') && !host.contains('\x1b'), "{host:?}");

    // A huge error with escape sequences in a step end.
    let step = take_step(&m, &mut w, "plain");
    let error = format!(
        "\x1b]52;c;cHduZWQ=\x07{}\nERROR forged by a step end",
        "A".repeat(100_000)
    );
    w.send_msg(&WorkerToMaster::StepEnded {
        build: step.0,
        step: step.1,
        end: StepEnd::SpawnFailed { error },
    });
    let b = ended(&m, step.0, Duration::from_secs(10));
    expect_end_kept(&mut w, step);
    let reason = b["reason"].as_str().expect("a reason").to_string();
    assert!(
        reason.len() < 5000,
        "the reason was kept at {} bytes",
        reason.len()
    );
    assert!(reason.contains("truncated"), "{reason}");
    assert!(
        !reason.contains('\x1b') && !reason.contains('\n'),
        "{reason:?}"
    );
    let log = m.stderr();
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a worker forged a line of the master's log:\n{log}"
    );
    assert_serves(&m, "long and hostile strings");
}

/// Items 4 and 6: a gap in a step's output offsets closes the link at
/// once, with one line in the master's log, instead of a warning for
/// every frame that follows.
#[test]
fn a_gap_in_output_closes_the_link() {
    let m = Master::start(EVIL);
    let mut w = evil(&m, "a worker leaving a gap");
    let (build, step) = take_step(&m, &mut w, "plain");
    w.send_msg(&WorkerToMaster::Output {
        build,
        step,
        offset: 0,
        data: b"first\n".to_vec(),
    });
    for i in 0..200u64 {
        w.send_msg(&WorkerToMaster::Output {
            build,
            step,
            offset: 1000 + i,
            data: b"x".to_vec(),
        });
    }
    // What came before the gap is acknowledged (`output_kept`), then the
    // goodbye.
    loop {
        match w.next_to_worker() {
            Some(MasterToWorker::OutputKept { kept, .. }) => assert_eq!(kept, 6),
            Some(MasterToWorker::Goodbye { reason }) => {
                assert!(
                    reason.contains("gap"),
                    "goodbye {reason:?} does not say gap"
                );
                break;
            }
            other => panic!("expected output_kept then a goodbye, got {other:?}"),
        }
    }
    w.expect_closed();
    assert_serves(&m, "a gap in output");
    let log = m.stderr();
    let lines = log.lines().filter(|l| l.contains("gap")).count();
    assert!(lines <= 2, "{lines} lines about the gap:\n{log}");
}

/// Item 5: a worker that ignores the step's timeout, then one that ignores
/// `bbctl stop`: the master ends each build itself once `deadline_grace`
/// has passed (failure, then cancelled, the reason saying the worker did
/// not end the step), tells the worker to abandon the step, and closes a
/// link that goes on reporting it.
#[test]
fn the_master_enforces_timeouts_and_stops_a_worker_ignores() {
    let m = Master::start(EVIL);
    let mut w = evil(&m, "a worker ignoring timeouts");
    let started = Instant::now();
    let (build, step) = take_step(&m, &mut w, "timed");
    match w.next_to_worker() {
        Some(MasterToWorker::Abandon { build: b, step: s }) => assert_eq!((b, s), (build, step)),
        other => panic!("expected the master to abandon the step, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "abandoned after {took:?}, not after timeout + grace (2 s)"
    );
    let b = ended(&m, build, Duration::from_secs(5));
    assert_eq!(b["result"], "failure", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not end it within the 1s grace"),
        "{reason}"
    );
    // Reporting the abandoned step closes the link.
    w.send_msg(&WorkerToMaster::Output {
        build,
        step,
        offset: 0,
        data: b"still here\n".to_vec(),
    });
    w.expect_goodbye("which this worker was not given");

    let mut w = evil(&m, "a worker ignoring stops");
    let (build, step) = take_step(&m, &mut w, "plain");
    m.bbctl_ok(&["stop", &build.to_string()]);
    match w.next_to_worker() {
        Some(MasterToWorker::StopStep { .. }) => {}
        other => panic!("expected a StopStep, got {other:?}"),
    }
    match w.next_to_worker() {
        Some(MasterToWorker::Abandon { build: b, step: s }) => assert_eq!((b, s), (build, step)),
        other => panic!("expected the master to abandon the stopped step, got {other:?}"),
    }
    let b = ended(&m, build, Duration::from_secs(5));
    assert_eq!(b["result"], "cancelled", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("did not stop step `s`"),
        "{b}"
    );
    w.send_msg(&WorkerToMaster::StepEnded {
        build,
        step,
        end: StepEnd::Stopped,
    });
    w.expect_goodbye("which this worker was not given");
    assert_serves(&m, "workers ignoring timeouts and stops");
}

/// Item 8: failed logins are slowed for the whole master: 16 wrong
/// secrets sent at once are answered over several seconds (a burst of 10,
/// then one a second), not all after the per-connection second.
#[test]
fn parallel_secret_guessing_is_slowed_globally() {
    let m = Master::start(EVIL);
    let started = Instant::now();
    let guesses: Vec<_> = (0..16)
        .map(|i| {
            let mut p = Peer::connect(&m.worker_socket(), &format!("guess {i}"));
            p.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            p.send_worker_hello("evil", &format!("guess-{i:012}"));
            thread::spawn(move || {
                p.expect_refusal("wrong secret");
                started.elapsed()
            })
        })
        .collect();
    let mut times: Vec<Duration> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    times.sort();
    let last = *times.last().unwrap();
    assert!(
        last >= Duration::from_secs(5),
        "16 parallel guesses were all answered within {last:?}: {times:?}"
    );
    assert!(!process_gone(m.pid() as i32));
    assert_serves(&m, "parallel guessing");
}

/// Every file under `dir`, as strings.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}
