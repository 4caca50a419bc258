//! `status` and `reload`: the master's state and its changes.

use std::io::{self, Write};

use crossterm::style::Color;

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::render::{Table, uptime};
use crate::protocol::{DrainMode, ReloadReport, Reply, Request, StatusFilter, StatusReply};
use crate::untrusted::Escaped;

/// `bbctl status`.
pub async fn status(ctx: &mut Ctx, filter: StatusFilter) -> Result<u8, CliError> {
    let status = match ctx.call(Request::Status(filter)).await? {
        Reply::Status(s) => s,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&status)?;
    } else {
        print_status(ctx, &status)?;
    }
    Ok(0)
}

/// The line under the master's that says it is draining, and which drain.
fn drain_line(s: &StatusReply) -> Option<String> {
    Some(match (s.draining, s.drain_mode) {
        (false, _) => return None,
        (true, Some(DrainMode::Maintenance)) => {
            "draining for maintenance: requests are queued, no build starts (`bbctl undrain` to resume)"
                .to_string()
        }
        (true, Some(DrainMode::Shutdown)) => {
            "draining for shutdown: no new requests, no build starts; the master exits once the running builds finish (`bbctl shutdown --cancel` to stay)"
                .to_string()
        }
        (true, None) => "draining: no build starts".to_string(),
    })
}

fn print_status(ctx: &Ctx, s: &StatusReply) -> io::Result<()> {
    let style = &ctx.style;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "master pid {}, {}, config generation {} ({}, hash {})",
        s.master_pid,
        uptime(s.started_at_ms, s.now_ms),
        s.generation,
        s.config_origin,
        s.config_hash
    )?;
    writeln!(out, "{}", super::prune::disk_line(s.disk.as_ref()))?;
    if let Some(l) = &s.leadership {
        let line = super::masters::leadership_line(l);
        if l.role == crate::protocol::MasterRole::Leader {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", style.paint(&line, Color::DarkYellow))?;
        }
    }
    if let Some(tls) = &s.tls {
        let listen = tls.listen.join(", ");
        match &tls.fingerprint {
            Some(fp) => writeln!(out, "workers over TLS on {listen}, certificate {fp}")?,
            None => writeln!(
                out,
                "{}",
                style.paint(
                    &format!("workers over plain TCP on {listen} (allow_plaintext: not encrypted)"),
                    Color::DarkYellow
                )
            )?,
        }
    }
    if let Some(irc) = &s.irc {
        let line = irc_line(irc, s.now_ms);
        if irc.state == "connected" {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", style.paint(&line, Color::DarkYellow))?;
        }
    }
    if let Some(line) = drain_line(s) {
        writeln!(out, "{}", style.paint(&line, Color::DarkYellow))?;
    }
    for p in &s.pollers {
        let when = match p.last_poll_ms {
            Some(at) => format!("last poll {}", crate::client::render::ago(at, s.now_ms)),
            None => "not polled yet".to_string(),
        };
        let line = format!(
            "poller {} ({}): {when}, {} refs, {} changes since start",
            Escaped(&p.name),
            Escaped(&p.repository),
            p.refs,
            p.changes
        );
        writeln!(out, "{line}")?;
        if let Some(e) = &p.last_error {
            let e = format!("  last poll failed: {}", Escaped(e));
            writeln!(out, "{}", style.paint(&e, Color::Red))?;
        }
        if let Some(w) = &p.last_warning {
            let w = format!("  {}", Escaped(w));
            writeln!(out, "{}", style.paint(&w, Color::DarkYellow))?;
        }
    }
    writeln!(out)?;
    if (s.builders.len() as u32) < s.builders_total {
        writeln!(
            out,
            "showing {} of {} builders ({} requests queued in all)",
            s.builders.len(),
            s.builders_total,
            s.queued_total
        )?;
    }
    let mut builders = Table::new(vec!["BUILDER", "STATE", "QUEUED", "RUNNING", "WORKERS"]);
    for b in &s.builders {
        let state = match b.state.as_str() {
            "building" => style.paint(&b.state, Color::Cyan),
            "waiting" => style.paint(&b.state, Color::DarkYellow),
            "removed" => style.paint(&b.state, Color::DarkGrey),
            _ => b.state.clone(),
        };
        let running = if b.running_builds.is_empty() {
            "0".to_string()
        } else {
            format!(
                "{} ({})",
                b.running,
                b.running_builds
                    .iter()
                    .map(|id| format!("#{id}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        builders.row(vec![
            b.name.clone(),
            state,
            b.queued.to_string(),
            running,
            b.workers.join(", "),
        ]);
    }
    if s.builders.is_empty() {
        writeln!(out, "no builders")?;
    } else {
        builders.print(&mut out, style)?;
    }
    writeln!(out)?;
    let mut workers = Table::new(vec!["WORKER", "STATE", "SLOTS", "RUNNING", "BUILDERS"]);
    for w in &s.workers {
        let state = match (w.connected, w.draining) {
            (true, false) => style.paint("connected", Color::Green),
            (true, true) => style.paint("draining", Color::DarkYellow),
            (false, false) => style.paint("offline", Color::Red),
            (false, true) => style.paint("offline, draining", Color::Red),
        };
        let kind = if w.local { " (local)" } else { "" };
        workers.row(vec![
            format!("{}{kind}", w.name),
            state,
            format!("{}/{}", w.running_builds.len(), w.max_builds),
            w.running_builds
                .iter()
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(" "),
            w.builders.join(", "),
        ]);
    }
    // Why an offline local worker is not there (the table holds one line each).
    let problems: Vec<String> = s
        .workers
        .iter()
        .filter(|w| !w.connected)
        .filter_map(|w| {
            let why = w.last_error.as_deref()?;
            Some(format!(
                "worker {}: {}",
                w.name,
                crate::untrusted::escape(why)
            ))
        })
        .collect();
    if s.workers.is_empty() {
        writeln!(out, "no workers")?;
    } else {
        workers.print(&mut out, style)?;
    }
    for line in problems {
        writeln!(out, "{line}")?;
    }
    if !s.lock_waits.is_empty() {
        writeln!(out)?;
        for w in &s.lock_waits {
            writeln!(out, "{}", super::locks::waiter_line(w, s.now_ms))?;
        }
    }
    Ok(())
}

/// `bbctl reload [--dry-run] [--config FILE]`.
pub async fn reload(
    ctx: &mut Ctx,
    dry_run: bool,
    config: Option<std::path::PathBuf>,
) -> Result<u8, CliError> {
    // The master resolves paths from its own directory: send an absolute one.
    let config = config.map(|p| std::path::absolute(&p).unwrap_or(p));
    let report = match ctx.call(Request::Reload { dry_run, config }).await? {
        Reply::Reloaded(r) => r,
        other => return Err(unexpected(other)),
    };
    for warning in &report.warnings {
        eprintln!("{warning}");
    }
    if ctx.json {
        let mut value = serde_json::to_value(&report).map_err(io::Error::from)?;
        value["dry_run"] = serde_json::Value::Bool(dry_run);
        print_json(&value)?;
    } else {
        print_reload(&report, dry_run)?;
    }
    Ok(0)
}

fn print_reload(r: &ReloadReport, dry_run: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let verb = if dry_run { "would go" } else { "went" };
    if r.generation_before == r.generation_after {
        writeln!(
            out,
            "nothing changed: generation stays {}{}",
            r.generation_before,
            if dry_run { " (dry run)" } else { "" }
        )?;
    } else {
        writeln!(
            out,
            "config generation {verb} from {} to {} (hash {}){}",
            r.generation_before,
            r.generation_after,
            r.config_hash,
            if dry_run {
                " (dry run: nothing applied)"
            } else {
                ""
            }
        )?;
    }
    let names = |v: &[String]| v.join(", ");
    let ids = |v: &[u64]| {
        v.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let renamed = |v: &[(String, String)]| {
        v.iter()
            .map(|(a, b)| format!("{a} -> {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dropped = r
        .changes_dropped
        .iter()
        .map(|d| format!("{} by {}", ids(&d.changes), d.scheduler))
        .collect::<Vec<_>>()
        .join("; ");
    let lines: [(&str, String); 18] = [
        ("builders added", names(&r.builders_added)),
        ("builders changed", names(&r.builders_changed)),
        ("builders removed", names(&r.builders_removed)),
        (
            "builders renamed",
            r.builders_renamed
                .iter()
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("workers added", names(&r.workers_added)),
        ("workers changed", names(&r.workers_changed)),
        ("workers removed", names(&r.workers_removed)),
        ("workers draining", names(&r.workers_draining)),
        ("requests moved", ids(&r.requests_moved)),
        ("requests cancelled", ids(&r.requests_cancelled)),
        (
            "builds on older generations",
            ids(&r.builds_on_old_generations),
        ),
        ("waiting for a restart", names(&r.needs_restart)),
        ("schedulers added", names(&r.schedulers_added)),
        ("schedulers changed", names(&r.schedulers_changed)),
        ("schedulers removed", names(&r.schedulers_removed)),
        ("schedulers renamed", renamed(&r.schedulers_renamed)),
        ("changes dropped", dropped),
        (
            "no longer waiting for a removed lock",
            names(&r.lock_waiters_released),
        ),
    ];
    for (label, value) in lines {
        if !value.is_empty() {
            writeln!(out, "  {label}: {value}")?;
        }
    }
    Ok(())
}

/// The IRC bot in one line: `irc: connected to HOST:PORT as NICK in
/// #a, #b (lag 12 ms)`, or its state and last error.
fn irc_line(irc: &crate::protocol::IrcStatus, now_ms: u64) -> String {
    let since = crate::client::render::duration(now_ms.saturating_sub(irc.since_ms));
    let mut line = match (irc.state.as_str(), &irc.nick) {
        ("connected", Some(nick)) => {
            let mut l = format!("irc: connected to {} as {nick}", irc.server);
            if !irc.channels.is_empty() {
                l.push_str(&format!(" in {}", irc.channels.join(", ")));
            }
            if let Some(lag) = irc.lag_ms {
                l.push_str(&format!(" (lag {lag} ms)"));
            }
            l
        }
        (state, _) => format!("irc: {state} ({}) for {since}", irc.server),
    };
    if irc.state != "connected"
        && let Some(e) = &irc.last_error
    {
        line.push_str(&format!("; last error: {e}"));
    }
    line
}
