//! `bbmaster`: the I/O shell around the pure [`core`].
//!
//! Start-up takes the state dir's lock, opens the store, restores the
//! queue, binds both sockets, starts local workers, and then runs three
//! kinds of task: the master loop ([`actor`]) that owns the core, one task
//! per control connection ([`control`]), and one per worker connection
//! ([`worker_link`]). Signals: `SIGHUP` reloads, `SIGTERM`/`SIGINT` stop.

pub mod actor;
pub mod args;
pub mod auth;
pub mod client_slots;
pub mod config_read;
pub mod control;
pub mod core;
pub mod dirs;
pub mod follow;
pub mod handle;
pub mod handlers;
pub mod history;
pub mod irc;
pub mod leader;
pub mod limits;
pub mod lineage;
pub mod listener;
pub mod listeners;
pub mod local_workers;
pub mod lock;
pub mod login_gate;
pub mod logs;
pub mod messages;
pub mod notify;
pub mod peer;
pub mod pollers;
pub mod quota;
pub mod retention;
pub mod signals;
pub mod stale;
mod startup;
pub mod state_dir;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod web;
pub mod worker_link;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::paths;

pub use startup::{DaemonError, Layout, MasterOptions, files_root, load_config};
use startup::{http_settings, io_err, listen_settings, open_store};

/// Run a master until it is told to stop.
pub async fn run(opts: MasterOptions) -> Result<(), DaemonError> {
    // Before anything is bound or locked: see `signals`.
    let mut signals = signals::MasterSignals::install().map_err(DaemonError::Signals)?;
    // What a step detaches and leaves behind when it kills its local worker
    // is reparented to the master, not to init, so the control socket still
    // knows it for build code (see `lineage`); the master reaps it.
    if let Err(e) = crate::worker::reaper::adopt_orphans() {
        warn!("cannot become the subreaper of the local workers' processes: {e}");
    }
    tokio::spawn(crate::worker::reaper::reap_forever());
    let mut config = Arc::new(load_config(&opts)?);
    let layout = Layout::resolve(&opts, &config);
    if layout.state_dir.exists() && !layout.state_dir.is_dir() {
        return Err(DaemonError::Io {
            what: "the state dir is not a directory:",
            path: layout.state_dir.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&layout.state_dir)
        .map_err(io_err("cannot create state dir", &layout.state_dir))?;
    state_dir::check(&layout.state_dir)?;
    let _lock = lock::StateLock::acquire(&layout.state_dir)?;
    // Who this master is among others (`--name`, `--advertise`).
    let identity = leader::Identity::resolve(
        opts.name.clone(),
        opts.advertise.clone(),
        &listen_settings(&opts, &config.master).worker_listen,
        config.master.allow_plaintext,
    );
    let mut seat = leader::Seat::sqlite(identity.clone());
    // Logs and artifacts: in the state dir, or with PostgreSQL in the
    // shared dir every master reaches (docs/postgres.md).
    let files_root = files_root(&config, &layout.state_dir);
    // The shared dir is made by whoever mounts the shared storage, never
    // by us: a missing one is an unmounted share, and logs written under
    // its mount point would be lost to the next leader.
    if config.master.store.postgres().is_some() && !files_root.is_dir() {
        return Err(DaemonError::Io {
            what: "master.store.shared_dir is not a directory (is the shared storage mounted?):",
            path: files_root,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let logs_dir = logs::logs_dir(&files_root);
    std::fs::create_dir_all(&logs_dir).map_err(io_err("cannot create", &logs_dir))?;
    logs::ensure_reserve(&logs_dir);

    // On a shared PostgreSQL store this master is a standby until it wins
    // the leadership (docs/standby.md); then it reads the config file
    // again and starts as a restarted master does, its store fenced by
    // the epoch it won.
    let mut office = match config.master.store.postgres() {
        None => None,
        Some(settings) => {
            let start = leader::phase::PgStart {
                settings,
                config: Arc::clone(&config),
                layout: &layout,
                worker_listen: listen_settings(&opts, &config.master).worker_listen,
                me: identity.clone(),
                logs: logs_dir.clone(),
                artifacts: transfer::Dirs::new(&files_root, None).artifacts,
            };
            match leader::phase::stand_by_on_postgres(start, &mut signals).await? {
                leader::phase::Outcome::Stopped => return Ok(()),
                leader::phase::Outcome::Won(office) => Some(*office),
            }
        }
    };
    // A standby's Unix sockets, still bound: the leader serves them.
    let (handed_control, handed_worker) = match office.as_mut().and_then(|o| o.sockets.take()) {
        Some(s) => (Some(s.control), Some(s.worker)),
        None => (None, None),
    };
    if let Some(office) = &office {
        seat = office.seat();
        match load_config(&opts) {
            Ok(fresh) if fresh.master.store == config.master.store => config = Arc::new(fresh),
            Ok(_) => warn!(
                "the config file's `store` changed while this master was a standby: a restart-only setting; keeping the one read at start"
            ),
            Err(e) => warn!(
                "the config file cannot be read again at the takeover ({e}); keeping the one read at start"
            ),
        }
    }

    let store::Opened {
        mut store,
        reader,
        database,
    } = open_store(&config, &layout.state_dir, office.as_ref().map(|o| o.epoch))?;
    let restored = store.restore(paths::now_ms())?;
    let store_name = database.to_string();
    let queued = restored.queued.len();
    let known_builds = restored.next_build.saturating_sub(1);
    let core = core::Core::new(Arc::clone(&config), restored, paths::now_ms());
    for d in core.dropped_at_start() {
        warn!(
            scheduler = %d.scheduler,
            changes = ?d.changes,
            "pending changes dropped at start: the scheduler no longer takes them (removed or changed while the master was down)"
        );
    }

    let mut limits = limits::Limits::from_settings(&config.master);
    limits.dirs = transfer::Dirs::new(&layout.state_dir, config.master.transfer_dir.as_deref());
    limits.dirs.artifacts = transfer::Dirs::new(&files_root, None).artifacts;
    limits.worker_socket = layout.worker_socket.clone();
    stale::check(
        &[&logs_dir, &limits.dirs.artifacts],
        known_builds,
        &database,
    )?;
    limits
        .dirs
        .prepare()
        .map_err(io_err("cannot prepare", &limits.dirs.artifacts))?;
    let limits = Arc::new(limits);
    let separation = local_workers::separation(&config, &layout.state_dir, &layout.worker_socket)
        .map_err(DaemonError::LocalWorkers)?;
    if !separation.shared.is_empty() {
        warn!(
            "local worker(s) {} run as this master's own user (uid {}): their build steps can \
             read and change the state dir (database, logs, secrets); give them `user = \"...\"` \
             (master as root) or use workers under another user (docs/security.md)",
            separation.shared.join(", "),
            nix::unistd::geteuid()
        );
    }
    // The loop's channels and the front door come first: the listeners
    // bound below serve connections through them.
    let (notices, _) = broadcast::channel(1024);
    let (events, _) = broadcast::channel(4096);
    let (tx, rx) = mpsc::channel(256);
    let retention = retention::RetentionHandle::new(retention::Places {
        db: database,
        logs: logs_dir.clone(),
        artifacts: limits.dirs.artifacts.clone(),
    });
    // Set once the loop has ended: every control connection listens.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let tls_status = listeners::set::SharedStatus::default();
    let poller_status = pollers::status::SharedStatus::default();
    let irc_status = irc::SharedStatus::default();
    // A leader writes logs and artifacts only while its lease holds.
    let files = office.as_ref().map_or_else(
        leader::write_lease::WriteLease::unlimited,
        leader::phase::Office::write_lease,
    );
    let front = handle::MasterHandle::new(tx.clone(), notices.clone(), events.clone())
        .with_retention(retention.clone())
        .with_history(history::History::new(reader, logs_dir.clone()))
        .with_policy(auth::Policy::from_settings(
            &config.master,
            nix::unistd::geteuid().as_raw(),
        ))
        .with_shutdown(stopping)
        .with_listeners(Arc::clone(&tls_status))
        .with_pollers(poller_status.map())
        .with_irc(Arc::clone(&irc_status))
        .with_seat(seat)
        .with_write_lease(files.clone());
    // Every connection task holds a clone of `open`: when all are gone,
    // `closed` yields None (mini-redis' shutdown-complete pattern), so the
    // master can let the last answers (say, to `bbctl shutdown`) be written.
    let (open, mut closed) = mpsc::channel::<()>(1);
    let door = Arc::new(listeners::WorkerDoor::new(
        front.clone(),
        logs_dir.clone(),
        Arc::clone(&limits),
    ));

    // A worker socket moved out of the owner-only state dir is there to be
    // reached by workers of other users (a local worker's `user`, a
    // bbworker run by a user of its own): open it to all; workers prove
    // themselves with their secrets, and build steps are refused by their
    // ancestry. In the state dir it stays owner-only.
    let worker_socket_mode = if layout.worker_socket.starts_with(&layout.state_dir) {
        0o600
    } else {
        0o666
    };
    let workers = match handed_worker {
        Some(socket) => socket,
        None => listener::bind(&layout.worker_socket, worker_socket_mode)
            .await
            .map_err(io_err("cannot listen on", &layout.worker_socket))?,
    };
    // The TCP listeners (`worker_listen`) next, also before the control
    // socket, so that `bbctl status` shows them as soon as it answers.
    let mut tcp = listeners::set::TcpListeners::new(
        Arc::clone(&door),
        open.clone(),
        Arc::clone(&tls_status),
        layout.state_dir.clone(),
    );
    tcp.apply(&listen_settings(&opts, &config.master))?;
    // The web server (`[http]`, `--http`), before the control socket too.
    let web_task = match http_settings(&opts, &config) {
        None => None,
        Some(settings) => {
            let tls = if settings.tls {
                let identity = tls::identity(&config.master, &layout.state_dir)
                    .map_err(web::WebError::from)?;
                Some(tls::server_config(&identity, None).map_err(web::WebError::from)?)
            } else {
                None
            };
            // On threads of its own (`web::runtime`): streaming to many
            // clients never takes this runtime's threads from the loop.
            Some(
                web::Running::start(
                    front.clone(),
                    logs_dir.clone(),
                    limits.dirs.clone(),
                    settings,
                    tls,
                    open.clone(),
                )
                .await?,
            )
        }
    };
    // The control socket last: a client (or a test) that reaches it finds
    // the worker sockets bound too.
    let control = match handed_control {
        Some(socket) => socket,
        None => listener::bind(&layout.control_socket, limits.control_socket_mode())
            .await
            .map_err(io_err("cannot listen on", &layout.control_socket))?,
    };
    if let Some(gid) = limits.allowed_gid {
        std::os::unix::fs::chown(&layout.control_socket, None, Some(gid)).map_err(io_err(
            "cannot give the control socket to its group:",
            &layout.control_socket,
        ))?;
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
    // Every socket takes connections from here on: tell systemd (Type=notify).
    notify::ready();

    let local = local_workers::LocalWorkers::new(local_workers::LocalWorkerSetup {
        exe: local_workers::LocalWorkers::default_exe(),
        worker_socket: layout.worker_socket.clone(),
        dir: layout.state_dir.join("workers"),
        work: local_workers::work_root(&layout.state_dir),
        keep: layout.state_dir.join("local-workers"),
    });
    let mut master = actor::Master::new(
        core,
        store,
        notices.clone(),
        events,
        opts.config.clone(),
        local,
    );
    master.set_queue(&tx);
    info!(
        pid = std::process::id(),
        config = %config.origin,
        state_dir = %layout.state_dir.display(),
        control_socket = %layout.control_socket.display(),
        store = %store_name,
        queued,
        "bbmaster started"
    );

    // Retention asks the front door for the policy in force, like any adapter.
    let retention_task = tokio::spawn({
        let front = front.clone();
        retention.run(move || {
            let front = front.clone();
            async move { front.config().await }
        })
    });
    let ctx = control::ControlContext {
        limits: Arc::clone(&limits),
        clients: Arc::new(control::ClientSlots::default()),
        master: front.clone(),
        logs: logs_dir.clone(),
        worker_socket: layout.worker_socket.clone(),
    };
    let control_task = tokio::spawn(listeners::accept_loop(
        "control".into(),
        control,
        open.clone(),
        move |stream| control::serve(stream, ctx.clone()),
    ));
    let worker_door = Arc::clone(&door);
    let worker_task = tokio::spawn(listeners::accept_loop(
        "worker".into(),
        workers,
        open.clone(),
        move |stream| Arc::clone(&worker_door).serve_unix(stream),
    ));
    drop(door);
    // The TCP listeners follow reloads: addresses opened and closed,
    // certificates replaced for new connections.
    let mut configs = master.config_watch();
    let listen_opts = opts.clone();
    let tcp_task = tokio::spawn(async move {
        while configs.changed().await.is_ok() {
            let config = Arc::clone(&configs.borrow_and_update());
            tcp.reload(&listen_settings(&listen_opts, &config.master));
        }
    });
    // The git pollers follow reloads too: one task each, an unchanged
    // poller untouched (docs/pollers.md).
    let mut poller_set = pollers::PollerSet::new(
        pollers::sink::HandleSink(front.clone()),
        layout.state_dir.join("pollers"),
        poller_status,
    );
    poller_set.apply(&config.pollers);
    let mut poller_configs = master.config_watch();
    let poller_task = tokio::spawn(async move {
        while poller_configs.changed().await.is_ok() {
            let config = Arc::clone(&poller_configs.borrow_and_update());
            poller_set.apply(&config.pollers);
        }
    });
    drop(open);
    // The IRC bot, whenever the config has `[irc]` (docs/irc.md).
    let irc_task = tokio::spawn(irc::supervise(
        front.clone(),
        master.config_watch(),
        layout.state_dir.clone(),
        irc_status,
    ));
    let signal_task = tokio::spawn(signals.forward(front));
    drop(tx);

    // A leader on PostgreSQL renews its lease beside the loop, and stops
    // at once when it cannot (docs/standby.md).
    let config_hash: leader::lease::ConfigInfo = {
        let configs = master.config_watch();
        Box::new(move || Some(configs.borrow().hash.clone()))
    };
    let outcome = match &office {
        None => master.run(rx).await.map_err(DaemonError::Store),
        Some(office) => {
            // The renewals run on a thread of their own: the loop's store
            // calls block the runtime's threads (see `leader::thread`).
            let mut holder = office
                .hold(config_hash, files)
                .map_err(io_err("cannot start the lease's thread", &layout.state_dir))?;
            tokio::select! {
                out = master.run(rx) => out.map_err(|e| match e {
                    e if e.is_fenced() => DaemonError::Leadership(leader::LeaderError::Fenced(e.to_string())),
                    e => DaemonError::Store(e),
                }),
                lost = holder.join() => Err(DaemonError::Leadership(lost.unwrap_or_else(|| {
                    leader::LeaderError::Thread("lease")
                }))),
            }
        }
    };
    // A store that failed because another master took over (it ended
    // this master's sessions) is a lost leadership, and says so.
    let outcome = match (outcome, &office) {
        (Err(DaemonError::Store(e)), Some(office)) => {
            Err(match leader::registry::leader(&office.heartbeat).await {
                Ok(row) if row.epoch != office.epoch => {
                    DaemonError::Leadership(leader::LeaderError::Superseded {
                        mine: office.epoch,
                        current: row.epoch,
                    })
                }
                _ => DaemonError::Store(e),
            })
        }
        (outcome, _) => outcome,
    };

    let _ = stopping_tx.send(true);
    control_task.abort();
    worker_task.abort();
    tcp_task.abort();
    poller_task.abort();
    signal_task.abort();
    retention_task.abort();
    if let Some(web) = &web_task {
        web.stop_accepting();
    }
    // Let the aborted accept loops drop their listeners (removing the socket files).
    let _ = control_task.await;
    let _ = worker_task.await;
    let _ = tcp_task.await;
    // Give connections a moment to write their last answers and goodbyes.
    // Every connection was told (`stopping`) and closes now: control
    // connections and streams at once, worker links once they have written
    // what the loop queued for them. The bound is for a peer that stopped
    // reading; reaching it is worth a line in the log.
    if tokio::time::timeout(std::time::Duration::from_secs(1), closed.recv())
        .await
        .is_err()
    {
        warn!("connections still open 1 s after the master loop ended; leaving them");
    }
    // The web's threads stop now (its connections have ended, or been left).
    drop(web_task);
    // The IRC bot says QUIT when told of the shutdown; a server that does
    // not take it in a moment is left.
    if tokio::time::timeout(std::time::Duration::from_secs(2), irc_task)
        .await
        .is_err()
    {
        warn!("the IRC bot did not quit within 2 s; leaving it");
    }
    match outcome {
        Ok(()) => {
            if let Some(office) = &office {
                leader::phase::stopped(&office.heartbeat, &office.me).await;
            }
            info!("bbmaster stopped");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
