//! Unit tests of config loading, and the corpus of broken configs.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The example from issue 2, verbatim (shared with the end-to-end tests).
const EXAMPLE: &str = include_str!("../../tests/config-examples/issue-2.toml");

/// Where the broken configs and their expected errors live.
const CORPUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/config-corpus");

/// Stands for [`CORPUS_DIR`] in `.expected` files, so they do not depend
/// on where the crate is checked out.
const CORPUS_PLACEHOLDER: &str = "<corpus>";

#[test]
fn example_is_accepted() {
    let config = parse_str(EXAMPLE, "master.toml", Path::new("/etc/bb")).expect("example parses");
    assert_eq!(config.origin, "master.toml");
    assert_eq!(config.hash.len(), 16);
    assert_eq!(
        config.master.state_dir.as_deref(),
        Some(Path::new("/var/lib/bbmaster"))
    );
    assert_eq!(config.master.control_socket, None);
    assert_eq!(config.master.worker_socket, None);

    let names: Vec<&str> = config.workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["local-1", "box-2"]);
    let local = &config.workers[0];
    assert!(local.local);
    assert_eq!(local.max_builds, 2);
    assert_eq!(local.secret, None);
    let remote = &config.workers[1];
    assert!(!remote.local);
    assert_eq!(remote.max_builds, 1);
    assert_eq!(remote.secret, Some(Secret("change-me-0123456789".into())));

    assert_eq!(config.builders.len(), 1);
    let hello = config.builder("hello").expect("builder hello");
    assert_eq!(hello.workers, ["local-1", "box-2"]);
    assert!(hello.previous_names.is_empty());
    assert_eq!(hello.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(hello.steps.len(), 2);
    let say = &hello.steps[0];
    assert_eq!(say.name, "say");
    assert_eq!(
        say.action,
        StepAction::Shell("echo $GREETING from $BB_BUILDER build $BB_BUILD_ID".into())
    );
    assert_eq!(say.timeout, None);
    let think = &hello.steps[1];
    assert_eq!(think.name, "think");
    assert_eq!(
        think.action,
        StepAction::Command(vec!["sleep".into(), "1".into()])
    );
    assert_eq!(think.timeout, Some(Duration::from_secs(30)));
    assert!(think.env.is_empty());
}

#[test]
fn embedded_default_parses() {
    let config = embedded_default();
    assert_eq!(config.origin, "<embedded default>");
    assert_eq!(config.master, MasterSettings::default());
    assert_eq!(config.workers.len(), 1);
    let worker = &config.workers[0];
    assert_eq!(worker.name, "local-1");
    assert!(worker.local);
    assert_eq!(worker.max_builds, 2);
    let hello = config.builder("hello").expect("builder hello");
    assert_eq!(hello.workers, ["local-1"]);
    assert_eq!(hello.steps.len(), 2);
    let StepAction::Shell(line) = &hello.steps[0].action else {
        panic!("step `say` should be a shell step");
    };
    assert!(line.contains("$BB_BUILDER") && line.contains("$BB_BUILD_ID"));
    assert_eq!(
        hello.steps[1].action,
        StepAction::Command(vec!["sleep".into(), "1".into()])
    );
    assert!(hello.steps[1].timeout.is_some());
    // `slow` gives the README's `bbctl stop` a build that is still running.
    assert_eq!(config.builders.len(), 2);
    let slow = config.builder("slow").expect("builder slow");
    assert_eq!(slow.workers, ["local-1"]);
    let StepAction::Shell(line) = &slow.steps[0].action else {
        panic!("step `count` should be a shell step");
    };
    assert!(
        line.contains("sleep 1") && line.contains("seq 1 45"),
        "{line}"
    );
    assert!(slow.steps[0].timeout > Some(Duration::from_secs(45)));
}

#[test]
fn secret_file_is_read_trimmed_and_relative_to_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("secrets")).expect("mkdir");
    std::fs::write(dir.path().join("secrets/box"), "s3cret-0123456789abcdef \n")
        .expect("write secret");
    let config_path = dir.path().join("master.toml");
    let text = "[master]\nstate_dir = \"state\"\n\n[[worker]]\nname = \"box\"\nsecret_file = \"secrets/box\"\n";
    std::fs::write(&config_path, text).expect("write config");

    let config = load_file(&config_path).expect("config loads");
    assert_eq!(config.origin, config_path.display().to_string());
    assert_eq!(
        config.workers[0].secret,
        Some(Secret("s3cret-0123456789abcdef".into()))
    );
    assert_eq!(config.master.state_dir, Some(dir.path().join("state")));
}

#[test]
fn unreadable_config_file_names_path_and_reason() {
    let err = load_file(Path::new("/nonexistent/bb/master.toml")).expect_err("must fail");
    // No made-up position: the problem is the file as a whole.
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent/bb/master.toml: No such file or directory"
    );
    assert_eq!(err.problems[0].position, None);
}

/// An empty (or all-comments) file is valid, but says that it defines
/// nothing; a file with both workers and builders gets no such warning.
#[test]
fn empty_config_is_valid_with_a_warning() {
    for text in ["", "# nothing yet\n\n# really\n"] {
        let config = parse_str(text, "empty.toml", Path::new(".")).expect("empty is valid");
        assert!(config.workers.is_empty() && config.builders.is_empty());
        assert_eq!(
            config.warnings,
            [
                "empty.toml: warning: no builders are defined, so nothing can be built",
                "empty.toml: warning: no workers are defined, so no build can run",
            ]
        );
    }
    assert!(embedded_default().warnings.is_empty());
}

/// A type error does not stop the other checks, and a duration written as
/// a number gets the same hint as a badly written duration string.
#[test]
fn type_errors_and_unknown_keys_are_collected_with_value_errors() {
    let text = "[master]\nkeepalive = 30\nmax_retries = -1\nbogus = 1\n\n[[worker]]\nname = \"w\"\nlocal = true\nmax_builds = 0\n";
    let err = parse_str(text, "m.toml", Path::new(".")).expect_err("four problems");
    let shown = err.to_string();
    assert_eq!(err.problems.len(), 4, "{shown}");
    assert!(
        shown.contains("m.toml:2:13: master: `keepalive` must be a duration string, not the integer 30; write it like \"30s\""),
        "{shown}"
    );
    assert!(
        shown.contains("m.toml:4:1: master: unknown key `bogus`"),
        "{shown}"
    );
}

#[test]
fn hash_is_fnv1a_64_of_the_text() {
    let empty = parse_str("", "a", Path::new(".")).expect("valid");
    assert_eq!(empty.hash, "cbf29ce484222325");
    let comment = parse_str("#a", "a", Path::new(".")).expect("valid");
    // Reference value of FNV-1a 64 for the bytes "#a".
    let expected = [b'#', b'a'].iter().fold(0xcbf29ce484222325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    assert_eq!(comment.hash, format!("{expected:016x}"));
    assert_ne!(comment.hash, empty.hash);
}

#[test]
fn error_display_has_one_problem_per_line_and_no_trailing_newline() {
    let text = "[[worker]]\nname = \"a b\"\n\n[[worker]]\nname = \"c\"\nmax_builds = 0\nsecret = \"0123456789abcdef\"\n";
    let err = parse_str(text, "m.toml", Path::new(".")).expect_err("must fail");
    assert_eq!(err.problems.len(), 3);
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 3);
    assert!(!shown.ends_with('\n'));
    assert!(shown.starts_with("m.toml:2:8: worker name `a b`"));
}

/// Compares each `NAME.toml` in the corpus with `NAME.expected`;
/// `UPDATE_EXPECT=1` rewrites the expected files instead.
#[test]
fn corpus_of_broken_configs() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(CORPUS_DIR)
        .unwrap_or_else(|e| panic!("cannot read {CORPUS_DIR}: {e}"))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus has only {} cases, expected at least 30",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let file_name = case.file_name().expect("file name").to_string_lossy();
        let text = std::fs::read_to_string(case).expect("read case");
        let shown = match parse_str(&text, &file_name, Path::new(CORPUS_DIR)) {
            Ok(_) => "<accepted>".to_owned(),
            Err(e) => e.to_string().replace(CORPUS_DIR, CORPUS_PLACEHOLDER),
        };
        let expected_path = case.with_extension("expected");
        if update {
            std::fs::write(&expected_path, format!("{shown}\n")).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if shown != expected.trim_end_matches('\n') {
            failures.push(format!(
                "{}:\n  expected: {}\n  got:      {}",
                case.display(),
                expected.trim_end().replace('\n', "\n            "),
                shown.replace('\n', "\n            ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "corpus mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_world_readable_secret_file_is_a_warning_not_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("w.secret");
    std::fs::write(&secret, "a-secret-of-16-bytes-or-more\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = "[[worker]]\nname = \"w\"\nsecret_file = \"w.secret\"\n";
    let config = parse_str(text, "m.toml", dir.path()).unwrap();
    // (The other warning: no builders are defined.)
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("m.toml:3:15: warning:"),
        "{:?}",
        config.warnings
    );
    assert!(config.warnings[0].contains("chmod 600"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = parse_str(text, "m.toml", dir.path()).unwrap();
    assert!(
        config.warnings.iter().all(|w| !w.contains("chmod")),
        "{:?}",
        config.warnings
    );
}

/// A secret shorter than 16 bytes is refused (issue 20), with a message
/// that says how to make a better one.
#[test]
fn a_short_secret_is_refused() {
    let text = "[[worker]]\nname = \"w\"\nsecret = \"change-me\"\n";
    let err = parse_str(text, "m.toml", Path::new(".")).expect_err("a 9-byte secret");
    let shown = err.to_string();
    assert!(
        shown.starts_with("m.toml:3:10: worker `w`: the secret is only 9 bytes")
            && shown.contains("/dev/urandom"),
        "{shown}"
    );
    let text = "[[worker]]\nname = \"w\"\nsecret = \"0123456789abcdef\"\n";
    let config = parse_str(text, "m.toml", Path::new(".")).unwrap();
    assert!(
        config.warnings.iter().all(|w| !w.contains("secret")),
        "{:?}",
        config.warnings
    );
}

/// `keep_builds`/`keep_logs` of `[master]` apply to every builder; a
/// builder's own keys override them one by one.
#[test]
fn retention_keys_with_per_builder_overrides() {
    let text = r#"
[master]
keep_builds = 100
keep_logs = "30d"

[[worker]]
name = "w"
local = true

[[builder]]
name = "a"
workers = ["w"]
keep_builds = 5
  [[builder.step]]
  name = "s"
  shell = "true"

[[builder]]
name = "b"
workers = ["w"]
  [[builder.step]]
  name = "s"
  shell = "true"
"#;
    let config = parse_str(text, "r.toml", Path::new("/x")).expect("valid");
    let r = &config.master.retention;
    assert!(r.prunes());
    let month = Some(Duration::from_secs(30 * 86_400));
    assert_eq!(
        r.for_builder("a"),
        Keep {
            builds: Some(5),
            logs: month
        }
    );
    assert_eq!(
        r.for_builder("b"),
        Keep {
            builds: Some(100),
            logs: month
        }
    );
    assert!(!embedded_default().master.retention.prunes());
}

/// The transfer steps of issue 8, as the issue writes them.
#[test]
fn transfer_steps_of_the_issue_are_accepted() {
    let text = r#"
[[worker]]
name = "w"
local = true

[[builder]]
name = "b"
workers = ["w"]

  [[builder.step]]
  name = "publish"
  upload = { from = "out/*.tar.gz", max_size = "1GiB", mode = "0644" }

  [[builder.step]]
  name = "fetch-input"
  download = { from = "inputs/data.bin", to = "data.bin" }
"#;
    let config = parse_str(text, "t.toml", Path::new("/x")).expect("the issue's example parses");
    let steps = &config.builder("b").unwrap().steps;
    assert_eq!(
        steps[0].action,
        StepAction::Upload(crate::config::UploadSpec {
            from: "out/*.tar.gz".into(),
            max_size: Some(1 << 30),
            mode: 0o644,
        })
    );
    assert_eq!(
        steps[1].action,
        StepAction::Download(crate::config::DownloadSpec {
            from: "inputs/data.bin".into(),
            to: "data.bin".into(),
            max_size: None,
            mode: 0o644,
        })
    );
    assert_eq!(config.master.transfer_dir, None);
}

/// Other users allowed in, but the control socket left in the owner-only
/// state dir: a warning with the way out; none once the socket is moved.
#[test]
fn allowed_users_with_an_unreachable_socket_are_warned_about() {
    let base = "[[worker]]\nname = \"w\"\nlocal = true\n\n[[builder]]\nname = \"b\"\nworkers = [\"w\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n";
    for (master, warned) in [
        ("[master]\nallowed_uids = [1234]\n", true),
        ("[master]\nallowed_gid = 1234\n", true),
        ("[master]\nallowed_uids = []\n", false),
        (
            "[master]\nallowed_uids = [1234]\ncontrol_socket = \"/run/bbmaster/control.sock\"\n",
            false,
        ),
    ] {
        let config =
            parse_str(&format!("{master}{base}"), "m.toml", Path::new(".")).expect("valid");
        let found = config
            .warnings
            .iter()
            .any(|w| w.contains("where they cannot reach it") && w.contains("control_socket"));
        assert_eq!(found, warned, "{master}: {:?}", config.warnings);
    }
}
