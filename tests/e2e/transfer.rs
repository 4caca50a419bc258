//! File transfer (docs/transfer.md): `upload` and `download` steps with a
//! real master, a real remote worker and `bbctl artifact(s)`: small, empty,
//! binary, many and large files with their checksums compared, path escape
//! attempts, `max_size`, and a worker or master killed mid-transfer.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{
    BBCTL, Background, Master, Transport, code, command, over_unix_and_tls, run_with_timeout,
    start_worker, text, wait_until,
};

/// How long a build with small files may take.
const WAIT: Duration = Duration::from_secs(30);
/// How long a build with hundreds of MiB may take (debug builds, slow CI).
const SLOW: Duration = Duration::from_secs(180);

/// A config with remote worker `w1`, the transfer dir `@DIR@/files`,
/// `worker_grace` and one builder `b` whose steps are `steps` (TOML).
fn config(grace: &str, steps: &str) -> String {
    format!(
        r#"
[master]
transfer_dir = "@DIR@/files"
worker_grace = "{grace}"

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "b"
workers = ["w1"]
{steps}
"#
    )
}

/// A master on `config` serving remote workers over `transport`, with
/// `w1`'s secret and the transfer dir in place.
fn master(transport: Transport, config: &str) -> Master {
    let m = Master::start_over(
        transport,
        config,
        &[("w1.secret", "w1-secret-0123456789\n")],
    );
    fs::create_dir_all(m.path().join("files")).unwrap();
    m
}

fn w1(m: &Master) -> Background {
    start_worker(m, "w1", &m.path().join("w1.secret"))
}

/// The work dir of builder `b` on `w1`.
fn work(m: &Master) -> PathBuf {
    m.path().join("w-w1").join("b")
}

/// Build `id`'s artifacts dir on the master.
fn artifacts_dir(m: &Master, id: u64) -> PathBuf {
    m.state_dir().join("artifacts").join(id.to_string())
}

fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Partial files anywhere under `dir`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(".partial-") {
            out.push(p);
        } else if p.is_dir() {
            out.extend(partials(&p));
        }
    }
    out
}

/// Wait (bounded) until build `id` has a result; its `build --json`.
fn wait_finished(m: &Master, id: u64, timeout: Duration) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("build {id} to finish"), timeout, || {
        let out = m.bbctl(&["--json", "build", &id.to_string()]);
        if code(&out) != 0 {
            return false;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["result"].is_null() {
            return false;
        }
        found = v;
        true
    });
    found
}

/// Deterministic bytes that are not text.
fn binary(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A peak resident size, in KiB, from /proc (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Download a binary file, make small, empty, text and 50 more files,
/// upload them all (as a directory) and fetch them back with bbctl: every
/// checksum matches the worker's files and `bbctl artifacts` agrees.
fn small_empty_binary_and_many_files(transport: Transport) {
    let steps = r#"
  [[builder.step]]
  name = "fetch-input"
  download = { from = "inputs/data.bin", to = "in/data.bin", mode = "0600" }

  [[builder.step]]
  name = "make"
  shell = "rm -rf out && mkdir -p out/many && cp in/data.bin out/data.bin && : > out/empty && printf hello > out/hello.txt && for i in $(seq 1 50); do echo file $i > out/many/f$i.txt; done"

  [[builder.step]]
  name = "publish"
  upload = { from = "out", max_size = "1GiB", mode = "0644" }
"#;
    let m = master(transport, &config("60s", steps));
    let data = binary(3 << 20);
    fs::create_dir_all(m.path().join("files/inputs")).unwrap();
    fs::write(m.path().join("files/inputs/data.bin"), &data).unwrap();
    let _w = w1(&m);
    m.force_build("b");
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "success", "{b}");

    // The download: same bytes, the asked mode.
    let got = work(&m).join("in/data.bin");
    assert_eq!(fs::read(&got).unwrap(), data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&got).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(partials(&work(&m)).is_empty());

    // The upload: 53 artifacts, each identical to the worker's file.
    let list = m.bbctl_json(&["artifacts", "1"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 53, "{list:?}");
    for a in list {
        let name = a["name"].as_str().unwrap();
        let stored = artifacts_dir(&m, 1).join(name);
        let source = work(&m).join("out").join(name);
        assert_eq!(a["sha256"], sha256_file(&source), "{name}");
        assert_eq!(sha256_file(&stored), sha256_file(&source), "{name}");
        assert_eq!(a["size"], fs::metadata(&source).unwrap().len(), "{name}");
    }
    assert!(list.iter().any(|a| a["name"] == "many/f50.txt"));
    let empty = list.iter().find(|a| a["name"] == "empty").unwrap();
    assert_eq!(
        empty["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(partials(&artifacts_dir(&m, 1)).is_empty());

    // bbctl artifact: to a file (atomically) and to stdout.
    let dest = m.path().join("fetched.bin");
    m.bbctl_ok(&["artifact", "1", "data.bin", "-o", dest.to_str().unwrap()]);
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(m.bbctl_ok(&["artifact", "1", "hello.txt"]), "hello");
    let empty_out = m.path().join("empty.out");
    m.bbctl_ok(&["artifact", "1", "empty", "-o", empty_out.to_str().unwrap()]);
    assert_eq!(fs::read(&empty_out).unwrap(), b"");
    // Unknown build or name: exit 4, and no file is left.
    let missing = m.path().join("missing.out");
    let out = m.bbctl_code(
        &["artifact", "1", "nope", "-o", missing.to_str().unwrap()],
        4,
    );
    assert!(
        text(&out.stderr).contains("no artifact named `nope`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());
    m.bbctl_code(&["artifacts", "99"], 4);
    assert!(
        m.bbctl_ok(&["log", "1", "2"])
            .contains("uploaded many/f1.txt"),
        "the step log says what was uploaded"
    );
}
over_unix_and_tls!(small_empty_binary_and_many_files =>
    upload_and_download_small_empty_binary_and_many_files,
    upload_and_download_small_empty_binary_and_many_files_over_tls);

/// 200 MiB each way, streamed: the master's and the worker's peak RSS stay
/// under 64 MiB, and the checksums match.
fn large_files_streamed(transport: Transport) {
    let steps = r#"
  [[builder.step]]
  name = "fetch-input"
  download = { from = "big.in", to = "big.in" }

  [[builder.step]]
  name = "make"
  shell = "head -c 209715200 /dev/urandom > big.out"

  [[builder.step]]
  name = "publish"
  upload = { from = "big.out" }
"#;
    let m = master(transport, &config("60s", steps));
    {
        use std::io::Write;
        let mut f = fs::File::create(m.path().join("files/big.in")).unwrap();
        let block = binary(1 << 20);
        for _ in 0..200 {
            f.write_all(&block).unwrap();
        }
    }
    let w = w1(&m);
    m.force_build("b");
    let b = wait_finished(&m, 1, SLOW);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(
        sha256_file(&work(&m).join("big.in")),
        sha256_file(&m.path().join("files/big.in"))
    );
    let stored = artifacts_dir(&m, 1).join("big.out");
    assert_eq!(sha256_file(&stored), sha256_file(&work(&m).join("big.out")));
    let list = m.bbctl_json(&["artifacts", "1"]);
    assert_eq!(list[0]["size"], 200u64 << 20);
    let (master_kib, worker_kib) = (peak_rss_kib(m.pid()), peak_rss_kib(w.pid()));
    eprintln!("peak RSS: master {master_kib} KiB, worker {worker_kib} KiB");
    assert!(
        master_kib > 0 && master_kib < 64 << 10,
        "master peak RSS {master_kib} KiB"
    );
    assert!(
        worker_kib > 0 && worker_kib < 64 << 10,
        "worker peak RSS {worker_kib} KiB"
    );
}
over_unix_and_tls!(large_files_streamed =>
    large_files_are_streamed_with_bounded_memory,
    large_files_are_streamed_with_bounded_memory_over_tls);

/// `..` and absolute paths are refused at config time with file:line:column;
/// symlinks pointing out of the work dir or the transfer dir fail the step
/// with a reason that says so.
#[test]
fn path_escapes_are_refused() {
    let dir = crate::harness::temp_dir();
    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        r#"[[worker]]
name = "w"
secret = "s-0123456789abcdef"

[[builder]]
name = "b"
workers = ["w"]

  [[builder.step]]
  name = "up"
  upload = { from = "../../etc/passwd" }

  [[builder.step]]
  name = "down"
  download = { from = "/etc/passwd", to = "x" }
"#,
    )
    .unwrap();
    let mut cmd = command(BBCTL);
    cmd.arg("check-config").arg(&bad);
    let out = run_with_timeout(cmd, WAIT);
    assert_ne!(code(&out), 0);
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains("bad.toml:11:"), "{err}");
    assert!(err.contains("goes up with `..`"), "{err}");
    assert!(err.contains("bad.toml:15:"), "{err}");
    assert!(err.contains("is an absolute path"), "{err}");

    let steps = r#"
  [[builder.step]]
  name = "link"
  shell = "mkdir -p out && ln -sf @DIR@/w1.secret out/secret.txt"

  [[builder.step]]
  name = "publish"
  upload = { from = "out/*.txt" }
"#;
    let m = master(Transport::Unix, &config("60s", steps));
    let _w = w1(&m);
    m.force_build("b");
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "failure", "{b}");
    let reason = b["steps"][1]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("outside the work dir"), "{b}");
    assert!(
        m.bbctl_json(&["artifacts", "1"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A download whose source is a symlink out of the transfer dir.
    std::os::unix::fs::symlink(m.path().join("w1.secret"), m.path().join("files/leak")).unwrap();
    m.write_config(&config(
        "60s",
        r#"
  [[builder.step]]
  name = "fetch"
  download = { from = "leak", to = "leak" }
"#,
    ));
    m.bbctl_ok(&["reload"]);
    m.force_build("b");
    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(b["result"], "failure", "{b}");
    let reason = b["steps"][0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("outside the transfer dir"), "{b}");
    assert!(!work(&m).join("leak").exists());
}

/// A file over `max_size` fails its step with the reason; files stored by
/// an earlier step stay, nothing partial is left.
#[test]
fn max_size_exceeded_leaves_no_partial_and_keeps_earlier_artifacts() {
    let steps = r#"
  [[builder.step]]
  name = "make"
  shell = "printf small > small.txt && head -c 5000 /dev/zero > big.bin"

  [[builder.step]]
  name = "first"
  upload = { from = "small.txt" }

  [[builder.step]]
  name = "second"
  upload = { from = "big.bin", max_size = "4KiB" }
"#;
    let m = master(Transport::Unix, &config("60s", steps));
    let _w = w1(&m);
    m.force_build("b");
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "failure", "{b}");
    let reason = b["steps"][2]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("max_size"), "{b}");
    let list = m.bbctl_json(&["artifacts", "1"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small.txt"]);
    assert_eq!(
        fs::read(artifacts_dir(&m, 1).join("small.txt")).unwrap(),
        b"small"
    );
    assert!(!artifacts_dir(&m, 1).join("big.bin").exists());
    assert!(partials(&artifacts_dir(&m, 1)).is_empty());
}

/// Steps uploading a 1 GiB sparse file, slow enough to be cut.
const BIG_UPLOAD: &str = r#"
  [[builder.step]]
  name = "make"
  shell = "truncate -s 1G big.bin"

  [[builder.step]]
  name = "publish"
  upload = { from = "big.bin" }
"#;

/// Wait until a partial upload shows up in build 1's artifacts dir.
fn wait_partial(m: &Master) {
    wait_until("an upload in progress", SLOW, || {
        !partials(&artifacts_dir(m, 1)).is_empty()
    });
}

/// `kill -9` of the worker mid-upload: the partial file is deleted at
/// once, and the build follows the lost-worker rule (retry after grace).
fn worker_killed_mid_transfer(transport: Transport) {
    let m = master(transport, &config("1s", BIG_UPLOAD));
    let w = w1(&m);
    m.force_build("b");
    wait_partial(&m);
    w.kill9();
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "retry", "{b}");
    assert!(partials(&artifacts_dir(&m, 1)).is_empty());
    assert!(!artifacts_dir(&m, 1).join("big.bin").exists());
    assert!(
        m.bbctl_json(&["artifacts", "1"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}
over_unix_and_tls!(worker_killed_mid_transfer =>
    worker_killed_mid_transfer_leaves_no_partial_file,
    worker_killed_mid_transfer_leaves_no_partial_file_over_tls);

/// The master killed mid-upload: the next master deletes the partial file
/// at start; the worker reports the step failed when it is resumed, and
/// the build ends `failure` saying the transfer was cut.
fn master_restarted_mid_transfer(transport: Transport) {
    let mut m = master(transport, &config("60s", BIG_UPLOAD));
    let _w = w1(&m);
    m.force_build("b");
    wait_partial(&m);
    m.kill9();
    m.spawn();
    assert!(partials(&artifacts_dir(&m, 1)).is_empty(), "swept at start");
    let started = Instant::now();
    let b = wait_finished(&m, 1, SLOW);
    assert_eq!(b["result"], "failure", "{b}");
    let reason = b["steps"][1]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("mid-transfer"), "{b}");
    assert!(partials(&artifacts_dir(&m, 1)).is_empty());
    assert!(!artifacts_dir(&m, 1).join("big.bin").exists());
    eprintln!("build ended {:?} after the restart", started.elapsed());
}
over_unix_and_tls!(master_restarted_mid_transfer =>
    master_restarted_mid_transfer_fails_the_step_cleanly,
    master_restarted_mid_transfer_fails_the_step_cleanly_over_tls);
