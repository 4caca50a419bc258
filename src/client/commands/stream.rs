//! `force-build` and `rebuild` (with `--wait`/`--follow`), `wait` and
//! `log`: commands that read a build's stream. Build output goes to stdout
//! untouched; progress lines go to stderr, so `bbctl log 7 > out.txt` holds
//! exactly what the steps wrote. With `--json`, stdout is JSON Lines: one
//! compact object per line, the final `outcome` included.
//!
//! A waiting command survives a master restart: when the connection
//! drops, it re-attaches to the same request or build (for up to
//! `--reconnect-for`), skips what it has already printed, and exits with
//! the build's true result; a master that does not come back is exit 3.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, IsTerminal, Write};

use super::{Ctx, print_json, print_json_line, unexpected};
use crate::client::cli::{ForceBuildArgs, LogArgs, RebuildArgs};
use crate::client::connection::ConnectionError;
use crate::client::ids;
use crate::client::render::Style;
use crate::client::{CliError, EXIT_FAILED};
use crate::protocol::{
    BuildId, BuildResult, Reply, Request, RequestId, StepIndex, StreamItem, StreamRequest,
    StreamTarget,
};
use crate::untrusted::{TerminalFilter, escape};

/// Exit code after Ctrl-C, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;

/// How a followed build ended.
#[derive(Debug, Default)]
struct Outcome {
    build: Option<BuildId>,
    result: Option<BuildResult>,
    reason: Option<String>,
    cancelled: bool,
    /// Ctrl-C came before the end.
    interrupted: bool,
}

impl Outcome {
    fn exit_code(&self) -> u8 {
        if self.result == Some(BuildResult::Success) {
            0
        } else {
            EXIT_FAILED
        }
    }
}

/// What to queue: `force-build`'s arguments, or `rebuild`'s copy of a build.
struct Queue {
    builder: String,
    reason: Option<String>,
    properties: BTreeMap<String, String>,
    priority: i32,
    source: Option<crate::protocol::SourceStamp>,
    wait: bool,
    follow: bool,
    cancel_on_interrupt: bool,
}

/// `bbctl force-build BUILDER`.
pub async fn force_build(ctx: &mut Ctx, args: ForceBuildArgs) -> Result<u8, CliError> {
    let queue = Queue {
        builder: args.builder,
        reason: args.reason,
        properties: args.properties.into_iter().collect(),
        priority: args.priority,
        source: None,
        wait: args.wait,
        follow: args.follow,
        cancel_on_interrupt: args.cancel_on_interrupt,
    };
    queue_build(ctx, queue).await
}

/// `bbctl rebuild BUILD`: a new request for the same builder with the
/// same properties and source stamp, its reason `rebuild of build N`.
pub async fn rebuild(ctx: &mut Ctx, args: RebuildArgs) -> Result<u8, CliError> {
    let detail = match ctx.call(Request::Build { build: args.build }).await? {
        Reply::Build(b) => b,
        other => return Err(unexpected(other)),
    };
    let queue = Queue {
        builder: detail.summary.builder,
        reason: Some(format!("rebuild of build {}", args.build)),
        properties: detail.properties,
        priority: args.priority,
        source: detail.summary.source,
        wait: args.wait,
        follow: args.follow,
        cancel_on_interrupt: args.cancel_on_interrupt,
    };
    queue_build(ctx, queue).await
}

async fn queue_build(ctx: &mut Ctx, q: Queue) -> Result<u8, CliError> {
    if q.wait || q.follow {
        ctx.catch_interrupt()?;
    }
    let request = Request::ForceBuild {
        builder: q.builder.clone(),
        reason: q.reason,
        properties: q.properties,
        priority: q.priority,
        source: q.source,
    };
    let request_id = match ctx.call(request).await? {
        Reply::Queued { request_id } => request_id,
        other => return Err(unexpected(other)),
    };
    // Progress, not data: stderr (with --json, stdout has the object).
    if !ctx.json {
        eprintln!(
            "request {} queued for {}",
            ids::request(request_id),
            q.builder
        );
    }
    if !q.wait && !q.follow {
        if ctx.json {
            print_json(&serde_json::json!({ "request_id": request_id, "builder": q.builder }))?;
        }
        return Ok(0);
    }
    wait_for(ctx, request_id, q.follow, q.cancel_on_interrupt).await
}

/// `bbctl wait REQUEST [--follow]`.
pub async fn wait(ctx: &mut Ctx, request: RequestId, follow: bool) -> Result<u8, CliError> {
    ctx.catch_interrupt()?;
    wait_for(ctx, request, follow, false).await
}

/// Follow a request to its end; the exit code says whether it succeeded.
/// Ctrl-C detaches (the request goes on) or, with `cancel`, cancels it.
async fn wait_for(
    ctx: &mut Ctx,
    request: RequestId,
    output: bool,
    cancel: bool,
) -> Result<u8, CliError> {
    let target = StreamTarget::Request(request);
    let r = ids::request(request);
    let outcome = follow(ctx, target, None, output, true, Some(request)).await?;
    if outcome.interrupted {
        if cancel {
            // Interrupted either way: exit 130 even if the cancel comes
            // too late (the build just finished).
            let cancelled = match ctx.open_connection().await {
                Ok(mut conn) => conn.call(Request::Cancel { request }).await,
                Err(e) => {
                    eprintln!("bbctl: interrupted; could not cancel request {r}: {e}");
                    return Ok(EXIT_INTERRUPTED);
                }
            };
            match cancelled {
                Ok(Ok(Reply::Done { message })) => eprintln!("bbctl: interrupted: {message}"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("bbctl: interrupted; request {r} not cancelled: {e}"),
                Err(e) => eprintln!("bbctl: interrupted; could not cancel request {r}: {e}"),
            }
        } else {
            eprintln!(
                "bbctl: detached; request {r} goes on. Re-attach with: bbctl wait {r}{}",
                if output { " --follow" } else { "" }
            );
        }
        return Ok(EXIT_INTERRUPTED);
    }
    finish(ctx, Some(request), &outcome)?;
    Ok(outcome.exit_code())
}

/// `bbctl log [BUILD] [STEP] [--follow]`.
pub async fn log(ctx: &mut Ctx, args: LogArgs) -> Result<u8, CliError> {
    if args.follow {
        ctx.catch_interrupt()?;
    }
    let target = match args.build {
        Some(id) => StreamTarget::Build(id),
        None => StreamTarget::Latest,
    };
    let outcome = follow(ctx, target, args.step, true, args.follow, None).await?;
    if outcome.interrupted {
        let again = outcome
            .build
            .map(|b| format!("bbctl log {b} --follow"))
            .unwrap_or_else(|| "bbctl log --follow".into());
        eprintln!("bbctl: detached; the build goes on. Re-attach with: {again}");
        return Ok(EXIT_INTERRUPTED);
    }
    if args.follow {
        finish(ctx, None, &outcome)?;
        return Ok(outcome.exit_code());
    }
    Ok(0)
}

/// What has been printed so far, across re-attachments: a stream that
/// starts again from the beginning prints only what is new.
#[derive(Default)]
struct Printer {
    json: bool,
    /// Step banners on stderr (a terminal only).
    banners: bool,
    style: Option<Style>,
    /// The request followed, for the `build N started` line.
    request: Option<RequestId>,
    outcome: Outcome,
    /// Lifecycle items already printed.
    printed: HashSet<String>,
    /// Output bytes printed per (build, step).
    printed_bytes: HashMap<(BuildId, StepIndex), u64>,
    /// Output bytes seen per (build, step) on the current connection.
    seen_bytes: HashMap<(BuildId, StepIndex), u64>,
    /// The build the current connection is about.
    current: Option<BuildId>,
    /// Escapes output on its way to a terminal (not with `--raw`).
    filter: Option<TerminalFilter>,
}

impl Printer {
    /// A new connection streams from the start again.
    fn reattached(&mut self) {
        self.seen_bytes.clear();
        self.current = None;
    }

    fn on_item(&mut self, item: StreamItem) -> io::Result<()> {
        let key = match &item {
            StreamItem::BuildStarted { build, .. } => {
                self.current = Some(*build);
                self.outcome.build = Some(*build);
                Some(format!("build {build}"))
            }
            StreamItem::StepStarted { step, .. } => Some(format!("step {:?} {step}", self.current)),
            StreamItem::StepFinished { step, .. } => {
                Some(format!("step end {:?} {step}", self.current))
            }
            StreamItem::BuildFinished {
                build,
                result,
                reason,
            } => {
                self.outcome.result = Some(*result);
                self.outcome.reason = reason.clone();
                Some(format!("build end {build}"))
            }
            StreamItem::RequestCancelled { reason, .. } => {
                self.outcome.cancelled = true;
                self.outcome.result = Some(BuildResult::Cancelled);
                self.outcome.reason = Some(reason.clone());
                Some("cancelled".to_string())
            }
            _ => None,
        };
        if let Some(key) = key
            && !self.printed.insert(key)
        {
            return Ok(());
        }
        let item = match item {
            StreamItem::Output { step, data } => {
                let k = (self.current.unwrap_or(0), step);
                let seen = self.seen_bytes.entry(k).or_default();
                let start = *seen;
                *seen += data.len() as u64;
                let printed = self.printed_bytes.entry(k).or_default();
                if *seen <= *printed {
                    return Ok(());
                }
                let skip = printed.saturating_sub(start) as usize;
                *printed = *seen;
                StreamItem::Output {
                    step,
                    data: data[skip..].to_vec(),
                }
            }
            other => other,
        };
        self.print(&item)
    }

    /// The stream is over (or left): write what the filter held back.
    fn into_outcome(mut self) -> Outcome {
        if let Some(rest) = self.filter.as_mut().map(TerminalFilter::finish)
            && !rest.is_empty()
        {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&rest).and_then(|()| out.flush());
        }
        self.outcome
    }

    fn print(&mut self, item: &StreamItem) -> io::Result<()> {
        if self.json {
            let value = match item {
                StreamItem::Output { step, data } => serde_json::json!({
                    "type": "output", "step": step, "text": String::from_utf8_lossy(data),
                }),
                other => serde_json::to_value(other).map_err(io::Error::from)?,
            };
            return print_json_line(value);
        }
        let style = self.style.expect("set for people");
        let grey = crossterm::style::Color::DarkGrey;
        match item {
            StreamItem::Output { data, .. } => {
                let mut out = io::stdout().lock();
                match self.filter.as_mut() {
                    Some(filter) => out.write_all(&filter.push(data))?,
                    None => out.write_all(data)?,
                }
                out.flush()?;
            }
            // Always said (progress, on stderr): the build id, once known.
            StreamItem::BuildStarted {
                build,
                builder,
                worker,
            } => match self.request {
                Some(r) => eprintln!(
                    "build {build} of {builder} started on {worker} (request {})",
                    ids::request(r)
                ),
                None if self.banners => {
                    eprintln!("build {build} of {builder} started on {worker}")
                }
                None => {}
            },
            StreamItem::StepStarted { step, name } if self.banners => {
                eprintln!("{}", style.paint(&format!("── step {step}: {name}"), grey));
            }
            StreamItem::StepFinished {
                step,
                result,
                reason,
            } if self.banners => {
                let why = reason
                    .as_ref()
                    .map(|r| format!(": {}", escape(r)))
                    .unwrap_or_default();
                eprintln!(
                    "{}",
                    style.paint(&format!("── step {step} {result}{why}"), grey)
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// Stream a build, printing as items arrive; re-attach when the master
/// goes away (see the module's doc).
async fn follow(
    ctx: &mut Ctx,
    mut target: StreamTarget,
    step: Option<String>,
    output: bool,
    keep_following: bool,
    request: Option<RequestId>,
) -> Result<Outcome, CliError> {
    let mut printer = Printer {
        json: ctx.json,
        banners: !ctx.json && io::stderr().is_terminal() && keep_following,
        style: Some(ctx.style),
        request,
        filter: (!ctx.json && !ctx.raw && io::stdout().is_terminal()).then(TerminalFilter::default),
        ..Default::default()
    };
    // Listening for Ctrl-C started before the request was sent (see
    // `catch_interrupt`), so no SIGINT falls between the two.
    let mut interrupt = ctx.interrupt.take();
    // When the master went away, and whether that was said on stderr.
    let mut lost_since: Option<tokio::time::Instant> = None;
    loop {
        let lost = &mut lost_since;
        let attempt = async {
            let conn = ctx.conn().await?;
            // Reached the master (again): a later loss gets a new bound.
            *lost = None;
            let request = Request::Stream(StreamRequest {
                target: target.clone(),
                step: step.clone(),
                output,
                follow: keep_following,
            });
            Ok::<_, CliError>(conn.stream(request, |item| printer.on_item(item)).await?)
        };
        let interrupted = async {
            match interrupt.as_mut() {
                Some(sig) => {
                    sig.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let result = tokio::select! {
            result = attempt => result,
            _ = interrupted => {
                printer.outcome.interrupted = true;
                return Ok(printer.into_outcome());
            }
        };
        match result {
            Ok(Ok(Reply::StreamEnd)) => return Ok(printer.into_outcome()),
            Ok(Ok(other)) => return Err(unexpected(other)),
            Ok(Err(e)) => return Err(e.into()),
            Err(e) if keep_following && is_master_gone(&e) => {
                ctx.drop_connection();
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= ctx.reconnect_for {
                    return Err(CliError::MasterGone {
                        waited: ctx.reconnect_for,
                        source: Box::new(e),
                    });
                }
                if printer.printed.insert(format!("lost {since:?}")) {
                    eprintln!(
                        "bbctl: lost the master ({e}); re-attaching for up to {}",
                        humantime::format_duration(ctx.reconnect_for)
                    );
                }
                // Follow the same build once known (not "the latest").
                if let (StreamTarget::Latest, Some(build)) = (&target, printer.outcome.build) {
                    target = StreamTarget::Build(build);
                }
                printer.reattached();
                let pause = tokio::time::sleep(std::time::Duration::from_millis(100));
                tokio::select! {
                    _ = pause => {}
                    _ = async {
                        match interrupt.as_mut() {
                            Some(sig) => { sig.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {
                        printer.outcome.interrupted = true;
                        return Ok(printer.into_outcome());
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether an error means the master went away (restarting, crashed), as
/// opposed to a refusal or our own output failing.
fn is_master_gone(e: &CliError) -> bool {
    matches!(
        e,
        CliError::Connection(ConnectionError::Unreachable { .. })
            | CliError::Connection(ConnectionError::Frame(_))
    )
}

/// Say how the build ended: a JSON line on stdout, or a line on stderr.
fn finish(ctx: &Ctx, request: Option<RequestId>, o: &Outcome) -> Result<(), CliError> {
    if ctx.json {
        return Ok(print_json_line(serde_json::json!({
            "request_id": request,
            "build_id": o.build,
            "result": o.result,
            "reason": o.reason,
        }))?);
    }
    let result = ctx.style.result(o.result);
    let reason = o
        .reason
        .as_ref()
        .map(|r| format!(": {}", escape(r)))
        .unwrap_or_default();
    match (o.build, o.cancelled) {
        (_, true) => eprintln!("request cancelled before it started{reason}"),
        (Some(build), _) => eprintln!("build {build} finished: {result}{reason}"),
        (None, _) => eprintln!("finished: {result}{reason}"),
    }
    Ok(())
}
