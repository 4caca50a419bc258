//! What people may ask the bot, and the answers that only need the
//! master (through the front door, as the IRC account that asked).
//!
//! Parsing is pure; [`answer`] asks the [`MasterHandle`] with the
//! asker's [`Principal::IrcAccount`], so `force` and `stop` are decided
//! by `crate::daemon::auth` like any other caller's requests. `watch` and
//! `notify` concern the bot itself and are answered by [`super::bot`].

use crate::config::IRC_EVENTS;
use crate::daemon::auth::Principal;
use crate::daemon::handle::MasterHandle;
use crate::protocol::{BuildId, ErrorReply, Reply, StatusFilter};

use super::notify::duration;

/// Longest answer, in lines: a channel is no terminal.
const MAX_LINES: usize = 6;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// `help`.
    Help,
    /// `version`.
    Version,
    /// `list builders`.
    ListBuilders,
    /// `list workers`.
    ListWorkers,
    /// `status [builder]`.
    Status(Option<String>),
    /// `last [builder]`.
    Last(Option<String>),
    /// `force BUILDER [reason]`.
    Force {
        /// The builder.
        builder: String,
        /// Why, if said.
        reason: Option<String>,
    },
    /// `stop BUILD [reason]`.
    Stop {
        /// The build.
        build: BuildId,
        /// Why, if said.
        reason: Option<String>,
    },
    /// `watch BUILD`.
    Watch(BuildId),
    /// `notify on EVENT...`.
    NotifyOn(Vec<String>),
    /// `notify off EVENT...`.
    NotifyOff(Vec<String>),
    /// `notify list`.
    NotifyList,
    /// Not understood: say how it is written.
    Usage(String),
}

/// The help text, one line.
pub const HELP: &str = "commands: help, version, list builders|workers, status [builder], \
    last [builder], force BUILDER [reason], stop BUILD [reason], watch BUILD, \
    notify on|off|list [EVENT...] (in a channel as `!cmd` or `nick: cmd`)";

/// Parses a command line (its prefix already removed).
pub fn parse(text: &str) -> Cmd {
    let mut words = text.split_whitespace();
    let word = words.next().unwrap_or("").to_ascii_lowercase();
    let rest: Vec<&str> = words.collect();
    let tail =
        |from: usize| -> Option<String> { (rest.len() > from).then(|| rest[from..].join(" ")) };
    match (word.as_str(), rest.as_slice()) {
        ("help" | "commands", _) => Cmd::Help,
        ("version", _) => Cmd::Version,
        ("list", ["builders"]) => Cmd::ListBuilders,
        ("list", ["workers"]) => Cmd::ListWorkers,
        ("list", _) => Cmd::Usage("usage: list builders|workers".into()),
        ("status", [] | [_]) => Cmd::Status(rest.first().map(|s| s.to_string())),
        ("last", [] | [_]) => Cmd::Last(rest.first().map(|s| s.to_string())),
        ("force", [builder, ..]) => Cmd::Force {
            builder: builder.to_string(),
            reason: tail(1),
        },
        ("force", []) => Cmd::Usage("usage: force BUILDER [reason]".into()),
        ("stop", [build, ..]) => match build_id(build) {
            Some(build) => Cmd::Stop {
                build,
                reason: tail(1),
            },
            None => Cmd::Usage(format!(
                "usage: stop BUILD [reason] (a build number, not {build:?})"
            )),
        },
        ("watch", [build]) => match build_id(build) {
            Some(build) => Cmd::Watch(build),
            None => Cmd::Usage("usage: watch BUILD (a build number)".into()),
        },
        ("notify", ["list"]) => Cmd::NotifyList,
        ("notify", [on @ ("on" | "off"), events @ ..]) if !events.is_empty() => {
            let unknown: Vec<&str> = events
                .iter()
                .copied()
                .filter(|e| !IRC_EVENTS.contains(e))
                .collect();
            if !unknown.is_empty() {
                return Cmd::Usage(format!(
                    "unknown event {}; known: {}",
                    unknown.join(", "),
                    IRC_EVENTS.join(", ")
                ));
            }
            let events = events.iter().map(|e| e.to_string()).collect();
            if *on == "on" {
                Cmd::NotifyOn(events)
            } else {
                Cmd::NotifyOff(events)
            }
        }
        ("notify", _) => Cmd::Usage(format!(
            "usage: notify on|off EVENT... | notify list (events: {})",
            IRC_EVENTS.join(", ")
        )),
        (other, _) => Cmd::Usage(format!("unknown command {other:?}; try help")),
    }
}

/// `12` or `#12`.
fn build_id(word: &str) -> Option<BuildId> {
    word.trim_start_matches('#').parse().ok()
}

/// The answer to a command that only needs the master; `who` asks.
pub async fn answer(
    master: &MasterHandle,
    who: &Principal,
    nick: &str,
    cmd: &Cmd,
    now_ms: u64,
) -> Vec<String> {
    let result = match cmd {
        Cmd::Help => Ok(vec![HELP.into()]),
        Cmd::Version => Ok(vec![format!("bbmaster {}", env!("CARGO_PKG_VERSION"))]),
        Cmd::Usage(text) => Ok(vec![text.clone()]),
        Cmd::ListBuilders => status(master, who, None).await.map(|s| {
            let names: Vec<String> = s
                .builders
                .iter()
                .map(|b| format!("{} ({})", b.name, b.state))
                .collect();
            vec![format!("builders: {}", names.join(", "))]
        }),
        Cmd::ListWorkers => status(master, who, None).await.map(|s| {
            let names: Vec<String> = s
                .workers
                .iter()
                .map(|w| {
                    let state = if !w.connected {
                        "offline".to_string()
                    } else {
                        format!("{}/{} busy", w.running_builds.len(), w.max_builds)
                    };
                    format!("{} ({state})", w.name)
                })
                .collect();
            vec![format!("workers: {}", names.join(", "))]
        }),
        Cmd::Status(builder) => status(master, who, builder.clone()).await.map(|s| {
            let mut lines = Vec::new();
            if builder.is_none() {
                let connected = s.workers.iter().filter(|w| w.connected).count();
                let queued: u32 = s.builders.iter().map(|b| b.queued).sum();
                lines.push(format!(
                    "{} builders, {} builds running, {queued} queued; {connected}/{} workers connected{}",
                    s.builders.len(),
                    s.running.len(),
                    s.workers.len(),
                    if s.draining { "; draining" } else { "" }
                ));
            }
            for b in &s.builders {
                let running: Vec<String> = s
                    .running
                    .iter()
                    .filter(|r| r.builder == b.name)
                    .map(|r| {
                        format!(
                            "#{} step {}/{} `{}` for {}",
                            r.build,
                            r.step + 1,
                            r.steps,
                            r.step_name,
                            duration(now_ms.saturating_sub(r.started_at_ms))
                        )
                    })
                    .collect();
                if builder.is_some() || !running.is_empty() || b.queued > 0 {
                    let mut line = format!("{}: {}", b.name, b.state);
                    if !running.is_empty() {
                        line.push_str(&format!(", {}", running.join(", ")));
                    }
                    if b.queued > 0 {
                        line.push_str(&format!(", {} queued", b.queued));
                    }
                    lines.push(line);
                }
            }
            if lines.is_empty() {
                lines.push(format!("no builder matches {:?}", builder.as_deref().unwrap_or("")));
            }
            lines
        }),
        Cmd::Last(builder) => match master.builds(who, builder.clone(), 20).await {
            Ok(Reply::Builds(builds)) => {
                let done = builds.iter().find(|b| b.result.is_some());
                Ok(vec![match done {
                    Some(b) => format!(
                        "{} #{} {} {} ago, in {}{}",
                        b.builder,
                        b.id,
                        b.result.map(|r| r.as_str()).unwrap_or("?"),
                        duration(now_ms.saturating_sub(b.finished_at_ms.unwrap_or(now_ms))),
                        duration(b.finished_at_ms.unwrap_or(now_ms).saturating_sub(b.started_at_ms)),
                        b.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    None => "no finished build yet".into(),
                }])
            }
            Ok(_) => Ok(vec!["unexpected answer".into()]),
            Err(e) => Err(e),
        },
        Cmd::Force { builder, reason } => {
            let reason = format!(
                "IRC: {nick}{}",
                reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            );
            match master
                .force_build(who, builder.clone(), Some(reason), Default::default(), 0, None)
                .await
            {
                Ok(Reply::Queued { request_id }) => Ok(vec![format!(
                    "request r{request_id} queued for {builder}"
                )]),
                Ok(_) => Ok(vec!["queued".into()]),
                Err(e) => Err(e),
            }
        }
        Cmd::Stop { build, .. } => match master.stop(who, *build).await {
            Ok(Reply::Done { message }) => Ok(vec![message]),
            Ok(_) => Ok(vec![format!("build {build} stopping")]),
            Err(e) => Err(e),
        },
        Cmd::Watch(_) | Cmd::NotifyOn(_) | Cmd::NotifyOff(_) | Cmd::NotifyList => {
            Ok(vec!["(answered by the bot)".into()])
        }
    };
    let mut lines = match result {
        Ok(lines) => lines,
        Err(e) => vec![refused(&e)],
    };
    if lines.len() > MAX_LINES {
        let more = lines.len() - (MAX_LINES - 1);
        lines.truncate(MAX_LINES - 1);
        lines.push(format!("... and {more} more (bbctl status has them all)"));
    }
    lines
}

fn refused(e: &ErrorReply) -> String {
    format!("error: {}", e.message)
}

async fn status(
    master: &MasterHandle,
    who: &Principal,
    builder: Option<String>,
) -> Result<crate::protocol::StatusReply, ErrorReply> {
    match master
        .status(
            who,
            StatusFilter {
                builder,
                ..Default::default()
            },
        )
        .await?
    {
        Reply::Status(s) => Ok(s),
        _ => Err(ErrorReply::failed("unexpected answer to status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("HELP"), Cmd::Help);
        assert_eq!(parse("status"), Cmd::Status(None));
        assert_eq!(parse("status hello"), Cmd::Status(Some("hello".into())));
        assert_eq!(parse("list workers"), Cmd::ListWorkers);
        assert_eq!(
            parse("force hello  fix the  thing"),
            Cmd::Force {
                builder: "hello".into(),
                reason: Some("fix the thing".into())
            }
        );
        assert_eq!(
            parse("stop #12"),
            Cmd::Stop {
                build: 12,
                reason: None
            }
        );
        assert_eq!(parse("watch 7"), Cmd::Watch(7));
        assert_eq!(
            parse("notify on failure fixed"),
            Cmd::NotifyOn(vec!["failure".into(), "fixed".into()])
        );
        assert_eq!(parse("notify list"), Cmd::NotifyList);
        assert!(
            matches!(parse("notify on nonsense"), Cmd::Usage(u) if u.contains("unknown event nonsense"))
        );
        assert!(matches!(parse("stop abc"), Cmd::Usage(_)));
        assert!(matches!(parse("frobnicate"), Cmd::Usage(u) if u.contains("try help")));
    }
}
