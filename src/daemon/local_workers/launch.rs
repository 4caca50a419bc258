//! Starting a local worker process: the master's own executable in worker
//! mode, as the configured user, with a clean environment, in a work dir
//! beside the state dir, its secret on stdin.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::files::open_log;
use super::{LocalWorkerSetup, ORPHAN_TIMEOUT};
use crate::config::Config;

/// Who the local workers run as, checked at start: a `user` needs a root
/// master and a worker socket that user can reach; a local worker without
/// one shares the master's uid, which the master says in one warning line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Separation {
    /// Local workers running as the master's own user.
    pub shared: Vec<String>,
}

/// Check the local workers' `user`s against how this master runs.
pub fn separation(
    config: &Config,
    state_dir: &Path,
    worker_socket: &Path,
) -> Result<Separation, String> {
    let mut found = Separation::default();
    for w in config.workers.iter().filter(|w| w.local) {
        let Some(user) = &w.user else {
            found.shared.push(w.name.clone());
            continue;
        };
        let own = nix::unistd::geteuid();
        if !own.is_root() {
            return Err(format!(
                "local worker `{}` is to run as user `{user}`, which needs a master running as \
                 root (this one runs as uid {own}); remove `user` or start the master as root",
                w.name
            ));
        }
        if worker_socket.starts_with(state_dir) {
            return Err(format!(
                "local worker `{}` runs as user `{user}`, who cannot reach the worker socket \
                 {} inside the owner-only state dir; set [master] worker_socket to a path \
                 outside it (e.g. \"/run/bbmaster/worker.sock\")",
                w.name,
                worker_socket.display()
            ));
        }
    }
    Ok(found)
}

/// Where local workers' work dirs live: beside the state dir, never in it
/// (`/var/lib/bbmaster` → `/var/lib/bbmaster.work/<name>`).
pub fn work_root(state_dir: &Path) -> PathBuf {
    let mut name = state_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bbmaster".into());
    name.push(".work");
    state_dir.with_file_name(name)
}

/// Who a local worker runs as, resolved when it starts.
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    name: String,
    home: PathBuf,
}

/// The user `user` as the master may run a worker: refused unless the
/// master is root (only root can start a process as someone else).
fn run_as(user: &str) -> std::io::Result<RunAs> {
    let own = nix::unistd::geteuid();
    if !own.is_root() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is configured to run as user `{user}`, which needs a master running as root \
                 (this one runs as uid {own})"
            ),
        ));
    }
    let found = nix::unistd::User::from_name(user)
        .map_err(std::io::Error::from)?
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("there is no user `{user}`"),
            )
        })?;
    Ok(RunAs {
        uid: found.uid,
        gid: found.gid,
        name: found.name,
        home: found.dir,
    })
}

/// The environment a local worker starts with: the allow-list steps get
/// (see [`crate::worker::step_environment`]), the variables some builder
/// names in `pass_env` (read from the master's environment when the worker
/// starts) and `RUST_LOG`; never the master's whole environment, which may
/// hold credentials its steps could otherwise read from the worker's
/// `/proc/<pid>/environ`.
fn worker_environment(
    user: Option<&RunAs>,
    pass_env: &[String],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let inherited = std::env::vars_os();
    let mut names = pass_env.to_vec();
    names.push("RUST_LOG".into());
    let mut env: Vec<_> = crate::worker::step_environment(inherited, &names, &[])
        .into_iter()
        .collect();
    if let Some(user) = user {
        env.retain(|(k, _)| !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME")));
        env.push(("HOME".into(), user.home.clone().into_os_string()));
        env.push(("USER".into(), user.name.clone().into()));
        env.push(("LOGNAME".into(), user.name.clone().into()));
    }
    env
}

pub(super) async fn spawn(
    setup: &LocalWorkerSetup,
    name: &str,
    user: Option<&str>,
    pass_env: &[String],
    secret: &str,
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let run_as = user.map(run_as).transpose()?;
    let dir = setup.work.join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    if let Some(user) = &run_as {
        // Its work dir is its own; the parent only needs to be traversable.
        std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        std::fs::set_permissions(
            &setup.work,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o711),
        )?;
    }
    if let Some(logs) = log.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(logs)?;
    }
    let out = open_log(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(&setup.exe);
    cmd.env_clear()
        .envs(worker_environment(run_as.as_ref(), pass_env));
    if let Some(user) = &run_as {
        // std drops the supplementary groups when it sets the uid as root.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.arg0(crate::worker::cli::WORKER_ARGV0)
        .arg("--master")
        .arg(&setup.worker_socket)
        .arg("--name")
        .arg(name)
        .arg("--dir")
        .arg(&dir)
        .arg("--secret-stdin")
        .arg("--orphan-timeout")
        .arg(ORPHAN_TIMEOUT)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C meant for the master's terminal
        // does not reach it, and it outlives the master.
        .process_group(0);
    // Registered as ours: the master's orphan reaper must leave it to us.
    let mut child = crate::worker::reaper::spawn_own(|| cmd.spawn(), |c| c.id())?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(format!("{secret}\n").as_bytes()).await {
            // It exited before reading its secret: its exit status and log
            // say why, as for any other exit.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(child)
}
