//! The `bbworker` program's main, in the library so that two executables
//! can run it: `bbworker` itself (for remote machines) and `bbmaster`,
//! which starts its local workers from its own executable in worker mode
//! (see [`invoked_as_worker`]), so a master never depends on a sibling
//! binary being built or installed beside it.
//!
//! Run as `bbworker --guard` (by a worker, never by hand) it is the
//! worker's guard process instead: see [`crate::worker::guard`].

use std::ffi::OsStr;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use super::args::WorkerArgs as Cli;
use super::guard::{GUARD_FLAG, guard_main};
use super::{WorkerOptions, run};

/// The program name (`argv[0]`) that makes any of our executables a
/// worker: `bbmaster` starts its local workers as itself under this name.
pub const WORKER_ARGV0: &str = "bbworker";

pub use super::guard::GUARD_ARGV0;

/// True when this process was started under a worker's program name
/// (`argv[0]` is `bbworker` or `bbworker-guard`, as a path or not): the
/// `bbmaster` executable then runs [`main`] instead of a master.
pub fn invoked_as_worker() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|n| n == OsStr::new(WORKER_ARGV0) || n == OsStr::new(GUARD_ARGV0))
}

/// The worker's main: parse the command line, read the secret, set up
/// logging, run until told to stop.
pub fn main() -> ExitCode {
    // A signal mask is inherited across exec: a worker started by a master
    // (which blocks SIGHUP, SIGTERM and SIGINT until its handlers are in)
    // would otherwise ignore SIGTERM, and pass the mask on to its steps.
    if let Err(e) = nix::sys::signal::SigSet::empty().thread_set_mask() {
        eprintln!("bbworker: error: cannot reset the signal mask: {e}");
        return ExitCode::FAILURE;
    }
    // The guard is not a clap option: it must appear in neither --help nor
    // the man page, and takes no other argument.
    if std::env::args_os().nth(1).as_deref() == Some(GUARD_FLAG.as_ref())
        && std::env::args_os().len() == 2
    {
        init_logging();
        guard_main();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(std::env::args_os().enumerate().map(|(i, a)| {
        // Run as the master's executable in worker mode, argv[0] may be a
        // path: clap names the program from it in messages.
        if i == 0 { "bbworker".into() } else { a }
    }));
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
    let tls = cli.tls_options();
    let opts = WorkerOptions {
        masters: cli.master,
        tls,
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
    if let Some(warning) = open_secret_file(path) {
        tracing::warn!("{warning}");
    }
    non_empty(
        text.trim_end(),
        &format!("the secret file {}", path.display()),
    )
}

/// A warning when the secret file can be read by others than its owner:
/// whoever reads it can pose as this worker.
fn open_secret_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "the secret file {} is readable by {} (mode {mode:o}); `chmod 600` it: whoever reads it can pose as this worker",
            path.display(),
            if mode & 0o004 != 0 { "every user" } else { "its group" }
        )
    })
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

#[cfg(test)]
mod tests {
    use super::open_secret_file;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_file_others_can_read_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.secret");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        for (mode, warned) in [
            (0o600, None),
            (0o400, None),
            (0o640, Some("its group")),
            (0o644, Some("every user")),
            (0o604, Some("every user")),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let warning = open_secret_file(&path);
            match warned {
                None => assert_eq!(warning, None, "mode {mode:o}"),
                Some(who) => {
                    let w = warning.unwrap_or_default();
                    assert!(
                        w.contains(who) && w.contains("chmod 600"),
                        "mode {mode:o}: {w}"
                    );
                }
            }
        }
    }
}
