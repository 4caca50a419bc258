//! The campaign: how a standby becomes the leader.
//!
//! It blocks in `pg_advisory_lock` on its leadership connection, which
//! returns the moment the holder's session ends (a leader killed, its
//! host gone and its connection reset). Meanwhile, every lease/3 on a
//! second connection, it writes its heartbeat and looks at the lease: a
//! lease run out (by the database's clock) whose holder still has the
//! lock (a paused leader, a partition that keeps its TCP session open) has
//! its session terminated (`pg_terminate_backend`), which frees the lock.
//! With the lock, the epoch is bumped and committed, and only then does
//! the caller restore and serve: from that commit on, the old leader's
//! writes are refused by the store's fence.

use tokio_postgres::Client;
use tracing::{info, warn};

use super::{Identity, LEADERSHIP_LOCK, LeaderError, Lease, registry};
use crate::protocol::MasterRole;

/// A won campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Won {
    /// The new epoch: the store's fence, and the lease's condition.
    pub epoch: u64,
    /// When the epoch bump was sent: the lease runs from no earlier.
    pub sent_at: tokio::time::Instant,
}

/// Campaign until this master leads. `leadership` is the connection that
/// will hold the lock for the whole leadership (its session ending ends
/// the leadership); `watch` carries the heartbeats and expiry checks.
pub async fn campaign(
    leadership: &Client,
    watch: &Client,
    me: &Identity,
    lease: Lease,
) -> Result<Won, LeaderError> {
    let mine: i32 = leadership
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(LeaderError::db("starting the leadership session"))?
        .get(0);
    let lock = leadership.execute("SELECT pg_advisory_lock($1)", &[&LEADERSHIP_LOCK]);
    tokio::pin!(lock);
    let mut ticker = tokio::time::interval(lease.period());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = &mut lock => {
                got.map_err(LeaderError::db("waiting for the leadership lock"))?;
                break;
            }
            _ = ticker.tick() => {
                registry::heartbeat(watch, me, MasterRole::Standby, None).await?;
                if let Some(pid) = end_expired_holder(watch, mine).await? {
                    warn!(
                        backend_pid = pid,
                        "the leader's lease ran out while it still held the lock (paused or cut off): its database session was terminated"
                    );
                }
            }
        }
    }
    let sent_at = tokio::time::Instant::now();
    let epoch = take_office(leadership, watch, me, lease).await?;
    info!(epoch, name = %me.name, "this master won the leadership");
    Ok(Won { epoch, sent_at })
}

/// Take the leadership at once if nobody holds it (a master starting
/// alone, or first): `None` when the lock is held, and the caller serves
/// as a standby while it [`campaign`]s.
pub async fn try_at_once(
    leadership: &Client,
    watch: &Client,
    me: &Identity,
    lease: Lease,
) -> Result<Option<Won>, LeaderError> {
    let free: bool = leadership
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADERSHIP_LOCK])
        .await
        .map_err(LeaderError::db("trying the leadership lock"))?
        .get(0);
    if !free {
        return Ok(None);
    }
    let sent_at = tokio::time::Instant::now();
    let epoch = take_office(leadership, watch, me, lease).await?;
    info!(epoch, name = %me.name, "this master took the leadership (nobody held it)");
    Ok(Some(Won { epoch, sent_at }))
}

/// With the lock held: bump the epoch, record this master as the leader
/// with a fresh lease, commit (a single statement commits on its own).
///
/// The old leader may have been frozen in the middle of a store write,
/// holding the fence's `FOR SHARE` lock on `bb_leader` on a connection of
/// its own (not the leadership session, which was terminated): the bump
/// would wait for it forever. So while the bump waits, the sessions that
/// block it are terminated every [`BLOCKER_CHECK`] (on `watch`); their
/// transactions abort, and were fenced anyway.
pub async fn take_office(
    leadership: &Client,
    watch: &Client,
    me: &Identity,
    lease: Lease,
) -> Result<u64, LeaderError> {
    let mine: i32 = leadership
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(LeaderError::db("reading the leadership session's pid"))?
        .get(0);
    let seconds = lease.seconds();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&me.name, &me.address, &seconds];
    let bump = leadership.query_opt(
        "UPDATE bb_leader SET epoch = epoch + 1, master = $1, address = $2,
             backend_pid = pg_backend_pid(),
             expires_at = clock_timestamp() + make_interval(secs => $3::float8)
         WHERE id = 1 RETURNING epoch",
        &params,
    );
    tokio::pin!(bump);
    let row = loop {
        tokio::select! {
            row = &mut bump => break row,
            () = tokio::time::sleep(BLOCKER_CHECK) => {
                for pid in end_blockers(watch, mine).await? {
                    warn!(
                        backend_pid = pid,
                        "a session of the old leader held bb_leader (frozen in the middle of a write): terminated"
                    );
                }
            }
        }
    };
    let row = row
        .map_err(LeaderError::db("bumping the leadership epoch"))?
        .ok_or(LeaderError::NoLeaseRow)?;
    let epoch = row.get::<_, i64>(0) as u64;
    registry::heartbeat(leadership, me, MasterRole::Leader, Some(epoch)).await?;
    Ok(epoch)
}

/// How often a waiting epoch bump looks for the sessions that block it.
pub const BLOCKER_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Terminate the sessions that block session `pid` (`pg_blocking_pids`);
/// returns their pids.
async fn end_blockers(watch: &Client, pid: i32) -> Result<Vec<i32>, LeaderError> {
    let rows = watch
        .query(
            "SELECT b, pg_terminate_backend(b) FROM unnest(pg_blocking_pids($1)) AS b",
            &[&pid],
        )
        .await
        .map_err(LeaderError::db(
            "ending the sessions that block the epoch bump",
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Terminate the session holding the leadership lock if, and only if, it
/// is the recorded leader's session and its lease has run out (database
/// clock). A session that holds the lock but is not yet recorded (a
/// winner between its lock and its epoch bump) is left alone. Returns the
/// terminated backend's pid.
pub async fn end_expired_holder(watch: &Client, mine: i32) -> Result<Option<i32>, LeaderError> {
    let row = watch
        .query_opt(
            "SELECT l.pid, pg_terminate_backend(l.pid)
             FROM pg_locks l JOIN bb_leader b ON b.id = 1 AND l.pid = b.backend_pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = 0 AND l.objid = $1::int8::oid AND l.objsubid = 1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND b.expires_at < clock_timestamp() AND l.pid <> $2",
            &[&LEADERSHIP_LOCK, &mine],
        )
        .await
        .map_err(LeaderError::db("checking the leader's lease"))?;
    Ok(row.map(|r| r.get(0)))
}
