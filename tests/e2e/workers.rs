//! Remote workers: `bbworker --secret-file` against a master's `secret_file`.

use std::time::Duration;

use crate::harness::{Master, start_worker, text};

const REMOTE: &str = r#"
[[worker]]
name = "box"
secret_file = "@DIR@/box.secret"
max_builds = 1

[[builder]]
name = "remote"
workers = ["box"]

  [[builder.step]]
  name = "where"
  shell = "echo built by $BB_BUILDER; pwd"
"#;

/// A remote worker with the right secret connects, builds run on it (the
/// history names it, the step runs in its own work dir); a worker with a
/// wrong secret, or an unknown name, is refused and exits non-zero saying
/// why.
#[test]
fn remote_worker_with_secret_file() {
    let m = Master::start_with_files(
        REMOTE,
        &[
            ("box.secret", "s3cret-one-0123456789\n"),
            ("wrong.secret", "not-it-0123456789abcdef\n"),
        ],
    );

    let wrong = start_worker(&m, "box", &m.path().join("wrong.secret"));
    let out = wrong.finish(Duration::from_secs(10));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("wrong secret"), "{err}");

    let stranger = start_worker(&m, "stranger", &m.path().join("box.secret"));
    let out = stranger.finish(Duration::from_secs(10));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stderr).contains("stranger"),
        "{}",
        text(&out.stderr)
    );

    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["workers"][0]["connected"], false, "{s}");

    // No need to wait for the connection: the request waits in the queue.
    let worker = start_worker(&m, "box", &m.path().join("box.secret"));
    let out = m.bbctl_code(&["force-build", "remote", "--follow"], 0);
    let work_dir = m.path().join("w-box").join("remote");
    assert_eq!(
        text(&out.stdout),
        format!("built by remote\n{}\n", work_dir.display())
    );
    let builds = m.bbctl_json(&["builds"]);
    assert_eq!(builds[0]["worker"], "box", "{builds}");
    assert_eq!(builds[0]["result"], "success", "{builds}");
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["workers"][0]["connected"], true, "{s}");
    assert_eq!(s["workers"][0]["local"], false, "{s}");
    drop(worker);
}
