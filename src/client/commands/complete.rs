//! Completion of builder and worker names from the running master: the
//! hidden `bbctl __complete builders|workers`, and the shell code appended
//! to `bbctl completions SHELL` that calls it.

use std::io::{self, Write};
use std::time::Duration;

use super::Ctx;
use crate::client::CliError;
use crate::client::cli::CompleteWhat;
use crate::protocol::{Reply, Request};

/// How long completion waits for the master: a shell must not hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// `bbctl __complete WHAT`: the names, one per line; nothing (exit 0) when
/// no master answers in time, so a completion never prints an error.
pub async fn names(ctx: &mut Ctx, what: CompleteWhat) -> Result<u8, CliError> {
    let asked =
        tokio::time::timeout(ANSWER_WITHIN, ctx.call(Request::Status(Default::default()))).await;
    let Ok(Ok(Reply::Status(status))) = asked else {
        return Ok(0);
    };
    let names: Vec<&str> = match what {
        CompleteWhat::Builders => status
            .builders
            .iter()
            .filter(|b| b.state != "removed")
            .map(|b| b.name.as_str())
            .collect(),
        CompleteWhat::Workers => status.workers.iter().map(|w| w.name.as_str()).collect(),
    };
    let mut out = io::stdout().lock();
    for name in names {
        writeln!(out, "{name}")?;
    }
    Ok(0)
}

/// Shell code that completes names by asking `bbctl __complete`, appended
/// to clap's static script; empty for shells without it.
pub fn dynamic_names(shell: clap_complete::Shell) -> &'static str {
    match shell {
        clap_complete::Shell::Bash => BASH,
        clap_complete::Shell::Fish => FISH,
        _ => "",
    }
}

const BASH: &str = r#"
# Builder and worker names from the running master (`bbctl __complete`).
_bbctl_names() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local kind="" w sub=""
    for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        case "$w" in
            force-build|queue|ping|status|builds|drain|undrain) sub="$w"; break ;;
        esac
    done
    case "$prev" in
        --builder|-b) [[ "$sub" == status || "$sub" == builds ]] && kind=builders ;;
        --worker) kind=workers ;;
        force-build|queue) [[ "$cur" != -* ]] && kind=builders ;;
        ping) [[ "$cur" != -* ]] && kind=workers ;;
    esac
    if [[ -n "$kind" ]]; then
        COMPREPLY=( $(compgen -W "$(bbctl __complete "$kind" 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _bbctl "$@"
}
complete -F _bbctl_names -o nosort -o bashdefault -o default bbctl
"#;

const FISH: &str = r#"
# Builder and worker names from the running master (`bbctl __complete`).
complete -c bbctl -n "__fish_seen_subcommand_from force-build queue" -f -a "(bbctl __complete builders 2>/dev/null)"
complete -c bbctl -n "__fish_seen_subcommand_from ping" -f -a "(bbctl __complete workers 2>/dev/null)"
"#;
