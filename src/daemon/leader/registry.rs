//! Every master's row in `bb_masters` (its heartbeat, role and epoch) and
//! the leader's row `bb_leader`, as `bbctl masters` and a standby's
//! `status` read them. Every time is the database's clock.

use tokio_postgres::Client;

use super::{Identity, LeaderError, LeaderRow};
use crate::protocol::{LeaderView, MasterRole, MasterView};

/// The first key of the advisory locks that hold master names (the
/// two-key form, whose key space is apart from the leadership lock's);
/// the second is the name's `hashtext`.
pub const NAME_LOCK: i32 = 0x626e;

/// Claim `me.name` for as long as `client`'s session lives, before the
/// name's row is written: two live masters under one name would share a
/// row in `bb_masters` and muddle `bbctl masters`. A master killed or
/// gone frees the name with its session (a host that vanished, once the
/// database notices). Two names whose hashes collide are refused too
/// (about one pair in four billion): rename one.
pub async fn claim_name(client: &Client, me: &Identity) -> Result<(), LeaderError> {
    let claimed: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&NAME_LOCK, &me.name],
        )
        .await
        .map_err(LeaderError::db("claiming this master's name"))?
        .get(0);
    if claimed {
        return Ok(());
    }
    let holder = client
        .query_opt(
            "SELECT coalesce(address, 'no worker address'), coalesce(pid, 0),
                    extract(epoch FROM clock_timestamp() - heartbeat_at)::float8
             FROM bb_masters WHERE name = $1",
            &[&me.name],
        )
        .await
        .map_err(LeaderError::db("reading who holds this master's name"))?
        .map(|row| {
            format!(
                "pid {} at {}, last heartbeat {:.1} s ago",
                row.get::<_, i32>(1),
                row.get::<_, String>(0),
                row.get::<_, f64>(2)
            )
        })
        .unwrap_or_else(|| "not yet registered".to_string());
    Err(LeaderError::NameTaken {
        name: me.name.clone(),
        holder,
    })
}

/// Record this master at start (or again after a restart under the same
/// name): its address, role, pid, and a fresh `started_at`.
pub async fn register(client: &Client, me: &Identity, role: MasterRole) -> Result<(), LeaderError> {
    client
        .execute(
            "INSERT INTO bb_masters (name, address, role, epoch, pid, started_at, heartbeat_at)
             VALUES ($1, $2, $3, NULL, $4, clock_timestamp(), clock_timestamp())
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address,
                 role = EXCLUDED.role, epoch = NULL, pid = EXCLUDED.pid,
                 started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at",
            &[
                &me.name,
                &me.address,
                &role.as_str(),
                &(std::process::id() as i32),
            ],
        )
        .await
        .map_err(LeaderError::db("registering this master in bb_masters"))?;
    Ok(())
}

/// A heartbeat: this master is alive in `role` (leading `epoch`).
pub async fn heartbeat(
    client: &Client,
    me: &Identity,
    role: MasterRole,
    epoch: Option<u64>,
) -> Result<(), LeaderError> {
    let epoch = epoch.map(|e| e as i64);
    let n = client
        .execute(
            "UPDATE bb_masters SET role = $2, epoch = $3, address = $4, pid = $5,
                 heartbeat_at = clock_timestamp()
             WHERE name = $1",
            &[
                &me.name,
                &role.as_str(),
                &epoch,
                &me.address,
                &(std::process::id() as i32),
            ],
        )
        .await
        .map_err(LeaderError::db("writing this master's heartbeat"))?;
    if n == 0 {
        // The row was deleted behind our back: put it back.
        register(client, me, role).await?;
    }
    Ok(())
}

/// The leader's row.
pub async fn leader(client: &Client) -> Result<LeaderRow, LeaderError> {
    let row = client
        .query_opt(
            "SELECT epoch, master, address, coalesce(expires_at < clock_timestamp(), true)
             FROM bb_leader WHERE id = 1",
            &[],
        )
        .await
        .map_err(LeaderError::db("reading bb_leader"))?
        .ok_or(LeaderError::NoLeaseRow)?;
    Ok(LeaderRow {
        epoch: row.get::<_, i64>(0) as u64,
        master: row.get(1),
        address: row.get(2),
        expired: row.get(3),
    })
}

impl From<LeaderRow> for LeaderView {
    fn from(row: LeaderRow) -> Self {
        LeaderView {
            epoch: row.epoch,
            name: row.master,
            address: row.address,
            lease_expired: row.expired,
        }
    }
}

/// Every master the database knows, by name. A leader of an older epoch
/// (killed, fenced: it cannot say so itself) reads as `stopped`.
pub async fn masters(client: &Client) -> Result<Vec<MasterView>, LeaderError> {
    let rows = client
        .query(
            "SELECT name, address,
                    CASE WHEN role = 'leader'
                          AND epoch IS DISTINCT FROM (SELECT epoch FROM bb_leader WHERE id = 1)
                         THEN 'stopped' ELSE role END,
                    epoch, pid,
                    (extract(epoch FROM started_at) * 1000)::int8,
                    (extract(epoch FROM heartbeat_at) * 1000)::int8,
                    (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::int8
             FROM bb_masters ORDER BY name",
            &[],
        )
        .await
        .map_err(LeaderError::db("reading bb_masters"))?;
    let ms = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Ok(rows
        .iter()
        .map(|row| MasterView {
            name: row.get(0),
            address: row.get(1),
            role: MasterRole::parse(row.get::<_, &str>(2)),
            epoch: ms(row.get(3)),
            pid: row.get::<_, Option<i32>>(4).map(|p| p as u32),
            started_at_ms: ms(row.get(5)),
            heartbeat_at_ms: ms(row.get(6)),
            heartbeat_age_ms: ms(row.get(7)),
        })
        .collect())
}
