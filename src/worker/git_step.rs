//! The `git` step: check the build's revision out into the step's work
//! dir with the `git` command line.
//!
//! The step is a fixed shell script run like any shell step (own process
//! group, start gate, timeout, stop, output to the step's log): only its
//! parameters vary, and they reach it as environment variables, never
//! spliced into the script's text, so no repository URL or branch name
//! can become shell code. git runs with a private configuration: no
//! system or user config (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`),
//! no hooks (`core.hooksPath=/dev/null`, so a repository cannot run code
//! in the checkout), no transports that run commands (`ext::`), no
//! prompts (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode). See
//! `docs/security.md`.

use crate::protocol::GitMode;

/// The script. `$BB_GIT_*` are its parameters; `$BB_REVISION` and
/// `$BB_BRANCH` come from the build's source stamp, when it has one. It
/// exits 3 when the revision is not in the repository (gone after a force
/// push or a branch deletion, or never there), 1 when the repository
/// cannot be reached or on any other failure, 127 without a `git`
/// command, each after a line saying why.
pub const SCRIPT: &str = r#"set -u
say() { printf '%s\n' "$*"; }
fail() { say "git step: $1"; exit "$2"; }
g() { git -c core.hooksPath=/dev/null -c protocol.ext.allow=never -c core.askPass=true "$@"; }
run() { say "+ git $*"; g "$@"; }
command -v git >/dev/null 2>&1 || fail "no \`git\` command in PATH ($PATH)" 127
shown=$(printf '%s' "$BB_GIT_REPOSITORY" | sed 's#://[^/@]*@#://***@#')
rev=${BB_REVISION:-}
branch=${BB_BRANCH:-}
say "git step: repository $shown, mode $BB_GIT_MODE, revision ${rev:-(branch head)}, branch ${branch:-(default)}"
if [ ! -d .git ]; then
  run init -q . || fail "cannot create a repository in $PWD" 1
fi
g config remote.origin.url "$BB_GIT_REPOSITORY" || fail "cannot set the remote" 1
g config --unset-all remote.origin.fetch >/dev/null 2>&1
case "$branch" in
  '') refspec='+HEAD:refs/bb/head' ;;
  refs/*) refspec="+$branch:refs/bb/head" ;;
  *) refspec="+refs/heads/$branch:refs/bb/head" ;;
esac
g update-ref -d refs/bb/head >/dev/null 2>&1
run fetch --no-recurse-submodules origin "$refspec"
fetched=$?
if [ -n "$rev" ]; then
  if ! g cat-file -e "$rev^{commit}" 2>/dev/null; then
    # Servers that allow it give a commit by its id, even off every branch.
    run fetch --no-recurse-submodules origin "$rev" >/dev/null 2>&1
  fi
  if ! g cat-file -e "$rev^{commit}" 2>/dev/null; then
    # Gone, unless the repository could not be reached at all.
    g ls-remote origin HEAD >/dev/null 2>&1 ||
      fail "cannot reach $shown (see above) to fetch revision $rev" 1
    fail "revision $rev is not in $shown${branch:+ (branch $branch)}: it is gone (a force push or a deleted branch?) or was never there" 3
  fi
  target=$rev
else
  [ "$fetched" = 0 ] || fail "cannot fetch ${branch:-the default branch} of $shown" 1
  target=$(g rev-parse --verify -q 'refs/bb/head^{commit}') || fail "cannot fetch ${branch:-the default branch} of $shown" 1
fi
run checkout -q -f --detach "$target" || fail "cannot check out $target" 1
if [ "$BB_GIT_MODE" = full ]; then
  run clean -q -ffdx || fail "cannot clean the work dir" 1
fi
if [ "$BB_GIT_SUBMODULES" = true ]; then
  run submodule sync -q --recursive || fail "cannot sync the submodules" 1
  run submodule update -q --init --recursive --force || fail "cannot check out the submodules" 1
  if [ "$BB_GIT_MODE" = full ]; then
    run submodule foreach -q --recursive 'git clean -q -ffdx' || fail "cannot clean the submodules" 1
  fi
fi
say "git step: checked out $(g log -1 --format='%H (%an: %s)' HEAD)"
"#;

/// The variables the script runs with, beyond the step's own: its
/// parameters and git's private configuration. They win over the step's
/// environment, except `GIT_SSH_COMMAND`, which a builder may pass.
pub fn git_env(repository: &str, mode: GitMode, submodules: bool) -> Vec<(String, String)> {
    let mode = match mode {
        GitMode::Incremental => "incremental",
        GitMode::Full => "full",
    };
    [
        ("BB_GIT_REPOSITORY", repository),
        ("BB_GIT_MODE", mode),
        (
            "BB_GIT_SUBMODULES",
            if submodules { "true" } else { "false" },
        ),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_ASKPASS", "true"),
        ("SSH_ASKPASS", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `GIT_SSH_COMMAND` when the step's environment has none: ssh must fail
/// rather than ask for a password or a host key nobody can confirm.
pub const SSH_COMMAND: &str = "ssh -o BatchMode=yes";

#[cfg(test)]
#[path = "git_step_tests.rs"]
mod tests;
