//! The environment a step starts with: never the worker's whole one.
//!
//! A worker (and, for local workers, the master that started it) may hold
//! credentials in its environment; a step runs code from the repository it
//! builds and must not see them. A step therefore starts from an empty
//! environment plus a short allow-list read from the worker's own
//! environment ([`INHERITED`]), the names its builder opts into with
//! `pass_env`, and what the master assigned (builder and step `env`, the
//! `BB_*` variables), which wins over both.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Variables a step inherits from its worker: what ordinary tools need to
/// find programs, a home, a locale and a terminal type, and nothing that is
/// commonly a secret. `LC_*` is matched as a prefix.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TERM", "TZ", "TMPDIR",
];

/// `PATH` for a step when the worker has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether `name` is inherited by the allow-list or by `pass_env`.
fn passes(name: &str, pass_env: &[String]) -> bool {
    INHERITED
        .iter()
        .any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *allowed,
        })
        || pass_env.iter().any(|p| p == name)
}

/// The complete environment of a step: the allowed part of `inherited`, then
/// `assigned` on top. Sorted by name, so that a step's environment does not
/// depend on the order the worker's was in.
pub fn step_environment(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    pass_env: &[String],
    assigned: &[(String, String)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| k.to_str().is_some_and(|k| passes(k, pass_env)))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (k, v) in assigned {
        env.insert(k.into(), v.into());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn names(env: &BTreeMap<OsString, OsString>) -> Vec<&str> {
        env.keys().map(|k| k.to_str().unwrap()).collect()
    }

    #[test]
    fn secrets_of_the_worker_do_not_reach_the_step() {
        let env = step_environment(
            vars(&[
                ("AWS_SECRET_ACCESS_KEY", "y"),
                ("MASTER_ONLY_TOKEN", "x"),
                ("PATH", "/opt/bin"),
                ("HOME", "/home/w"),
                ("LC_TIME", "C"),
                ("SSH_AUTH_SOCK", "/tmp/agent"),
            ]),
            &[],
            &[],
        );
        assert_eq!(names(&env), ["HOME", "LC_TIME", "PATH"]);
        assert_eq!(env[&OsString::from("PATH")], "/opt/bin");
    }

    #[test]
    fn pass_env_opts_in_by_exact_name() {
        let env = step_environment(
            vars(&[("CC", "clang"), ("CCACHE_DIR", "/c"), ("PATH", "/bin")]),
            &["CC".to_string()],
            &[],
        );
        assert_eq!(names(&env), ["CC", "PATH"]);
    }

    #[test]
    fn assigned_variables_win_and_path_has_a_default() {
        let env = step_environment(
            vars(&[("LANG", "C.UTF-8")]),
            &[],
            &[
                ("LANG".to_string(), "de_DE.UTF-8".to_string()),
                ("BB_BUILD_ID".to_string(), "7".to_string()),
            ],
        );
        assert_eq!(env[&OsString::from("LANG")], "de_DE.UTF-8");
        assert_eq!(env[&OsString::from("BB_BUILD_ID")], "7");
        assert_eq!(env[&OsString::from("PATH")], DEFAULT_PATH);
    }
}
