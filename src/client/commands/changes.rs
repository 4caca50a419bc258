//! `sendchange` and `changes`: changes in, and the builds they started.

use std::io::{self, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::cli::SendchangeArgs;
use crate::client::ids;
use crate::client::render::{Table, ago};
use crate::paths::now_ms;
use crate::protocol::{ChangeInfo, NewChange, Reply, Request, SourceStamp};
use crate::untrusted::escape;

/// `bbctl sendchange`: store one change; its id on stderr (`--json`: an
/// object on stdout), once it is on disk.
pub async fn sendchange(ctx: &mut Ctx, args: SendchangeArgs) -> Result<u8, CliError> {
    let change = NewChange {
        repository: args.repository,
        branch: args.branch,
        revision: args.revision,
        files: args.files,
        author: args.author,
        comments: args.comments,
        when_ms: Some(now_ms()),
        properties: args.properties.into_iter().collect(),
        category: args.category,
    };
    let (branch, revision) = (change.branch.clone(), change.revision.clone());
    let ids = match ctx.call(Request::SendChange { change }).await? {
        Reply::ChangesAdded { change_ids } => change_ids,
        other => return Err(unexpected(other)),
    };
    let id = ids.first().copied().unwrap_or_default();
    if ctx.json {
        print_json(&serde_json::json!({ "change_id": id }))?;
    } else {
        eprintln!(
            "change {id} stored ({} at {})",
            escape(&branch),
            escape(&revision)
        );
    }
    Ok(0)
}

/// `bbctl changes`.
pub async fn changes(ctx: &mut Ctx, limit: u32) -> Result<u8, CliError> {
    let changes = match ctx.call(Request::Changes { limit }).await? {
        Reply::Changes(c) => c,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&changes)?;
        return Ok(0);
    }
    let now = now_ms();
    let mut table = Table::new(vec![
        "ID",
        "BRANCH",
        "REVISION",
        "AUTHOR",
        "FILES",
        "STORED",
        "BUILDS",
        "REPOSITORY",
    ]);
    for c in &changes {
        let new = &c.change.new;
        table.row(vec![
            c.change.id.to_string(),
            escape(&new.branch),
            escape(&short(&new.revision)),
            escape(new.author.as_deref().unwrap_or_default()),
            new.files.len().to_string(),
            ago(c.change.at_ms, now),
            builds_of(c),
            escape(&new.repository),
        ]);
    }
    let mut out = io::stdout().lock();
    if changes.is_empty() {
        writeln!(out, "no changes")?;
    } else {
        table.print(&mut out, &ctx.style)?;
    }
    Ok(0)
}

/// `test #4, lint r9 (queued)`: each request's builder and latest build.
fn builds_of(c: &ChangeInfo) -> String {
    if c.requests.is_empty() {
        return "-".into();
    }
    c.requests
        .iter()
        .map(|r| match r.builds.last() {
            Some(b) => format!("{} #{b}", r.builder),
            None => format!("{} {} (queued)", r.builder, ids::request(r.request_id)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A revision cut to 12 characters, as tables show commit ids.
pub fn short(revision: &str) -> String {
    revision.chars().take(12).collect()
}

/// `main@0123456789ab`: a source stamp in a table cell.
pub fn stamp(source: &SourceStamp) -> String {
    match &source.revision {
        Some(rev) => format!("{}@{}", escape(&source.branch), escape(&short(rev))),
        None => escape(&source.branch),
    }
}
