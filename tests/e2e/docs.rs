//! Documentation that ships: completions, `--help`, the annotated example
//! config, and the systemd units.

use std::path::{Path, PathBuf};

use crate::harness::{BBCTL, BBCTL_TIMEOUT, code, command, describe, run_with_timeout, text};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn bbctl(args: &[&str]) -> std::process::Output {
    let mut cmd = command(BBCTL);
    cmd.args(args);
    run_with_timeout(cmd, BBCTL_TIMEOUT)
}

/// `bbctl completions SHELL` for every supported shell: exit 0, a script
/// that knows the commands; an unknown shell is a usage error.
#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bbctl(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", describe(&out));
        let script = text(&out.stdout);
        assert!(script.len() > 1000, "{shell}: a tiny script:\n{script}");
        for word in ["force-build", "check-config", "--json"] {
            assert!(script.contains(word), "{shell}: no {word} in the script");
        }
        assert!(out.stderr.is_empty(), "{shell}: {}", describe(&out));
    }
    let out = bbctl(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(out.stdout.is_empty());
}

/// `bbctl --help` lists every exit code; `-h` and `--version` exit 0.
#[test]
fn help_lists_the_exit_codes() {
    let out = bbctl(&["--help"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let help = text(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for n in 0..=5 {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{n} "))),
            "exit code {n} missing from --help:\n{help}"
        );
    }
    for args in [&["-h"][..], &["--version"], &["force-build", "--help"]] {
        let out = bbctl(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", describe(&out));
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

/// The annotated example is a valid config (checked without a master),
/// and it shows every key of the config (`bbctl::man::CONFIG_KEYS`, which
/// a unit test keeps in step with the config's structs): each `table.key`
/// as a `key =` line, possibly commented out, under its table's header.
#[test]
fn example_config_is_valid_and_shows_every_key() {
    let example = repo("examples/master.toml");
    let out = bbctl(&["check-config", example.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let text = std::fs::read_to_string(&example).unwrap();
    // (table, keys set under it), in file order; "" before any header.
    let mut tables: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#').trim();
        if line.starts_with('[') && line.ends_with(']') {
            let table = line.trim_matches(|c| c == '[' || c == ']');
            if table
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            {
                tables.push((table.to_string(), Vec::new()));
            }
        } else if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                tables.last_mut().unwrap().1.push(key.to_string());
            }
        }
    }
    let mut missing = Vec::new();
    for key in bbctl::man::CONFIG_KEYS {
        // A table key (`builder.step`) is shown by its header.
        let shown = tables.iter().any(|(t, _)| t == key)
            || key.rsplit_once('.').is_some_and(|(table, leaf)| {
                tables
                    .iter()
                    .any(|(t, keys)| t == table && keys.iter().any(|k| k == leaf))
            });
        if !shown {
            missing.push(*key);
        }
    }
    assert!(
        missing.is_empty(),
        "examples/master.toml does not show: {missing:?}"
    );
}

/// The README's example config can be used as written: the README shows
/// the command that makes `box-2.secret`, and with the secret it makes the
/// example is valid without a warning (a secret of 16 bytes or more, not
/// readable by others).
#[test]
fn readme_example_config_with_its_secret_command() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let command_line = readme
        .lines()
        .find(|l| l.contains("> box-2.secret"))
        .expect("the README shows how to make box-2.secret");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```toml example");
    assert!(
        example.contains("secret_file = \"box-2.secret\""),
        "{example}"
    );

    let dir = crate::harness::temp_dir();
    let mut sh = command("sh");
    sh.arg("-c").arg(command_line).current_dir(dir.path());
    let out = run_with_timeout(sh, BBCTL_TIMEOUT);
    assert_eq!(code(&out), 0, "{command_line}: {}", describe(&out));
    let config = dir.path().join("master.toml");
    std::fs::write(&config, example).unwrap();
    let out = bbctl(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        !text(&out.stderr).contains("warning"),
        "the README's secret draws a warning: {}",
        describe(&out)
    );
}

/// The systemd units say what the docs promise: the master is a notify
/// service reloaded by bbctl whose stop leaves workers alone; the worker
/// template takes its name and secret file from the instance.
#[test]
fn systemd_units() {
    let master = std::fs::read_to_string(repo("contrib/bbmaster.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/bbmaster --config /etc/bbmaster/master.toml",
        "ExecReload=/usr/bin/bbctl",
        "KillMode=process",
    ] {
        assert!(
            master.lines().any(|l| l.starts_with(line)),
            "contrib/bbmaster.service lacks {line}"
        );
    }
    let worker = std::fs::read_to_string(repo("contrib/bbworker@.service")).unwrap();
    let exec = worker
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    for part in [
        "--name %i",
        "--secret-file /etc/bbworker/%i.secret",
        "--master ",
    ] {
        assert!(exec.contains(part), "ExecStart lacks {part}: {exec}");
    }
}
