//! The server-rendered pages: `/` (builders with their recent builds, the
//! queue, workers), `/builders/NAME`, `/builds/N` (steps, durations, log
//! tails that follow while a step runs), `/workers`, `/queue`, `/changes`.
//!
//! Every page is whole without JavaScript; the build page carries one
//! small inline script (admitted by its nonce alone) that, while the
//! build runs, long-polls the running step's log from the byte offset it
//! has and reads the build's JSON between steps (plain requests: they
//! pass any proxy, buffering or not). Untrusted text goes through
//! [`esc`] or `textContent`, never into markup unescaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};

use super::Web;
use super::api::{BuildsQuery, artifacts_of, build_of, builds_window, parse_id, status_of, who};
use super::events::{self, Topic};
use super::html::{duration, esc, page, result_label, time, url_segment};
use super::respond::{WebFail, html_page, nonce};
use crate::daemon::logs::{log_len, read_from, step_log_path};
use crate::protocol::{BuildSummary, ChangeInfo, QueuedStatus, Reply, StatusFilter, WorkerDetail};

mod build;
mod changes;

pub use build::build;
pub use changes::changes;

/// How many recent builds `/` shows per builder.
const GRID: usize = 12;
/// How many builds `/` reads to fill the grids.
const GRID_READ: u32 = 1000;
/// Builds per page of `/builders/NAME`.
const PAGE: u32 = 25;
/// Queued requests `/` shows (the rest are on `/queue`).
const INDEX_QUEUE: usize = 50;
/// Changes per page of `/changes`.
const CHANGES_PAGE: u32 = 50;
/// How much of each step's log the build page shows at first.
const TAIL: u64 = 64 << 10;

/// A failed page as HTML.
fn failed(web: &Web, e: WebFail) -> Response {
    let n = nonce();
    let body = format!("<p>{}</p>", esc(&e.message));
    html_page(e.status, page(&web.prefix, "error", &body, "", &n), &n)
}

/// Render with `f`, or an error page.
async fn render<F>(web: &Web, f: F) -> Response
where
    F: std::future::Future<Output = Result<(String, String, String), WebFail>>,
{
    match f.await {
        Ok((title, body, script)) => {
            let n = nonce();
            html_page(
                StatusCode::OK,
                page(&web.prefix, &title, &body, &script, &n),
                &n,
            )
        }
        Err(e) => failed(web, e),
    }
}

/// The queue as a table: its first `cap` requests, and how many more
/// (with a link to `/queue`).
fn queue_table(web: &Web, queue: &[QueuedStatus], now_ms: u64, cap: usize) -> String {
    if queue.is_empty() {
        return "<p>Nothing queued.</p>".into();
    }
    let (queue, more) = queue.split_at(queue.len().min(cap));
    let mut out = String::from(
        "<div class=\"wide\"><table><tr><th>request</th><th>builder</th><th>#</th>\
         <th>priority</th><th>waiting</th><th>reason</th></tr>",
    );
    for q in queue {
        let _ = write!(
            out,
            "<tr><td>r{}</td><td><a href=\"{p}/builders/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            q.request,
            url_segment(&q.builder),
            esc(&q.builder),
            q.position,
            q.priority,
            duration(now_ms.saturating_sub(q.submitted_at_ms)),
            esc(q.reason.as_deref().unwrap_or("")),
            p = esc(&web.prefix),
        );
    }
    out.push_str("</table></div>");
    if !more.is_empty() {
        let _ = write!(
            out,
            "<p>… and {} more: <a href=\"{}/queue\">the whole queue</a></p>",
            more.len(),
            esc(&web.prefix)
        );
    }
    out
}

fn workers_table(workers: &[WorkerDetail], now_ms: u64) -> String {
    let mut out = String::from(
        "<div class=\"wide\"><table><tr><th>worker</th><th>state</th><th>builds</th>\
         <th>last seen</th><th>host</th></tr>",
    );
    for w in workers {
        let s = &w.status;
        let state = match (s.connected, s.draining) {
            (true, false) => "connected",
            (true, true) => "draining",
            (false, _) => "offline",
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{state}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.running_builds.len(),
            s.max_builds,
            w.last_seen_ms
                .map(|t| format!("{} ago", duration(now_ms.saturating_sub(t))))
                .unwrap_or_default(),
            esc(w.host.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table></div>");
    out
}

fn builds_table(web: &Web, builds: &[BuildSummary]) -> String {
    if builds.is_empty() {
        return "<p>No builds.</p>".into();
    }
    let mut out = String::from(
        "<div class=\"wide\"><table><tr><th>build</th><th>builder</th><th>result</th>\
         <th>started</th><th>took</th><th>worker</th><th>reason</th></tr>",
    );
    for b in builds {
        let _ = write!(
            out,
            "<tr><td><a href=\"{p}/builds/{id}\">#{id}</a></td><td><a href=\"{p}/builders/{bu}\">{be}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            result_label(b.result),
            time(b.started_at_ms),
            b.finished_at_ms
                .map(|f| duration(f.saturating_sub(b.started_at_ms)))
                .unwrap_or_default(),
            esc(&b.worker),
            esc(b.reason.as_deref().unwrap_or("")),
            p = esc(&web.prefix),
            id = b.id,
            bu = url_segment(&b.builder),
            be = esc(&b.builder),
        );
    }
    out.push_str("</table></div>");
    out
}

/// A page's event stream (`Accept: text/event-stream`), or its error as
/// JSON (a stream client reads no HTML).
async fn page_stream(web: &Web, headers: &HeaderMap, topic: Topic) -> Response {
    match events::stream(web, headers, topic).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// `GET /`: builders with their recent builds, the queue, the workers;
/// with `Accept: text/event-stream`, every event.
pub async fn index(State(web): State<Web>, headers: HeaderMap) -> Response {
    if events::wants_stream(&headers) {
        return page_stream(&web, &headers, Topic::All).await;
    }
    render(&web, async {
        let who = who(&web, &headers)?;
        let status = status_of(&web, &who, StatusFilter::default()).await?;
        let recent = builds_window(
            &web,
            &who,
            &BuildsQuery {
                limit: Some(GRID_READ),
                ..BuildsQuery::default()
            },
        )
        .await?;
        let mut by_builder: BTreeMap<&str, Vec<&BuildSummary>> = BTreeMap::new();
        for b in &recent {
            let list = by_builder.entry(b.builder.as_str()).or_default();
            if list.len() < GRID {
                list.push(b);
            }
        }
        let p = esc(&web.prefix);
        let mut body = String::new();
        if status.draining {
            body.push_str("<p><strong>The master is draining: no build starts.</strong></p>");
        }
        body.push_str(
            "<div class=\"wide\"><table id=\"builders\"><tr><th>builder</th><th>state</th>\
             <th>queued</th><th>recent builds (newest first)</th></tr>",
        );
        for b in &status.builders {
            let mut grid = String::new();
            for build in by_builder.get(b.name.as_str()).into_iter().flatten() {
                let word = super::html::result_word(build.result);
                let _ = write!(
                    grid,
                    "<a class=\"r {word}\" href=\"{p}/builds/{id}\" title=\"#{id} {word}\"></a>",
                    id = build.id
                );
            }
            let _ = write!(
                body,
                "<tr><td><a href=\"{p}/builders/{}\">{}</a> <img alt=\"\" src=\"{p}/badge/{}.svg\" height=\"20\"></td>\
                 <td>{}</td><td>{}</td><td class=\"grid\">{grid}</td></tr>",
                url_segment(&b.name),
                esc(&b.name),
                url_segment(&b.name),
                esc(&b.state),
                b.queued,
            );
        }
        body.push_str("</table></div>");
        let queue = match web.master.queue(&who, None).await? {
            Reply::Queue(q) => q,
            _ => Vec::new(),
        };
        let _ = write!(
            body,
            "<h2>Queue</h2>{}<h2>Workers</h2>",
            queue_table(&web, &queue, status.now_ms, INDEX_QUEUE)
        );
        if let Reply::Workers(w) = web.master.workers(&who).await? {
            body.push_str(&workers_table(&w, status.now_ms));
        }
        Ok(("builders".to_string(), body, String::new()))
    })
    .await
}

/// The query of a builder's page.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    /// Builds skipped (paging).
    pub offset: Option<u32>,
}

/// The status of builder `name` (404 when there is none).
async fn builder_status(
    web: &Web,
    who: &crate::daemon::auth::Principal,
    name: &str,
) -> Result<crate::protocol::StatusReply, WebFail> {
    let filter = StatusFilter {
        builder: Some(name.trim_end_matches('*').to_string()),
        ..StatusFilter::default()
    };
    let status = status_of(web, who, filter).await?;
    if status.builders.first().is_none_or(|b| b.name != name) {
        return Err(WebFail::not_found(format!("no builder {name:?}")));
    }
    Ok(status)
}

/// `GET /builders/NAME`: its history (paged), queue, workers, and a force
/// button for token holders; with `Accept: text/event-stream`, the events
/// of its requests and builds.
pub async fn builder(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if events::wants_stream(&headers) {
        let known = match who(&web, &headers) {
            Ok(who) => builder_status(&web, &who, &name).await.map(|_| ()),
            Err(e) => Err(e),
        };
        return match known {
            Ok(()) => page_stream(&web, &headers, Topic::Builder(name)).await,
            Err(e) => e.into_response(),
        };
    }
    render(&web, async {
        let who = who(&web, &headers)?;
        let status = builder_status(&web, &who, &name).await?;
        let b = &status.builders[0];
        let offset = q.offset.unwrap_or(0);
        let builds = builds_window(
            &web,
            &who,
            &BuildsQuery {
                builder: Some(name.clone()),
                limit: Some(PAGE + 1),
                offset: Some(offset),
            },
        )
        .await?;
        let more = builds.len() > PAGE as usize;
        let p = esc(&web.prefix);
        let n = url_segment(&name);
        let mut body = format!(
            "<p>{} · {} queued · {} running · workers: {}</p>\
             <p><img alt=\"status badge\" src=\"{p}/badge/{n}.svg\"></p>\
             <form class=\"inline\" method=\"post\" action=\"{p}/builders/{n}/force\">\
             <input type=\"password\" name=\"token\" placeholder=\"token\" autocomplete=\"off\" required>\
             <input type=\"text\" name=\"reason\" placeholder=\"reason\">\
             <button type=\"submit\">force build</button></form><h2>Builds</h2>",
            esc(&b.state),
            b.queued,
            b.running,
            esc(&b.workers.join(", ")),
        );
        body.push_str(&builds_table(&web, &builds[..builds.len().min(PAGE as usize)]));
        if offset > 0 {
            let _ = write!(
                body,
                "<a href=\"{p}/builders/{n}?offset={}\">newer</a> ",
                offset.saturating_sub(PAGE)
            );
        }
        if more {
            let _ = write!(
                body,
                "<a href=\"{p}/builders/{n}?offset={}\">older</a>",
                offset + PAGE
            );
        }
        if let Reply::Queue(queue) = web.master.queue(&who, Some(name.clone())).await? {
            let _ = write!(
                body,
                "<h2>Queue</h2>{}",
                queue_table(&web, &queue, status.now_ms, usize::MAX)
            );
        }
        body.push_str(&locks_of(&web, &who, &name, status.now_ms).await?);
        Ok((format!("builder {name}"), body, String::new()))
    })
    .await
}

/// `GET /workers`.
pub async fn workers(State(web): State<Web>, headers: HeaderMap) -> Response {
    render(&web, async {
        let who = who(&web, &headers)?;
        let now = crate::paths::now_ms();
        let body = match web.master.workers(&who).await? {
            Reply::Workers(w) => workers_table(&w, now),
            _ => String::new(),
        };
        Ok(("workers".to_string(), body, String::new()))
    })
    .await
}

/// `GET /queue` (and a cancel form); with `Accept: text/event-stream`,
/// the events that change the queue.
pub async fn queue(State(web): State<Web>, headers: HeaderMap) -> Response {
    if events::wants_stream(&headers) {
        return page_stream(&web, &headers, Topic::Queue).await;
    }
    render(&web, async {
        let who = who(&web, &headers)?;
        let now = crate::paths::now_ms();
        let queue = match web.master.queue(&who, None).await? {
            Reply::Queue(q) => q,
            _ => Vec::new(),
        };
        let mut body = String::new();
        if !queue.is_empty() {
            let _ = write!(
                body,
                "<form id=\"cancel\" class=\"inline\" method=\"post\" action=\"{p}/queue/cancel\">\
                 <input type=\"text\" name=\"request\" placeholder=\"request (r12)\" required>\
                 <input type=\"password\" name=\"token\" placeholder=\"token\" autocomplete=\"off\" required>\
                 <button type=\"submit\">cancel</button></form>",
                p = esc(&web.prefix)
            );
        }
        body.push_str(&queue_table(&web, &queue, now, usize::MAX));
        Ok(("queue".to_string(), body, String::new()))
    })
    .await
}

/// The locks builder `name` claims (for its builds or its steps), with
/// their holders and waiters now; empty without any.
async fn locks_of(
    web: &Web,
    who: &crate::daemon::auth::Principal,
    name: &str,
    now_ms: u64,
) -> Result<String, WebFail> {
    let Some(config) = web.master.config().await else {
        return Ok(String::new());
    };
    let Some(def) = config.builders.iter().find(|b| b.name == name) else {
        return Ok(String::new());
    };
    let mut claimed: Vec<&str> = def.locks.iter().map(|l| l.name.as_str()).collect();
    for step in &def.steps {
        claimed.extend(step.locks.iter().map(|l| l.name.as_str()));
    }
    if claimed.is_empty() {
        return Ok(String::new());
    }
    let Reply::Locks(locks) = web.master.locks(who).await? else {
        return Ok(String::new());
    };
    let mut out = String::from(
        "<h2>Locks</h2><div class=\"wide\"><table id=\"locks\"><tr><th>lock</th><th>scope</th>\
         <th>max</th><th>held by</th><th>waiting</th></tr>",
    );
    let p = esc(&web.prefix);
    for l in locks.iter().filter(|l| claimed.contains(&l.name.as_str())) {
        let mut held = String::new();
        for h in &l.holders {
            let _ = write!(
                held,
                "<a href=\"{p}/builds/{b}\">#{b}</a> {} ({}) ",
                esc(&h.builder),
                esc(&h.access),
                b = h.build
            );
        }
        let mut waiting = String::new();
        for w in &l.waiters {
            let _ = write!(
                waiting,
                "{} {} for {} ",
                esc(&w.builder),
                w.build
                    .map(|b| format!("#{b}"))
                    .or(w.request.map(|r| format!("r{r}")))
                    .unwrap_or_default(),
                duration(now_ms.saturating_sub(w.since_ms)),
            );
        }
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.name),
            esc(&l.scope),
            l.worker
                .as_deref()
                .map(|w| format!(" ({})", esc(w)))
                .unwrap_or_default(),
            l.max,
            held.trim_end(),
            waiting.trim_end(),
        );
    }
    out.push_str("</table></div>");
    Ok(out)
}
