//! The `bbctl` command line, as clap definitions: the one source of the
//! help text, the man pages (`man/`) and the shell completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, as the long help, `bbctl(1)` and `docs/cli.md` document
/// them (a test holds the three to the same words): one `  N    meaning`
/// line per code, continuation lines indented further.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the operation failed; with --wait, --follow or `wait`: the build did
       not succeed; `check-config`: the file is invalid; `events`: the
       master went away
  2    usage error (unknown command or option, missing or malformed
       argument)
  3    the master cannot be reached (the message names the socket tried),
       refused the connection (too many clients: max_clients), or did not
       come back within --reconnect-for while bbctl waited for a build
  4    not found: no such build, request, builder, worker, step or artifact
  5    rejected: the master refused (an invalid config for `reload`,
       `cancel` of a finished request, `stop` of a finished build,
       `force-build` to a master draining for shutdown or a full queue,
       `undrain` during a drain for shutdown, `shutdown --cancel` when not
       draining for shutdown; anything that changes state, asked of a
       standby master: the message names the leader)
  130  interrupted by Ctrl-C while waiting (`force-build --wait/--follow`,
       `wait`, `log --follow`): the build goes on; stderr says how to
       re-attach";

/// [`EXIT_CODES`] as (code, meaning) pairs, continuation lines joined: the
/// one parser of that text, for the man pages and the docs test.
pub fn exit_codes() -> Vec<(u8, String)> {
    let mut codes: Vec<(u8, String)> = Vec::new();
    for line in EXIT_CODES.lines().skip(1) {
        let trimmed = line.trim();
        let code = trimmed
            .split_once(char::is_whitespace)
            .and_then(|(c, rest)| Some((c.parse::<u8>().ok()?, rest.trim())));
        match (code, codes.last_mut()) {
            (Some((code, meaning)), _) => codes.push((code, meaning.to_string())),
            (None, Some((_, meaning))) => {
                meaning.push(' ');
                meaning.push_str(trimmed);
            }
            (None, None) => {}
        }
    }
    codes
}

/// Control a bbmaster build master: status, builds, logs, reload.
#[derive(Debug, Parser)]
#[command(name = "bbctl", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// The master's control socket [default: <state dir>/control.sock].
    #[arg(long, global = true, value_name = "PATH", env = "BBCTL_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The master's state dir, used to find its socket [default:
    /// $XDG_STATE_HOME/bbmaster or ~/.local/state/bbmaster].
    #[arg(long, global = true, value_name = "DIR", env = "BBMASTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// A master config file (`master.toml`) to find the master by: its
    /// `control_socket`, else `<its state_dir>/control.sock`. BBMASTER_CONFIG
    /// is the variable bbmaster reads too, so exporting it once serves both.
    #[arg(long, global = true, value_name = "FILE", env = "BBMASTER_CONFIG")]
    pub master_config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (see docs/json.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// When to use colour.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Write build output to a terminal byte for byte. Without it, output
    /// shown on a terminal keeps newlines, tabs and colours, and shows every
    /// other control character or escape sequence escaped (`\x1b]0;...`),
    /// so that a build cannot retitle the window, write the clipboard or
    /// clear the screen. Output to a file or pipe is never changed.
    #[arg(long, global = true)]
    pub raw: bool,
    /// If the master is not up yet, keep trying to reach it for this long
    /// (e.g. `30s`) before giving up with exit code 3; for boot scripts.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_master: Option<std::time::Duration>,
    /// While waiting for a build (`--wait`, `--follow`, `wait`, `log
    /// --follow`): if the master goes away (a restart), keep trying to
    /// re-attach for this long, then exit 3; `0s`: do not re-attach.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub reconnect_for: std::time::Duration,
}

impl GlobalOpts {
    /// Keep only the way of finding the master that wins (`docs/cli.md`,
    /// "Finding the master"): a flag beats any variable; at the same
    /// level, a socket beats a state dir, which beats a config file.
    pub fn keep_winner(&mut self, matches: &clap::ArgMatches) {
        let from_flag =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let set = [
            self.socket.is_some(),
            self.state_dir.is_some(),
            self.master_config.is_some(),
        ];
        let flags = [
            from_flag("socket"),
            from_flag("state_dir"),
            from_flag("master_config"),
        ];
        let winner = (0..3)
            .find(|&i| set[i] && flags[i])
            .or_else(|| (0..3).find(|&i| set[i]));
        if winner != Some(0) {
            self.socket = None;
        }
        if winner != Some(1) {
            self.state_dir = None;
        }
        if winner != Some(2) {
            self.master_config = None;
        }
    }
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the master, its builders with their queues, and its workers
    /// with the builders they serve.
    Status {
        /// Only this builder, or builders whose name starts with PREFIX
        /// when written `PREFIX*` (quote it for the shell).
        #[arg(long, value_name = "NAME|PREFIX*")]
        builder: Option<String>,
        /// Only builders in this state.
        #[arg(long, value_parser = ["idle", "waiting", "building", "removed"])]
        state: Option<String>,
        /// At most this many builders.
        #[arg(long, short = 'n')]
        limit: Option<u32>,
    },
    /// A live full-screen view of builders, running builds, workers and the
    /// last finished builds, driven by the master's events. `q`, Esc or
    /// Ctrl-C quits. When stdout is not a terminal, prints one line per
    /// event instead.
    Watch,
    /// Print the master's events as they happen, one per line (`--json`:
    /// one JSON object per line), until the master goes away.
    Events,
    /// Queue a build request for a builder.
    #[command(after_long_help = EXIT_CODES)]
    ForceBuild(ForceBuildArgs),
    /// Queue a build again: a new request for the same builder with the
    /// same properties and source stamp (repository, branch, revision,
    /// changes), its reason `rebuild of build N`.
    #[command(after_long_help = EXIT_CODES)]
    Rebuild(RebuildArgs),
    /// Store a change (a commit somewhere) as a change source would; the
    /// schedulers that take it may start builds. Answers with the change's
    /// id once it is stored.
    #[command(after_long_help = EXIT_CODES)]
    Sendchange(SendchangeArgs),
    /// List stored changes, newest first, with the builds each started.
    Changes {
        /// At most this many changes.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u32,
    },
    /// List builds, newest first.
    Builds(BuildsArgs),
    /// Show one build with its steps.
    Build {
        /// The build's id (`7` or `#7`).
        #[arg(value_parser = crate::client::ids::parse_build)]
        id: u64,
    },
    /// Print a build's output.
    Log(LogArgs),
    /// Wait for a request's build to finish; exit 0 only if it succeeded.
    #[command(after_long_help = EXIT_CODES)]
    Wait {
        /// The request's id, as force-build prints it (`r8` or `8`).
        #[arg(value_parser = crate::client::ids::parse_request)]
        request: u64,
        /// Stream the build's output as it runs.
        #[arg(long, short)]
        follow: bool,
    },
    /// List queued requests in the order they will run.
    Queue {
        /// Only this builder's queue.
        builder: Option<String>,
    },
    /// List workers: connection, version, host, running builds, last seen.
    Workers,
    /// List locks: each lock (per worker for worker-scoped ones), its
    /// capacity, who holds it and who waits for it, and for how long.
    Locks,
    /// List the masters sharing a PostgreSQL store: name, role (leader,
    /// standby, stopped), epoch, address and last heartbeat, with the
    /// leader and its epoch; answered by the leader and by standbys, from
    /// the database. On SQLite: this one master. See docs/standby.md.
    Masters,
    /// Print the `bbworker` command line that connects worker NAME to this
    /// master over TCP (TLS unless the master allows plaintext), on one
    /// line: address, certificate fingerprint, name, and the secret read
    /// from a file, never given on the command line.
    WorkerCommand {
        /// The worker, as configured on the master.
        name: String,
    },
    /// Time a round trip from the master through a worker and back.
    Ping {
        /// The worker.
        worker: String,
    },
    /// For maintenance: start no new builds (on the whole master, or on one
    /// worker) while running builds finish; requests are still accepted and
    /// queued. Shown as `draining` in status.
    Drain {
        /// Drain this worker only.
        #[arg(long, value_name = "NAME")]
        worker: Option<String>,
        /// Wait until no build runs (on the master, or on that worker).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 1).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
        timeout: Option<std::time::Duration>,
    },
    /// Start builds again after `drain`.
    Undrain {
        /// Undrain this worker only.
        #[arg(long, value_name = "NAME")]
        worker: Option<String>,
    },
    /// Cancel a queued request (a running one has its build stopped).
    Cancel {
        /// The request's id, as force-build prints it (`r8` or `8`).
        #[arg(value_parser = crate::client::ids::parse_request)]
        request: u64,
    },
    /// Stop a running build: its current step's whole process group is
    /// killed. Takes a build id (a request's is refused: `cancel` takes it).
    Stop {
        /// The build's id (`7` or `#7`).
        #[arg(value_parser = crate::client::ids::parse_build)]
        build: u64,
    },
    /// List the files a build's `upload` steps stored: name, size, SHA-256.
    #[command(after_long_help = EXIT_CODES)]
    Artifacts {
        /// The build's id (`7` or `#7`).
        #[arg(value_parser = crate::client::ids::parse_build)]
        build: u64,
    },
    /// Fetch one artifact of a build; its checksum is verified, and a file
    /// is written whole or not at all.
    #[command(after_long_help = EXIT_CODES)]
    Artifact {
        /// The build's id (`7` or `#7`).
        #[arg(value_parser = crate::client::ids::parse_build)]
        build: u64,
        /// The artifact's name, as `bbctl artifacts` lists it.
        name: String,
        /// Write to this file (through a temp file renamed into place);
        /// `-` or none: standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Re-read the master's config file and apply it.
    #[command(after_long_help = EXIT_CODES)]
    Reload {
        /// Report what would change without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Apply this config file instead of the master's own; once
        /// applied, later reloads (and SIGHUP) read it too.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Delete the finished builds and logs that `keep_builds` and
    /// `keep_logs` (master.toml(5)) no longer keep, now; the master also
    /// does it in the background. Running builds and the builds of queued
    /// requests are never touched.
    #[command(after_long_help = EXIT_CODES)]
    Prune {
        /// Report what would be deleted without deleting it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop the master. Plain: exit at once, keeping queue and history;
    /// running steps go on with their workers and the next master on the
    /// same state dir re-adopts them.
    Shutdown {
        /// Start no new builds, let running ones finish, then exit.
        #[arg(long, conflicts_with = "cancel")]
        drain: bool,
        /// Stop a drain in progress; the master goes on serving.
        #[arg(long)]
        cancel: bool,
    },
    /// Validate a config file; needs no running master.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Print a shell completion script. In bash and fish it completes
    /// builder and worker names from the running master.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Names from the running master, one per line, for completion
    /// scripts; prints nothing when no master answers.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// What to list.
        what: CompleteWhat,
    },
}

/// What `bbctl __complete` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompleteWhat {
    /// Builder names.
    Builders,
    /// Worker names.
    Workers,
}

/// Arguments of `force-build`.
#[derive(Debug, Args)]
pub struct ForceBuildArgs {
    /// The builder.
    pub builder: String,
    /// Why the build is asked for; kept in its history.
    #[arg(long, short)]
    pub reason: Option<String>,
    /// A property K=V, given to every step as the environment variable
    /// BB_PROP_K (never pasted into a shell line). Repeatable.
    #[arg(long = "property", short = 'p', value_name = "K=V", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Wait for the build to finish; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Stream the build's output as it runs (implies --wait).
    #[arg(long)]
    pub follow: bool,
    /// Higher runs first; equal priorities run oldest first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// With --wait/--follow: on Ctrl-C, cancel the request (or stop its
    /// build) instead of detaching from it.
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

/// Arguments of `rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The build to run again (`7` or `#7`).
    #[arg(value_parser = crate::client::ids::parse_build)]
    pub build: u64,
    /// Wait for the new build to finish; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Stream the new build's output as it runs (implies --wait).
    #[arg(long)]
    pub follow: bool,
    /// Higher runs first; equal priorities run oldest first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// With --wait/--follow: on Ctrl-C, cancel the request (or stop its
    /// build) instead of detaching from it.
    #[arg(long)]
    pub cancel_on_interrupt: bool,
}

/// Arguments of `sendchange`.
#[derive(Debug, Args)]
pub struct SendchangeArgs {
    /// The repository (URL or path), as schedulers' `repository` names it.
    #[arg(long)]
    pub repository: String,
    /// The branch.
    #[arg(long)]
    pub branch: String,
    /// The revision (a commit id).
    #[arg(long)]
    pub revision: String,
    /// A file the change touches, relative to the repository's root.
    /// Repeatable; schedulers' `files` decide from them whether the change
    /// is important.
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    pub files: Vec<String>,
    /// Who wrote it.
    #[arg(long)]
    pub author: Option<String>,
    /// Its message.
    #[arg(long)]
    pub comments: Option<String>,
    /// A category, for filters.
    #[arg(long)]
    pub category: Option<String>,
    /// A property K=V of the change. Repeatable.
    #[arg(long = "property", short = 'p', value_name = "K=V", value_parser = parse_pair)]
    pub properties: Vec<(String, String)>,
}

/// Arguments of `builds`.
#[derive(Debug, Args)]
pub struct BuildsArgs {
    /// Only this builder's builds.
    #[arg(long, short)]
    pub builder: Option<String>,
    /// At most this many builds.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: u32,
}

/// Arguments of `log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The build's id (`7` or `#7`) [default: the latest build].
    #[arg(value_parser = crate::client::ids::parse_build)]
    pub build: Option<u64>,
    /// Only this step (name or index).
    pub step: Option<String>,
    /// Keep printing output until the build finishes.
    #[arg(long, short)]
    pub follow: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 30s or 2m: {e}"))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not K=V"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty name"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not K=V"))?;
    if !crate::daemon::core::valid_property_name(k) {
        return Err(format!(
            "invalid property name `{k}`: use letters, digits and `_`, not starting with a digit"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn properties_parse() {
        assert_eq!(
            parse_property("A_1=x=y").unwrap(),
            ("A_1".to_string(), "x=y".to_string())
        );
        assert!(parse_property("novalue").is_err());
        assert!(
            parse_property("1A=x")
                .unwrap_err()
                .contains("invalid property name")
        );
        assert!(parse_property("A-B=x").is_err());
    }
}
