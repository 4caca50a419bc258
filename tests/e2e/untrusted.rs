//! Untrusted build code: a step must never hold the master's authority or
//! see what its worker (or the master) keeps in its environment.

use crate::harness::{Master, text};

const ENV_CONFIG: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "env"
workers = ["local-1"]
pass_env = ["BB_TEST_OPTED_IN"]
env = { FROM_CONFIG = "yes" }

  [[builder.step]]
  name = "env"
  command = ["env"]
"#;

/// A step of a local worker sees neither the master's secrets nor the
/// worker's, only the allow-list, what `pass_env` opts in, the configured
/// `env` and the `BB_*` variables.
#[test]
fn steps_start_from_a_clean_environment() {
    let m = Master::start_with_env(
        ENV_CONFIG,
        &[
            ("MASTER_ONLY_TOKEN", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
            ("BB_TEST_OPTED_IN", "z"),
            ("LANG", "C.UTF-8"),
        ],
    );
    let out = m.bbctl_code(&["force-build", "env", "--follow"], 0);
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(!names.contains(&"MASTER_ONLY_TOKEN"), "{stdout}");
    assert!(!names.contains(&"AWS_SECRET_ACCESS_KEY"), "{stdout}");
    for wanted in [
        "PATH",
        "LANG",
        "FROM_CONFIG",
        "BB_TEST_OPTED_IN",
        "BB_BUILDER",
        "BB_BUILD_ID",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing:\n{stdout}");
    }
    for name in &names {
        let allowed = bbctl::worker::INHERITED.iter().any(|a| {
            a.strip_suffix('*')
                .map_or(a == name, |p| name.starts_with(p))
        });
        assert!(
            allowed || name.starts_with("BB_") || *name == "FROM_CONFIG",
            "{name} reached the step:\n{stdout}"
        );
    }
}

/// A symlink planted at the lock file's name is never followed: the master
/// refuses to start and the link's target is untouched.
#[test]
fn a_symlink_at_the_lock_file_is_refused() {
    let dir = crate::harness::temp_dir();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&precious, state.join("bbmaster.lock")).unwrap();
    crate::durability::master_refuses(dir.path(), &state, &["bbmaster.lock"]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}

/// A state dir owned by another user is refused (only testable as root,
/// who can give a directory away).
#[test]
fn a_state_dir_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown a directory to another user");
        return;
    }
    let dir = crate::harness::temp_dir();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&state, Some(nobody), None).unwrap();
    crate::durability::master_refuses(dir.path(), &state, &["belongs to uid 65534"]);
    assert!(
        !state.join("master.db").exists(),
        "the master wrote into a foreign state dir"
    );
}
