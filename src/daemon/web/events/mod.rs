//! `/api/v1/events`: the master's events (those of `bbctl events --json`)
//! as server-sent events, each with an `id:` so that a client that lost
//! its connection resumes with `Last-Event-ID` without loss or doubles.
//!
//! One task ([`EventLog::start`]) subscribes once to the front door and
//! numbers every event in order, keeping the last [`KEEP`] in memory. A
//! client copies what follows its `Last-Event-ID` from that log and
//! subscribes to what comes next under the same lock, so no event falls
//! between the two; live events at or below the last id sent are skipped,
//! so none comes twice. Ids are `RUN.N`: `RUN` names this master's run
//! (its start time in ms), so an id from an earlier run is recognised.
//! When a client cannot be resumed (another run, or older than the log
//! keeps) it gets a `lagged` event first: read `status` again. A slow
//! client that falls behind the live channel catches up from the log.
//!
//! The pages answer `Accept: text/event-stream` with the same stream cut
//! to what the page shows ([`Topic`]): every event keeps its number, so a
//! page's stream resumes with `Last-Event-ID` like the whole one. To know
//! which builder a step's or a request's event concerns, the numbering
//! task learns which builder each request and build belongs to from the
//! events that name both (seeded at start with the queue and the running
//! builds), in a bounded map ([`KNOWN`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};

use super::Web;
use super::respond::{WebFail, stamped};
use crate::daemon::handle::MasterHandle;
use crate::protocol::{BuildId, Event, EventKind, Reply, RequestId, StatusFilter};

/// How many numbered events are kept for resuming clients.
pub const KEEP: usize = 4096;
/// How often an idle stream carries a comment, so proxies keep it open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a client's browser waits before it reconnects (`retry:`).
const RETRY: Duration = Duration::from_secs(1);
/// How many requests and builds the numbering task remembers the builder
/// of (the oldest are forgotten first).
pub const KNOWN: usize = 65_536;

/// What one event concerns, for the pages' streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The builder it concerns, when known.
    pub builder: Option<Arc<str>>,
    /// The build it concerns.
    pub build: Option<BuildId>,
    /// It changes the queue (queued, started, cancelled, merged, retried,
    /// the master draining).
    pub queue: bool,
    /// A `lagged` notice: every stream passes it on.
    pub lagged: bool,
}

/// Which events a stream carries: all (`/api/v1/events`, `/`), or those
/// of one build page, one builder page, or the queue page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// Every event.
    All,
    /// The events of build N (`/builds/N`).
    Build(BuildId),
    /// The events of a builder's requests and builds (`/builders/NAME`).
    Builder(String),
    /// The events that change the queue (`/queue`).
    Queue,
}

impl Topic {
    /// Does a stream of this topic carry an event of `scope`?
    pub fn wants(&self, scope: &Scope) -> bool {
        scope.lagged
            || match self {
                Topic::All => true,
                Topic::Build(b) => scope.build == Some(*b),
                Topic::Builder(name) => scope.builder.as_deref() == Some(name.as_str()),
                Topic::Queue => scope.queue,
            }
    }
}

/// One event with its number, as sent.
#[derive(Debug)]
pub struct Numbered {
    /// Its number in this run.
    pub seq: u64,
    /// Its JSON (`bbctl events --json`'s line).
    pub json: String,
    /// What it concerns.
    pub scope: Scope,
}

/// Which builder each request and build belongs to, learned from the
/// events; the oldest of [`KNOWN`] are forgotten first.
#[derive(Default)]
struct Owners {
    requests: HashMap<RequestId, Arc<str>>,
    builds: HashMap<BuildId, Arc<str>>,
    order: VecDeque<(bool, u64)>,
}

impl Owners {
    fn learn(&mut self, build: bool, id: u64, builder: &Arc<str>) {
        let map = if build {
            &mut self.builds
        } else {
            &mut self.requests
        };
        if map.insert(id, Arc::clone(builder)).is_none() {
            self.order.push_back((build, id));
        }
        while self.order.len() > KNOWN {
            if let Some((b, old)) = self.order.pop_front() {
                if b {
                    self.builds.remove(&old);
                } else {
                    self.requests.remove(&old);
                }
            }
        }
    }

    fn builder(&mut self, kind: &EventKind) -> Option<Arc<str>> {
        match kind {
            EventKind::BuildQueued {
                request, builder, ..
            } => {
                let name: Arc<str> = Arc::from(builder.as_str());
                self.learn(false, *request, &name);
                Some(name)
            }
            EventKind::BuildStarted {
                build,
                request,
                builder,
                ..
            } => {
                let name: Arc<str> = Arc::from(builder.as_str());
                self.learn(false, *request, &name);
                self.learn(true, *build, &name);
                Some(name)
            }
            EventKind::StepStarted { build, .. }
            | EventKind::StepFinished { build, .. }
            | EventKind::BuildFinished { build, .. } => self.builds.get(build).cloned(),
            EventKind::BuildRetried { build, request, .. } => {
                let name = self.builds.get(build).cloned();
                if let Some(name) = &name {
                    self.learn(false, *request, name);
                }
                name
            }
            EventKind::RequestSkipped { request, build, .. } => self
                .requests
                .get(request)
                .or_else(|| self.builds.get(build))
                .cloned(),
            EventKind::RequestCancelled { request, .. } => self.requests.get(request).cloned(),
            _ => None,
        }
    }
}

/// What `event` concerns (learning owners on the way).
fn scope_of(owners: &mut Owners, event: &Event) -> Scope {
    let kind = &event.kind;
    let build = match kind {
        EventKind::BuildStarted { build, .. }
        | EventKind::StepStarted { build, .. }
        | EventKind::StepFinished { build, .. }
        | EventKind::BuildFinished { build, .. }
        | EventKind::BuildRetried { build, .. }
        | EventKind::RequestSkipped { build, .. } => Some(*build),
        _ => None,
    };
    let queue = matches!(
        kind,
        EventKind::BuildQueued { .. }
            | EventKind::BuildStarted { .. }
            | EventKind::BuildRetried { .. }
            | EventKind::RequestSkipped { .. }
            | EventKind::RequestCancelled { .. }
            | EventKind::MasterDraining { .. }
    );
    Scope {
        builder: owners.builder(kind),
        build,
        queue,
        lagged: matches!(kind, EventKind::Lagged { .. }),
    }
}

struct Kept {
    /// The number the next event gets.
    next: u64,
    /// The last [`KEEP`] events, oldest first.
    events: VecDeque<Arc<Numbered>>,
    /// Who owns which request and build.
    owners: Owners,
}

/// The numbered log of recent events behind every SSE stream.
pub struct EventLog {
    run: u64,
    kept: Mutex<Kept>,
    live: broadcast::Sender<Arc<Numbered>>,
}

impl EventLog {
    /// Subscribe to the master's events and number them from now on.
    pub fn start(master: &MasterHandle) -> Arc<EventLog> {
        let log = Arc::new(EventLog {
            run: crate::paths::now_ms(),
            kept: Mutex::new(Kept {
                next: 1,
                events: VecDeque::new(),
                owners: Owners::default(),
            }),
            live: broadcast::channel(1024).0,
        });
        match master.subscribe_events(&super::Web::anonymous()) {
            Ok(rx) => {
                let log = Arc::clone(&log);
                let master = master.clone();
                tokio::spawn(async move {
                    // Subscribed first, so nothing falls between what
                    // the seed shows and the events that follow it.
                    log.seed(&master).await;
                    log.feed(rx).await;
                });
            }
            Err(e) => tracing::warn!("http: no event stream: {}", e.message),
        }
        log
    }

    /// Learn the builders of the queued requests and running builds the
    /// master has now (restored at start), whose events name no builder.
    async fn seed(&self, master: &MasterHandle) {
        let who = super::Web::anonymous();
        let status = master.status(&who, StatusFilter::default()).await;
        let queue = master.queue(&who, None).await;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Reply::Status(status)) = status {
            for b in &status.builders {
                let name: Arc<str> = Arc::from(b.name.as_str());
                for build in &b.running_builds {
                    kept.owners.learn(true, *build, &name);
                }
            }
        }
        if let Ok(Reply::Queue(queue)) = queue {
            for q in &queue {
                kept.owners
                    .learn(false, q.request, &Arc::from(q.builder.as_str()));
            }
        }
    }

    async fn feed(self: Arc<Self>, mut rx: broadcast::Receiver<Arc<Event>>) {
        use broadcast::error::RecvError;
        loop {
            let event = match rx.recv().await {
                Ok(e) if matches!(e.kind, EventKind::Subscribed) => continue,
                Ok(e) => e,
                Err(RecvError::Lagged(missed)) => Arc::new(Event {
                    at_ms: crate::paths::now_ms(),
                    generation: 0,
                    kind: EventKind::Lagged { missed },
                }),
                Err(RecvError::Closed) => return,
            };
            self.push(&event);
        }
    }

    /// Number `event`, keep it, and send it to the live streams.
    pub fn push(&self, event: &Event) {
        let json = stamped(event).to_string();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let scope = scope_of(&mut kept.owners, event);
        let numbered = Arc::new(Numbered {
            seq: kept.next,
            json,
            scope,
        });
        kept.next += 1;
        if kept.events.len() == KEEP {
            kept.events.pop_front();
        }
        kept.events.push_back(Arc::clone(&numbered));
        // Sent under the lock: a client that copies the log and subscribes
        // under it sees every event in exactly one of the two.
        let _ = self.live.send(numbered);
    }

    /// The id of event `seq` on the wire.
    pub fn id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.run)
    }

    /// Where a client resumes: `Ok(seq)` (the last one it saw; 0 from
    /// the start of this run) or `Err(())` when the id is not of this run.
    fn resume_point(&self, last_event_id: Option<&str>) -> Result<Option<u64>, ()> {
        let Some(id) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let (run, seq) = id.split_once('.').ok_or(())?;
        if run.parse::<u64>() != Ok(self.run) {
            return Err(());
        }
        seq.parse().map(Some).map_err(|_| ())
    }

    /// The events after `after` still kept (`None`: older ones are gone)
    /// and a live receiver for the rest, taken together.
    fn follow(&self, after: Option<u64>) -> Following {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.live.subscribe();
        let last = kept.next - 1;
        let backlog = match after {
            None => Some(Vec::new()),
            Some(after) => {
                let oldest = kept.events.front().map_or(kept.next, |e| e.seq);
                if after + 1 < oldest {
                    None
                } else {
                    Some(
                        kept.events
                            .iter()
                            .filter(|e| e.seq > after)
                            .cloned()
                            .collect(),
                    )
                }
            }
        };
        (backlog, after.unwrap_or(last), rx)
    }
}

/// What a client starts from: the kept events after its id (`None`: some
/// are gone), the last number so far, and the live channel.
type Following = (
    Option<Vec<Arc<Numbered>>>,
    u64,
    broadcast::Receiver<Arc<Numbered>>,
);

mod stream;
pub use stream::{sse, stream, wants_stream};

#[cfg(test)]
mod tests;
