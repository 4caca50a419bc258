//! `bbctl` as a command line: exit codes and closed pipes.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{
    BBCTL, BBCTL_TIMEOUT, Master, code, command, describe, run_with_timeout, temp_dir, text,
    wait_child,
};

/// With no master on the socket, every command that needs one exits 3 with
/// one error line that names the socket it tried (found through
/// `--state-dir`, `BBMASTER_STATE_DIR` or `--socket`).
#[test]
fn unreachable_master_exits_3_naming_the_socket() {
    let dir = temp_dir();
    let socket = dir.path().join("control.sock");
    let socket_s = socket.to_str().unwrap();

    let runs: Vec<(Vec<&str>, Option<&std::path::Path>)> = vec![
        (vec!["status"], Some(dir.path())),
        (vec!["builds", "--json"], Some(dir.path())),
        (vec!["force-build", "hello", "--wait"], Some(dir.path())),
        (
            vec!["--state-dir", dir.path().to_str().unwrap(), "status"],
            None,
        ),
        (vec!["--socket", socket_s, "log"], None),
    ];
    for (args, env_dir) in runs {
        let mut cmd = command(BBCTL);
        if let Some(d) = env_dir {
            cmd.env("BBMASTER_STATE_DIR", d);
        }
        cmd.args(&args);
        let out = run_with_timeout(cmd, BBCTL_TIMEOUT);
        assert_eq!(code(&out), 3, "bbctl {args:?}: {}", describe(&out));
        assert_eq!(text(&out.stdout), "", "bbctl {args:?}");
        let err = text(&out.stderr);
        let errors: Vec<_> = err
            .lines()
            .filter(|l| l.starts_with("bbctl: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "bbctl {args:?}: {err}");
        assert!(
            errors[0].starts_with(&format!(
                "bbctl: error: cannot reach the master at {socket_s}"
            )),
            "bbctl {args:?}: {err}"
        );
    }
}

/// The documented exit codes: 4 for what does not exist, 5 for what the
/// master refuses, 2 for a usage error.
#[test]
fn exit_codes_not_found_rejected_usage() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo quick"
"#,
    );
    let out = m.bbctl_code(&["build", "999"], 4);
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("999"), "{}", describe(&out));
    m.bbctl_code(&["log", "999"], 4);
    m.bbctl_code(&["stop", "999"], 4);
    m.bbctl_code(&["cancel", "999"], 4);
    let out = m.bbctl_code(&["force-build", "nosuchbuilder"], 4);
    assert!(
        text(&out.stderr).contains("nosuchbuilder"),
        "{}",
        describe(&out)
    );
    assert_eq!(m.bbctl_json(&["builds"]), serde_json::json!([]));

    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    let out = m.bbctl_code(&["cancel", "1"], 5);
    assert!(
        text(&out.stderr).contains("already finished"),
        "{}",
        describe(&out)
    );

    for args in [
        &["frobnicate"][..],
        &["build"],
        &["build", "notanumber"],
        &["builds", "--limit", "-3"],
        &["status", "--no-such-flag"],
    ] {
        let out = m.bbctl_code(args, 2);
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{}",
            describe(&out)
        );
        assert_eq!(text(&out.stdout), "", "{}", describe(&out));
    }
    // --help is not an error.
    let help = m.bbctl_ok(&["--help"]);
    assert!(help.contains("Exit codes:"), "{help}");
}

/// `bbctl ... | head -c 1`: a reader that closes the pipe early never makes
/// bbctl panic or report an error; it exits 0.
#[test]
fn closed_stdout_is_not_an_error() {
    let m = Master::start_default();
    m.bbctl_code(&["force-build", "hello", "--wait"], 0);
    for args in [
        &["builds"][..],
        &["--json", "builds"],
        &["status"],
        &["--json", "status"],
        &["log", "1"],
        &["--json", "log", "1"],
        &["completions", "bash"],
    ] {
        for read_first in [false, true] {
            let mut cmd = m.bbctl_command(args);
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start bbctl");
            let mut stdout = child.stdout.take().unwrap();
            if read_first {
                let mut byte = [0u8; 1];
                assert_eq!(
                    stdout.read(&mut byte).unwrap(),
                    1,
                    "bbctl {args:?} printed nothing"
                );
            }
            drop(stdout);
            let status = wait_child(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
                let _ = child.kill();
                panic!("bbctl {args:?} hung on a closed pipe");
            });
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(!err.contains("panicked"), "bbctl {args:?}: {err}");
            assert_eq!(status.code(), Some(0), "bbctl {args:?}: {err}");
            assert_eq!(err, "", "bbctl {args:?}");
        }
    }
}
