//! The standby phase of a master on a shared PostgreSQL store: bind the
//! sockets, answer read-only through [`super::standby`], campaign; on
//! winning, close everything again (the leader binds the same sockets as
//! a master that just started) and hand over the [`Office`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::standby::{self, ReadState, Standby, StandbyEnd};
use super::thread::OwnThread;
use super::write_lease::WriteLease;
use super::{Identity, LeaderError, Lease, Seat, campaign, lease, registry};
use crate::config::Config;
use crate::daemon::handle::MasterHandle;
use crate::daemon::history::History;
use crate::daemon::limits::Limits;
use crate::daemon::listeners::{self, WorkerDoor, set::TcpListeners};
use crate::daemon::signals::MasterSignals;
use crate::daemon::{DaemonError, Layout, auth, control, io_err, listener, notify};
use crate::protocol::MasterRole;

/// The leadership a campaign won: held by the leader until it is lost.
pub struct Office {
    /// The epoch: the store's fence.
    pub epoch: u64,
    /// When the epoch bump was sent.
    pub won_at: Instant,
    /// The leadership session (it holds the lock; renewals go on it).
    pub leadership: Arc<Client>,
    /// The heartbeat connection (`status`, `masters`).
    pub heartbeat: Arc<Client>,
    /// The lease.
    pub lease: Lease,
    /// This master.
    pub me: Identity,
    /// The standby's control and worker sockets, still bound, for the
    /// leader to serve (`None` when it led at once).
    pub sockets: Option<Sockets>,
}

/// A standby's Unix sockets, handed to the leader it became.
pub struct Sockets {
    /// The control socket.
    pub control: interprocess::local_socket::tokio::Listener,
    /// The worker socket.
    pub worker: interprocess::local_socket::tokio::Listener,
}

impl Office {
    /// This master's seat, as the leader.
    pub fn seat(&self) -> Seat {
        Seat {
            me: self.me.clone(),
            role: MasterRole::Leader,
            db: Some(Arc::clone(&self.heartbeat)),
        }
    }

    /// Until when files may be written on the lease won (see
    /// [`super::write_lease`]); [`Self::hold`] moves it on.
    pub fn write_lease(&self) -> WriteLease {
        WriteLease::until((self.won_at + self.lease.length).into_std())
    }

    /// Renew the lease until it is lost, on a thread of its own (see
    /// [`super::thread`]), moving `files` on with each renewal; the handle
    /// resolves with why (see [`lease::hold`]). Dropping it stops the
    /// renewals.
    pub fn hold(
        &self,
        config: lease::ConfigInfo,
        files: WriteLease,
    ) -> std::io::Result<OwnThread<LeaderError>> {
        let leadership = Arc::clone(&self.leadership);
        let me = self.me.clone();
        let (epoch, lease, won_at) = (self.epoch, self.lease, self.won_at);
        OwnThread::spawn("bb-lease", async move {
            lease::hold(&leadership, &me, epoch, lease, won_at, config, &files).await
        })
    }
}

/// Record a clean stop of this master in `bb_masters`.
pub async fn stopped(db: &Client, me: &Identity) {
    if let Err(e) = registry::heartbeat(db, me, MasterRole::Stopped, None).await {
        warn!("cannot record this master as stopped: {e}");
    }
}

/// How a standby phase ended.
pub enum Outcome {
    /// This master leads now.
    Won(Box<Office>),
    /// It was told to stop while a standby.
    Stopped,
}

/// What a standby phase needs.
pub struct StandbySetup {
    /// The config as read at start.
    pub config: Arc<Config>,
    /// The sockets' paths and the state dir.
    pub layout: Layout,
    /// Frame limits and who may connect.
    pub limits: Arc<Limits>,
    /// The logs (shared with the leader), for the history's `log`.
    pub logs: PathBuf,
    /// The TCP listeners for workers (`worker_listen` or `--worker-listen`).
    pub worker_listen: Vec<SocketAddr>,
    /// This master.
    pub me: Identity,
    /// The lease.
    pub lease: Lease,
    /// The stored state, read-only, for `status` and `queue`.
    pub read_state: ReadState,
    /// The history's reads (`builds`, `build`, `changes`, `log`).
    pub history: Option<History>,
    /// The connection that will hold the leadership.
    pub leadership: Client,
    /// The connection for heartbeats and reads.
    pub heartbeat: Client,
}

/// Serve as a standby until this master wins the leadership or is told
/// to stop.
pub async fn stand_by(
    setup: StandbySetup,
    signals: &mut MasterSignals,
) -> Result<Outcome, DaemonError> {
    let StandbySetup {
        config,
        layout,
        limits,
        logs,
        worker_listen,
        me,
        lease,
        read_state,
        history,
        leadership,
        heartbeat,
    } = setup;
    let leadership = Arc::new(leadership);
    let heartbeat = Arc::new(heartbeat);
    registry::claim_name(&heartbeat, &me).await?;
    registry::register(&heartbeat, &me, MasterRole::Standby).await?;
    // Nobody leads: lead at once, never showing a standby's face.
    if let Some(won) = campaign::try_at_once(&leadership, &heartbeat, &me, lease).await? {
        return Ok(Outcome::Won(Box::new(Office {
            epoch: won.epoch,
            won_at: won.sent_at,
            leadership,
            heartbeat,
            lease,
            me,
            sockets: None,
        })));
    }

    let (tx, rx) = mpsc::channel(64);
    let (notices, _) = broadcast::channel(16);
    let (events, _) = broadcast::channel(16);
    let (stopping_tx, stopping) = watch::channel(false);
    let tls_status = listeners::set::SharedStatus::default();
    let mut front = MasterHandle::new(tx, notices, events)
        .with_policy(auth::Policy::from_settings(
            &config.master,
            nix::unistd::geteuid().as_raw(),
        ))
        .with_shutdown(stopping)
        .with_listeners(Arc::clone(&tls_status))
        .with_seat(Seat {
            me: me.clone(),
            role: MasterRole::Standby,
            db: Some(Arc::clone(&heartbeat)),
        });
    if let Some(history) = history {
        front = front.with_history(history);
    }
    let (open, _closed) = mpsc::channel::<()>(1);
    let door = Arc::new(WorkerDoor::new(
        front.clone(),
        logs.clone(),
        Arc::clone(&limits),
    ));
    let worker_socket_mode = if layout.worker_socket.starts_with(&layout.state_dir) {
        0o600
    } else {
        0o666
    };
    let workers = listener::bind(&layout.worker_socket, worker_socket_mode)
        .await
        .map_err(io_err("cannot listen on", &layout.worker_socket))?;
    let mut tcp = TcpListeners::new(
        Arc::clone(&door),
        open.clone(),
        Arc::clone(&tls_status),
        layout.state_dir.clone(),
    );
    let mut settings = config.master.clone();
    settings.worker_listen = worker_listen;
    tcp.apply(&settings)?;
    let control_listener = listener::bind(&layout.control_socket, limits.control_socket_mode())
        .await
        .map_err(io_err("cannot listen on", &layout.control_socket))?;
    if let Some(gid) = limits.allowed_gid {
        std::os::unix::fs::chown(&layout.control_socket, None, Some(gid)).map_err(io_err(
            "cannot give the control socket to its group:",
            &layout.control_socket,
        ))?;
    }
    notify::ready();
    let ctx = control::ControlContext {
        limits: Arc::clone(&limits),
        clients: Arc::new(control::ClientSlots::default()),
        master: front.clone(),
        logs,
        worker_socket: layout.worker_socket.clone(),
    };
    // The accept loops stop (giving their sockets back) once told.
    let (hand_over_tx, hand_over) = watch::channel(false);
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let control_task = tokio::spawn(listeners::accept_until(
        "control".into(),
        control_listener,
        open.clone(),
        move |stream| control::serve(stream, ctx.clone()),
        until(hand_over.clone()),
    ));
    let worker_door = Arc::clone(&door);
    let worker_task = tokio::spawn(listeners::accept_until(
        "worker".into(),
        workers,
        open,
        move |stream| Arc::clone(&worker_door).serve_unix(stream),
        until(hand_over),
    ));
    drop(door);
    let mut serving = tokio::spawn(standby::serve(
        Standby {
            config: Arc::clone(&config),
            db: Arc::clone(&heartbeat),
            read_state,
            started_at_ms: crate::paths::now_ms(),
        },
        rx,
    ));
    info!(
        pid = std::process::id(),
        name = %me.name,
        address = me.address.as_deref().unwrap_or("-"),
        control_socket = %layout.control_socket.display(),
        "bbmaster started as a standby; campaigning for the leadership"
    );

    // The campaign on a thread of its own (see `thread`).
    let mut campaigning = {
        let (leadership, heartbeat, me) =
            (Arc::clone(&leadership), Arc::clone(&heartbeat), me.clone());
        OwnThread::spawn("bb-campaign", async move {
            campaign::campaign(&leadership, &heartbeat, &me, lease).await
        })
        .map_err(io_err(
            "cannot start the campaign's thread",
            &layout.state_dir,
        ))?
    };
    let outcome = tokio::select! {
        won = campaigning.join() => match won {
            Some(won) => won.map(Some),
            None => Err(LeaderError::Thread("campaign")),
        },
        end = &mut serving => {
            if !matches!(end, Ok(StandbyEnd::Shutdown)) {
                warn!("the standby's loop ended unexpectedly");
            }
            Ok(None)
        }
        () = signals.forward_to(&front) => Ok(None),
    };
    // Whatever happened: the standby's servers stop; its connections are
    // told (`stopping`) and close; its Unix sockets stay bound for the
    // leader (TCP listeners are closed and bound again by it).
    let _ = stopping_tx.send(true);
    let _ = hand_over_tx.send(true);
    serving.abort();
    let control = control_task.await;
    let worker = worker_task.await;
    tcp.close().await;
    drop(tcp);
    let sockets = match (control, worker) {
        (Ok(control), Ok(worker)) => Some(Sockets { control, worker }),
        _ => None,
    };
    match outcome {
        Ok(Some(won)) => Ok(Outcome::Won(Box::new(Office {
            epoch: won.epoch,
            won_at: won.sent_at,
            leadership,
            heartbeat,
            lease,
            me,
            sockets,
        }))),
        Ok(None) => {
            stopped(&heartbeat, &me).await;
            info!("bbmaster (standby) stopped");
            Ok(Outcome::Stopped)
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`stand_by_on_postgres`] needs from the master's start-up.
pub struct PgStart<'a> {
    /// `[master] store = { postgres = ... }`.
    pub settings: &'a crate::config::PostgresSettings,
    /// The config as read at start.
    pub config: Arc<Config>,
    /// The sockets' paths and the state dir.
    pub layout: &'a Layout,
    /// `worker_listen`, or `--worker-listen`.
    pub worker_listen: Vec<SocketAddr>,
    /// This master.
    pub me: Identity,
    /// The logs (in the shared dir).
    pub logs: PathBuf,
    /// The artifacts (in the shared dir).
    pub artifacts: PathBuf,
}

/// Open what a standby needs on PostgreSQL (the schema migrated first,
/// so `bb_leader` exists; the leadership and heartbeat connections; a
/// store for read-only restores and a reader for the history), then
/// [`stand_by`].
pub async fn stand_by_on_postgres(
    start: PgStart<'_>,
    signals: &mut MasterSignals,
) -> Result<Outcome, DaemonError> {
    use crate::daemon::store::pg;
    let settings = start.settings.clone();
    let opened = tokio::task::spawn_blocking(move || {
        // PgStore::open migrates (under the migration lock).
        let store = pg::PgStore::open(&settings, None)?;
        let reader = pg::PgReader::open(&settings)?;
        let leadership = pg::connect(&settings, "bbmaster leadership")?;
        let heartbeat = pg::connect(&settings, "bbmaster heartbeat")?;
        Ok::<_, crate::daemon::store::StoreError>((store, reader, leadership, heartbeat))
    })
    .await
    .map_err(|e| DaemonError::LocalWorkers(format!("the database connections failed: {e}")))?;
    let (store, reader, leadership, heartbeat) = opened?;
    let store = std::sync::Mutex::new(store);
    let read_state: ReadState = Arc::new(move || {
        store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore_read_only()
            .map_err(|e| e.to_string())
    });
    let mut limits = Limits::from_settings(&start.config.master);
    limits.dirs = crate::daemon::transfer::Dirs::new(
        &start.layout.state_dir,
        start.config.master.transfer_dir.as_deref(),
    );
    limits.dirs.artifacts = start.artifacts;
    limits.worker_socket = start.layout.worker_socket.clone();
    let setup = StandbySetup {
        lease: Lease::new(start.settings.lease),
        history: Some(History::new(Arc::new(reader), start.logs.clone())),
        config: start.config,
        layout: start.layout.clone(),
        limits: Arc::new(limits),
        logs: start.logs,
        worker_listen: start.worker_listen,
        me: start.me,
        read_state,
        leadership,
        heartbeat,
    };
    stand_by(setup, signals).await
}
