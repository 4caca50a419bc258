//! `bbctl watch`: a live full-screen view driven by the master's events.
//!
//! One connection carries the event stream; a second asks for `status` and
//! the last builds, but only after an event said something changed (at
//! most every 150 ms), never on a timer. The clock redraws elapsed times
//! once a second from what is already known. The terminal is restored by a
//! guard on every way out, including errors and panics.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::Color;
use crossterm::{cursor, execute, queue, terminal};
use tokio::sync::mpsc;

use super::Ctx;
use super::events::print_event;
use crate::client::CliError;
use crate::client::connection::ConnectionError;
use crate::client::render::{Style, ago, clock, duration, event_line};
use crate::paths::now_ms;
use crate::protocol::{BuildSummary, Event, Reply, Request, StatusReply};

/// How many recent events the view keeps at its bottom.
const RECENT_EVENTS: usize = 6;

/// `bbctl watch`.
pub async fn watch(ctx: &mut Ctx) -> Result<u8, CliError> {
    let mut events = ctx.open_connection().await?.subscribe().await??;
    if !io::stdout().is_terminal() {
        // Not a terminal: one line per event, like `bbctl events`.
        while let Some(event) = events.recv().await {
            print_event(&event?, ctx.json)?;
        }
        return Ok(0);
    }
    let mut view = View {
        status: None,
        builds: Vec::new(),
        recent: Vec::new(),
        style: ctx.style,
        gone_since: None,
    };
    view.refresh(ctx).await?;
    let _terminal = TerminalGuard::enter()?;
    let (keys, stop_keys) = spawn_key_reader();
    let result = run(ctx, &mut view, events, keys).await;
    stop_keys.store(true, Ordering::Relaxed);
    result
}

/// How often to look for a master that went away.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);

async fn run(
    ctx: &mut Ctx,
    view: &mut View,
    mut events: mpsc::Receiver<Result<Event, ConnectionError>>,
    mut keys: mpsc::Receiver<TermEvent>,
) -> Result<u8, CliError> {
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    let mut debounce = tokio::time::interval(Duration::from_millis(150));
    let mut retry = tokio::time::interval(RECONNECT_EVERY);
    let mut dirty = false;
    view.draw()?;
    loop {
        let gone = view.gone_since.is_some();
        tokio::select! {
            event = events.recv(), if !gone => match event {
                Some(Ok(event)) => {
                    view.recent.push(event);
                    if view.recent.len() > RECENT_EVENTS {
                        view.recent.remove(0);
                    }
                    dirty = true;
                }
                // The master went away (a restart, say): wait for it,
                // showing so, instead of exiting.
                Some(Err(_)) | None => {
                    ctx.drop_connection();
                    view.gone_since = Some(now_ms());
                    view.draw()?;
                }
            },
            _ = retry.tick(), if gone => {
                let back = match ctx.open_connection().await {
                    Ok(conn) => conn.subscribe().await.ok().and_then(Result::ok),
                    Err(_) => None,
                };
                if let Some(rx) = back {
                    events = rx;
                    view.gone_since = None;
                    if view.refresh(ctx).await.is_err() {
                        ctx.drop_connection();
                        view.gone_since = Some(now_ms());
                    }
                    view.draw()?;
                }
            }
            key = keys.recv() => match key {
                Some(TermEvent::Key(k)) if k.kind == KeyEventKind::Press => {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(0);
                    }
                }
                Some(TermEvent::Resize(..)) => view.draw()?,
                Some(_) => {}
                None => return Ok(0),
            },
            _ = debounce.tick(), if dirty && !gone => {
                dirty = false;
                if view.refresh(ctx).await.is_err() {
                    ctx.drop_connection();
                    view.gone_since = Some(now_ms());
                }
                view.draw()?;
            }
            _ = clock.tick() => view.draw()?,
        }
    }
}

/// What the view shows.
struct View {
    status: Option<StatusReply>,
    builds: Vec<BuildSummary>,
    recent: Vec<Event>,
    style: Style,
    /// When the master went away, while waiting for it to come back.
    gone_since: Option<u64>,
}

impl View {
    /// Ask the master for the current state (after an event said it changed).
    async fn refresh(&mut self, ctx: &mut Ctx) -> Result<(), CliError> {
        if let Reply::Status(s) = ctx.call(Request::Status(Default::default())).await? {
            self.status = Some(s);
        }
        let finished = Request::Builds {
            builder: None,
            limit: 8,
        };
        if let Reply::Builds(b) = ctx.call(finished).await? {
            self.builds = b.into_iter().filter(|b| b.result.is_some()).collect();
        }
        Ok(())
    }

    /// The whole screen as lines.
    fn lines(&self, width: usize) -> Vec<String> {
        let now = now_ms();
        let st = &self.style;
        let mut out = Vec::new();
        let Some(s) = &self.status else {
            return vec!["waiting for the master...".into()];
        };
        if let Some(since) = self.gone_since {
            out.push(st.paint(
                &format!(
                    "bbctl watch — master gone since {} ({}), waiting for it to come back...   (q to quit)",
                    clock(since),
                    ago(since, now)
                ),
                Color::Red,
            ));
            out.push(String::new());
        }
        let queued: u32 = s.builders.iter().map(|b| b.queued).sum();
        out.push(st.paint(
            &format!(
                "bbctl watch — master pid {}, generation {}{}, {} queued, {} running   (q to quit)",
                s.master_pid,
                s.generation,
                if s.draining { ", DRAINING" } else { "" },
                queued,
                s.running.len()
            ),
            Color::Cyan,
        ));
        out.push(String::new());
        out.push(format!(
            "{:<24} {:<9} {:>6} {:>7}  WORKERS",
            "BUILDER", "STATE", "QUEUED", "RUNNING"
        ));
        for b in &s.builders {
            out.push(format!(
                "{:<24} {:<9} {:>6} {:>7}  {}",
                b.name,
                b.state,
                b.queued,
                b.running,
                b.workers.join(", ")
            ));
        }
        out.push(String::new());
        out.push(format!(
            "{:<7} {:<20} {:<14} {:<22} {:>9}",
            "BUILD", "BUILDER", "WORKER", "STEP", "ELAPSED"
        ));
        if s.running.is_empty() {
            out.push("(none running)".into());
        }
        for r in &s.running {
            let step = format!(
                "{}/{} {}",
                r.step + 1,
                r.steps,
                crate::untrusted::escape(&r.step_name)
            );
            let waiting = if r.waiting_for_worker {
                " (worker away)"
            } else {
                ""
            };
            out.push(format!(
                "{:<7} {:<20} {:<14} {:<22} {:>9}{waiting}",
                format!("#{}", r.build),
                r.builder,
                r.worker,
                step,
                duration(now.saturating_sub(r.started_at_ms))
            ));
        }
        for w in &s.lock_waits {
            out.push(super::locks::waiter_line(w, now));
        }
        out.push(String::new());
        out.push(format!(
            "{:<18} {:<10} {:>5}  {:<16}  BUILDERS",
            "WORKER", "STATE", "SLOTS", "RUNNING"
        ));
        for w in &s.workers {
            let state = match (w.connected, w.draining) {
                (true, false) => st.paint(&format!("{:<10}", "connected"), Color::Green),
                (true, true) => st.paint(&format!("{:<10}", "draining"), Color::DarkYellow),
                (false, _) => st.paint(&format!("{:<10}", "offline"), Color::Red),
            };
            let running: Vec<String> = w.running_builds.iter().map(|b| format!("#{b}")).collect();
            out.push(format!(
                "{:<18} {state} {:>5}  {:<16}  {}",
                w.name,
                format!("{}/{}", w.running_builds.len(), w.max_builds),
                running.join(" "),
                w.builders.join(", ")
            ));
        }
        out.push(String::new());
        out.push(format!(
            "{:<7} {:<20} {:<10} {:>9}  {:<10}",
            "LAST", "BUILDER", "RESULT", "TOOK", "ENDED"
        ));
        for b in &self.builds {
            let took = b
                .finished_at_ms
                .unwrap_or(now)
                .saturating_sub(b.started_at_ms);
            out.push(format!(
                "{:<7} {:<20} {} {:>9}  {:<10}",
                format!("#{}", b.id),
                b.builder,
                st.result(b.result)
                    + &" ".repeat(10usize.saturating_sub(b.result.map_or(7, |r| r.as_str().len()))),
                duration(took),
                ago(b.finished_at_ms.unwrap_or(now), now)
            ));
        }
        out.push(String::new());
        for e in &self.recent {
            out.push(st.paint(&event_line(e), Color::DarkGrey));
        }
        out.into_iter().map(|l| fit(&l, width)).collect()
    }

    /// Redraw the whole screen.
    fn draw(&self) -> io::Result<()> {
        let (w, h) = terminal::size().unwrap_or((80, 24));
        let mut out = io::stdout().lock();
        queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        for (row, line) in self.lines(w as usize).iter().take(h as usize).enumerate() {
            queue!(out, cursor::MoveTo(0, row as u16))?;
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    }
}

/// Cut a line to the terminal width, counting visible characters only.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if c == '\x1b' {
            in_escape = true;
        }
        if !in_escape {
            if visible >= width {
                break;
            }
            visible += 1;
        }
        out.push(c);
        if in_escape && c == 'm' {
            in_escape = false;
        }
    }
    if line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// Raw mode and the alternate screen for as long as it lives; restored on
/// drop and by a panic hook, so no way out leaves the terminal broken.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}

/// Read terminal events on a thread of their own (crossterm's reads
/// block) until told to stop.
fn spawn_key_reader() -> (mpsc::Receiver<TermEvent>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        while !stop_flag.load(Ordering::Relaxed) {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(true) => match crossterm::event::read() {
                    Ok(ev) => {
                        if tx.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    (rx, stop)
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn lines_are_cut_to_the_width_without_breaking_colours() {
        assert_eq!(fit("abcdef", 3), "abc");
        assert_eq!(fit("ab", 3), "ab");
        let coloured = "\x1b[32mgreen\x1b[39m tail";
        let cut = fit(coloured, 3);
        assert!(cut.starts_with("\x1b[32mgre"), "{cut:?}");
        assert!(cut.ends_with("\x1b[0m"));
    }
}
