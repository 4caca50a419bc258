//! The leader's side of the lease: renew it every lease/3, conditional on
//! the epoch this master leads, on the leadership session itself.
//!
//! The leadership is lost, and [`hold`] returns, when a renewal finds
//! another epoch (0 rows), when the leadership session ends, or when no
//! renewal succeeded within one lease of the last good one by this
//! process's monotonic clock (conservative: the database's lease started
//! later than our request did). A paused process notices the last case on
//! its first tick after it resumes. The caller stops serving at once; the
//! store's fence refuses whatever write races with that.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;
use tracing::warn;

use super::write_lease::WriteLease;
use super::{Identity, LeaderError, Lease, registry};
use crate::protocol::MasterRole;

/// The hash of the config in force, read at every renewal: the lease
/// records it in `bb_leader.config_hash`, with the newest generation the
/// store recorded for it (`generations`) in `config_generation`.
pub type ConfigInfo = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Hold the leadership of `epoch` until it is lost; returns why (and
/// revokes `files` first). `won_at` is when the epoch bump was sent; each
/// renewal moves `files` on to one lease after it was sent.
pub async fn hold(
    leadership: &Client,
    me: &Identity,
    epoch: u64,
    lease: Lease,
    won_at: Instant,
    config: ConfigInfo,
    files: &WriteLease,
) -> LeaderError {
    let mut last_ok = won_at;
    let mut ticker = tokio::time::interval_at(won_at + lease.period(), lease.period());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut why = String::from("no renewal was attempted in time (was the process paused?)");
    let lost = loop {
        ticker.tick().await;
        let sent = Instant::now();
        let deadline = last_ok + lease.length;
        if sent >= deadline {
            break expired(epoch, lease, why);
        }
        let renewal = renew(leadership, epoch, lease, config());
        match tokio::time::timeout_at(deadline, renewal).await {
            Ok(Ok(true)) => {
                last_ok = sent;
                files.extend((sent + lease.length).into_std());
                if let Err(e) =
                    registry::heartbeat(leadership, me, MasterRole::Leader, Some(epoch)).await
                {
                    warn!("{e}");
                }
            }
            Ok(Ok(false)) => {
                // Another epoch runs: no file write from here on, not even
                // while the current epoch is read for the message.
                files.revoke();
                let current = match registry::leader(leadership).await {
                    Ok(row) => row.epoch,
                    Err(_) => epoch + 1,
                };
                break LeaderError::Superseded {
                    mine: epoch,
                    current,
                };
            }
            Ok(Err(e)) if e.is_closed() => {
                break expired(epoch, lease, format!("the leadership session ended: {e}"));
            }
            Ok(Err(e)) => {
                warn!(
                    epoch,
                    "cannot renew the leadership lease (will retry until it runs out): {e}"
                );
                why = e.to_string();
            }
            Err(_) => break expired(epoch, lease, "the database did not answer in time".into()),
        }
    };
    files.revoke();
    lost
}

fn expired(mine: u64, lease: Lease, why: String) -> LeaderError {
    LeaderError::Expired {
        mine,
        lease: lease.length,
        why,
    }
}

/// One renewal: `Ok(false)` when the row no longer carries our epoch or
/// our session.
async fn renew(
    leadership: &Client,
    epoch: u64,
    lease: Lease,
    hash: Option<String>,
) -> Result<bool, tokio_postgres::Error> {
    let n = leadership
        .execute(
            "UPDATE bb_leader SET expires_at = clock_timestamp() + make_interval(secs => $2::float8),
                 config_hash = coalesce($3::text, config_hash),
                 config_generation = coalesce(
                     (SELECT max(generation) FROM generations WHERE config_hash = $3::text),
                     config_generation)
             WHERE id = 1 AND epoch = $1 AND backend_pid = pg_backend_pid()",
            &[&(epoch as i64), &lease.seconds(), &hash],
        )
        .await?;
    Ok(n == 1)
}

/// The longest a leader goes without knowing it lost: the lease, plus one
/// renewal period for the tick that notices.
pub fn worst_notice(lease: Lease) -> Duration {
    lease.length + lease.period()
}
