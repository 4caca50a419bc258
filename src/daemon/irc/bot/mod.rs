//! The bot's task: connects, drives a [`Session`] with the server's
//! lines and the clock, announces build events, answers commands through
//! the front door, and reconnects with backoff. Follows reloads: the
//! connection is kept when only channels, notify lists or authz changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{Config, IrcSettings};
use crate::daemon::auth::{Policy, Principal};
use crate::daemon::handle::MasterHandle;
use crate::protocol::{BuildId, Event, Reply};

use super::conn;
use super::flood::Outbox;
use super::line::{Line, LineBuf, Message, irc_eq};
use super::notify::Tracker;
use super::prefs::Prefs;
use super::session::{self, Level, Out, Session};

mod answer;

/// What spawned command tasks send back to the bot.
enum Back {
    /// Lines for a target.
    Say(String, Vec<String>),
    /// Tell `target` when `build` ends.
    Watch(BuildId, String),
}

/// Why one connection ended.
enum Ended {
    /// Lost or refused: try again after a backoff.
    Lost {
        /// Why, for the log.
        reason: String,
        /// Whether it got registered first (resets the backoff).
        registered: bool,
    },
    /// The connection settings changed: connect again at once.
    Reconfigured,
    /// `[irc]` was removed from the config.
    Removed,
    /// The master is stopping.
    Stop,
}

/// The bot across connections.
pub struct Bot {
    base: MasterHandle,
    master: MasterHandle,
    settings: IrcSettings,
    configs: watch::Receiver<Arc<Config>>,
    events: broadcast::Receiver<Arc<Event>>,
    tracker: Tracker,
    watchers: HashMap<BuildId, Vec<String>>,
    outbox: Outbox,
    prefs: Prefs,
    back_tx: mpsc::Sender<Back>,
    back_rx: mpsc::Receiver<Back>,
    status: super::SharedStatus,
    last_error: Option<String>,
}

/// The handle the bot asks with: the master's policy with `authz` in force.
fn handle_for(base: &MasterHandle, settings: &IrcSettings) -> MasterHandle {
    base.clone().with_policy(Policy {
        irc: settings.authz.clone(),
        ..base.policy().clone()
    })
}

fn identity(s: &IrcSettings) -> session::Identity {
    session::Identity {
        nick: s.nick.clone(),
        alt_nicks: s.alt_nicks.clone(),
        server_password: s.password.as_ref().map(|p| p.0.clone()),
        sasl: s.sasl.as_ref().map(|sasl| session::SaslLogin {
            account: sasl.account.clone(),
            password: sasl.password.0.clone(),
            required: sasl.required,
        }),
        nickserv_password: s.nickserv_password.as_ref().map(|p| p.0.clone()),
    }
}

fn timing(s: &IrcSettings) -> session::Timing {
    session::Timing {
        keepalive: s.keepalive,
        pong_timeout: s.pong_timeout,
        register_timeout: (s.keepalive + s.pong_timeout)
            .clamp(Duration::from_secs(10), Duration::from_secs(60)),
        ..session::Timing::default()
    }
}

fn channels(s: &IrcSettings) -> Vec<session::Channel> {
    s.channels
        .iter()
        .map(|c| session::Channel {
            name: c.name.clone(),
            key: c.key.as_ref().map(|k| k.0.clone()),
        })
        .collect()
}

impl Bot {
    /// A bot for `settings`, not yet connected.
    pub fn new(
        base: MasterHandle,
        settings: IrcSettings,
        configs: watch::Receiver<Arc<Config>>,
        events: broadcast::Receiver<Arc<Event>>,
        prefs: Prefs,
        status: super::SharedStatus,
    ) -> Self {
        let (back_tx, back_rx) = mpsc::channel(64);
        Bot {
            master: handle_for(&base, &settings),
            base,
            settings,
            configs,
            events,
            tracker: Tracker::default(),
            watchers: HashMap::new(),
            outbox: Outbox::new(std::time::Instant::now()),
            prefs,
            back_tx,
            back_rx,
            status,
            last_error: None,
        }
    }

    /// Tells `status` where the bot stands.
    fn publish(&self, state: &str, session: Option<&Session>) {
        let status = crate::protocol::IrcStatus {
            state: state.into(),
            server: format!("{}:{}", self.settings.server, self.settings.port),
            nick: session
                .filter(|s| s.is_ready())
                .map(|s| s.nick().to_owned()),
            channels: session
                .map(|s| s.joined().cloned().collect())
                .unwrap_or_default(),
            lag_ms: session.and_then(|s| s.lag()).map(|l| l.as_millis() as u64),
            last_error: self.last_error.clone(),
            since_ms: crate::paths::now_ms(),
        };
        let mut shared = self.status.write().unwrap_or_else(|e| e.into_inner());
        let keep_since = shared
            .as_ref()
            .filter(|old| old.state == status.state)
            .map(|old| old.since_ms);
        *shared = Some(crate::protocol::IrcStatus {
            since_ms: keep_since.unwrap_or(status.since_ms),
            ..status
        });
    }

    /// Runs until `[irc]` is removed (true) or the master stops (false).
    pub async fn run(mut self) -> bool {
        self.seed().await;
        let mut attempt = 0u32;
        loop {
            match self.serve_one().await {
                Ended::Stop => return false,
                Ended::Removed => return true,
                Ended::Reconfigured => attempt = 0,
                Ended::Lost { reason, registered } => {
                    if registered {
                        attempt = 0;
                    }
                    self.last_error = Some(reason.clone());
                    self.publish("waiting", None);
                    let delay = conn::backoff(attempt, conn::jitter());
                    attempt = attempt.saturating_add(1);
                    warn!(
                        "irc: {reason}; connecting again in {:.1} s",
                        delay.as_secs_f64()
                    );
                    match self.idle(delay).await {
                        Some(Ended::Stop) => return false,
                        Some(Ended::Removed) => return true,
                        Some(_) => attempt = 0,
                        None => {}
                    }
                }
            }
        }
    }

    /// The builders' last results, so that the first success after a
    /// failure before the master started is still `fixed`.
    async fn seed(&mut self) {
        let who = Principal::IrcAccount { account: None };
        if let Ok(Reply::Builds(builds)) = self.master.builds(&who, None, 200).await {
            for b in &builds {
                if let Some(result) = b.result {
                    self.tracker.seed(&b.builder, result);
                }
            }
        }
    }

    /// Waits `delay` between connections, still following events and
    /// reloads. `Some` when the wait was cut short by a reload or a stop.
    async fn idle(&mut self, delay: Duration) -> Option<Ended> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                event = self.events.recv() => {
                    if self.on_event(event).is_err() {
                        return Some(Ended::Stop);
                    }
                }
                changed = self.configs.changed() => {
                    if changed.is_err() {
                        return Some(Ended::Stop);
                    }
                    match self.on_config(None) {
                        Some(ended) => return Some(ended),
                        None => continue,
                    }
                }
                _ = self.base.shutting_down() => return Some(Ended::Stop),
            }
        }
    }

    /// A new config: `Some` when the connection must end (settings
    /// changed, or `[irc]` gone); else channels and rights are updated.
    fn on_config(&mut self, session: Option<&mut Session>) -> Option<Ended> {
        let config = Arc::clone(&self.configs.borrow_and_update());
        let Some(new) = config.irc.clone() else {
            info!("irc: [irc] removed from the config; leaving");
            return Some(Ended::Removed);
        };
        if new == self.settings {
            return None;
        }
        if !new.same_connection(&self.settings) {
            info!("irc: the connection settings changed; reconnecting");
            self.settings = new;
            self.master = handle_for(&self.base, &self.settings);
            return Some(Ended::Reconfigured);
        }
        for old in &self.settings.channels {
            if !new.channels.iter().any(|c| irc_eq(&c.name, &old.name)) {
                self.outbox.forget(&old.name);
            }
        }
        if let Some(session) = session {
            for out in session.set_channels(channels(&new)) {
                if let Out::Send(line) = out {
                    self.outbox.control(line);
                }
            }
        }
        self.settings = new;
        self.master = handle_for(&self.base, &self.settings);
        info!("irc: channels, notify lists and authz updated; connection kept");
        None
    }

    /// One event: notifications and watchers. `Err` when the master is gone.
    fn on_event(
        &mut self,
        event: Result<Arc<Event>, broadcast::error::RecvError>,
    ) -> Result<(), ()> {
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!("irc: missed {n} events (the bot fell behind); some notifications are lost");
                return Ok(());
            }
            Err(broadcast::error::RecvError::Closed) => return Err(()),
        };
        let (note, finished) = self.tracker.on_event(&event);
        if let Some(note) = note {
            for channel in &self.settings.channels {
                let notify = self.prefs.effective(&channel.name, &channel.notify);
                if note.wanted_by(&notify) {
                    self.outbox
                        .notify(&channel.name, note.text.clone(), note.short.clone());
                }
            }
        }
        if let Some(done) = finished {
            for target in self.watchers.remove(&done.build).unwrap_or_default() {
                self.outbox
                    .say(&target, format!("watched build ended: {}", done.text));
            }
        }
        Ok(())
    }

    /// One connection, from connect to its end.
    async fn serve_one(&mut self) -> Ended {
        self.publish("connecting", None);
        let stream = match conn::connect(&self.settings).await {
            Ok(stream) => stream,
            Err(reason) => {
                return Ended::Lost {
                    reason,
                    registered: false,
                };
            }
        };
        info!(
            "irc: connected to {}:{}{}",
            self.settings.server,
            self.settings.port,
            if self.settings.tls { " (TLS)" } else { "" }
        );
        let (mut rd, mut wr) = tokio::io::split(stream);
        let now = Instant::now().into_std();
        let mut session = Session::new(
            identity(&self.settings),
            timing(&self.settings),
            channels(&self.settings),
            now,
        );
        self.outbox.new_connection();
        let mut registered = false;
        let mut lines = LineBuf::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut outs = session.start(now);
        self.publish("registering", Some(&session));
        loop {
            let mut changed = false;
            // What the session said: carry it out.
            for out in std::mem::take(&mut outs) {
                match out {
                    Out::Send(line) => self.outbox.control(line),
                    Out::Log(level, text) => log(level, &text),
                    Out::Ready => {
                        registered = true;
                        changed = true;
                        info!("irc: registered as {}", session.nick());
                    }
                    Out::Joined(channel) => {
                        changed = true;
                        info!("irc: joined {channel}");
                    }
                    Out::Left(channel) => {
                        changed = true;
                        info!("irc: left {channel}");
                    }
                    Out::Command(incoming) => self.command(incoming),
                    Out::Close { reason, quit } => {
                        if quit {
                            let _ = write_line(
                                &mut wr,
                                &format!("QUIT :{reason}"),
                                self.settings.pong_timeout,
                            )
                            .await;
                        }
                        return Ended::Lost { reason, registered };
                    }
                }
            }
            if changed {
                self.publish(
                    if registered {
                        "connected"
                    } else {
                        "registering"
                    },
                    Some(&session),
                );
            }
            // Write what the bucket allows.
            let ready = session.is_ready();
            let now = Instant::now().into_std();
            while let Some(line) = self.outbox.next_line(now, session.nick(), ready) {
                if let Err(reason) = write_line(&mut wr, &line, self.settings.pong_timeout).await {
                    return Ended::Lost { reason, registered };
                }
            }
            let wake = [session.next_deadline(), self.outbox.ready_at(now, ready)]
                .into_iter()
                .flatten()
                .min()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return Ended::Lost { reason: "the server closed the connection".into(), registered },
                        Ok(n) => n,
                        Err(e) => return Ended::Lost { reason: format!("reading from the server: {e}"), registered },
                    };
                    lines.push(&buf[..n]);
                    let now = Instant::now().into_std();
                    let lag = session.lag();
                    while let Some(line) = lines.next_line() {
                        match line {
                            Line::Text(text) => {
                                if let Some(msg) = Message::parse(&text) {
                                    outs.extend(session.on_line(&msg, now));
                                }
                            }
                            Line::TooLong => warn!("irc: dropped an over-long line from the server"),
                        }
                    }
                    if session.lag() != lag {
                        self.publish("connected", Some(&session));
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    outs.extend(session.on_tick(Instant::now().into_std()));
                }
                event = self.events.recv() => {
                    if self.on_event(event).is_err() {
                        return self.quit(&mut wr, "the master is stopping").await;
                    }
                }
                Some(back) = self.back_rx.recv() => match back {
                    Back::Say(target, text) => {
                        for line in text {
                            self.outbox.say(&target, line);
                        }
                    }
                    Back::Watch(build, target) => {
                        let list = self.watchers.entry(build).or_default();
                        if !list.iter().any(|t| irc_eq(t, &target)) {
                            list.push(target);
                        }
                    }
                },
                changed = self.configs.changed() => {
                    if changed.is_err() {
                        return self.quit(&mut wr, "the master is stopping").await;
                    }
                    match self.on_config(Some(&mut session)) {
                        None => {}
                        Some(Ended::Removed) => {
                            self.quit(&mut wr, "IRC removed from the config").await;
                            return Ended::Removed;
                        }
                        Some(other) => {
                            let _ = write_line(&mut wr, "QUIT :reconfigured", self.settings.pong_timeout).await;
                            return other;
                        }
                    }
                }
                _ = self.base.shutting_down() => {
                    return self.quit(&mut wr, "the master is stopping").await;
                }
            }
        }
    }

    /// Says goodbye (what is queued first, briefly) and stops.
    async fn quit<W: tokio::io::AsyncWrite + Unpin>(&mut self, wr: &mut W, why: &str) -> Ended {
        let _ = write_line(wr, &format!("QUIT :{why}"), Duration::from_secs(2)).await;
        let _ = wr.shutdown().await;
        Ended::Stop
    }
}

fn log(level: Level, text: &str) {
    match level {
        Level::Info => info!("irc: {text}"),
        Level::Warn => warn!("irc: {text}"),
        Level::Error => error!("irc: {text}"),
    }
}

/// Writes one line with CR LF, bounded: a server that stopped reading is
/// a lost server.
async fn write_line<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    line: &str,
    bound: Duration,
) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(line.len() + 2);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    match tokio::time::timeout(bound, async {
        wr.write_all(&bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing to the server: {e}")),
        Err(_) => Err(format!("the server took no data for {} s", bound.as_secs())),
    }
}
