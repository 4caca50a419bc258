//! `locks`: every lock with its holders and waiters; the line `status`
//! and `watch` show for a request or build waiting for a lock.

use std::io::{self, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::render::{Table, duration};
use crate::paths::now_ms;
use crate::protocol::{LockWaiterView, Reply, Request};

/// `bbctl locks`.
pub async fn locks(ctx: &mut Ctx) -> Result<u8, CliError> {
    let locks = match ctx.call(Request::Locks).await? {
        Reply::Locks(l) => l,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&locks)?;
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    if locks.is_empty() {
        writeln!(out, "no locks")?;
        return Ok(0);
    }
    let now = now_ms();
    let mut table = Table::new(vec!["LOCK", "SCOPE", "MAX", "HOLDERS", "WAITERS"]);
    for l in &locks {
        let name = match &l.worker {
            Some(w) => format!("{} on {w}", l.name),
            None => l.name.clone(),
        };
        let max = if l.configured {
            l.max.to_string()
        } else {
            "removed".to_string()
        };
        let holders: Vec<String> = l
            .holders
            .iter()
            .map(|h| {
                let step = h
                    .step
                    .as_ref()
                    .map(|s| format!(" step {s}"))
                    .unwrap_or_default();
                let how = if h.access == "counting" {
                    format!("counting {}", h.weight)
                } else {
                    h.access.clone()
                };
                format!(
                    "#{}{step} ({how}, {})",
                    h.build,
                    duration(now.saturating_sub(h.since_ms))
                )
            })
            .collect();
        let waiters: Vec<String> = l
            .waiters
            .iter()
            .map(|w| format!("{} ({})", who(w), duration(w.waited_ms)))
            .collect();
        table.row(vec![
            name,
            l.scope.clone(),
            max,
            holders.join(", "),
            waiters.join(", "),
        ]);
    }
    table.print(&mut out, &ctx.style)?;
    Ok(0)
}

/// `r5` for a waiting request, `#7` for a build waiting between steps.
fn who(w: &LockWaiterView) -> String {
    match (w.request, w.build) {
        (Some(r), _) => crate::client::ids::request(r),
        (None, Some(b)) => format!("#{b}"),
        (None, None) => "?".to_string(),
    }
}

/// `r5 (nightly) waiting for lock rig (held by build 12) for 2m 3s`.
pub fn waiter_line(w: &LockWaiterView, now: u64) -> String {
    format!(
        "{} ({}) {} for {}",
        who(w),
        w.builder,
        w.waiting,
        duration(now.saturating_sub(w.since_ms))
    )
}
