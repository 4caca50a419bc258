//! `bbworker`: runs the steps a `bbmaster` assigns to it.
//!
//! A thin main: parse the command line, read the secret, set up logging,
//! and hand over to [`bbctl::worker::run`]. Run as `bbworker --guard` (by a
//! worker, never by hand) it is the worker's guard process instead: see
//! [`bbctl::worker::guard`].

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use bbctl::worker::args::WorkerArgs as Cli;
use bbctl::worker::guard::{GUARD_FLAG, guard_main};
use bbctl::worker::{WorkerOptions, run};

fn main() -> ExitCode {
    // The guard is not a clap option: it must appear in neither --help nor
    // the man page, and takes no other argument.
    if std::env::args_os().nth(1).as_deref() == Some(GUARD_FLAG.as_ref())
        && std::env::args_os().len() == 2
    {
        init_logging();
        guard_main();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    init_logging();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bbworker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything that can fail, with anyhow at the edge.
fn real_main(cli: Cli) -> anyhow::Result<()> {
    let secret = match &cli.secret_file {
        Some(path) => secret_from_file(path)?,
        None => secret_from_stdin()?,
    };
    let opts = WorkerOptions {
        master_socket: cli.master,
        name: cli.name,
        secret,
        dir: cli.dir,
        orphan_timeout: cli.orphan_timeout,
        spool_limit: cli.spool_limit,
        // /proc/self/exe names the binary we run even if its file was
        // replaced or removed since (an upgrade in place).
        guard_exe: Some(PathBuf::from("/proc/self/exe")),
    };
    // The worker's own work is light (steps are child processes, the
    // output pumps and spool reads run on the blocking pool), so one
    // thread is enough.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(opts));
    // An output pump abandoned because an escaped process still holds its
    // pipe would otherwise keep the process alive when the runtime drops.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}

/// The secret from a file, trailing whitespace (the newline) removed.
fn secret_from_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    non_empty(
        text.trim_end(),
        &format!("the secret file {}", path.display()),
    )
}

/// The secret from the first line of stdin, so that it never appears on a
/// command line that `ps` shows.
fn secret_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the secret from standard input")?;
    non_empty(line.trim_end(), "standard input")
}

/// Refuse an empty secret: it would only earn a confusing refusal later.
fn non_empty(secret: &str, source: &str) -> anyhow::Result<String> {
    if secret.is_empty() {
        bail!("no secret in {source}");
    }
    Ok(secret.to_string())
}

/// Log to stderr; `BBWORKER_LOG` filters (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_env("BBWORKER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
