//! History retention: `keep_builds`/`keep_logs`, `bbctl prune`, and the
//! disk line of `status`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Master, text, wait_until};

/// `fast` keeps the master's 2 builds; `slow` keeps 1 of its own.
const CONFIG: &str = r#"
[master]
keep_builds = 2

[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "fast"
workers = ["local-1"]
  [[builder.step]]
  name = "say"
  shell = "echo build $BB_BUILD_ID"

[[builder]]
name = "slow"
workers = ["local-1"]
keep_builds = 1
  [[builder.step]]
  name = "nap"
  shell = "echo napping; sleep $BB_PROP_T"
"#;

fn build_ids(m: &Master) -> Vec<u64> {
    let builds = m.bbctl_json(&["builds"]);
    builds
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| b["id"].as_u64().expect("an id"))
        .collect()
}

/// Finished builds beyond `keep_builds` disappear from `builds` and their
/// logs from disk; `--dry-run` only reports; a running build, older than
/// the kept ones of its builder, is untouched; `status` shows the disk.
#[test]
fn prune_deletes_old_finished_builds_and_spares_a_running_one() {
    let m = Master::start(CONFIG);
    m.bbctl_code(&["force-build", "slow", "-p", "T=60"], 0);
    wait_until("build 1 to run", Duration::from_secs(20), || {
        text(&m.bbctl(&["log", "1"]).stdout).contains("napping")
    });
    m.bbctl_code(&["force-build", "slow", "-p", "T=0", "--wait"], 0);
    for _ in 0..4 {
        m.bbctl_code(&["force-build", "fast", "--wait"], 0);
    }
    assert_eq!(build_ids(&m), [6, 5, 4, 3, 2, 1]);
    let logs = m.state_dir().join("logs");

    let dry = m.bbctl_json(&["prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["builds_deleted"], json!([3, 4]), "{dry}");
    assert_eq!(
        build_ids(&m),
        [6, 5, 4, 3, 2, 1],
        "a dry run deletes nothing"
    );
    assert!(logs.join("3").exists());

    let done = m.bbctl_json(&["prune"]);
    assert_eq!(done["dry_run"], false, "{done}");
    assert_eq!(done["builds_deleted"], json!([3, 4]), "{done}");
    assert_eq!(done["logs_deleted"], json!([]), "{done}");
    assert!(done["bytes_freed"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(build_ids(&m), [6, 5, 2, 1]);
    assert!(!logs.join("3").exists() && !logs.join("4").exists());
    assert!(logs.join("1").exists() && logs.join("2").exists() && logs.join("6").exists());
    m.bbctl_code(&["build", "3"], 4);
    let running = m.bbctl_json(&["build", "1"]);
    assert_eq!(
        running["result"],
        Value::Null,
        "build 1 still runs: {running}"
    );
    assert_eq!(text(&m.bbctl(&["log", "1"]).stdout), "napping\n");

    let again = m.bbctl_ok(&["prune"]);
    assert_eq!(again, "nothing to prune\n");

    let status = m.bbctl_json(&["status"]);
    assert!(
        status["disk"]["logs_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(status["disk"]["db_bytes"].as_u64().unwrap() > 0, "{status}");
    let human = m.bbctl_ok(&["status"]);
    assert!(human.contains("disk: logs "), "{human}");
    m.bbctl_code(&["stop", "1"], 0);
}

/// Without `keep_builds`/`keep_logs` nothing is ever pruned.
#[test]
fn prune_without_a_policy_keeps_everything() {
    let m = Master::start(
        &CONFIG
            .replace("keep_builds = 2\n", "")
            .replace("keep_builds = 1\n", ""),
    );
    m.bbctl_code(&["force-build", "fast", "--wait"], 0);
    m.bbctl_code(&["force-build", "fast", "--wait"], 0);
    let done = m.bbctl_json(&["prune"]);
    assert_eq!(done["builds_deleted"], json!([]), "{done}");
    assert_eq!(build_ids(&m), [2, 1]);
}

/// The master prunes in the background (here: the pass at start), with no
/// `bbctl prune`: a lower `keep_builds` written while the master is down
/// holds as soon as it is back.
#[test]
fn the_master_prunes_in_the_background() {
    let mut m = Master::start(&CONFIG.replace("keep_builds = 2\n", ""));
    for _ in 0..3 {
        m.bbctl_code(&["force-build", "fast", "--wait"], 0);
    }
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(Duration::from_secs(15));
    m.write_config(
        CONFIG
            .replace("keep_builds = 2\n", "keep_builds = 1\n")
            .as_str(),
    );
    m.spawn();
    wait_until(
        "the background pass to prune",
        Duration::from_secs(20),
        || build_ids(&m) == [3],
    );
    assert!(!m.state_dir().join("logs").join("1").exists());
}
