//! Human output: aligned tables that fit the terminal, colour only where
//! wanted, durations and times a person reads at a glance.

use std::io::{self, IsTerminal, Write};

use crossterm::style::{Color, Stylize};

use crate::client::cli::ColorChoice;
use crate::protocol::{BuildResult, DrainMode, Event, EventKind};
use crate::untrusted::{escape, escape_keeping_sgr};

/// How to render for this run of `bbctl`.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Use colour on stdout.
    pub color: bool,
    /// Terminal width to fit tables into; `None` when not a terminal.
    pub width: Option<usize>,
}

impl Style {
    /// Decide from `--color`, `NO_COLOR` and whether stdout is a terminal.
    pub fn detect(choice: ColorChoice) -> Self {
        let tty = io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        let width = tty
            .then(|| crossterm::terminal::size().ok().map(|(w, _)| w as usize))
            .flatten();
        Style { color, width }
    }

    /// A build or step result, coloured by meaning.
    pub fn result(&self, result: Option<BuildResult>) -> String {
        let Some(result) = result else {
            return self.paint("running", Color::Cyan);
        };
        let color = match result {
            BuildResult::Success => Color::Green,
            BuildResult::Failure => Color::Red,
            BuildResult::Exception => Color::Magenta,
            BuildResult::Cancelled => Color::DarkYellow,
            BuildResult::Retry => Color::Blue,
            BuildResult::Skipped => Color::DarkGrey,
        };
        self.paint(result.as_str(), color)
    }

    /// `text` in `color` when colour is on.
    pub fn paint(&self, text: &str, color: Color) -> String {
        if self.color {
            text.with(color).to_string()
        } else {
            text.to_string()
        }
    }

    /// A header row, bold when colour is on.
    fn header(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_string()
        }
    }
}

/// A table: a header row and rows of cells, printed with aligned columns.
/// The last column is cut to fit the terminal width.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Add a row (one cell per column). Cells are escaped for the
    /// terminal (colours this program added stay): a newline or an escape
    /// sequence in a field cannot forge a row or act on the screen, even
    /// where a caller forgot to escape an untrusted field itself.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| escape_keeping_sgr(c)).collect());
    }

    /// Print the table; nothing at all when it has no rows.
    pub fn print(&self, out: &mut dyn Write, style: &Style) -> io::Result<()> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(visible_len(cell));
            }
        }
        let head: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        // One write for the whole table (stdout is line-buffered).
        let mut text = style.header(&self.format_row(&head, &widths, style));
        text.push('\n');
        for row in &self.rows {
            text.push_str(&self.format_row(row, &widths, style));
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }

    fn format_row(&self, cells: &[String], widths: &[usize], style: &Style) -> String {
        let mut line = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                let mut cell = cell.clone();
                if let Some(width) = style.width {
                    let room = width.saturating_sub(visible_len(&line)).max(8);
                    if visible_len(&cell) > room && !style.color {
                        cell = truncate(&cell, room);
                    }
                }
                line.push_str(&cell);
            } else {
                line.push_str(cell);
                let pad = widths[i].saturating_sub(visible_len(cell)) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_string()
    }
}

/// Characters a terminal shows, not counting colour escapes.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

fn truncate(s: &str, room: usize) -> String {
    let mut out: String = s.chars().take(room.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A duration in ms as people say it: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// How long ago `then_ms` was, seen from `now_ms`: `12s ago`, `3h 02m ago`.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms > now_ms {
        return "just now".into();
    }
    let ms = now_ms - then_ms;
    if ms < 1_000 {
        return "just now".into();
    }
    let secs = ms / 1000;
    let short = match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {:02}h", secs / 86_400, (secs % 86_400) / 3600),
    };
    format!("{short} ago")
}

/// How long something has been up: `up 1m`, `up 3h 02m`; `up 0s` at
/// first.
pub fn uptime(since_ms: u64, now_ms: u64) -> String {
    let ago = ago(since_ms, now_ms);
    match ago.strip_suffix(" ago") {
        Some(span) => format!("up {span}"),
        None => "up 0s".into(),
    }
}

/// A worker's software as people want it: the version (`0.1.0`), not the
/// package's name (`bbctl-suite 0.1.0`).
pub fn version(software: &str) -> String {
    match software.rsplit_once(' ') {
        Some((_, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => v.to_string(),
        _ => software.to_string(),
    }
}

/// The time of day (UTC) of a timestamp: `14:03:07.250Z`.
pub fn clock(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        (day_ms / 60_000) % 60,
        (day_ms / 1000) % 60,
        day_ms % 1000
    )
}

/// One event as a line a person reads: time, generation, what happened.
pub fn event_line(e: &Event) -> String {
    let why = |r: &Option<String>| r.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
    let what = match &e.kind {
        EventKind::BuildQueued {
            request, builder, ..
        } => {
            format!("request r{request} queued for {builder}")
        }
        EventKind::BuildStarted {
            build,
            request,
            builder,
            worker,
            ..
        } => format!("build {build} of {builder} started on {worker} (request r{request})"),
        EventKind::StepStarted { build, step, name } => {
            format!("build {build} step {step} `{name}` started")
        }
        EventKind::StepFinished {
            build,
            step,
            result,
            reason,
        } => format!(
            "build {build} step {step} finished: {result}{}",
            why(reason)
        ),
        EventKind::BuildFinished {
            build,
            request,
            result,
            reason,
            ..
        } => format!(
            "build {build} finished: {result}{} (request r{request})",
            why(reason)
        ),
        EventKind::BuildRetried {
            build,
            request,
            reason,
        } => format!("build {build} cut short, request r{request} queued again: {reason}"),
        EventKind::RequestSkipped {
            request,
            into,
            build,
        } => format!("request r{request} skipped: collapsed into request r{into} (build {build})"),
        EventKind::RequestCancelled { request, reason } => {
            format!("request r{request} cancelled: {reason}")
        }
        EventKind::WorkerConnected { worker } => format!("worker {worker} connected"),
        EventKind::WorkerLost { worker, reason } if reason.is_empty() => {
            format!("worker {worker} left")
        }
        EventKind::WorkerLost { worker, reason } => format!("worker {worker} left: {reason}"),
        EventKind::WorkerDraining { worker } => format!("worker {worker} draining"),
        EventKind::ReloadApplied {
            generation_before,
            generation_after,
            config_hash,
        } => format!(
            "reload applied: generation {generation_before} -> {generation_after} (hash {config_hash})"
        ),
        EventKind::ReloadRejected { error } => {
            format!("reload rejected: {}", error.replace('\n', "; "))
        }
        EventKind::MasterDraining {
            draining: true,
            mode: DrainMode::Maintenance,
        } => "master draining for maintenance: requests queue, no build starts".into(),
        EventKind::MasterDraining {
            draining: true,
            mode: DrainMode::Shutdown,
        } => "master draining for shutdown: no new requests, exits when builds finish".into(),
        EventKind::MasterDraining {
            draining: false,
            mode,
        } => format!("master no longer draining for {}", mode.as_str()),
        EventKind::WorkerUndrained { worker } => format!("worker {worker} takes builds again"),
        EventKind::Subscribed => "subscribed".into(),
        EventKind::Lagged { missed } => format!("missed {missed} event(s): fell behind"),
        EventKind::ChangeAdded {
            change,
            repository,
            branch,
            revision,
            author,
            sent_by,
        } => format!(
            "change {change} added: {repository} {branch} {revision}{} (sent by {sent_by})",
            author
                .as_ref()
                .map(|a| format!(" by {a}"))
                .unwrap_or_default()
        ),
    };
    // Reasons, names and errors come from outside: one line, no sequences.
    format!("{} gen {}  {}", clock(e.at_ms), e.generation, escape(&what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5), "5ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(ago(0, 61_000), "1m ago");
        assert_eq!(ago(10, 5), "just now");
        assert_eq!(uptime(0, 61_000), "up 1m");
        assert_eq!(uptime(0, 500), "up 0s");
        assert_eq!(version("bbctl-suite 0.1.0"), "0.1.0");
        assert_eq!(version("other"), "other");
    }

    #[test]
    fn tables_align_and_fit() {
        let mut t = Table::new(vec!["ID", "NAME"]);
        t.row(vec!["1".into(), "short".into()]);
        t.row(vec!["100".into(), "a much longer name than fits".into()]);
        let style = Style {
            color: false,
            width: Some(16),
        };
        let mut out = Vec::new();
        t.print(&mut out, &style).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID   NAME");
        assert_eq!(lines[1], "1    short");
        assert!(lines[2].starts_with("100  a much lo"), "{}", lines[2]);
        assert!(lines[2].ends_with('…'));
        assert!(lines[2].chars().count() <= 16);
    }

    #[test]
    fn event_lines_read_well() {
        let e = Event {
            at_ms: 86_400_000 * 3 + 3_600_000 * 14 + 60_000 * 3 + 7_250,
            generation: 2,
            kind: EventKind::BuildFinished {
                build: 7,
                request: 5,
                result: BuildResult::Failure,
                reason: Some("step `say` exited with code 1".into()),
                source: None,
            },
        };
        assert_eq!(
            event_line(&e),
            "14:03:07.250Z gen 2  build 7 finished: failure: step `say` exited with code 1 (request r5)"
        );
    }

    #[test]
    fn colour_escapes_do_not_count() {
        let style = Style {
            color: true,
            width: None,
        };
        assert_eq!(visible_len(&style.result(Some(BuildResult::Success))), 7);
    }
}
