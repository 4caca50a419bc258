//! `bbctl`: the command line. Parses arguments ([`cli`]), talks to the
//! master ([`connection`]), and renders answers for people ([`render`]) or
//! scripts (`--json`). Exit codes are part of the contract: see
//! [`cli::EXIT_CODES`] and `docs/cli.md`.

pub mod cli;
mod commands;
pub mod connection;
pub mod ids;
pub mod render;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::protocol::{ErrorKind, ErrorReply};
use connection::ConnectionError;

/// The version of the JSON shapes `--json` prints (`docs/json.md`); every
/// JSON object carries it as `schema`. Bumped only when a field changes
/// meaning or goes away; new fields do not bump it.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Exit code: the operation failed, or a waited-for build did not succeed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad arguments (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no master answers on the socket.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the id or name does not exist.
pub const EXIT_NOT_FOUND: u8 = 4;
/// Exit code: the master (or the config check) refused.
pub const EXIT_REJECTED: u8 = 5;

/// Everything that makes `bbctl` exit non-zero with a message.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the master failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The master answered with an error.
    #[error(transparent)]
    Server(#[from] ErrorReply),
    /// Writing our own output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    /// The config file named to find the master by cannot be used.
    #[error("cannot find the master through the config file {}: {why}", path.display())]
    MasterConfig {
        /// The file (`--master-config`, `BBMASTER_CONFIG`).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The master went away while bbctl waited for a build, and did not
    /// come back within `--reconnect-for`.
    #[error("the master went away and did not come back within {}: {source}", humantime::format_duration(*waited))]
    MasterGone {
        /// How long bbctl tried to re-attach.
        waited: std::time::Duration,
        /// The last error.
        source: Box<CliError>,
    },
}

impl CliError {
    /// The exit code this error means.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Connection(ConnectionError::Unreachable { .. })
            | CliError::Connection(ConnectionError::Refused { .. }) => EXIT_UNREACHABLE,
            CliError::MasterGone { .. } => EXIT_UNREACHABLE,
            CliError::MasterConfig { .. } => EXIT_USAGE,
            CliError::Connection(_) | CliError::Output(_) => EXIT_FAILED,
            CliError::Server(e) => match e.kind {
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                ErrorKind::Rejected => EXIT_REJECTED,
                ErrorKind::Failed => EXIT_FAILED,
            },
        }
    }

    /// True for a closed stdout (`bbctl ... | head`): not an error at all.
    fn is_broken_pipe(&self) -> bool {
        match self {
            CliError::Output(e) | CliError::Connection(ConnectionError::Output(e)) => {
                e.kind() == io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }
}

/// Run `bbctl` with the process's arguments; returns the exit code.
pub fn main() -> ExitCode {
    let parsed = cli::Cli::command()
        .try_get_matches()
        .and_then(|m| cli::Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let mut cli = match parsed {
        Ok((mut cli, matches)) => {
            cli.global.keep_winner(&matches);
            cli
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let color = cli.global.color;
    if let Some(config) = cli.global.master_config.take() {
        match socket_from_config(&config) {
            Ok(socket) => cli.global.socket = Some(socket),
            Err(e) => {
                report(&e, color);
                return ExitCode::from(e.exit_code());
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&CliError::Output(e), color);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, color);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Print an error on stderr, prefixed, with a hint where one helps.
fn report(e: &CliError, color: cli::ColorChoice) {
    let mut err = io::stderr().lock();
    let colored = match color {
        cli::ColorChoice::Always => true,
        cli::ColorChoice::Never => false,
        cli::ColorChoice::Auto => {
            io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let prefix = if colored {
        "\x1b[31mbbctl: error:\x1b[0m"
    } else {
        "bbctl: error:"
    };
    let _ = writeln!(err, "{prefix} {e}");
    if let CliError::Connection(ConnectionError::Unreachable { .. }) = e {
        let _ = writeln!(
            err,
            "hint: is bbmaster running? start it with `bbmaster`, or point bbctl at it with --socket, BBCTL_SOCKET or --state-dir"
        );
    }
}

/// The control socket a master config file gives: its `control_socket`,
/// else `<its state_dir>/control.sock`, else the default state dir's (as
/// `bbmaster --config FILE` without `--state-dir` would use).
pub fn socket_from_config(path: &std::path::Path) -> Result<PathBuf, CliError> {
    let config = crate::config::load_file(path).map_err(|e| CliError::MasterConfig {
        path: path.to_path_buf(),
        why: e.to_string().replace('\n', "; "),
    })?;
    let master = &config.master;
    Ok(master.control_socket.clone().unwrap_or_else(|| {
        let state_dir = master
            .state_dir
            .clone()
            .unwrap_or_else(crate::paths::default_state_dir);
        crate::paths::control_socket_in(&state_dir)
    }))
}

/// The control socket to use: `--socket`, else `<--state-dir>/control.sock`,
/// else the default state dir's.
pub fn socket_path(global: &cli::GlobalOpts) -> PathBuf {
    if let Some(socket) = &global.socket {
        return socket.clone();
    }
    let state_dir = global
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_state_dir);
    crate::paths::control_socket_in(&state_dir)
}
