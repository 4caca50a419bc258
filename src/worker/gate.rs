//! The start gate: a step's process exists, in its own process group, before
//! it runs any of the step's code, and runs it only once the worker says so.
//!
//! # Why
//!
//! The guard ([`super::guard`]) kills the groups the worker registered with
//! it. A group can only be registered once its process exists, i.e. after
//! the spawn returns; and the spawn returns only when the worker's thread
//! is scheduled again after the child's `exec`. On a loaded machine that
//! takes tens of milliseconds, long enough for a step to do real work (start
//! `sleep`, write files) and for the worker to be killed in between: its
//! guard then knows nothing of the step, and the step outlives the worker.
//! `pre_exec` cannot close that window (this crate forbids `unsafe`), so the
//! step waits for a go line instead.
//!
//! # How
//!
//! The step's process is `/bin/sh -c` with a prefix that reads one line from
//! its stdin, a pipe whose write end only the worker holds ([`Gate`]), and
//! then puts stdin back on `/dev/null`. The worker writes the line after
//! registering the group with the guard ([`Gate::open`]). If the worker
//! dies first, the kernel closes the write end, `read` fails, and the
//! process exits with [`GATE_CLOSED_EXIT`] having run none of the step.
//!
//! - A shell step's line follows the prefix on the same first line, so the
//!   shell's line numbers in error messages are unchanged.
//! - A command step becomes `sh -c '<prefix> exec "$0" "$@"' argv...`: the
//!   shell replaces itself with the program, which keeps the process (and
//!   group) id, its own `argv[0]` and the exit status. The program is looked
//!   up first ([`check_program`]), as `execvp` would, so that a missing or
//!   non-executable program is still a spawn failure with the same message,
//!   not an exit status from the shell. The shell's own `PWD` is taken out
//!   of the program's environment again (or set back to the step's).

use std::ffi::OsStr;
use std::io::{PipeReader, PipeWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{AccessFlags, access};
use tokio::process::Command;
use tracing::debug;

/// The exit status of a step process whose gate closed without a go line
/// (its worker died before registering it): none of the step ran. Spelled
/// out in the scripts below; the tests check they agree.
#[cfg(test)]
pub(crate) const GATE_CLOSED_EXIT: i32 = 125;

/// Waits for the go line, then takes stdin off the gate pipe, so that
/// nothing the step starts holds it. Ends without a newline: the shell
/// step's first line follows on the same line.
const SHELL_PREFIX: &str = "read -r _ || exit 125; exec </dev/null; ";

/// The same, then the program of a command step (`$0`, its arguments in
/// `$@`) in place of the shell. The shell exports a `PWD` of its own; the
/// program must get the step's environment, not the shell's.
const COMMAND_SCRIPT: &str = "read -r _ || exit 125; unset PWD; exec \"$0\" \"$@\" </dev/null";

/// [`COMMAND_SCRIPT`] for a step whose environment sets `PWD` (in `$0`;
/// the shell would replace it with the real directory): the program is
/// `$1`.
const COMMAND_SCRIPT_PWD: &str = "read -r _ || exit 125; export PWD=\"$0\"; exec \"$@\" </dev/null";

/// The worker's end of a step's gate: [`Gate::open`] lets the step run;
/// dropping it unopened (or dying) makes the step exit unrun.
pub(crate) struct Gate {
    writer: PipeWriter,
}

impl Gate {
    /// A new gate: the read end is the step's stdin.
    pub(crate) fn new() -> std::io::Result<(PipeReader, Gate)> {
        // Both ends are close-on-exec: no other process inherits them.
        let (reader, writer) = std::io::pipe()?;
        Ok((reader, Gate { writer }))
    }

    /// Let the step run. A step that is already gone (killed, or a shell
    /// line with a syntax error) cannot read the line: nothing to do.
    pub(crate) fn open(mut self) {
        if let Err(e) = self.writer.write_all(b"go\n") {
            debug!("the step's process exited before its start: {e}");
        }
    }
}

/// `/bin/sh -c` running shell `line` behind the gate.
pub(crate) fn shell_command(line: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("{SHELL_PREFIX}{line}"));
    cmd
}

/// `/bin/sh -c` running `argv` behind the gate (`argv` is not empty), with
/// `pwd` the step environment's `PWD` if it has one.
pub(crate) fn argv_command(argv: &[String], pwd: Option<&OsStr>) -> Command {
    let mut cmd = Command::new("/bin/sh");
    match pwd {
        Some(pwd) => cmd.arg("-c").arg(COMMAND_SCRIPT_PWD).arg(pwd),
        None => cmd.arg("-c").arg(COMMAND_SCRIPT),
    };
    cmd.args(argv);
    cmd
}

/// Fail as `execvp` would for `program` run in `workdir` with `path` as
/// `PATH`: not found (`ENOENT`), found but not an executable file
/// (`EACCES`), or a bad path (`ENOTDIR`, ...).
pub(crate) fn check_program(program: &str, path: &OsStr, workdir: &Path) -> std::io::Result<()> {
    if program.is_empty() {
        return Err(Errno::ENOENT.into());
    }
    if program.contains('/') {
        return executable(&workdir.join(program));
    }
    let mut denied = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        // An empty entry is the current directory.
        let dir = if dir.is_empty() {
            workdir.to_path_buf()
        } else {
            workdir.join(OsStr::from_bytes(dir))
        };
        match executable(&dir.join(program)) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EACCES as i32) => denied = Some(e),
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| Errno::ENOENT.into()))
}

/// Whether `file` can be executed: a regular file with execute permission.
fn executable(file: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(file)?;
    if !meta.is_file() {
        return Err(Errno::EACCES.into());
    }
    access(file, AccessFlags::X_OK).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn both_scripts_exit_with_the_documented_status() {
        let exit = format!("read -r _ || exit {GATE_CLOSED_EXIT}; ");
        assert!(SHELL_PREFIX.starts_with(&exit));
        assert!(COMMAND_SCRIPT.starts_with(&exit));
        assert!(COMMAND_SCRIPT_PWD.starts_with(&exit));
        assert!(!SHELL_PREFIX.contains('\n'), "line numbers would shift");
    }

    #[test]
    fn programs_are_found_as_execvp_would() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("tool");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = bin.join("plain");
        std::fs::write(&plain, "").expect("plain");
        let path = OsStr::new("/nonexistent:bin");
        let wd = dir.path();
        assert!(check_program("tool", path, wd).is_ok());
        assert!(check_program("./bin/tool", path, wd).is_ok());
        assert!(check_program(tool.to_str().unwrap(), path, wd).is_ok());
        let errno = |p: &str| check_program(p, path, wd).unwrap_err().raw_os_error();
        assert_eq!(errno("nosuch"), Some(Errno::ENOENT as i32));
        assert_eq!(errno(""), Some(Errno::ENOENT as i32));
        assert_eq!(errno("./nosuch"), Some(Errno::ENOENT as i32));
        // Found but not executable, or a directory: permission denied.
        assert_eq!(errno("plain"), Some(Errno::EACCES as i32));
        assert_eq!(errno("./bin"), Some(Errno::EACCES as i32));
        assert_eq!(errno("./bin/plain/x"), Some(Errno::ENOTDIR as i32));
    }
}
