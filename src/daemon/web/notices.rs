//! The master's notices (a log grew, a step or build ended) as the web's
//! followed logs see them: one task subscribes to the front door for the
//! whole web server and passes on what followers care about, on a
//! channel of the web's own runtime.
//!
//! Why not a subscription per follower: the master sends a notice each
//! time a step's log grows (a few per 64 KiB of output), and a broadcast
//! wakes every receiver from the thread that sends, here a worker link's
//! on the master's runtime. With 200 followers that was 200 cross-thread
//! wake-ups per notice, seconds of the master's CPU for a 10 MB log
//! (docs/benchmarks.md, web-sse). Relayed, the master wakes one task and
//! the fan-out runs on the web's threads.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::daemon::core::Record;
use crate::daemon::handle::MasterHandle;
use crate::daemon::messages::Notice;
use crate::protocol::{BuildId, StepIndex};

/// How many notices a slow follower may fall behind before it is told
/// it missed some ([`Relayed::Missed`]; it then looks at the log and
/// asks whether its step ended).
const CAPACITY: usize = 1024;

/// What the relay passes on.
#[derive(Debug, Clone)]
pub enum Relayed {
    /// A notice of a log's growth or of a step's or build's end.
    Notice(Arc<Notice>),
    /// The relay fell behind the master and lost notices: look again.
    Missed,
}

/// What a follower of `build`'s `step` makes of one relayed item:
/// `Some(true)` its log grew, `Some(false)` it may have ended (or news
/// was missed: look), `None` nothing to do with it.
pub fn concerns(item: &Relayed, build: BuildId, step: StepIndex) -> Option<bool> {
    match item {
        Relayed::Missed => Some(false),
        Relayed::Notice(n) => match &**n {
            Notice::Output { build: b, step: s } if *b == build && *s == step => Some(true),
            Notice::Record(
                Record::StepFinished { build: b, .. }
                | Record::BuildFinished { build: b, .. }
                | Record::BuildRetried { build: b, .. },
            ) if *b == build => Some(false),
            _ => None,
        },
    }
}

/// Is this notice of use to any follower?
fn wanted(notice: &Notice) -> bool {
    matches!(
        notice,
        Notice::Output { .. }
            | Notice::Record(
                Record::StepFinished { .. }
                    | Record::BuildFinished { .. }
                    | Record::BuildRetried { .. }
            )
    )
}

/// The web's one subscription to the master's notices.
pub struct Relay {
    tx: broadcast::Sender<Relayed>,
}

impl Relay {
    /// Subscribe to `master`'s notices and pass them on from a task of
    /// the current runtime (the web's).
    pub fn start(master: &MasterHandle) -> Arc<Relay> {
        let (tx, _) = broadcast::channel(CAPACITY);
        let mut rx = master.subscribe_notices();
        let out = tx.clone();
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                let item = match rx.recv().await {
                    Ok(n) if wanted(&n) => Relayed::Notice(n),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => Relayed::Missed,
                    Err(RecvError::Closed) => return,
                };
                // No follower listening is fine.
                let _ = out.send(item);
            }
        });
        Arc::new(Relay { tx })
    }

    /// A receiver of what is relayed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Relayed> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_hears_its_step_and_its_build_only() {
        let grew = |build, step| Relayed::Notice(Arc::new(Notice::Output { build, step }));
        assert_eq!(concerns(&grew(7, 1), 7, 1), Some(true));
        assert_eq!(concerns(&grew(7, 2), 7, 1), None);
        assert_eq!(concerns(&grew(8, 1), 7, 1), None);
        assert_eq!(concerns(&Relayed::Missed, 7, 1), Some(false));
    }
}
