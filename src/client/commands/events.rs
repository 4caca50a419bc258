//! `events`: the master's event stream, one line per event.

use std::io::{self, Write};

use super::Ctx;
use crate::client::CliError;
use crate::client::render::event_line;
use crate::protocol::Event;

/// `bbctl events [--json]`: print events as they happen until the master
/// goes away (exit 1) or stdout is closed (exit 0).
pub async fn events(ctx: &mut Ctx) -> Result<u8, CliError> {
    let mut rx = ctx.open_connection().await?.subscribe().await??;
    while let Some(event) = rx.recv().await {
        print_event(&event?, ctx.json)?;
    }
    Ok(0)
}

/// One event on stdout: a JSON object on one line, or a line for people.
pub fn print_event(event: &Event, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(event).map_err(io::Error::from)?;
        value["schema"] = serde_json::json!(crate::client::JSON_SCHEMA_VERSION);
        serde_json::to_writer(&mut out, &value).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", event_line(event))?;
    }
    out.flush()
}
