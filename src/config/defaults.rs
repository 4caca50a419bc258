//! The default of every optional key, written once.
//!
//! [`DEFAULTS`] is the one table both sides read: the model's defaults
//! ([`super::MasterSettings::default`], a worker's `max_builds`, a transfer's
//! `mode`) are parsed from it, and a test in `src/man_tests.rs` holds every
//! `Default:` line of `master.toml(5)` to it, so the page and the code
//! cannot disagree. A test here checks what a parsed config really holds
//! for each absent key against the same table.

use std::time::Duration;

/// One optional key's default: `(table.key, value)`, the value as the man
/// page shows it: a TOML value as it would be written (`"60s"`, `3`,
/// `false`), or words when the default is no value (`none`, `no limit`) or
/// depends on the state dir.
pub const DEFAULTS: &[(&str, &str)] = &[
    (
        "master.state_dir",
        "$XDG_STATE_HOME/bbmaster, else ~/.local/state/bbmaster",
    ),
    ("master.control_socket", "<state_dir>/control.sock"),
    ("master.worker_socket", "<state_dir>/worker.sock"),
    ("master.worker_grace", "\"60s\""),
    ("master.keepalive", "\"10s\""),
    ("master.max_retries", "3"),
    ("master.max_handshake_frame", "\"64KiB\""),
    ("master.max_frame", "\"16MiB\""),
    ("master.max_log_size", "\"256MiB\""),
    ("master.max_queued", "10000"),
    ("master.max_clients", "256"),
    ("master.allowed_uids", "none"),
    ("master.allowed_gid", "none"),
    ("master.transfer_dir", "<state_dir>/files"),
    ("master.keep_builds", "all"),
    ("master.keep_logs", "forever"),
    ("master.max_upload_size", "\"1GiB\""),
    ("master.max_artifact_bytes_per_build", "\"10GiB\""),
    ("master.max_artifacts_per_build", "10000"),
    ("master.min_free_space", "\"1GiB\""),
    ("master.deadline_grace", "\"30s\""),
    ("master.worker_listen", "[]"),
    (
        "master.tls_cert",
        "a self-signed certificate in <state_dir>/tls",
    ),
    (
        "master.tls_key",
        "a self-signed certificate in <state_dir>/tls",
    ),
    ("master.allow_plaintext", "false"),
    ("master.client_ca", "none"),
    ("master.store", "\"sqlite\""),
    ("master.store.password_file", "none"),
    ("master.store.lease", "\"10s\""),
    ("master.store.ca_file", "the system's roots"),
    ("worker.local", "false"),
    ("worker.max_builds", "1"),
    ("builder.previous_names", "[]"),
    ("builder.env", "none"),
    ("builder.pass_env", "[]"),
    ("builder.collapse", "false"),
    ("builder.retry", "true"),
    ("builder.keep_builds", "the master's keep_builds"),
    ("builder.keep_logs", "the master's keep_logs"),
    ("builder.step.timeout", "no limit"),
    ("builder.step.env", "none"),
    ("builder.step.upload.max_size", "no limit"),
    ("builder.step.upload.mode", "\"0644\""),
    ("builder.step.download.max_size", "no limit"),
    ("builder.step.download.mode", "\"0644\""),
    ("scheduler.branches", "every branch"),
    ("scheduler.files", "every change is important"),
    ("scheduler.tree_stable", "\"0s\" (at once)"),
    ("builder.step.git.mode", "\"incremental\""),
    ("builder.step.git.submodules", "false"),
    ("builder.force_properties", "[]"),
    ("builder.force_properties.type", "\"string\""),
    ("builder.force_properties.default", "none"),
    ("builder.force_properties.required", "false"),
    ("poller.branches", "[\"**\"]"),
    ("poller.tags", "false"),
    ("poller.interval", "\"1m\""),
    ("poller.timeout", "\"5m\""),
    ("worker.tags", "[]"),
    ("builder.worker_tags", "[]"),
    ("builder.worker_choice", "\"least_busy\""),
    ("builder.max_running", "no limit"),
    ("builder.locks", "[]"),
    ("builder.locks.weight", "1"),
    ("builder.step.locks", "[]"),
    ("builder.step.locks.weight", "1"),
    ("lock.scope", "\"master\""),
    ("lock.max", "1"),
    ("lock.worker_max", "none"),
    ("scheduler.timezone", "\"UTC\""),
    ("scheduler.only_if_changed", "false"),
    ("scheduler.catch_up", "\"one\""),
    ("builder.step.trigger.wait", "false"),
    ("builder.step.trigger.properties", "none"),
    ("irc.port", "6697 with TLS, 6667 without"),
    ("irc.tls", "true"),
    ("irc.tls_ca", "the system's CAs"),
    ("irc.tls_fingerprint", "none"),
    ("irc.nick", "\"bbmaster\""),
    ("irc.alt_nicks", "[]"),
    ("irc.sasl.mechanism", "\"PLAIN\""),
    ("irc.sasl.required", "true"),
    (
        "irc.channels.notify",
        "[\"failure\", \"exception\", \"fixed\"]",
    ),
    ("irc.authz.force", "[]"),
    ("irc.authz.stop", "[]"),
    ("irc.keepalive", "\"60s\""),
    ("irc.pong_timeout", "\"30s\""),
];

/// The default of `key` as [`DEFAULTS`] writes it.
///
/// Panics on a key the table lacks: a programming error a unit test
/// catches, since every caller names a constant key.
pub fn text(key: &str) -> &'static str {
    DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no default for `{key}` in config::defaults::DEFAULTS"))
}

/// A string default without its quotes (`irc.nick`).
pub fn unquoted_text(key: &str) -> &'static str {
    unquoted(key)
}

/// A string default without its quotes.
fn unquoted(key: &str) -> &'static str {
    let v = text(key);
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("the default of `{key}` is not a string: {v}"))
}

/// A duration default (`"60s"`).
pub fn duration(key: &str) -> Duration {
    humantime::parse_duration(unquoted(key))
        .unwrap_or_else(|e| panic!("the default of `{key}` is not a duration: {e}"))
}

/// A size default (`"16MiB"`), in bytes.
pub fn size(key: &str) -> u64 {
    super::parse_size(unquoted(key))
        .unwrap_or_else(|e| panic!("the default of `{key}` is not a size: {e}"))
}

/// An integer default (`3`).
pub fn count(key: &str) -> u32 {
    text(key)
        .parse()
        .unwrap_or_else(|e| panic!("the default of `{key}` is not a count: {e}"))
}

/// A permission-bits default (`"0644"`).
pub fn mode(key: &str) -> u32 {
    super::parse_mode(unquoted(key))
        .unwrap_or_else(|| panic!("the default of `{key}` is not an octal mode"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{DEFAULTS, text};
    use crate::config::{StepAction, parse_str};

    /// A config that sets no optional key at all.
    const BARE: &str = r#"
[[worker]]
name = "w"
secret = "0123456789abcdef"

[[builder]]
name = "b"
workers = ["w"]

  [[builder.step]]
  name = "s"
  shell = "true"

  [[builder.step]]
  name = "up"
  upload = { from = "out" }

  [[builder.step]]
  name = "down"
  download = { from = "a", to = "b" }
  locks = [{ name = "l", access = "counting" }]

  [[builder.step]]
  name = "co"
  git = { repository = "/r.git" }

  [[builder.step]]
  name = "fan"
  trigger = { schedulers = ["t"] }

[[builder]]
name = "forced"
workers = ["w"]
force_properties = [{ name = "p" }]

  [[builder.step]]
  name = "s"
  shell = "true"

[[poller]]
name = "p"
repository = "/r.git"

[[scheduler]]
name = "s"
kind = "branch"
builders = ["b"]

[[lock]]
name = "l"
[[scheduler]]
name = "t"
kind = "triggerable"
builders = ["b"]

[[scheduler]]
name = "c"
kind = "cron"
builders = ["b"]
at = "@daily"
"#;

    /// What a parsed config holds for every key left out equals the table.
    #[test]
    fn a_bare_config_gets_the_documented_defaults() {
        let bare_irc = format!(
            "{BARE}\n[irc]\nserver = \"irc.example.org\"\nchannels = [{{ name = \"#b\" }}]\n"
        );
        let c = parse_str(&bare_irc, "bare.toml", Path::new("/base")).expect("valid");
        let irc = c.irc.as_ref().expect("[irc]");
        let plain = parse_str(
            "[irc]\nserver = \"h\"\ntls = false\n",
            "p.toml",
            Path::new("/base"),
        )
        .expect("valid");
        let m = &c.master;
        let w = &c.workers[0];
        let b = &c.builders[0];
        let (StepAction::Upload(up), StepAction::Download(down), StepAction::Git(git)) =
            (&b.steps[1].action, &b.steps[2].action, &b.steps[3].action)
        else {
            panic!("transfer and git steps expected");
        };
        let crate::config::SchedulerKind::Branch(branch) = &c.schedulers[0].kind else {
            panic!("a branch scheduler expected");
        };
        let fp = &c.builders[1].force_properties[0];
        let p = &c.pollers[0];
        let human = |d: std::time::Duration| format!("\"{}\"", humantime::format_duration(d));
        let secs = |d: std::time::Duration| format!("\"{}s\"", d.as_secs());
        let size = |n: u64| {
            let shown = match n {
                n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
                n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
                n => format!("{}KiB", n >> 10),
            };
            format!("\"{shown}\"")
        };
        let none_or = |absent: bool, words: &str| {
            if absent {
                words.to_owned()
            } else {
                "set".to_owned()
            }
        };
        for (key, want) in DEFAULTS {
            let got = match *key {
                "master.state_dir" | "master.control_socket" | "master.worker_socket" => {
                    // Resolved from the state dir at start (crate::paths).
                    let absent = m.state_dir.is_none()
                        && m.control_socket.is_none()
                        && m.worker_socket.is_none();
                    none_or(absent, want)
                }
                "master.transfer_dir" => none_or(m.transfer_dir.is_none(), want),
                "master.worker_grace" => secs(m.worker_grace),
                "master.keepalive" => secs(m.keepalive),
                "master.max_retries" => m.max_retries.to_string(),
                "master.max_handshake_frame" => size(m.max_handshake_frame as u64),
                "master.max_frame" => size(m.max_frame as u64),
                "master.max_log_size" => size(m.max_log_size),
                "master.max_queued" => m.max_queued.to_string(),
                "master.max_clients" => m.max_clients.to_string(),
                "master.allowed_uids" => none_or(m.allowed_uids.is_empty(), "none"),
                "master.allowed_gid" => none_or(m.allowed_gid.is_none(), "none"),
                "worker.local" => w.local.to_string(),
                "worker.max_builds" => w.max_builds.to_string(),
                "builder.previous_names" => format!("{:?}", b.previous_names),
                "builder.env" => none_or(b.env.is_empty(), "none"),
                "builder.pass_env" => format!("{:?}", b.pass_env),
                "builder.collapse" => b.collapse.to_string(),
                "builder.retry" => b.retry.to_string(),
                "master.max_upload_size" => size(m.worker_limits.max_upload_size),
                "master.max_artifact_bytes_per_build" => {
                    size(m.worker_limits.max_artifact_bytes_per_build)
                }
                "master.max_artifacts_per_build" => {
                    m.worker_limits.max_artifacts_per_build.to_string()
                }
                "master.min_free_space" => size(m.worker_limits.min_free_space),
                "master.deadline_grace" => secs(m.worker_limits.deadline_grace),
                "master.worker_listen" => format!("{:?}", m.worker_listen),
                "master.tls_cert" | "master.tls_key" => none_or(m.tls_identity.is_none(), want),
                "master.allow_plaintext" => m.allow_plaintext.to_string(),
                "master.client_ca" => none_or(m.client_ca.is_none(), "none"),
                "master.store" => none_or(m.store == crate::config::StoreSettings::Sqlite, want),
                // Within `store = { postgres ... }` only: no password file
                // unless named; the lease from the validation's constant.
                "master.store.password_file" | "master.store.ca_file" => want.to_string(),
                "master.store.lease" => secs(crate::config::DEFAULT_LEASE),
                "master.keep_builds" => none_or(m.retention.default.builds.is_none(), "all"),
                "master.keep_logs" => none_or(m.retention.default.logs.is_none(), "forever"),
                "builder.keep_builds" | "builder.keep_logs" => {
                    none_or(m.retention.builders.is_empty(), want)
                }
                "builder.step.timeout" => none_or(b.steps[0].timeout.is_none(), "no limit"),
                "builder.step.env" => none_or(b.steps[0].env.is_empty(), "none"),
                "builder.step.upload.max_size" => none_or(up.max_size.is_none(), "no limit"),
                "builder.step.upload.mode" => format!("\"0{:o}\"", up.mode),
                "builder.step.download.max_size" => none_or(down.max_size.is_none(), "no limit"),
                "builder.step.download.mode" => format!("\"0{:o}\"", down.mode),
                "scheduler.branches" => none_or(branch.branches.is_empty(), want),
                "scheduler.files" => none_or(branch.files.is_empty(), want),
                "scheduler.tree_stable" => format!("{} (at once)", secs(branch.tree_stable)),
                "builder.step.git.mode" => format!("\"{:?}\"", git.mode).to_lowercase(),
                "builder.step.git.submodules" => git.submodules.to_string(),
                "builder.force_properties" => format!("{:?}", b.force_properties),
                "builder.force_properties.type" => format!("\"{}\"", fp.kind.name()),
                "builder.force_properties.default" => none_or(fp.default.is_none(), "none"),
                "builder.force_properties.required" => fp.required.to_string(),
                "poller.branches" => format!("{:?}", p.branches),
                "poller.tags" => p.tags.to_string(),
                "poller.interval" => human(p.interval),
                "poller.timeout" => human(p.timeout),
                "worker.tags" => format!("{:?}", w.tags),
                "builder.worker_tags" => format!("{:?}", b.worker_tags),
                "builder.worker_choice" => {
                    assert_eq!(b.worker_choice, crate::config::WorkerChoice::LeastBusy);
                    "\"least_busy\"".to_string()
                }
                "builder.max_running" => none_or(b.max_running.is_none(), "no limit"),
                "builder.locks" => format!("{:?}", b.locks),
                "builder.step.locks" => format!("{:?}", b.steps[0].locks),
                "builder.locks.weight" | "builder.step.locks.weight" => {
                    b.steps[2].locks[0].weight.to_string()
                }
                "lock.scope" => {
                    assert_eq!(c.locks[0].scope, crate::config::LockScope::Master);
                    "\"master\"".to_string()
                }
                "lock.max" => c.locks[0].max.to_string(),
                "lock.worker_max" => none_or(c.locks[0].worker_max.is_empty(), "none"),
                "builder.step.trigger.wait" | "builder.step.trigger.properties" => {
                    let StepAction::Trigger(t) = &b.steps[4].action else {
                        panic!("a trigger step expected");
                    };
                    if *key == "builder.step.trigger.wait" {
                        t.wait.to_string()
                    } else {
                        none_or(t.properties.is_empty(), "none")
                    }
                }
                "scheduler.timezone" | "scheduler.only_if_changed" | "scheduler.catch_up" => {
                    let Some(t) = c.schedulers[2].kind.timed() else {
                        panic!("a cron scheduler expected");
                    };
                    let crate::config::Timing::Cron(spec) = &t.timing else {
                        panic!("a cron timing expected");
                    };
                    match *key {
                        "scheduler.timezone" => format!("{:?}", spec.timezone),
                        "scheduler.only_if_changed" => t.only_if_changed.to_string(),
                        _ => format!("{:?}", format!("{:?}", t.catch_up).to_lowercase()),
                    }
                }
                "irc.port" => {
                    let plain = plain.irc.as_ref().expect("[irc]").port;
                    format!("{} with TLS, {plain} without", irc.port)
                }
                "irc.tls" => irc.tls.to_string(),
                "irc.tls_ca" => none_or(irc.tls_ca.is_none(), want),
                "irc.tls_fingerprint" => none_or(irc.tls_fingerprint.is_none(), "none"),
                "irc.nick" => format!("{:?}", irc.nick),
                "irc.alt_nicks" => format!("{:?}", irc.alt_nicks),
                // No sasl table: nothing to check but that PLAIN is the only one.
                "irc.sasl.mechanism" => none_or(irc.sasl.is_none(), want),
                "irc.sasl.required" => none_or(irc.sasl.is_none(), want),
                "irc.channels.notify" => format!("{:?}", irc.channels[0].notify),
                "irc.authz.force" => format!("{:?}", irc.authz.force),
                "irc.authz.stop" => format!("{:?}", irc.authz.stop),
                "irc.keepalive" => secs(irc.keepalive),
                "irc.pong_timeout" => secs(irc.pong_timeout),
                other => panic!("no check of the default of `{other}`: add one here"),
            };
            assert_eq!(&got, want, "the default of `{key}`");
        }
    }

    /// Every key of the table is a real key of the config.
    #[test]
    fn every_default_names_a_config_key() {
        for (key, _) in DEFAULTS {
            assert!(
                crate::man::CONFIG_KEYS.contains(key),
                "`{key}` is no config key"
            );
            assert_eq!(
                text(key),
                DEFAULTS.iter().find(|(k, _)| k == key).unwrap().1
            );
        }
    }
}
