//! `builds` and `build`: the history.

use std::io::{self, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::cli::BuildsArgs;
use crate::client::render::{Table, ago, duration};
use crate::paths::now_ms;
use crate::protocol::{BuildDetail, Reply, Request};
use crate::untrusted::escape;

/// `bbctl builds`.
pub async fn builds(ctx: &mut Ctx, args: BuildsArgs) -> Result<u8, CliError> {
    let request = Request::Builds {
        builder: args.builder,
        limit: args.limit,
    };
    let builds = match ctx.call(request).await? {
        Reply::Builds(b) => b,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&builds)?;
        return Ok(0);
    }
    let now = now_ms();
    let mut table = Table::new(vec![
        "ID", "BUILDER", "RESULT", "WORKER", "GEN", "STARTED", "TOOK", "SOURCE", "REASON",
    ]);
    for b in &builds {
        table.row(vec![
            b.id.to_string(),
            b.builder.clone(),
            ctx.style.result(b.result),
            b.worker.clone(),
            b.generation.to_string(),
            ago(b.started_at_ms, now),
            duration(
                b.finished_at_ms
                    .unwrap_or(now)
                    .saturating_sub(b.started_at_ms),
            ),
            b.source
                .as_ref()
                .map(super::changes::stamp)
                .unwrap_or_default(),
            escape(b.reason.as_deref().unwrap_or_default()),
        ]);
    }
    let mut out = io::stdout().lock();
    if builds.is_empty() {
        writeln!(out, "no builds")?;
    } else {
        table.print(&mut out, &ctx.style)?;
    }
    Ok(0)
}

/// `bbctl build ID`.
pub async fn build(ctx: &mut Ctx, id: u64) -> Result<u8, CliError> {
    let detail = match ctx.call(Request::Build { build: id }).await? {
        Reply::Build(b) => b,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&detail)?;
    } else {
        print_build(ctx, &detail)?;
    }
    Ok(0)
}

fn print_build(ctx: &Ctx, d: &BuildDetail) -> io::Result<()> {
    let now = now_ms();
    let s = &d.summary;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "build {} of {} (request r{})",
        s.id, s.builder, s.request_id
    )?;
    writeln!(out, "  result:     {}", ctx.style.result(s.result))?;
    if let Some(reason) = &s.reason {
        writeln!(out, "  reason:     {}", escape(reason))?;
    }
    writeln!(out, "  worker:     {}", s.worker)?;
    writeln!(
        out,
        "  config:     generation {} (hash {})",
        s.generation, s.config_hash
    )?;
    writeln!(
        out,
        "  started:    {} (took {})",
        ago(s.started_at_ms, now),
        duration(
            s.finished_at_ms
                .unwrap_or(now)
                .saturating_sub(s.started_at_ms)
        )
    )?;
    if let Some(reason) = &d.request_reason {
        writeln!(out, "  requested:  {}", escape(reason))?;
    }
    if let Some(src) = &s.source {
        writeln!(out, "  repository: {}", escape(&src.repository))?;
        writeln!(out, "  branch:     {}", escape(&src.branch))?;
        if let Some(rev) = &src.revision {
            writeln!(out, "  revision:   {}", escape(rev))?;
        }
        if !src.changes.is_empty() {
            writeln!(out, "  changes:    {}", src.changes_csv())?;
        }
    }
    for (k, v) in &d.properties {
        writeln!(out, "  property:   {}={}", escape(k), escape(v))?;
    }
    writeln!(out)?;
    let mut table = Table::new(vec!["STEP", "NAME", "RESULT", "TOOK", "LOG", "REASON"]);
    for step in &d.steps {
        table.row(vec![
            step.index.to_string(),
            step.name.clone(),
            ctx.style.result(step.result),
            duration(
                step.finished_at_ms
                    .unwrap_or(now)
                    .saturating_sub(step.started_at_ms),
            ),
            format!("{} B", step.log_bytes),
            escape(step.reason.as_deref().unwrap_or_default()),
        ]);
    }
    table.print(&mut out, &ctx.style)
}
