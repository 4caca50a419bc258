//! `masters`: every master sharing the store, its role, epoch and last
//! heartbeat (docs/standby.md); and the leadership line of `status`.

use std::io::{self, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::render::{Table, duration};
use crate::protocol::{LeadershipStatus, MasterRole, Reply, Request};

/// `bbctl masters`.
pub async fn masters(ctx: &mut Ctx) -> Result<u8, CliError> {
    let reply = match ctx.call(Request::Masters).await? {
        Reply::Masters(m) => m,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&reply)?;
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    if reply.store == "sqlite" {
        writeln!(
            out,
            "the store is SQLite: one master ({}), no standby (docs/standby.md)",
            reply.answered_by
        )?;
        return Ok(0);
    }
    if let Some(leader) = &reply.leader {
        let who = match (&leader.name, &leader.address) {
            (Some(n), Some(a)) => format!("{n} at {a}"),
            (Some(n), None) => n.clone(),
            _ => "no master yet".to_string(),
        };
        let lease = if leader.lease_expired {
            " (its lease ran out: a takeover is due)"
        } else {
            ""
        };
        writeln!(out, "leader: {who}, epoch {}{lease}", leader.epoch)?;
    }
    let mut table = Table::new(vec!["NAME", "ROLE", "EPOCH", "ADDRESS", "PID", "HEARTBEAT"]);
    for m in &reply.masters {
        let name = if m.name == reply.answered_by {
            format!("{} (this one)", m.name)
        } else {
            m.name.clone()
        };
        table.row(vec![
            name,
            m.role.as_str().to_string(),
            m.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            m.address.clone().unwrap_or_else(|| "-".into()),
            m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            m.heartbeat_age_ms
                .map(|age| format!("{} ago", duration(age)))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print(&mut out, &ctx.style)?;
    Ok(0)
}

/// The line of `status` that says what this master is among others.
pub fn leadership_line(l: &LeadershipStatus) -> String {
    let leader = match (&l.leader.name, &l.leader.address) {
        (Some(n), Some(a)) => format!("{n} at {a}"),
        (Some(n), None) => n.clone(),
        _ => "none yet".to_string(),
    };
    match l.role {
        MasterRole::Leader => format!("{}: the leader, epoch {}", l.name, l.leader.epoch),
        _ => format!(
            "{}: a standby (read-only); the leader is {leader}, epoch {}",
            l.name, l.leader.epoch
        ),
    }
}
