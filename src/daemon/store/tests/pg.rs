//! What only the PostgreSQL store has: the epoch fence (a write after a
//! takeover, and one racing it), migrations run by two masters at once,
//! a re-open that changes nothing, a newer schema refused, password
//! authentication from `password_file`, readers that reconnect.

use std::sync::{Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::daemon::store::pg::retention::PgRetention;
use crate::daemon::store::pg::{PG_SCHEMA_VERSION, block_on, connect};

fn server() -> PgServer {
    PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)")
}

#[test]
fn a_write_after_another_master_took_over_is_fenced_and_writes_nothing() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "fence", files.path());
    drop(b.open());
    b.sql("UPDATE bb_leader SET epoch = 1 WHERE id = 1");
    let mut store = PgStore::open(&b.settings, Some(1)).unwrap();
    store.apply(&[&queued(1, "a")]).unwrap();
    start_build_1_finished(&mut store);

    // Another master takes over: the epoch moves on.
    b.sql("UPDATE bb_leader SET epoch = 2 WHERE id = 1");
    let err = store.apply(&[&queued(2, "a")]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                mine: 1,
                current: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lost the leadership"), "{err}");
    assert!(b.reader().request(2).unwrap().is_none(), "nothing written");
    // The restore's writes and retention's deletes are fenced too.
    assert!(store.restore(9).unwrap_err().is_fenced());
    let mut retention = PgRetention::open(&b.settings, Some(1)).unwrap();
    assert!(retention.delete_builds(&[1]).unwrap_err().is_fenced());
    assert!(b.reader().build(1).unwrap().is_some(), "nothing deleted");
    // The new leader writes.
    let mut leader = PgStore::open(&b.settings, Some(2)).unwrap();
    leader.apply(&[&queued(2, "a")]).unwrap();
    PgRetention::open(&b.settings, Some(2))
        .unwrap()
        .delete_builds(&[1])
        .unwrap();
}

/// Build 1 of request 1 (already queued), started and finished.
fn start_build_1_finished(store: &mut PgStore) {
    store
        .apply(&[
            &build_started(1, 1, "a"),
            &Record::BuildFinished {
                build: 1,
                request: 1,
                result: crate::protocol::BuildResult::Success,
                reason: None,
                at_ms: 3,
            },
        ])
        .unwrap();
}

#[test]
fn a_write_racing_a_takeover_waits_for_it_and_then_writes_nothing() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "race", files.path());
    drop(b.open());
    b.sql("UPDATE bb_leader SET epoch = 1 WHERE id = 1");
    let mut store = PgStore::open(&b.settings, Some(1)).unwrap();
    // The takeover's transaction has updated the row, not yet committed.
    let takeover = connect(&b.settings, "takeover").unwrap();
    block_on(takeover.batch_execute("BEGIN; UPDATE bb_leader SET epoch = epoch + 1 WHERE id = 1"))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        let _ = tx.send(store.apply(&[&queued(1, "a")]));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the write waits on the row the takeover holds"
    );
    block_on(takeover.batch_execute("COMMIT")).unwrap();
    let outcome = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the write goes on once the takeover commits");
    writer.join().unwrap();
    let err = outcome.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                mine: 1,
                current: 2
            }
        ),
        "{err}"
    );
    assert!(b.reader().request(1).unwrap().is_none(), "nothing written");
}

#[test]
fn two_masters_migrating_at_once_both_open_one_schema() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "migrate", files.path());
    let start = Barrier::new(4);
    thread::scope(|s| {
        let opens: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    PgStore::open(&b.settings, None).map(drop)
                })
            })
            .collect();
        for open in opens {
            open.join().unwrap().expect("every master opens the store");
        }
    });
    assert_eq!(
        pg.psql("migrate", "SELECT count(*), max(version) FROM bb_schema")
            .unwrap(),
        format!("1|{PG_SCHEMA_VERSION}")
    );
    assert_eq!(
        pg.psql("migrate", "SELECT count(*), max(epoch) FROM bb_leader")
            .unwrap(),
        "1|0"
    );
}

#[test]
fn a_re_open_changes_nothing_and_a_newer_schema_is_refused() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "reopen", files.path());
    b.open().apply(&[&queued(1, "a")]).unwrap();
    b.sql("UPDATE bb_leader SET epoch = 7, master = 'm1' WHERE id = 1");
    let mut store = b.open();
    assert_eq!(store.restore(2).unwrap().queued.len(), 1);
    drop(store);
    assert_eq!(
        pg.psql(
            "reopen",
            "SELECT (SELECT count(*) FROM bb_schema), epoch, master FROM bb_leader"
        )
        .unwrap(),
        "1|7|m1"
    );
    b.sql("UPDATE bb_schema SET version = 99");
    let err = PgStore::open(&b.settings, None).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("newer") && text.contains("99"), "{text}");
    assert!(text.contains("reopen"), "names the database: {text}");
}

#[test]
fn the_password_comes_from_password_file_and_is_never_shown() {
    let pg = server();
    pg.create_database("auth").unwrap();
    let files = tempfile::tempdir().unwrap();
    // No password: the server asks for one over TCP.
    let none = PgStore::open(&settings(&pg, "auth", None), None)
        .err()
        .expect("refused");
    assert!(none.to_string().contains("password"), "{none}");
    // A wrong one.
    let wrong = files.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let err = PgStore::open(&settings(&pg, "auth", Some(wrong)), None)
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    // A missing file says which.
    let missing = files.path().join("missing");
    let err = PgStore::open(&settings(&pg, "auth", Some(missing)), None)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("password_file"), "{err}");
    // The right one.
    let good = settings(&pg, "auth", Some(password_file(files.path())));
    PgStore::open(&good, None).unwrap();
    PgReader::open(&good).unwrap();
}

#[test]
fn a_reader_whose_connection_the_server_ended_connects_again() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "reconnect", files.path());
    start_build_1(&mut *b.open());
    let reader = b.reader();
    assert_eq!(reader.latest_build().unwrap(), Some(1));
    b.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'bbmaster reader'",
    );
    // Once both backends are gone, a read meets a dead connection: it
    // fails, or finds it closed and reconnects; the next ones reconnect.
    let started = Instant::now();
    while pg
        .psql(
            "reconnect",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bbmaster reader'",
        )
        .unwrap()
        != "0"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not terminated"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut failures = 0;
    loop {
        match reader.latest_build() {
            Ok(latest) => {
                assert_eq!(latest, Some(1));
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never reconnected: {e}"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(failures <= 2, "{failures} failed reads");
}

/// Measures what docs/postgres.md quotes on where logs live: appending
/// 4 KiB chunks to a file on local disk against inserting them as rows,
/// one statement each as output streams in (`cargo test --release --lib
/// store::tests::pg::measure -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_log_chunks_on_disk_and_as_rows() {
    use std::io::Write;
    const CHUNK: usize = 4096;
    let chunk = vec![b'x'; CHUNK];
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("0.log")).unwrap();
    let n = 16_384;
    let started = Instant::now();
    for _ in 0..n {
        file.write_all(&chunk).unwrap();
    }
    let disk = started.elapsed();
    eprintln!(
        "file appends: {n} x 4 KiB in {disk:?}: {:.0} MiB/s, {:.1} us per chunk",
        (n * CHUNK) as f64 / disk.as_secs_f64() / (1 << 20) as f64,
        disk.as_micros() as f64 / n as f64
    );

    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "chunks", files.path());
    let client = connect(&b.settings, "measure").unwrap();
    for commit in ["off", "on"] {
        block_on(client.batch_execute(&format!(
            "SET synchronous_commit = {commit};
             DROP TABLE IF EXISTS log_chunks;
             CREATE TABLE log_chunks (build BIGINT, step INT, seq BIGINT, data BYTEA,
                                      PRIMARY KEY (build, step, seq))"
        )))
        .unwrap();
        let insert = block_on(
            client.prepare("INSERT INTO log_chunks (build, step, seq, data) VALUES (1, 0, $1, $2)"),
        )
        .unwrap();
        let n = 4_096_i64;
        let started = Instant::now();
        for seq in 0..n {
            block_on(client.execute(&insert, &[&seq, &chunk])).unwrap();
        }
        let rows = started.elapsed();
        eprintln!(
            "rows (synchronous_commit={commit}, server fsync=off): {n} x 4 KiB in {rows:?}: \
             {:.0} MiB/s, {:.1} us per chunk",
            (n as usize * CHUNK) as f64 / rows.as_secs_f64() / (1 << 20) as f64,
            rows.as_micros() as f64 / n as f64
        );
    }
}

#[test]
fn a_read_only_restore_shows_the_state_and_writes_nothing_whatever_the_epoch() {
    let pg = server();
    let files = tempfile::tempdir().unwrap();
    let b = Postgres::new(&pg, "standby", files.path());
    {
        let mut store = b.open();
        start_build_1(&mut *store);
        store
            .apply(&[&queued(2, "a"), &build_started(2, 2, "a"), &queued(3, "a")])
            .unwrap();
    }
    b.sql("UPDATE builds SET definition = 'not json' WHERE id = 2");
    b.sql("UPDATE bb_leader SET epoch = 5");
    // A standby's store: not the leader's epoch.
    let mut standby = PgStore::open(&b.settings, Some(4)).unwrap();
    let restored = standby.restore_read_only().unwrap();
    let running: Vec<u64> = restored.running.iter().map(|r| r.id).collect();
    assert_eq!(running, vec![1], "the unreadable build is left out");
    let queued: Vec<u64> = restored.queued.iter().map(|r| r.id).collect();
    assert_eq!(queued, vec![3]);
    assert_eq!((restored.next_request, restored.next_build), (4, 3));
    assert_eq!(
        pg.psql(
            "standby",
            "SELECT count(*) FROM builds WHERE finished_at IS NULL"
        )
        .unwrap(),
        "2",
        "nothing retried"
    );
    assert!(standby.restore(9).unwrap_err().is_fenced());
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM,
/// server certificate PEM, server key PEM).
fn test_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, server.pem(), key.serialize_pem())
}

#[test]
fn sslmode_require_connects_over_tls_verified_against_ca_file() {
    let (ca, cert, key) = test_certificates();
    let pg = PgServer::start_with_tls(&cert, &key).expect("a throwaway PostgreSQL with TLS");
    pg.create_database("tls").unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let mut settings = settings(&pg, "tls", Some(password_file(files.path())));
    settings.conninfo.push_str(" sslmode=require");
    settings.ca_file = Some(ca_file);
    let mut store = PgStore::open(&settings, None).unwrap();
    store.apply(&[&queued(1, "a")]).unwrap();
    let client = connect(&settings, "tls check").unwrap();
    let ssl: bool = block_on(client.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))
    .unwrap()
    .get(0);
    assert!(ssl, "the session is encrypted");
    assert!(
        PgReader::open(&settings)
            .unwrap()
            .request(1)
            .unwrap()
            .is_some()
    );

    // A server certificate the roots do not vouch for is refused.
    settings.ca_file = None;
    let err = PgStore::open(&settings, None).err().expect("refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Without sslmode=require the connection is plain.
    let plain = super::settings(&pg, "tls", Some(password_file(files.path())));
    let client = connect(&plain, "plain check").unwrap();
    let ssl: bool = block_on(client.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))
    .unwrap()
    .get(0);
    assert!(!ssl);
}
