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
    "master.worker_listen",
    "master.tls_cert",
    "master.tls_key",
    "master.allow_plaintext",
    "master.client_ca",
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
    "master.store",
    "master.store.postgres",
    "master.store.password_file",
    "master.store.shared_dir",
    "master.store.lease",
    "master.store.ca_file",
    "worker",
    "worker.name",
    "worker.local",
    "worker.max_builds",
    "worker.secret",
    "worker.secret_file",
    "worker.user",
    "worker.tags",
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
    "builder.step.trigger",
    "builder.step.trigger.schedulers",
    "builder.step.trigger.wait",
    "builder.step.trigger.properties",
    "scheduler",
    "scheduler.name",
    "scheduler.previous_names",
    "scheduler.kind",
    "scheduler.builders",
    "scheduler.repository",
    "scheduler.branches",
    "scheduler.files",
    "scheduler.tree_stable",
    "builder.step.git",
    "builder.step.git.repository",
    "builder.step.git.mode",
    "builder.step.git.submodules",
    "builder.force_properties",
    "builder.force_properties.name",
    "builder.force_properties.type",
    "builder.force_properties.default",
    "builder.force_properties.choices",
    "builder.force_properties.required",
    "poller",
    "poller.name",
    "poller.repository",
    "poller.branches",
    "poller.tags",
    "poller.interval",
    "poller.timeout",
    "builder.locks",
    "builder.locks.name",
    "builder.locks.access",
    "builder.locks.weight",
    "builder.worker_tags",
    "builder.worker_choice",
    "builder.max_running",
    "builder.step.locks",
    "builder.step.locks.name",
    "builder.step.locks.access",
    "builder.step.locks.weight",
    "lock",
    "lock.name",
    "lock.scope",
    "lock.max",
    "lock.worker_max",
    "scheduler.every",
    "scheduler.at",
    "scheduler.timezone",
    "scheduler.only_if_changed",
    "scheduler.catch_up",
    "scheduler.upstream",
    "http",
    "http.listen",
    "http.base_url",
    "http.trust_proxy",
    "http.tls",
    "http.max_connections",
    "http.token",
    "http.token.name",
    "http.token.token_file",
    "http.token.may",
    "http.hook",
    "http.hook.name",
    "http.hook.kind",
    "http.hook.secret_file",
    "irc",
    "irc.server",
    "irc.port",
    "irc.tls",
    "irc.tls_ca",
    "irc.tls_fingerprint",
    "irc.nick",
    "irc.alt_nicks",
    "irc.password",
    "irc.password_file",
    "irc.sasl",
    "irc.sasl.mechanism",
    "irc.sasl.account",
    "irc.sasl.password_file",
    "irc.sasl.required",
    "irc.nickserv_password_file",
    "irc.channels",
    "irc.channels.name",
    "irc.channels.key",
    "irc.channels.notify",
    "irc.authz",
    "irc.authz.force",
    "irc.authz.stop",
    "irc.keepalive",
    "irc.pong_timeout",
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
The queue and the build history (SQLite); with \fBstore = { postgres = ... }\fR
they are in that database instead (see \fBmaster.toml\fR(5)).
.TP
.I <state dir>/logs/
The output of every step; with PostgreSQL, \fI<shared_dir>/logs/\fR.
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
#[path = "man_tests.rs"]
mod tests;
