//! One function per `bbctl` command. Each returns the exit code on
//! success; errors carry their own (see [`super::CliError::exit_code`]).

mod artifacts;
mod builds;
mod changes;
mod complete;
mod config;
mod events;
mod locks;
mod masters;

mod prune;
mod status;
mod stream;
mod watch;
mod workers;

use std::io::{self, Write};

use clap::CommandFactory;
use serde::Serialize;

use super::cli::{Cli, Command};
use super::connection::Connection;
use super::render::Style;
use super::{CliError, socket_path};
use crate::protocol::{Reply, Request, ShutdownMode};

/// What every command needs: how to render, and how to reach the master.
pub struct Ctx {
    /// Print JSON instead of tables.
    pub json: bool,
    /// Colours and width.
    pub style: Style,
    socket: std::path::PathBuf,
    wait_for_master: Option<std::time::Duration>,
    /// How long a waiting command tries to re-attach to a master that
    /// went away (`--reconnect-for`).
    pub reconnect_for: std::time::Duration,
    /// Build output to a terminal unescaped (`--raw`).
    pub raw: bool,
    conn: Option<Connection>,
    /// Ctrl-C, caught from before a waiting command sends its request.
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Ctx {
    /// A new connection to the master; with `--wait-for-master`, retried
    /// until the master answers or the time is up.
    pub async fn open_connection(&self) -> Result<Connection, CliError> {
        let deadline = self
            .wait_for_master
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            match Connection::open(&self.socket).await {
                Ok(conn) => return Ok(conn),
                Err(e @ super::connection::ConnectionError::Unreachable { .. }) => match deadline {
                    Some(at) if tokio::time::Instant::now() < at => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    _ => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Take over Ctrl-C from now on (instead of dying of it), so that a
    /// waiting command can detach cleanly: called before the request that
    /// starts the wait is sent.
    pub fn catch_interrupt(&mut self) -> Result<(), CliError> {
        if self.interrupt.is_none() {
            let kind = tokio::signal::unix::SignalKind::interrupt();
            self.interrupt = Some(tokio::signal::unix::signal(kind)?);
        }
        Ok(())
    }

    /// The connection to the master, opened on first use.
    pub async fn conn(&mut self) -> Result<&mut Connection, CliError> {
        if self.conn.is_none() {
            self.conn = Some(self.open_connection().await?);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Forget a broken connection; the next [`Ctx::conn`] opens a new one.
    pub fn drop_connection(&mut self) {
        self.conn = None;
    }

    /// Send a request; a master error becomes a [`CliError`].
    pub async fn call(&mut self, request: Request) -> Result<Reply, CliError> {
        Ok(self.conn().await?.call(request).await??)
    }
}

/// Print `value` as one JSON document on stdout, stamped with the schema
/// version (`docs/json.md`): on the object itself, or on each object of a
/// list.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let mut value = serde_json::to_value(value).map_err(io::Error::from)?;
    let stamp = serde_json::json!(super::JSON_SCHEMA_VERSION);
    match &mut value {
        serde_json::Value::Object(map) => {
            map.insert("schema".into(), stamp);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                if let serde_json::Value::Object(map) = item {
                    map.insert("schema".into(), stamp.clone());
                }
            }
        }
        _ => {}
    }
    // Rendered whole, then written at once: stdout is line-buffered, and
    // pretty JSON of a big status would otherwise cost a write per line.
    let mut text = serde_json::to_vec_pretty(&value).map_err(io::Error::from)?;
    text.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&text)?;
    out.flush()?;
    Ok(())
}

/// Print one object of a stream (JSON Lines: compact, on one line),
/// stamped with the schema version like every object bbctl prints.
pub fn print_json_line(mut value: serde_json::Value) -> io::Result<()> {
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(
            "schema".into(),
            serde_json::json!(super::JSON_SCHEMA_VERSION),
        );
    }
    let mut text = serde_json::to_vec(&value).map_err(io::Error::from)?;
    text.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&text)?;
    out.flush()
}

fn unexpected(reply: Reply) -> CliError {
    CliError::Connection(super::connection::ConnectionError::Unexpected(format!(
        "{reply:?}"
    )))
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let mut ctx = Ctx {
        json: cli.global.json,
        style: Style::detect(cli.global.color),
        socket: socket_path(&cli.global),
        wait_for_master: cli.global.wait_for_master,
        reconnect_for: cli.global.reconnect_for,
        raw: cli.global.raw,
        conn: None,
        interrupt: None,
    };
    match cli.command {
        Command::Status {
            builder,
            state,
            limit,
        } => {
            let filter = crate::protocol::StatusFilter {
                builder,
                state,
                limit,
            };
            status::status(&mut ctx, filter).await
        }
        Command::Events => events::events(&mut ctx).await,
        Command::Wait { request, follow } => stream::wait(&mut ctx, request, follow).await,
        Command::Queue { builder } => workers::queue(&mut ctx, builder).await,
        Command::Workers => workers::workers(&mut ctx).await,
        Command::Locks => locks::locks(&mut ctx).await,
        Command::Masters => masters::masters(&mut ctx).await,
        Command::Ping { worker } => workers::ping(&mut ctx, worker).await,
        Command::WorkerCommand { name } => workers::worker_command(&mut ctx, name).await,
        Command::Drain {
            worker,
            wait,
            timeout,
        } => workers::drain(&mut ctx, worker, true, wait, timeout).await,
        Command::Undrain { worker } => workers::drain(&mut ctx, worker, false, false, None).await,
        Command::Watch => watch::watch(&mut ctx).await,
        Command::ForceBuild(args) => stream::force_build(&mut ctx, args).await,
        Command::Rebuild(args) => stream::rebuild(&mut ctx, args).await,
        Command::Builds(args) => builds::builds(&mut ctx, args).await,
        Command::Sendchange(args) => changes::sendchange(&mut ctx, args).await,
        Command::Changes { limit } => changes::changes(&mut ctx, limit).await,
        Command::Build { id } => builds::build(&mut ctx, id).await,
        Command::Log(args) => stream::log(&mut ctx, args).await,
        Command::Cancel { request } => simple(&mut ctx, Request::Cancel { request }).await,
        Command::Stop { build } => simple(&mut ctx, Request::Stop { build }).await,
        Command::Artifacts { build } => artifacts::artifacts(&mut ctx, build).await,
        Command::Artifact {
            build,
            name,
            output,
        } => artifacts::artifact(&mut ctx, build, name, output).await,
        Command::Shutdown { drain, cancel } => {
            let mode = match (drain, cancel) {
                (true, _) => ShutdownMode::Drain,
                (_, true) => ShutdownMode::Cancel,
                _ => ShutdownMode::Now,
            };
            simple(&mut ctx, Request::Shutdown { mode }).await
        }
        Command::Reload { dry_run, config } => status::reload(&mut ctx, dry_run, config).await,
        Command::Complete { what } => complete::names(&mut ctx, what).await,
        Command::Prune { dry_run } => prune::prune(&mut ctx, dry_run).await,
        Command::CheckConfig { file } => config::check_config(&ctx, &file),
        Command::Completions { shell } => {
            // `generate` panics on a write error; render first, then write,
            // so that a closed pipe is an ordinary (ignored) error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bbctl", &mut script);
            script.extend_from_slice(complete::dynamic_names(shell).as_bytes());
            let mut out = io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(0)
        }
    }
}

/// Commands whose answer is a sentence.
async fn simple(ctx: &mut Ctx, request: Request) -> Result<u8, CliError> {
    match ctx.call(request).await? {
        Reply::Done { message } => {
            // A confirmation, not data: stderr (`docs/cli.md`, "stdout
            // holds data only"); with --json, the object on stdout.
            if ctx.json {
                print_json(&serde_json::json!({ "ok": true, "message": message }))?;
            } else {
                eprintln!("{message}");
            }
            Ok(0)
        }
        other => Err(unexpected(other)),
    }
}
