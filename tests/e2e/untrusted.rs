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
        let allowed = bbctl::worker::INHERITED
            .iter()
            .any(|a| a.strip_suffix('*').map_or(a == name, |p| name.starts_with(p)));
        assert!(
            allowed || name.starts_with("BB_") || *name == "FROM_CONFIG",
            "{name} reached the step:\n{stdout}"
        );
    }
}
