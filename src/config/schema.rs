//! The shape of `master.toml`: which keys each table takes and of which
//! TOML type, checked on the parsed document before serde sees it.
//!
//! serde stops at its first error, so an unknown key or a value of the
//! wrong type would hide every other problem. This walk reports all of
//! them (with a hint on how to write the value) and removes the offending
//! entries, so that deserializing what is left cannot fail and
//! [`super::validate`] still checks everything else. A required `name`
//! that is missing or mistyped is replaced by a placeholder (`#1`, the
//! entry's number) whose position is remembered, so that no second
//! problem is reported about the same name.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeString, DeTable, DeValue};

use super::error::Problem;
use super::position::line_col;

/// How a string value is written, for the hint of a type error.
#[derive(Clone, Copy)]
pub(super) enum Hint {
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
pub(super) enum Kind {
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
}

/// One key of a table.
pub(super) struct Field {
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
pub(super) const ROOT: &[Field] = &[
    f("master", Kind::Table(MASTER)),
    f("worker", Kind::Tables(WORKER)),
    f("builder", Kind::Tables(BUILDER)),
    f("scheduler", Kind::Tables(SCHEDULER)),
    f("irc", Kind::Table(IRC)),
    f("poller", Kind::Tables(POLLER)),
    f("lock", Kind::Tables(LOCK)),
    f("http", Kind::Table(HTTP)),
];

/// What the walk found: problems, and where placeholder names stand.
pub(super) struct Walked {
    /// Unknown keys, wrong types and missing names, in walk order.
    pub problems: Vec<Problem>,
    /// Byte offsets of placeholder names; checks of names skip them.
    pub placeholders: HashSet<usize>,
}

/// Checks `doc` against [`ROOT`], removing what does not fit.
pub(super) fn walk(doc: &mut Spanned<DeTable<'_>>, text: &str, origin: &str) -> Walked {
    let mut w = Walker {
        text,
        origin,
        out: Walked {
            problems: Vec::new(),
            placeholders: HashSet::new(),
        },
    };
    w.table("", doc.get_mut(), ROOT);
    w.out
}

struct Walker<'t> {
    text: &'t str,
    origin: &'t str,
    out: Walked,
}

impl Walker<'_> {
    fn report(&mut self, at: &Range<usize>, message: String) {
        let (line, column) = line_col(self.text, at.start);
        self.out
            .problems
            .push(Problem::at(self.origin, line, column, message));
    }

    /// Checks every key of `table`; `owner` prefixes messages (empty at the top).
    fn table(&mut self, owner: &str, table: &mut DeTable<'_>, fields: &'static [Field]) {
        let keys: Vec<Spanned<DeString<'_>>> = table.keys().cloned().collect();
        for key in keys {
            let name = key.get_ref().as_ref();
            let Some(field) = fields.iter().find(|f| f.key == name) else {
                let message = unknown_key(owner, name, fields);
                self.report(&key.span(), message);
                table.remove(name);
                continue;
            };
            let Some(value) = table.get_mut(name) else {
                continue;
            };
            if !self.value(owner, field, value) {
                table.remove(name);
            }
        }
    }

    /// Checks one value; `false` when it must go.
    fn value(&mut self, owner: &str, field: &Field, value: &mut Spanned<DeValue<'_>>) -> bool {
        let span = value.span();
        let key = field.key;
        let fits = match (field.kind, value.get_mut()) {
            (Kind::Str(_), DeValue::String(_))
            | (Kind::Int, DeValue::Integer(_))
            | (Kind::Bool, DeValue::Boolean(_))
            | (Kind::Scalar, DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_)) => {
                true
            }
            (Kind::StrList | Kind::IntList, DeValue::Array(items)) => {
                self.list(owner, key, field.kind, items);
                true
            }
            (Kind::Env, DeValue::Table(env)) => {
                self.env(owner, key, env);
                true
            }
            (Kind::IntMap, DeValue::Table(map)) => {
                self.int_map(owner, key, map);
                true
            }
            (Kind::Table(fields), DeValue::Table(inner)) => {
                let inner_owner = if owner.is_empty() {
                    key.to_owned()
                } else {
                    format!("{owner}, `{key}`")
                };
                self.table(&inner_owner, inner, fields);
                true
            }
            (Kind::Tables(fields), DeValue::Array(items))
                if items.iter().all(|i| i.get_ref().is_table()) =>
            {
                self.entries(owner, key, fields, items);
                true
            }
            _ => false,
        };
        if !fits {
            let message = format!(
                "{}`{key}` must be {}, not {}{}",
                prefix(owner),
                expected(field.kind, key),
                describe(value.get_ref()),
                hint(field.kind, value.get_ref())
            );
            self.report(&span, message);
            // A boolean written as a word keeps its meaning, so that a
            // quoted `local = "yes"` is not also taken for a remote worker.
            if let (Kind::Bool, DeValue::String(s)) = (field.kind, value.get_ref()) {
                let word = match s.trim() {
                    "true" | "yes" | "on" => Some(true),
                    "false" | "no" | "off" => Some(false),
                    _ => None,
                };
                if let Some(b) = word {
                    *value.get_mut() = DeValue::Boolean(b);
                    return true;
                }
            }
        }
        fits
    }

    /// The items of a list of strings or integers; mistyped ones go.
    fn list(&mut self, owner: &str, key: &str, kind: Kind, items: &mut DeArray<'_>) {
        let want_str = matches!(kind, Kind::StrList);
        let mut kept = DeArray::new();
        let old: Vec<_> = items.iter().cloned().collect();
        for (i, item) in old.into_iter().enumerate() {
            let fits = if want_str {
                item.get_ref().is_str()
            } else {
                item.get_ref().is_integer()
            };
            if fits {
                kept.push(item);
            } else {
                let message = format!(
                    "{}`{key}` holds {}, but item {} is {}",
                    prefix(owner),
                    if want_str { "strings" } else { "integers" },
                    i + 1,
                    describe(item.get_ref())
                );
                self.report(&item.span(), message);
            }
        }
        *items = kept;
    }

    /// An `env` (or `properties`) table: every value must be a string;
    /// others go.
    fn env(&mut self, owner: &str, table_key: &str, env: &mut DeTable<'_>) {
        let keys: Vec<Spanned<DeString<'_>>> = env.keys().cloned().collect();
        for key in keys {
            let name = key.get_ref().as_ref();
            let Some(value) = env.get(name) else {
                continue;
            };
            if value.get_ref().is_str() {
                continue;
            }
            let quoted = match value.get_ref() {
                DeValue::Integer(n) => format!("; quote it: {name} = \"{}\"", n.as_str()),
                DeValue::Boolean(b) => format!("; quote it: {name} = \"{b}\""),
                _ => String::new(),
            };
            let message = format!(
                "{}{} `{name}` must be a string, not {}{quoted}",
                prefix(owner),
                if table_key == "env" {
                    "env"
                } else {
                    "property"
                },
                describe(value.get_ref())
            );
            let span = value.span();
            self.report(&span, message);
            env.remove(name);
        }
    }

    /// A table of integers: every value must be one; others go.
    fn int_map(&mut self, owner: &str, key: &str, map: &mut DeTable<'_>) {
        let keys: Vec<Spanned<DeString<'_>>> = map.keys().cloned().collect();
        for k in keys {
            let name = k.get_ref().as_ref();
            let Some(value) = map.get(name) else {
                continue;
            };
            if value.get_ref().is_integer() {
                continue;
            }
            let message = format!(
                "{}`{key}` entry `{name}` must be an integer, not {}",
                prefix(owner),
                describe(value.get_ref())
            );
            let span = value.span();
            self.report(&span, message);
            map.remove(name);
        }
    }

    /// The entries of an array of tables, each named by its `name`.
    fn entries(
        &mut self,
        owner: &str,
        key: &str,
        fields: &'static [Field],
        items: &mut DeArray<'_>,
    ) {
        let what = if owner.is_empty() {
            key.to_owned()
        } else {
            format!("{owner}, {key}")
        };
        for (i, item) in items.iter_mut().enumerate() {
            let span = item.span();
            let DeValue::Table(table) = item.get_mut() else {
                continue;
            };
            let placeholder = format!("#{}", i + 1);
            let entry_owner = match table.get("name").map(|n| n.get_ref()) {
                Some(DeValue::String(name)) => format!("{what} `{name}`"),
                _ => format!("{what} {placeholder}"),
            };
            let had_name = table.contains_key("name");
            self.table(&entry_owner, table, fields);
            if !table.contains_key("name") {
                // A mistyped name was reported and removed by `table`.
                if !had_name {
                    self.report(&span, format!("{entry_owner} needs `name`"));
                }
                self.out.placeholders.insert(span.start);
                table.insert(
                    Spanned::new(span.clone(), DeString::Borrowed("name")),
                    Spanned::new(span.clone(), DeValue::String(placeholder.into())),
                );
            }
        }
    }
}

/// `owner: ` or nothing at the top level.
fn prefix(owner: &str) -> String {
    if owner.is_empty() {
        String::new()
    } else {
        format!("{owner}: ")
    }
}

/// An unknown key, with the closest known one or the list of known keys.
fn unknown_key(owner: &str, key: &str, fields: &[Field]) -> String {
    let what = if owner.is_empty() {
        "unknown top-level key".to_owned()
    } else {
        format!("{owner}: unknown key")
    };
    let hint = crate::suggest::did_you_mean(key, fields.iter().map(|f| f.key));
    if hint.is_empty() {
        let known: Vec<String> = fields.iter().map(|f| format!("`{}`", f.key)).collect();
        format!("{what} `{key}`; known keys: {}", known.join(", "))
    } else {
        format!("{what} `{key}`{hint}")
    }
}

/// What a key of `kind` must be, in words.
fn expected(kind: Kind, key: &str) -> String {
    match kind {
        Kind::Str(Hint::Text) => "a string".into(),
        Kind::Str(Hint::Duration) => "a duration string".into(),
        Kind::Str(Hint::Size) => "a size string".into(),
        Kind::Str(Hint::Mode) => "an octal string".into(),
        Kind::Int => "an integer".into(),
        Kind::Bool => "true or false".into(),
        Kind::Scalar => "a string, an integer or true/false".into(),
        Kind::StrList => "an array of strings".into(),
        Kind::IntList => "an array of integers".into(),
        Kind::Env => "a table of strings".into(),
        Kind::IntMap => "a table of integers".into(),
        Kind::Table(_) => format!("a table (`[{key}]` or `{key} = {{ ... }}`)"),
        Kind::Tables(_) => format!("an array of tables (`[[{key}]]`)"),
    }
}

/// How to write a value of `kind`, given what was written instead.
fn hint(kind: Kind, found: &DeValue<'_>) -> String {
    match (kind, found) {
        (Kind::Str(Hint::Duration), DeValue::Integer(n)) => {
            format!("; write it like \"{}s\"", n.as_str())
        }
        (Kind::Str(Hint::Duration), _) => "; write it like \"30s\", \"5m\" or \"1h 30m\"".into(),
        (Kind::Str(Hint::Size), _) => "; write it like \"64KiB\", \"16MiB\" or \"1GiB\"".into(),
        (Kind::Str(Hint::Mode), _) => "; write it like \"0644\" or \"0755\"".into(),
        (Kind::Str(Hint::Text), DeValue::Integer(_) | DeValue::Boolean(_)) => {
            "; put it in quotes".into()
        }
        (Kind::Int, DeValue::String(s)) if s.trim().parse::<i64>().is_ok() => {
            format!("; write it without quotes: {}", s.trim())
        }
        (Kind::Bool, DeValue::String(s)) if matches!(s.trim(), "true" | "false") => {
            format!("; write it without quotes: {}", s.trim())
        }
        (Kind::StrList, DeValue::String(s)) => format!("; write it like [\"{s}\"]"),
        _ => String::new(),
    }
}

/// A value as messages show it: `the integer 30`, `the string "2"`.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(n) => format!("the integer {}", n.as_str()),
        DeValue::Float(x) => format!("the float {}", x.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Field, Kind, ROOT};

    /// The schema knows exactly the keys of `crate::man::CONFIG_KEYS`,
    /// which another test holds to the raw structs: so serde never sees a
    /// key the walk let through unchecked.
    #[test]
    fn schema_matches_the_documented_keys() {
        fn flatten(prefix: &str, fields: &[Field], out: &mut Vec<String>) {
            for field in fields {
                let key = if prefix.is_empty() {
                    field.key.to_owned()
                } else {
                    format!("{prefix}.{}", field.key)
                };
                out.push(key.clone());
                if let Kind::Table(inner) | Kind::Tables(inner) = field.kind {
                    flatten(&key, inner, out);
                }
            }
        }
        let mut found = Vec::new();
        flatten("", ROOT, &mut found);
        found.sort();
        let mut listed: Vec<String> = crate::man::CONFIG_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect();
        listed.sort();
        assert_eq!(found, listed);
    }
}
