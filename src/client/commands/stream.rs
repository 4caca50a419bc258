//! `force-build` (with `--wait`/`--follow`) and `log`: commands that read a
//! build's stream. Build output goes to stdout untouched; progress lines go
//! to stderr, so `bbctl log 7 > out.txt` holds exactly what the steps wrote.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::cli::{ForceBuildArgs, LogArgs};
use crate::client::render::Style;
use crate::client::{CliError, EXIT_FAILED};
use crate::protocol::{
    BuildId, BuildResult, Reply, Request, RequestId, StreamItem, StreamRequest, StreamTarget,
};

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

/// `bbctl force-build BUILDER`.
pub async fn force_build(ctx: &mut Ctx, args: ForceBuildArgs) -> Result<u8, CliError> {
    if args.wait || args.follow {
        ctx.catch_interrupt()?;
    }
    let properties: BTreeMap<String, String> = args.properties.into_iter().collect();
    let request = Request::ForceBuild {
        builder: args.builder.clone(),
        reason: args.reason,
        properties,
        priority: args.priority,
    };
    let request_id = match ctx.call(request).await? {
        Reply::Queued { request_id } => request_id,
        other => return Err(unexpected(other)),
    };
    if !args.wait && !args.follow {
        if ctx.json {
            print_json(&serde_json::json!({ "request_id": request_id, "builder": args.builder }))?;
        } else {
            writeln!(
                io::stdout().lock(),
                "request {request_id} queued for {}",
                args.builder
            )?;
        }
        return Ok(0);
    }
    if !ctx.json {
        eprintln!("request {request_id} queued for {}", args.builder);
    }
    wait_for(ctx, request_id, args.follow, args.cancel_on_interrupt).await
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
    let outcome = follow(ctx, target, None, output, true).await?;
    if outcome.interrupted {
        if cancel {
            // Interrupted either way: exit 130 even if the cancel comes
            // too late (the build just finished).
            let cancelled = match ctx.open_connection().await {
                Ok(mut conn) => conn.call(Request::Cancel { request }).await,
                Err(e) => {
                    eprintln!("bbctl: interrupted; could not cancel request {request}: {e}");
                    return Ok(EXIT_INTERRUPTED);
                }
            };
            match cancelled {
                Ok(Ok(Reply::Done { message })) => eprintln!("bbctl: interrupted: {message}"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("bbctl: interrupted; request {request} not cancelled: {e}"),
                Err(e) => eprintln!("bbctl: interrupted; could not cancel request {request}: {e}"),
            }
        } else {
            eprintln!(
                "bbctl: detached; request {request} goes on. Re-attach with: bbctl wait {request}{}",
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
    let outcome = follow(ctx, target, args.step, true, args.follow).await?;
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

/// Stream a build, printing as items arrive.
async fn follow(
    ctx: &mut Ctx,
    target: StreamTarget,
    step: Option<String>,
    output: bool,
    keep_following: bool,
) -> Result<Outcome, CliError> {
    let json = ctx.json;
    let banners = !json && io::stderr().is_terminal() && keep_following;
    let style = ctx.style;
    let mut outcome = Outcome::default();
    let request = Request::Stream(StreamRequest {
        target,
        step,
        output,
        follow: keep_following,
    });
    // Listening for Ctrl-C started before the request was sent (see
    // `catch_interrupt`), so no SIGINT falls between the two.
    let mut interrupt = ctx.interrupt.take();
    let conn = ctx.conn().await?;
    let streaming = conn.stream(request, |item| {
        on_item(&item, json, banners, &style, &mut outcome)
    });
    let interrupted = async {
        match interrupt.as_mut() {
            Some(sig) => {
                sig.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let result = tokio::select! {
        result = streaming => result?,
        _ = interrupted => {
            outcome.interrupted = true;
            return Ok(outcome);
        }
    };
    match result? {
        Reply::StreamEnd => Ok(outcome),
        other => Err(unexpected(other)),
    }
}

fn on_item(
    item: &StreamItem,
    json: bool,
    banners: bool,
    style: &Style,
    outcome: &mut Outcome,
) -> io::Result<()> {
    match item {
        StreamItem::BuildStarted { build, .. } => outcome.build = Some(*build),
        StreamItem::BuildFinished { result, reason, .. } => {
            outcome.result = Some(*result);
            outcome.reason = reason.clone();
        }
        StreamItem::RequestCancelled { reason, .. } => {
            outcome.cancelled = true;
            outcome.result = Some(BuildResult::Cancelled);
            outcome.reason = Some(reason.clone());
        }
        _ => {}
    }
    if json {
        let mut out = io::stdout().lock();
        let value = match item {
            StreamItem::Output { step, data } => serde_json::json!({
                "type": "output", "step": step, "text": String::from_utf8_lossy(data),
            }),
            other => serde_json::to_value(other).map_err(io::Error::from)?,
        };
        let mut value = value;
        value["schema"] = serde_json::json!(crate::client::JSON_SCHEMA_VERSION);
        serde_json::to_writer(&mut out, &value).map_err(io::Error::from)?;
        writeln!(out)?;
        return out.flush();
    }
    match item {
        StreamItem::Output { data, .. } => {
            let mut out = io::stdout().lock();
            out.write_all(data)?;
            out.flush()?;
        }
        StreamItem::BuildStarted {
            build,
            builder,
            worker,
        } if banners => eprintln!("build {build} of {builder} started on {worker}"),
        StreamItem::StepStarted { step, name } if banners => {
            eprintln!(
                "{}",
                style.paint(
                    &format!("── step {step}: {name}"),
                    crossterm::style::Color::DarkGrey
                )
            );
        }
        StreamItem::StepFinished {
            step,
            result,
            reason,
        } if banners => eprintln!(
            "{}",
            style.paint(
                &format!(
                    "── step {step} {}{}",
                    result,
                    reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                crossterm::style::Color::DarkGrey
            )
        ),
        _ => {}
    }
    Ok(())
}

/// Say how the build ended: a JSON object on stdout, or a line on stderr.
fn finish(ctx: &Ctx, request: Option<RequestId>, o: &Outcome) -> Result<(), CliError> {
    if ctx.json {
        return print_json(&serde_json::json!({
            "request_id": request,
            "build_id": o.build,
            "result": o.result,
            "reason": o.reason,
        }));
    }
    let result = ctx.style.result(o.result);
    let reason = o
        .reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match (o.build, o.cancelled) {
        (_, true) => eprintln!("request cancelled before it started{reason}"),
        (Some(build), _) => eprintln!("build {build} finished: {result}{reason}"),
        (None, _) => eprintln!("finished: {result}{reason}"),
    }
    Ok(())
}
