//! A flood of changes (issue 15): one client connection sends
//! `flood_changes` `sendchange` requests at once (pipelined: every request
//! is written without waiting for an answer; the protocol has no batch
//! request for clients), spread evenly over `flood_schedulers` branch
//! schedulers that each take one branch. The schedulers' `tree_stable`
//! is an hour, so every change stays pending: after the last answer the
//! store must hold every change, and the pending changes of the
//! schedulers' saved states must add up to them, each scheduler holding
//! exactly its share.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};

use super::Ctx;
use super::harness::{kb_to_mb, proc_kb};
use super::latency::{local_config, start_local};
use super::report::{Report, Row, Target};
use crate::protocol::{
    self, ClientRequest, Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, NewChange, Reply,
    Request, Role, ServerMsg,
};

/// The branch scheduler `i` takes: `b<i>`.
fn scheduler(i: usize) -> String {
    format!(
        "[[scheduler]]\nname = \"s{i}\"\nkind = \"branch\"\nbuilders = [\"D\"]\n\
         branches = [\"b{i}\"]\ntree_stable = \"1h\"\n\n"
    )
}

/// Flood a master with changes over one connection; report the time to
/// store them all, the rate, and the master's memory before and after.
pub fn flood(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let (changes, schedulers) = (ctx.sizes.flood_changes, ctx.sizes.flood_schedulers);
    let mut config = local_config(1, 1, &[("D", &["true"])]) + "\n";
    for i in 0..schedulers {
        config += &scheduler(i);
    }
    let master = start_local(ctx, &config, 1)?;
    // Settled: the local worker connected, the first requests answered.
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = master.rss_kb()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    let took = runtime.block_on(send_all(&master.socket, changes, schedulers))?;
    let rss_after = master.rss_kb()?;
    let peak = proc_kb(master.pid(), "VmHWM")?;
    check_stored(&master.dir.join("master.db"), changes, schedulers)?;

    let secs = took.as_secs_f64();
    let what = format!("{changes} changes, 1 connection, {schedulers} branch schedulers");
    report.push(Row::measured(
        "change-flood",
        &format!("{what}: all stored and answered"),
        "s",
        &[secs],
    ));
    report.push(Row::measured(
        "change-flood",
        "changes stored per second (no target)",
        "1/s",
        &[changes as f64 / secs],
    ));
    report.push(Row::measured(
        "change-flood",
        "master RSS before the flood (idle, schedulers configured)",
        "MB",
        &[kb_to_mb(rss_before)],
    ));
    report.push(
        Row::measured(
            "change-flood",
            "master peak RSS (VmHWM) after the flood",
            "MB",
            &[kb_to_mb(peak)],
        )
        .baseline(Some(kb_to_mb(rss_before)))
        .target(Target::excess_below(32.0)),
    );
    report.push(Row::measured(
        "change-flood",
        "master RSS after the flood, per pending change (no target)",
        "bytes",
        &[(rss_after.saturating_sub(rss_before) * 1024) as f64 / changes as f64],
    ));
    Ok(())
}

/// Connect, greet, write every request, read every answer; the time from
/// the first request written to the last answer read.
async fn send_all(socket: &Path, changes: usize, schedulers: usize) -> Result<Duration> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .context("bad socket path")?;
    let stream = Stream::connect(name)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    protocol::write_msg(&mut wr, &Hello::new(Role::Client)).await?;
    match protocol::read_msg(&mut rd, MAX_HANDSHAKE_FRAME).await? {
        HelloReply::Welcome { .. } => {}
        other => bail!("the master did not welcome us: {other:?}"),
    }
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..changes {
            let body = Request::SendChange {
                change: NewChange {
                    repository: "https://example.org/flood.git".into(),
                    branch: format!("b{}", i % schedulers),
                    revision: format!("{i:040x}"),
                    files: vec![format!("src/f{i}.rs")],
                    author: Some("bench".into()),
                    ..NewChange::default()
                },
            };
            let id = i as u64 + 1;
            protocol::write_msg(&mut wr, &ClientRequest { id, body }).await?;
        }
        Ok::<_, protocol::FrameError>(wr)
    });
    let mut last_id = 0;
    for n in 0..changes {
        let answer = tokio::time::timeout(
            Duration::from_secs(120),
            protocol::read_msg::<_, ServerMsg>(&mut rd, MAX_FRAME),
        )
        .await
        .map_err(|_| anyhow!("no answer within 120 s after {n} answers"))??;
        match answer {
            ServerMsg::Response {
                id,
                result: Ok(Reply::ChangesAdded { change_ids }),
            } if id == n as u64 + 1 && change_ids.len() == 1 => {
                ensure!(
                    change_ids[0] > last_id,
                    "change ids not increasing: {} after {last_id}",
                    change_ids[0]
                );
                last_id = change_ids[0];
            }
            other => bail!("unexpected answer to request {}: {other:?}", n + 1),
        }
    }
    let took = start.elapsed();
    let _wr = writer.await.context("the writer panicked")??;
    Ok(took)
}

/// Every change is in the store, and the schedulers' saved states hold
/// every one of them pending, `changes / schedulers` each.
fn check_stored(db: &Path, changes: usize, schedulers: usize) -> Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", db.display()))?;
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))
        .context("cannot count the stored changes")?;
    ensure!(
        stored as usize == changes,
        "{stored} changes stored, {changes} sent"
    );
    let mut stmt = conn
        .prepare("SELECT name, state FROM scheduler_state WHERE kind = 'branch'")
        .context("cannot read the schedulers' states")?;
    let states = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .context("cannot read the schedulers' states")?;
    ensure!(
        states.len() == schedulers,
        "{} schedulers saved a state, {schedulers} configured",
        states.len()
    );
    let mut total = 0;
    for (name, state) in states {
        let v: serde_json::Value = serde_json::from_str(&state)
            .with_context(|| format!("scheduler {name}: its state is not JSON"))?;
        let pending: usize = v["buckets"]
            .as_array()
            .ok_or_else(|| anyhow!("scheduler {name}: no buckets in {v}"))?
            .iter()
            .map(|b| b["changes"].as_array().map_or(0, Vec::len))
            .sum();
        ensure!(
            pending == changes / schedulers,
            "scheduler {name} holds {pending} pending changes, not {}",
            changes / schedulers
        );
        total += pending;
    }
    ensure!(
        total == changes,
        "{total} changes pending in all, {changes} sent"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheduler_takes_its_own_branch() {
        let text = scheduler(7);
        assert!(text.contains("name = \"s7\""), "{text}");
        assert!(text.contains("branches = [\"b7\"]"), "{text}");
    }
}
