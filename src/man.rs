//! Man pages for the three programs, rendered from their clap definitions,
//! plus `master.toml(5)`, written by hand in `man/master.toml.5`.
//!
//! The pages are checked in under `man/`; a test renders them again and
//! fails when they differ, so the pages can never drift from `--help`.
//! Regenerate with `UPDATE_MAN=1 cargo test --lib man`. Another test checks
//! that `master.toml.5` documents every key of [`CONFIG_KEYS`], and that
//! this list holds every field of the config's raw structs.

use clap::CommandFactory;

/// Every key of `master.toml`, as `table.key` (`builder.step.key` for a
/// step's), tables included. The man page `master.toml(5)` and
/// `examples/master.toml` must mention each one (tests check it), and a
/// test checks this list against the fields of `src/config/raw.rs`.
pub const CONFIG_KEYS: &[&str] = &[
    "master",
    "master.state_dir",
    "master.control_socket",
    "master.worker_socket",
    "master.worker_grace",
    "master.keepalive",
    "master.max_retries",
    "master.max_handshake_frame",
    "master.max_frame",
    "master.max_log_size",
    "master.max_queued",
    "master.max_clients",
    "master.allowed_uids",
    "master.allowed_gid",
    "master.transfer_dir",
    "master.keep_builds",
    "master.keep_logs",
    "master.max_upload_size",
    "master.max_artifact_bytes_per_build",
    "master.max_artifacts_per_build",
    "master.min_free_space",
    "master.deadline_grace",
    "worker",
    "worker.name",
    "worker.local",
    "worker.max_builds",
    "worker.secret",
    "worker.secret_file",
    "worker.user",
    "builder",
    "builder.name",
    "builder.previous_names",
    "builder.workers",
    "builder.env",
    "builder.pass_env",
    "builder.collapse",
    "builder.keep_builds",
    "builder.keep_logs",
    "builder.retry",
    "builder.step",
    "builder.step.name",
    "builder.step.shell",
    "builder.step.command",
    "builder.step.timeout",
    "builder.step.env",
    "builder.step.upload",
    "builder.step.upload.from",
    "builder.step.upload.max_size",
    "builder.step.upload.mode",
    "builder.step.download",
    "builder.step.download.from",
    "builder.step.download.to",
    "builder.step.download.max_size",
    "builder.step.download.mode",
];

/// The hand-written page of the config file, checked in under `man/`.
pub const CONFIG_PAGE: &str = "master.toml.5";

/// Every generated page as (file name, roff text): `bbctl.1`, one
/// `bbctl-<cmd>.1` per subcommand, `bbmaster.8` and `bbworker.8`.
/// (`master.toml.5` is written by hand.)
pub fn render_all() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let bbctl = crate::client::cli::Cli::command().disable_help_subcommand(true);
    let mut extra = String::new();
    extra.push_str(BBCTL_OUTPUT);
    extra.push_str(BBCTL_ENVIRONMENT);
    extra.push_str(&exit_status());
    extra.push_str(&see_also(&["bbmaster(8)", "bbworker(8)", "master.toml(5)"]));
    pages.push(("bbctl.1".to_string(), render(bbctl.clone(), "1", &extra)));
    for sub in bbctl.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("bbctl-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let extra = format!("{}{}", exit_status(), see_also(&["bbctl(1)"]));
        pages.push((format!("{name}.1"), render(sub, "1", &extra)));
    }
    let extra = format!(
        "{BBMASTER_EXTRA}{}",
        see_also(&[
            "bbctl(1)",
            "bbworker(8)",
            "master.toml(5)",
            "systemd.service(5)"
        ])
    );
    pages.push((
        "bbmaster.8".to_string(),
        render(crate::daemon::args::MasterArgs::command(), "8", &extra),
    ));
    let extra = format!(
        "{BBWORKER_EXTRA}{}",
        see_also(&["bbmaster(8)", "master.toml(5)"])
    );
    pages.push((
        "bbworker.8".to_string(),
        render(crate::worker::args::WorkerArgs::command(), "8", &extra),
    ));
    pages
}

/// One of clap_mangen's section renderers.
type RenderPart = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;

/// A page from clap's sections, with `extra` (roff) in place of clap's
/// EXTRA section (the `after_long_help` text, which [`exit_status`]
/// renders properly) and before VERSION.
fn render(cmd: clap::Command, section: &str, extra: &str) -> Vec<u8> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .source(concat!("bbctl ", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    let has_args = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let mut parts: Vec<RenderPart> = vec![
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
    ];
    if has_args {
        parts.push(clap_mangen::Man::render_options_section);
    }
    if has_subcommands {
        parts.push(clap_mangen::Man::render_subcommands_section);
    }
    for part in parts {
        part(&man, &mut out).expect("rendering into a Vec cannot fail");
    }
    out.extend_from_slice(extra.as_bytes());
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(&mut out)
            .expect("rendering into a Vec cannot fail");
    }
    // Each part starts with the same roff preamble; keep the first.
    let text = String::from_utf8(out).expect("roff is UTF-8");
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    match text.strip_prefix(preamble) {
        Some(rest) => format!("{preamble}{}", rest.replace(preamble, "")).into_bytes(),
        None => text.into_bytes(),
    }
}

/// Escape text for roff: backslashes, hyphens, and a leading `.` or `'`.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// EXIT STATUS, from [`crate::client::cli::EXIT_CODES`]: one `.TP` entry
/// per code, its meaning whole (continuation lines joined).
fn exit_status() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in crate::client::cli::exit_codes() {
        roff.push_str(&format!(".TP\n.B {code}\n{}\n", roff_escape(&meaning)));
    }
    roff
}

/// SEE ALSO with `name(section)` references.
fn see_also(pages: &[&str]) -> String {
    let refs: Vec<String> = pages
        .iter()
        .map(|p| match p.split_once('(') {
            Some((name, section)) => format!("\\fB{}\\fR({section}", roff_escape(name)),
            None => roff_escape(p),
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n"))
}

const BBCTL_OUTPUT: &str = r#".SH OUTPUT
Standard output holds data only: tables, reports, build output, or with
\fB\-\-json\fR machine\-readable JSON, whose shapes are documented in
\fIdocs/json.md\fR; every JSON object carries \fB"schema": 1\fR.
Streams (\fB\-\-wait\fR, \fB\-\-follow\fR, \fBwait\fR, \fBlog\fR,
\fBevents\fR) are JSON Lines: one compact object per line.
Confirmations (\fBrequest r8 queued for hello\fR), progress and banners
go to standard error.
Requests are written \fBr8\fR, builds \fB7\fR or \fB#7\fR, in output
and in arguments alike.
Errors go to standard error as a line starting with
\fBbbctl: error:\fR, coloured only when standard error is a terminal and
\fBNO_COLOR\fR is unset.
A closed standard output (\fBbbctl builds | head\fR) ends bbctl quietly
with status 0.
The whole scripting contract, command by command, is in \fIdocs/cli.md\fR.
"#;

const BBCTL_ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
.B BBCTL_SOCKET
The master's control socket, as \fB\-\-socket\fR.
.TP
.B BBMASTER_STATE_DIR
The master's state dir, as \fB\-\-state\-dir\fR; bbctl uses its
\fIcontrol.sock\fR.
.TP
.B BBMASTER_CONFIG
A master config file, as \fB\-\-master\-config\fR: bbctl uses its
\fBcontrol_socket\fR, else \fI<its state_dir>/control.sock\fR.
bbmaster reads the same variable as its \fB\-\-config\fR.
A flag beats any variable; among flags, and among variables, a socket
beats a state dir, which beats a config file.
.TP
.B XDG_STATE_HOME
The default state dir is \fI$XDG_STATE_HOME/bbmaster\fR, else
\fI~/.local/state/bbmaster\fR.
.TP
.B NO_COLOR
When set and not empty, no colour (unless \fB\-\-color always\fR).
"#;

const BBMASTER_EXTRA: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re\-read the config file and apply it, as \fBbbctl reload\fR does.
.TP
.B SIGTERM\fR, \fBSIGINT
Exit at once, keeping the queue and the history.
Running steps go on with their workers, local workers included, and the
next master on the same state dir re\-adopts them.
To let running builds finish first, use \fBbbctl shutdown \-\-drain\fR.
.SH ENVIRONMENT
.TP
.B BBMASTER_CONFIG
The config file, as \fB\-\-config\fR.
.TP
.B BBMASTER_STATE_DIR
The state dir, as \fB\-\-state\-dir\fR.
.TP
.B BBMASTER_LOG\fR, \fBRUST_LOG
A tracing filter (such as \fBinfo,bbctl::daemon=debug\fR) that replaces
\fB\-\-log\-level\fR; \fBBBMASTER_LOG\fR wins over \fBRUST_LOG\fR.
.TP
.B NOTIFY_SOCKET
Set by systemd for a \fBType=notify\fR service: the master sends
\fBREADY=1\fR there once its sockets take connections.
.TP
.B BBMASTER_WORKER_EXE
The program to start for local workers. By default the master starts its
own executable in worker mode (under the name \fBbbworker\fR), so no
separate \fBbbworker\fR binary is needed beside it.
.SH FILES
.TP
.I master.toml
The config file; see \fBmaster.toml\fR(5).
.TP
.I <state dir>/master.db
The queue and the build history (SQLite).
.TP
.I <state dir>/logs/
The output of every step.
.TP
.I <state dir>/workers/<name>.log
The log of the local worker \fIname\fR (it outlives the master, so it
never writes to the master's terminal); \fI<state dir>/workers/<name>/\fR
is its work dir.
.TP
.I <state dir>/control.sock\fR, \fI<state dir>/worker.sock
The sockets of \fBbbctl\fR and of workers (mode 0600).
.TP
.I contrib/bbmaster.service
A systemd unit (\fBType=notify\fR, \fBKillMode=process\fR).
"#;

const BBWORKER_EXTRA: &str = r#".SH SIGNALS
.TP
.B SIGTERM\fR, \fBSIGINT
Stop the running steps (each one's whole process group) and exit.
A lost connection to the master does not stop them: the worker
reconnects and the master picks them up again.
.SH ENVIRONMENT
.TP
.B BBWORKER_LOG
A tracing filter for the worker's log on standard error (default
\fBinfo\fR).
.SH FILES
.TP
.I contrib/bbworker@.service
A systemd unit template; the instance is the worker's name.
"#;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{CONFIG_KEYS, CONFIG_PAGE};

    fn man_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
    }

    #[test]
    fn man_pages_are_up_to_date() {
        let dir = man_dir();
        let update = std::env::var_os("UPDATE_MAN").is_some();
        let mut stale = Vec::new();
        let pages = super::render_all();
        for (name, text) in &pages {
            let path = dir.join(name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, text).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
                stale.push(name.clone());
            }
        }
        assert!(
            stale.is_empty(),
            "man pages out of date: {stale:?}; run `UPDATE_MAN=1 cargo test --lib man` and commit man/"
        );
        // A page no longer generated (a removed command, an old section)
        // must not linger.
        let expected: BTreeSet<String> = pages
            .into_iter()
            .map(|(name, _)| name)
            .chain([CONFIG_PAGE.to_string()])
            .collect();
        let mut extra = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !expected.contains(&name) {
                if update {
                    std::fs::remove_file(dir.join(&name)).unwrap();
                } else {
                    extra.push(name);
                }
            }
        }
        assert!(
            extra.is_empty(),
            "man/ holds pages that are no longer generated: {extra:?}; delete them (or run `UPDATE_MAN=1 cargo test --lib man`)"
        );
    }

    /// `.SH`/`.SS` headings of the config page name the tables as
    /// `[master]`, `[[worker]]`, `[[builder]]`, `[[builder.step]]`; each key
    /// is a `.B key` line under its table's heading.
    #[test]
    fn config_page_documents_every_key() {
        let text = std::fs::read_to_string(man_dir().join(CONFIG_PAGE))
            .unwrap_or_else(|e| panic!("man/{CONFIG_PAGE}: {e}"));
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            if line.starts_with(".SH") || line.starts_with(".SS") {
                let heading = line[3..].trim().trim_matches('"');
                let table = heading.trim_matches(|c| c == '[' || c == ']');
                let table = if heading.starts_with('[') { table } else { "" };
                sections.push((table.to_string(), Vec::new()));
            } else if let (Some(key), Some((_, keys))) =
                (line.strip_prefix(".B "), sections.last_mut())
            {
                keys.push(key.trim().to_string());
            }
        }
        let mut missing = Vec::new();
        for key in CONFIG_KEYS {
            let (table, leaf) = match key.rsplit_once('.') {
                Some((table, leaf)) => (table, leaf),
                None => {
                    if !sections.iter().any(|(t, _)| t == key) {
                        missing.push(format!("{key} (no section heading [{key}] or [[{key}]])"));
                    }
                    continue;
                }
            };
            let documented = sections
                .iter()
                .any(|(t, keys)| t == table && keys.iter().any(|k| k == leaf));
            if !documented {
                missing.push(key.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "man/{CONFIG_PAGE} does not document: {missing:?}"
        );
    }

    /// [`CONFIG_KEYS`] against the source: every `pub field:` of the raw
    /// structs, with its table, must be in the list, and the list must hold
    /// nothing else.
    #[test]
    fn config_keys_match_the_raw_structs() {
        let source = include_str!("config/raw.rs");
        let table_of = |name: &str| match name {
            "RawConfig" => Some(""),
            "RawMaster" => Some("master"),
            "RawWorker" => Some("worker"),
            "RawBuilder" => Some("builder"),
            "RawStep" => Some("builder.step"),
            "RawUpload" => Some("builder.step.upload"),
            "RawDownload" => Some("builder.step.download"),
            _ => None,
        };
        let mut found = BTreeSet::new();
        let mut current: Option<&str> = None;
        for line in source.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.split(|c: char| !c.is_alphanumeric()).next().unwrap();
                current = Some(table_of(name).unwrap_or_else(|| {
                    panic!("raw.rs has a new struct {name}: add it to this test and to CONFIG_KEYS")
                }));
                continue;
            }
            if line == "}" {
                current = None;
                continue;
            }
            if let (Some(table), Some((field, _))) = (
                current,
                line.strip_prefix("pub ").and_then(|r| r.split_once(':')),
            ) {
                let field = field.trim();
                found.insert(if table.is_empty() {
                    field.to_string()
                } else {
                    format!("{table}.{field}")
                });
            }
        }
        let listed: BTreeSet<String> = CONFIG_KEYS.iter().map(|k| k.to_string()).collect();
        let unlisted: Vec<_> = found.difference(&listed).collect();
        let gone: Vec<_> = listed.difference(&found).collect();
        assert!(
            unlisted.is_empty() && gone.is_empty(),
            "CONFIG_KEYS is out of step with src/config/raw.rs: missing {unlisted:?}, not in raw.rs {gone:?}"
        );
    }

    /// Render a roff page as a reader sees it: `man -l` at 80 columns
    /// (man-db; CI installs it with apt-get).
    fn render_as_text(roff: &[u8]) -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("man")
            .args(["-l", "-"])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env_remove("MAN_KEEP_FORMATTING")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`man` (man-db) is needed to check the man pages: apt-get install man-db");
        child.stdin.take().unwrap().write_all(roff).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "man -l failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Strip any overstrike (bold/underline) that a formatter leaves.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        text
    }

    /// The lines of section `name` of a rendered page, up to the next one.
    fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .skip_while(|l| l.trim_end() != name)
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .collect()
    }

    /// Every bbctl page, rendered by `man`, lists each exit code on a line
    /// of its own, followed by the start of its meaning; no other line
    /// sits at the codes' indentation (a garbled `not`, `master,`).
    #[test]
    fn exit_status_reads_right_when_rendered() {
        let codes = crate::client::cli::exit_codes();
        for (name, roff) in super::render_all() {
            if !name.starts_with("bbctl") {
                continue;
            }
            let text = render_as_text(&roff);
            let lines = section(&text, "EXIT STATUS");
            assert!(!lines.is_empty(), "{name}: no EXIT STATUS section:\n{text}");
            let tagged: Vec<&str> = lines
                .iter()
                .filter(|l| l.len() > 7 && l.starts_with("       ") && !l[7..].starts_with(' '))
                .copied()
                .collect();
            assert_eq!(
                tagged.len(),
                codes.len(),
                "{name}: one tagged line per exit code expected:\n{}",
                lines.join("\n")
            );
            for ((code, meaning), line) in codes.iter().zip(&tagged) {
                let mut words = line.split_whitespace();
                assert_eq!(
                    words.next(),
                    Some(code.to_string().as_str()),
                    "{name}: {line}"
                );
                let first: Vec<&str> = meaning.split_whitespace().take(2).collect();
                let got: Vec<&str> = words.take(2).collect();
                assert_eq!(got, first, "{name}: code {code} reads `{line}`");
            }
            // The meaning comes whole: every word of it is in the section.
            // (Words hyphenated at a line's end are joined again.)
            let flat = lines.join(" ");
            let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
            let flat = flat.replace("\u{2010} ", "");
            for (code, meaning) in &codes {
                let last = meaning.split_whitespace().last().unwrap();
                assert!(
                    flat.contains(last),
                    "{name}: code {code}'s meaning is cut: {flat}"
                );
            }
        }
    }

    /// `docs/cli.md`'s exit-code table says exactly what `--help` and
    /// `bbctl(1)` say (all three come from `EXIT_CODES`).
    #[test]
    fn docs_list_the_same_exit_codes_as_help() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md"))
                .unwrap();
        let rows: Vec<(u8, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                let code = cells.first()?.trim().parse::<u8>().ok()?;
                Some((code, cells.get(1)?.trim().to_string()))
            })
            .collect();
        assert_eq!(
            rows,
            crate::client::cli::exit_codes(),
            "docs/cli.md's exit-code table differs from cli::EXIT_CODES"
        );
    }

    /// `bbworker(8)` and `bbworker --help` describe the worker, not the
    /// whole suite (the crate's description).
    #[test]
    fn bbworker_describes_the_worker() {
        use clap::CommandFactory;
        let help = crate::worker::args::WorkerArgs::command()
            .render_long_help()
            .to_string();
        assert!(help.starts_with("Connect to a bbmaster"), "{help}");
        let (_, roff) = super::render_all()
            .into_iter()
            .find(|(n, _)| n == "bbworker.8")
            .unwrap();
        let text = render_as_text(&roff);
        let name = section(&text, "NAME").join(" ");
        assert!(name.contains("bbworker - Connect to a bbmaster"), "{name}");
        assert!(!text.contains("whose reload never hurts"), "{text}");
    }

    /// Every `Default:` of `master.toml(5)` says what
    /// [`crate::config::defaults::DEFAULTS`] (the table the code's defaults
    /// come from) says, and every key of the table has one.
    #[test]
    fn config_page_defaults_match_the_code() {
        use crate::config::defaults::DEFAULTS;
        let text = std::fs::read_to_string(man_dir().join(CONFIG_PAGE)).unwrap();
        // (table.key, default as shown), from `.B key` entries.
        let mut table = String::new();
        let mut key: Option<String> = None;
        let mut shown: Vec<(String, String)> = Vec::new();
        let mut pending = String::new();
        let flush = |key: &Option<String>, pending: &str, shown: &mut Vec<(String, String)>| {
            if let (Some(key), Some((_, rest))) = (key, pending.split_once("Default: ")) {
                let plain = rest
                    .replace("\\fB", "")
                    .replace("\\fI", "")
                    .replace("\\fR", "")
                    .replace("\\-", "-");
                let value = plain.split_whitespace().collect::<Vec<_>>().join(" ");
                let value = value.strip_suffix('.').unwrap_or(&value).to_string();
                shown.push((key.clone(), value));
            }
        };
        for line in text.lines() {
            if line.starts_with(".SH") || line.starts_with(".SS") || line.starts_with(".TP") {
                flush(&key, &pending, &mut shown);
                pending.clear();
                key = None;
                if !line.starts_with(".TP") {
                    let heading = line[3..].trim().trim_matches('"');
                    table = if heading.starts_with('[') {
                        heading.trim_matches(|c| c == '[' || c == ']').to_string()
                    } else {
                        String::new()
                    };
                }
            } else if let Some(k) = line.strip_prefix(".B ") {
                key = Some(format!("{table}.{}", k.trim()));
            } else if key.is_some() {
                pending.push(' ');
                pending.push_str(line);
            }
        }
        flush(&key, &pending, &mut shown);
        let mut wrong = Vec::new();
        for (key, value) in &shown {
            match DEFAULTS.iter().find(|(k, _)| k == key) {
                None => wrong.push(format!("{key}: the page says {value:?}, the code has none")),
                Some((_, v)) if v != value => {
                    wrong.push(format!("{key}: the page says {value:?}, the code {v:?}"))
                }
                Some(_) => {}
            }
        }
        for (key, value) in DEFAULTS {
            if !shown.iter().any(|(k, _)| k == key) {
                wrong.push(format!(
                    "{key}: no `Default:` on the page (the code: {value:?})"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "man/{CONFIG_PAGE} and config::defaults::DEFAULTS disagree:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn generated_pages_have_the_right_sections() {
        let pages = super::render_all();
        let find = |name: &str| {
            let (_, text) = pages.iter().find(|(n, _)| n == name).unwrap();
            String::from_utf8(text.clone()).unwrap()
        };
        assert!(find("bbmaster.8").contains(".TH bbmaster 8"));
        assert!(find("bbworker.8").contains(".TH bbworker 8"));
        let bbctl = find("bbctl.1");
        assert!(bbctl.contains(".TH bbctl 1"));
        assert!(bbctl.contains(".SH \"EXIT STATUS\""));
        assert!(!bbctl.contains("bbctl\\-help"), "no page for `help`");
        assert!(find("bbctl-force-build.1").contains(".TH bbctl-force-build 1"));
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            assert_eq!(text.matches(".ds Aq").count(), 2, "{name}: one preamble");
        }
    }
}
