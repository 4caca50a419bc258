//! The campaign and the lease against a real PostgreSQL server
//! (`testkit::postgres`): one server per test, each master a pair of
//! connections as in `bbmaster`.

use super::write_lease::WriteLease;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use super::campaign::{campaign, take_office};
use super::lease::hold;
use super::{Identity, LeaderError, Lease, registry};
use crate::config::PostgresSettings;
use crate::daemon::store::pg::{self, PgStore};
use crate::protocol::MasterRole;
use crate::testkit::postgres::{PASSWORD, PgServer};

const LEASE: Duration = Duration::from_millis(1200);

/// A server with a database `bb` migrated by the store (`bb_leader`,
/// `bb_masters`, `generations`), and settings to reach it.
struct Db {
    pg: PgServer,
    settings: PostgresSettings,
    _dir: tempfile::TempDir,
}

fn server() -> Db {
    let pg = PgServer::start().expect("a PostgreSQL test server (apt-get install postgresql)");
    pg.create_database("bb").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pgpass");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let settings = PostgresSettings {
        conninfo: pg.conninfo("bb"),
        password_file: Some(password_file),
        shared_dir: dir.path().to_path_buf(),
        lease: LEASE,
        ca_file: None,
    };
    drop(PgStore::open(&settings, None).expect("the store migrates the schema"));
    pg.psql(
        "bb",
        "INSERT INTO generations VALUES (6, 'abc', 'x', 0), (7, 'abc', 'x', 0), (8, 'def', 'x', 0)",
    )
    .unwrap();
    Db {
        pg,
        settings,
        _dir: dir,
    }
}

async fn connect(db: &Db) -> Client {
    let settings = db.settings.clone();
    tokio::task::spawn_blocking(move || pg::connect(&settings, "leader test"))
        .await
        .unwrap()
        .expect("connect")
}

/// A master's two connections, registered as a standby.
async fn master(pg: &Db, name: &str) -> (Client, Client, Identity) {
    let me = Identity {
        name: name.into(),
        address: Some(format!("tls://{name}:9989")),
    };
    let leadership = connect(pg).await;
    let watch = connect(pg).await;
    registry::register(&watch, &me, MasterRole::Standby)
        .await
        .unwrap();
    (leadership, watch, me)
}

fn epoch_in_db(db: &Db) -> String {
    db.pg
        .psql("bb", "SELECT epoch || ' ' || master FROM bb_leader")
        .unwrap()
}

#[tokio::test]
async fn one_campaigner_wins_and_the_other_takes_over_when_its_session_is_killed() {
    let pg = server();
    let lease = Lease::new(Duration::from_secs(30));
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    assert_eq!(won.epoch, 1);
    assert_eq!(epoch_in_db(&pg), "1 a");

    let (l_b, w_b, b) = master(&pg, "b").await;
    let b_campaign = tokio::spawn(async move {
        let won = campaign(&l_b, &w_b, &b, lease).await;
        (won, l_b, w_b)
    });
    // B waits: A's lease (30 s) is far from over.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!b_campaign.is_finished(), "b must not win while a leads");

    // A's leadership session is killed (as `kill -9` of its process does):
    // B gets the lock at once, long before A's lease would end.
    let killed_at = Instant::now();
    pg.pg
        .psql(
            "bb",
            "SELECT pg_terminate_backend(backend_pid) FROM bb_leader",
        )
        .unwrap();
    let (won, _l_b, _w_b) = tokio::time::timeout(Duration::from_secs(10), b_campaign)
        .await
        .expect("b wins in time")
        .unwrap();
    assert_eq!(won.unwrap().epoch, 2);
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    assert_eq!(epoch_in_db(&pg), "2 b");
    let roles = pg
        .pg
        .psql("bb", "SELECT string_agg(name || '=' || role || ':' || coalesce(epoch::text, '-'), ',' ORDER BY name) FROM bb_masters")
        .unwrap();
    assert_eq!(roles, "a=leader:1,b=leader:2");
}

#[tokio::test]
async fn a_holder_that_stops_renewing_is_terminated_after_its_lease_and_its_renewal_then_fails() {
    let pg = server();
    let lease = Lease::new(LEASE);
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won_at = Instant::now();
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    assert_eq!(won.epoch, 1);
    // A is "paused": it holds the lock but renews nothing.
    let (l_b, w_b, b) = master(&pg, "b").await;
    let started = Instant::now();
    let won_b = tokio::time::timeout(Duration::from_secs(10), campaign(&l_b, &w_b, &b, lease))
        .await
        .expect("b wins in time")
        .unwrap();
    assert_eq!(won_b.epoch, 2);
    let took = started.elapsed();
    assert!(
        took + Duration::from_millis(100) >= LEASE - won_at.elapsed().min(LEASE),
        "b must wait for a's lease, took {took:?}"
    );
    assert_eq!(epoch_in_db(&pg), "2 b");
    // A "resumes" and tries to hold its leadership: it notices at once.
    let files = WriteLease::until((won_at + LEASE * 10).into_std());
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        hold(&l_a, &a, 1, lease, won_at, Box::new(|| None), &files),
    )
    .await
    .expect("a notices in time");
    assert!(lost.is_lost(), "{lost}");
    assert!(!files.valid(), "a lost leadership writes no more files");
    assert!(lost.to_string().contains("lost the leadership"), "{lost}");
    // And its session is gone: nothing it sends is executed.
    assert!(l_a.query_one("SELECT 1", &[]).await.is_err());
    assert_eq!(epoch_in_db(&pg), "2 b");
}

/// A second live master under a name is refused, naming the holder; the
/// name is free again once the holder's session ends.
#[tokio::test]
async fn a_name_is_held_by_one_live_master() {
    let pg = server();
    let me = Identity {
        name: "twin".into(),
        address: Some("tls://twin:9989".into()),
    };
    let first = connect(&pg).await;
    registry::claim_name(&first, &me).await.unwrap();
    registry::register(&first, &me, MasterRole::Standby)
        .await
        .unwrap();
    let second = connect(&pg).await;
    let refused = registry::claim_name(&second, &me).await.unwrap_err();
    let words = refused.to_string();
    assert!(
        words.contains("another master named `twin` is running")
            && words.contains("at tls://twin:9989")
            && words.contains("give each master its own --name"),
        "{words}"
    );
    let other = Identity {
        name: "other".into(),
        address: None,
    };
    registry::claim_name(&second, &other).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let third = connect(&pg).await;
        match registry::claim_name(&third, &me).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_leader_that_renews_keeps_the_leadership_past_many_leases() {
    let pg = server();
    let lease = Lease::new(Duration::from_millis(900));
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won_at = Instant::now();
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    let files = WriteLease::until((won_at + lease.length).into_std());
    let a_files = files.clone();
    let a_hold = tokio::spawn(async move {
        let config: super::lease::ConfigInfo = Box::new(|| Some("abc".to_string()));
        hold(&l_a, &a, won.epoch, lease, won_at, config, &a_files).await
    });
    let (l_b, w_b, b) = master(&pg, "b").await;
    let b_won = tokio::time::timeout(Duration::from_secs(4), campaign(&l_b, &w_b, &b, lease)).await;
    assert!(b_won.is_err(), "b must not win while a renews");
    assert!(!a_hold.is_finished());
    assert!(files.valid(), "each renewal moves the files' deadline on");
    assert_eq!(epoch_in_db(&pg), "1 a");
    assert_eq!(
        pg.pg
            .psql(
                "bb",
                "SELECT config_generation || ' ' || config_hash FROM bb_leader"
            )
            .unwrap(),
        "7 abc"
    );
    a_hold.abort();
}

#[tokio::test]
async fn a_renewal_that_finds_a_new_epoch_says_superseded() {
    let pg = server();
    let lease = Lease::new(Duration::from_millis(900));
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won_at = Instant::now();
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    // Another master bumped the epoch (the takeover's UPDATE).
    pg.pg
        .psql("bb", "UPDATE bb_leader SET epoch = epoch + 1")
        .unwrap();
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        hold(
            &l_a,
            &a,
            won.epoch,
            lease,
            won_at,
            Box::new(|| None),
            &WriteLease::unlimited(),
        ),
    )
    .await
    .expect("a notices in time");
    assert!(
        matches!(
            lost,
            LeaderError::Superseded {
                mine: 1,
                current: 2
            }
        ),
        "{lost}"
    );
}

#[tokio::test]
async fn a_winner_not_yet_recorded_is_not_terminated() {
    let pg = server();
    let lease = Lease::new(Duration::from_millis(600));
    // An old leader's expired record, and a new session holding the lock
    // that has not bumped the epoch yet.
    let (l_a, _w_a, a) = master(&pg, "a").await;
    let w = connect(&pg).await;
    take_office(&l_a, &w, &a, lease).await.unwrap();
    drop(l_a);
    let fresh = connect(&pg).await;
    fresh
        .execute("SELECT pg_advisory_lock($1)", &[&super::LEADERSHIP_LOCK])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_l_c, w_c, _c) = master(&pg, "c").await;
    let mine: i32 = w_c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let ended = super::campaign::end_expired_holder(&w_c, mine)
        .await
        .unwrap();
    assert_eq!(ended, None);
    assert!(fresh.query_one("SELECT 1", &[]).await.is_ok());
}

#[tokio::test]
async fn the_first_master_takes_the_free_lock_at_once_and_the_second_does_not() {
    let pg = server();
    let lease = Lease::new(Duration::from_secs(30));
    let (l_a, _w_a, a) = master(&pg, "a").await;
    let won = super::campaign::try_at_once(&l_a, &_w_a, &a, lease)
        .await
        .unwrap();
    assert_eq!(won.map(|w| w.epoch), Some(1));
    let (l_b, _w_b, b) = master(&pg, "b").await;
    let second = super::campaign::try_at_once(&l_b, &_w_b, &b, lease)
        .await
        .unwrap();
    assert_eq!(second, None);
    assert_eq!(epoch_in_db(&pg), "1 a");
}

#[test]
fn the_identity_defaults_to_the_host_name_and_the_first_listen_address() {
    use super::Identity;
    let any: std::net::SocketAddr = "0.0.0.0:9989".parse().unwrap();
    let lo: std::net::SocketAddr = "127.0.0.1:9990".parse().unwrap();
    let host = super::host_name();
    let id = Identity::resolve(None, None, &[any, lo], false);
    assert_eq!(id.name, host);
    assert_eq!(id.address, Some(format!("tls://{host}:9989")));
    let id = Identity::resolve(Some("a".into()), None, &[lo], true);
    assert_eq!(
        (id.name.as_str(), id.address.as_deref()),
        ("a", Some("tcp://127.0.0.1:9990"))
    );
    let id = Identity::resolve(None, Some("tls://b.example:1".into()), &[lo], false);
    assert_eq!(id.address.as_deref(), Some("tls://b.example:1"));
    assert_eq!(Identity::resolve(None, None, &[], false).address, None);
}

/// multiworker's finding: a leader frozen in the middle of a store write
/// holds the fence's `FOR SHARE` on `bb_leader` on its store connection;
/// the winner's epoch bump must not wait for it forever: the blocking
/// session is terminated, and its write never commits.
#[tokio::test]
async fn a_leader_frozen_mid_write_does_not_block_the_takeover() {
    let pg = server();
    let lease = Lease::new(LEASE);
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    assert_eq!(won.epoch, 1);
    // A's store, frozen mid-transaction after the fence's check.
    let store = connect(&pg).await;
    store.batch_execute("BEGIN").await.unwrap();
    let fence: i64 = store
        .query_one("SELECT epoch FROM bb_leader WHERE id = 1 FOR SHARE", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fence, 1);
    // A renews nothing (paused); B takes over after the lease.
    let (l_b, w_b, b) = master(&pg, "b").await;
    let won_b = tokio::time::timeout(Duration::from_secs(10), campaign(&l_b, &w_b, &b, lease))
        .await
        .expect("b wins although a's store transaction held bb_leader")
        .unwrap();
    assert_eq!(won_b.epoch, 2);
    assert_eq!(epoch_in_db(&pg), "2 b");
    // A's frozen write can never commit.
    assert!(store.batch_execute("COMMIT").await.is_err());
}

/// multiworker's other finding: the lease is renewed on a thread of its
/// own, so a master whose runtime is blocked (its loop's store calls)
/// keeps the leadership.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_runtime_does_not_starve_the_lease() {
    let pg = server();
    let lease = Lease::new(Duration::from_millis(900));
    let (l_a, w_a, a) = master(&pg, "a").await;
    let won_at = Instant::now();
    let won = campaign(&l_a, &w_a, &a, lease).await.unwrap();
    let leadership = std::sync::Arc::new(l_a);
    let holder = {
        let (leadership, me) = (std::sync::Arc::clone(&leadership), a.clone());
        super::thread::OwnThread::spawn("test-lease", async move {
            hold(
                &leadership,
                &me,
                won.epoch,
                lease,
                won_at,
                Box::new(|| None),
                &WriteLease::unlimited(),
            )
            .await
        })
        .unwrap()
    };
    // B campaigns on a runtime of its own.
    let (l_b, w_b, b) = master(&pg, "b").await;
    let mut b_campaign = super::thread::OwnThread::spawn("test-b", async move {
        campaign(&l_b, &w_b, &b, lease).await.map(|w| w.epoch)
    })
    .unwrap();
    // This runtime's only thread is blocked for three leases.
    std::thread::sleep(Duration::from_millis(2700));
    assert_eq!(
        epoch_in_db(&pg),
        "1 a",
        "a lost the leadership while its runtime was blocked"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(10), b_campaign.join())
            .await
            .is_err()
    );
    drop(holder);
}
