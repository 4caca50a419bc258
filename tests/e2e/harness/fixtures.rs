//! Setting up what a test runs: temp dirs, commands with a clean
//! environment, remote workers started against a master.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::*;

/// Variables that would point our binaries somewhere else.
pub(crate) const STRAY_ENV: &[&str] = &[
    "BBCTL_SOCKET",
    "BBMASTER_CONFIG",
    "BBMASTER_STATE_DIR",
    "BBMASTER_LOG",
    "BBWORKER_LOG",
    "XDG_STATE_HOME",
];

/// A fresh temp dir under /tmp with a short name, so that socket paths in
/// it stay far below the 108-byte limit of `sun_path`.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("bbe")
        .tempdir_in("/tmp")
        .expect("cannot create a temp dir under /tmp")
}

/// A command for one of our binaries, with a clean environment.
pub fn command(exe: &str) -> Command {
    let mut cmd = Command::new(exe);
    for var in STRAY_ENV {
        cmd.env_remove(var);
    }
    // Local workers run from the master's own executable, as for users.
    cmd.env("NO_COLOR", "1")
        .env_remove("BBMASTER_WORKER_EXE")
        .stdin(Stdio::null());
    cmd
}

/// Start a remote `bbworker` named `name` for `master`, reading its secret
/// from `secret_file`, working in `<dir>/w-<name>`.
pub fn start_worker(master: &Master, name: &str, secret_file: &Path) -> Background {
    start_worker_in(
        master,
        name,
        secret_file,
        &master.path().join(format!("w-{name}")),
    )
}

/// Like [`start_worker`], working in `work_dir` (two workers of one name
/// must not share a work dir).
pub fn start_worker_in(
    master: &Master,
    name: &str,
    secret_file: &Path,
    work_dir: &Path,
) -> Background {
    start_worker_with(&master.worker_args(), name, secret_file, work_dir, &[])
}

/// A remote `bbworker` named `name` reaching its master with `master_args`
/// (`--master ...` and what goes with it: see [`Master::worker_args`],
/// [`tls_worker_args`]), plus `extra` arguments.
pub fn start_worker_with(
    master_args: &[OsString],
    name: &str,
    secret_file: &Path,
    work_dir: &Path,
    extra: &[OsString],
) -> Background {
    Background::spawn(worker_command(
        master_args,
        name,
        secret_file,
        work_dir,
        extra,
    ))
}

/// The command line of [`start_worker_with`], not started.
pub fn worker_command(
    master_args: &[OsString],
    name: &str,
    secret_file: &Path,
    work_dir: &Path,
    extra: &[OsString],
) -> Command {
    let mut cmd = command(BBWORKER);
    cmd.args(master_args)
        .arg("--name")
        .arg(name)
        .arg("--secret-file")
        .arg(secret_file)
        .arg("--dir")
        .arg(work_dir)
        .args(extra);
    cmd
}
