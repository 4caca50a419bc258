//! The field tables: which keys each table of `master.toml` takes, and of which type.

/// How a string value is written, for the hint of a type error.
#[derive(Clone, Copy)]
pub(in crate::config) enum Hint {
    /// Any string.
    Text,
    /// A duration such as `"30s"`.
    Duration,
    /// A size such as `"16MiB"`.
    Size,
    /// Octal permission bits such as `"0644"`.
    Mode,
}

/// The TOML type a key takes.
#[derive(Clone, Copy)]
pub(in crate::config) enum Kind {
    /// A string.
    Str(Hint),
    /// An integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// A string, an integer or a boolean (a force property's `default`).
    Scalar,
    /// An array of strings.
    StrList,
    /// An array of integers.
    IntList,
    /// A table of string values (`env`).
    Env,
    /// A table of integer values (`worker_max = { box-2 = 2 }`).
    IntMap,
    /// One table (`[master]`, `upload = { ... }`).
    Table(&'static [Field]),
    /// An array of tables (`[[worker]]`); entries are named by their `name`.
    Tables(&'static [Field]),
    /// A string naming a choice, or a table of its settings (`store =
    /// "sqlite"` or `store = { postgres = ... }`).
    StrOrTable(&'static [Field]),
}

/// One key of a table.
pub(in crate::config) struct Field {
    /// The key as written.
    pub key: &'static str,
    /// Its type.
    pub kind: Kind,
}

/// Shorthand for the tables below.
const fn f(key: &'static str, kind: Kind) -> Field {
    Field { key, kind }
}

const TEXT: Kind = Kind::Str(Hint::Text);
const DURATION: Kind = Kind::Str(Hint::Duration);
const SIZE: Kind = Kind::Str(Hint::Size);
const MODE: Kind = Kind::Str(Hint::Mode);

/// `[master]`.
const MASTER: &[Field] = &[
    f("state_dir", TEXT),
    f("control_socket", TEXT),
    f("worker_socket", TEXT),
    f("worker_grace", DURATION),
    f("keepalive", DURATION),
    f("max_retries", Kind::Int),
    f("max_handshake_frame", SIZE),
    f("max_frame", SIZE),
    f("max_log_size", SIZE),
    f("max_queued", Kind::Int),
    f("max_clients", Kind::Int),
    f("allowed_uids", Kind::IntList),
    f("allowed_gid", Kind::Int),
    f("transfer_dir", TEXT),
    f("keep_builds", Kind::Int),
    f("keep_logs", DURATION),
    f("max_upload_size", SIZE),
    f("max_artifact_bytes_per_build", SIZE),
    f("max_artifacts_per_build", Kind::Int),
    f("min_free_space", SIZE),
    f("deadline_grace", DURATION),
    f("worker_listen", Kind::StrList),
    f("tls_cert", TEXT),
    f("tls_key", TEXT),
    f("allow_plaintext", Kind::Bool),
    f("client_ca", TEXT),
    f("store", Kind::StrOrTable(STORE)),
];

/// `[master] store = { ... }`.
const STORE: &[Field] = &[
    f("postgres", TEXT),
    f("password_file", TEXT),
    f("shared_dir", TEXT),
    f("lease", DURATION),
    f("ca_file", TEXT),
];

/// `[[worker]]`.
const WORKER: &[Field] = &[
    f("name", TEXT),
    f("local", Kind::Bool),
    f("max_builds", Kind::Int),
    f("secret", TEXT),
    f("secret_file", TEXT),
    f("user", TEXT),
    f("tags", Kind::StrList),
];

/// One entry of `locks = [...]`, on a builder or a step.
const LOCK_CLAIM: &[Field] = &[f("name", TEXT), f("access", TEXT), f("weight", Kind::Int)];

/// `[[lock]]`.
const LOCK: &[Field] = &[
    f("name", TEXT),
    f("scope", TEXT),
    f("max", Kind::Int),
    f("worker_max", Kind::IntMap),
];

/// `upload = { ... }`.
const UPLOAD: &[Field] = &[f("from", TEXT), f("max_size", SIZE), f("mode", MODE)];

/// `download = { ... }`.
const DOWNLOAD: &[Field] = &[
    f("from", TEXT),
    f("to", TEXT),
    f("max_size", SIZE),
    f("mode", MODE),
];

/// `trigger = { ... }`.
const TRIGGER: &[Field] = &[
    f("schedulers", Kind::StrList),
    f("wait", Kind::Bool),
    f("properties", Kind::Env),
];

/// `git = { ... }`.
const GIT: &[Field] = &[
    f("repository", TEXT),
    f("mode", TEXT),
    f("submodules", Kind::Bool),
];

/// `force_properties = [{ ... }]`.
const FORCE_PROPERTY: &[Field] = &[
    f("name", TEXT),
    f("type", TEXT),
    f("default", Kind::Scalar),
    f("choices", Kind::StrList),
    f("required", Kind::Bool),
];

/// `[[poller]]`.
const POLLER: &[Field] = &[
    f("name", TEXT),
    f("repository", TEXT),
    f("branches", Kind::StrList),
    f("tags", Kind::Bool),
    f("interval", DURATION),
    f("timeout", DURATION),
];

/// `[[builder.step]]`.
const STEP: &[Field] = &[
    f("name", TEXT),
    f("shell", TEXT),
    f("command", Kind::StrList),
    f("timeout", DURATION),
    f("env", Kind::Env),
    f("upload", Kind::Table(UPLOAD)),
    f("download", Kind::Table(DOWNLOAD)),
    f("git", Kind::Table(GIT)),
    f("locks", Kind::Tables(LOCK_CLAIM)),
    f("trigger", Kind::Table(TRIGGER)),
];

/// `[[builder]]`.
const BUILDER: &[Field] = &[
    f("name", TEXT),
    f("previous_names", Kind::StrList),
    f("workers", Kind::StrList),
    f("env", Kind::Env),
    f("pass_env", Kind::StrList),
    f("collapse", Kind::Bool),
    f("retry", Kind::Bool),
    f("keep_builds", Kind::Int),
    f("keep_logs", DURATION),
    f("step", Kind::Tables(STEP)),
    f("force_properties", Kind::Tables(FORCE_PROPERTY)),
    f("locks", Kind::Tables(LOCK_CLAIM)),
    f("worker_tags", Kind::StrList),
    f("worker_choice", TEXT),
    f("max_running", Kind::Int),
];

/// `[[scheduler]]`: the keys of every kind (validation says which kind
/// takes which).
const SCHEDULER: &[Field] = &[
    f("name", TEXT),
    f("previous_names", Kind::StrList),
    f("kind", TEXT),
    f("builders", Kind::StrList),
    f("repository", TEXT),
    f("branches", Kind::StrList),
    f("files", Kind::StrList),
    f("tree_stable", DURATION),
    f("every", DURATION),
    f("at", TEXT),
    f("timezone", TEXT),
    f("only_if_changed", Kind::Bool),
    f("catch_up", TEXT),
    f("upstream", TEXT),
];

/// `[[http.token]]`.
const HTTP_TOKEN: &[Field] = &[
    f("name", TEXT),
    f("token_file", TEXT),
    f("may", Kind::StrList),
];

/// `[[http.hook]]`.
const HTTP_HOOK: &[Field] = &[f("name", TEXT), f("kind", TEXT), f("secret_file", TEXT)];

/// `[http]`.
const HTTP: &[Field] = &[
    f("listen", TEXT),
    f("base_url", TEXT),
    f("trust_proxy", Kind::Bool),
    f("tls", Kind::Bool),
    f("max_connections", Kind::Int),
    f("token", Kind::Tables(HTTP_TOKEN)),
    f("hook", Kind::Tables(HTTP_HOOK)),
];

/// `sasl = { ... }` of `[irc]`.
const IRC_SASL: &[Field] = &[
    f("mechanism", TEXT),
    f("account", TEXT),
    f("password_file", TEXT),
    f("required", Kind::Bool),
];

/// `channels = [{ ... }]` of `[irc]`.
const IRC_CHANNEL: &[Field] = &[f("name", TEXT), f("key", TEXT), f("notify", Kind::StrList)];

/// `authz = { ... }` of `[irc]`.
const IRC_AUTHZ: &[Field] = &[f("force", Kind::StrList), f("stop", Kind::StrList)];

/// `[irc]`.
const IRC: &[Field] = &[
    f("server", TEXT),
    f("port", Kind::Int),
    f("tls", Kind::Bool),
    f("tls_ca", TEXT),
    f("tls_fingerprint", TEXT),
    f("nick", TEXT),
    f("alt_nicks", Kind::StrList),
    f("password", TEXT),
    f("password_file", TEXT),
    f("sasl", Kind::Table(IRC_SASL)),
    f("nickserv_password_file", TEXT),
    f("channels", Kind::Tables(IRC_CHANNEL)),
    f("authz", Kind::Table(IRC_AUTHZ)),
    f("keepalive", DURATION),
    f("pong_timeout", DURATION),
];

/// The whole file.
pub(in crate::config) const ROOT: &[Field] = &[
    f("master", Kind::Table(MASTER)),
    f("worker", Kind::Tables(WORKER)),
    f("builder", Kind::Tables(BUILDER)),
    f("scheduler", Kind::Tables(SCHEDULER)),
    f("irc", Kind::Table(IRC)),
    f("poller", Kind::Tables(POLLER)),
    f("lock", Kind::Tables(LOCK)),
    f("http", Kind::Table(HTTP)),
];
