//! The IRC bot: one more adapter on the front door (docs/irc.md).
//!
//! It asks the master only through [`MasterHandle`], as a
//! [`crate::daemon::auth::Principal::IrcAccount`], so the rules of who may
//! `force` or `stop` live in `crate::daemon::auth` with everyone else's.
//! The pure parts (the line codec [`line`], the connection's state machine
//! [`session`], flood control [`flood`], commands [`commands`] and
//! notifications [`notify`]) are unit-tested without I/O; [`bot`] and
//! [`conn`] are the thin tokio shell.

pub mod bot;
pub mod commands;
pub mod conn;
pub mod flood;
pub mod line;
pub mod notify;
pub mod prefs;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use crate::config::Config;
use crate::daemon::auth::Principal;
use crate::daemon::handle::MasterHandle;

/// Where the bot stands, shared with `status` (see [`MasterHandle::with_irc`]).
pub type SharedStatus = Arc<std::sync::RwLock<Option<crate::protocol::IrcStatus>>>;

/// Runs the bot whenever the config in force has `[irc]`: started at
/// start-up or by the reload that adds it, stopped by the one that
/// removes it. Ends when the master stops.
pub async fn supervise(
    master: MasterHandle,
    mut configs: watch::Receiver<Arc<Config>>,
    state_dir: PathBuf,
    status: SharedStatus,
) {
    loop {
        let settings = configs.borrow_and_update().irc.clone();
        if let Some(settings) = settings {
            let events = match master.subscribe_events(&Principal::IrcAccount { account: None }) {
                Ok(events) => events,
                Err(e) => {
                    warn!("irc: cannot follow the master's events: {}", e.message);
                    return;
                }
            };
            let prefs = prefs::Prefs::load(Some(&state_dir));
            let removed = bot::Bot::new(
                master.clone(),
                settings,
                configs.clone(),
                events,
                prefs,
                status.clone(),
            )
            .run()
            .await;
            *status.write().unwrap_or_else(|e| e.into_inner()) = None;
            if !removed {
                return;
            }
            // [irc] removed; if a later reload already brought it back,
            // start again.
            if configs.borrow_and_update().irc.is_some() {
                continue;
            }
        }
        tokio::select! {
            changed = configs.changed() => if changed.is_err() { return },
            _ = master.shutting_down() => return,
        }
    }
}
