//! Connections to PostgreSQL for the master's synchronous callers.
//!
//! The [`super::super::Store`] and [`super::super::HistoryReader`] traits
//! are synchronous: the master loop calls its store inline, as it does
//! SQLite's. tokio-postgres is asynchronous, and a `Runtime::block_on`
//! inside the master's runtime panics. So each connection gets a thread
//! of its own running a current-thread runtime that connects and then
//! drives the `tokio_postgres::Connection` (the socket); the `Client`
//! only talks to that task over channels, so its futures need no runtime
//! and the store's calls run them with [`block_on`], a plain executor
//! that parks the calling thread. When the `Client` is dropped the
//! connection ends and its thread with it.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, Socket};

use super::tls::MakeRustlsConnect;
use tracing::debug;

use super::super::StoreError;
use crate::config::PostgresSettings;

/// How long a connection attempt may take before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sent data may stay unacknowledged before the connection
/// fails (`tcp_user_timeout`, unless the connection string sets it).
const SILENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle connection waits before its first keepalive probe
/// (`keepalives_idle`, unless the connection string sets it).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);

/// tokio-postgres's own default `keepalives_idle` (2 hours), which tells
/// that the connection string did not set one.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Largest password file read: a password, not a file of anything else.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Run a future to its end on the calling thread. For the client's
/// futures, which only wait on channels to the connection's own thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The database as messages name it: hosts, port, database and user,
/// never the password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "PostgreSQL database {} on {}{} as {}",
        config.get_dbname().unwrap_or("(default)"),
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            String::new()
        } else {
            format!(":{}", ports.join(","))
        },
        config.get_user().unwrap_or("(default user)")
    )
}

/// The driver's configuration from the settings: the conninfo, the
/// password read from `password_file`, the application name (what
/// `pg_stat_activity` shows: which master, which connection).
pub fn config_of(
    settings: &PostgresSettings,
    application_name: &str,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        settings
            .conninfo
            .parse()
            .map_err(|source| StoreError::Postgres {
                what: "master.store.postgres: cannot read the connection string".into(),
                source,
            })?;
    if let Some(file) = &settings.password_file {
        config.password(read_password(file)?);
    }
    config.application_name(application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A server or network that goes silent fails the connection within
    // about half a minute instead of leaving a write waiting for hours
    // (the kernel's defaults); the connection string may say otherwise.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(SILENT_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    Ok(config)
}

/// The password in `file`: its first line, without the line end.
fn read_password(file: &Path) -> Result<String, StoreError> {
    let refused = |reason: String| StoreError::Refused {
        what: format!("master.store.password_file {}", file.display()),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| refused(e.to_string()))?;
    if meta.len() > MAX_PASSWORD_FILE {
        return Err(refused(format!(
            "{} bytes is not a password file (at most {MAX_PASSWORD_FILE})",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| refused(e.to_string()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(refused("the file is empty".into()));
    }
    Ok(password)
}

/// A connection to the database of `settings`, with the password of its
/// `password_file`, under `application_name`; the connection's task runs
/// on a thread of its own until the client is dropped. The `Client` may
/// be used from async code on any runtime, or through [`block_on`].
///
/// `leader` uses this for the leadership connection; the store and its
/// readers for theirs.
pub fn connect(settings: &PostgresSettings, application_name: &str) -> Result<Client, StoreError> {
    let config = config_of(settings, application_name)?;
    let what = describe(&config);
    let refused = |reason: String| StoreError::Refused {
        what: what.clone(),
        reason,
    };
    // TLS when the connection string requires it (super::tls).
    let tls = match config.get_ssl_mode() {
        SslMode::Require => {
            Some(super::tls::client_config(settings.ca_file.as_deref()).map_err(refused)?)
        }
        _ => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let name = application_name.to_string();
    let spawned = std::thread::Builder::new()
        .name("bb-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = tx.send(Err(Err(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match tls {
                    None => drive(&config, NoTls, &tx, &name).await,
                    Some(tls) => drive(&config, MakeRustlsConnect(tls), &tx, &name).await,
                }
            });
        });
    if let Err(e) = spawned {
        return Err(refused(format!("cannot start a connection thread: {e}")));
    }
    match rx.recv() {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(Ok(source))) => Err(StoreError::Postgres {
            what: format!("cannot connect to the {what}"),
            source,
        }),
        Ok(Err(Err(e))) => Err(refused(format!("cannot start a runtime: {e}"))),
        Err(_) => Err(refused("the connection thread ended".into())),
    }
}

/// What a connection's thread sends back: the client, or why not (the
/// driver's error, or the runtime's).
type Connected = Result<Client, Result<tokio_postgres::Error, std::io::Error>>;

/// Connect with `tls`, send the client back, then drive the connection
/// until the client is dropped or the server goes away.
async fn drive<T>(
    config: &tokio_postgres::Config,
    tls: T,
    tx: &std::sync::mpsc::Sender<Connected>,
    name: &str,
) where
    T: MakeTlsConnect<Socket>,
{
    match config.connect(tls).await {
        Ok((client, connection)) => {
            let _ = tx.send(Ok(client));
            if let Err(e) = connection.await {
                debug!("PostgreSQL connection {name} ended: {}", message(&e));
            }
        }
        Err(e) => {
            let _ = tx.send(Err(Ok(e)));
        }
    }
}

/// The driver's error with what the server said (its `Display` alone says
/// only "db error").
pub fn message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{e}: {}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
