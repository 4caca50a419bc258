//! The read-only JSON API under `/api/v1`: the same objects as `bbctl
//! --json` (docs/json.md), each stamped `"schema": 1`, read through the
//! front door (history off the master loop).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Web;
use super::respond::{WebFail, json};
use super::tokens;
use crate::daemon::auth::Principal;
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, Reply, RequestId, StatusFilter, StatusReply,
};

/// The default `limit` of `/api/v1/builds`.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `offset + limit` of `/api/v1/builds` (the history's own cap).
pub const MAX_WINDOW: u32 = crate::daemon::store::MAX_LIST;

/// Who is asking: the token's holder, or anonymous.
pub fn who(web: &Web, headers: &HeaderMap) -> Result<Principal, WebFail> {
    tokens::principal(&web.settings, headers)
}

/// A reply of an unexpected kind (never, short of a bug).
fn unexpected(reply: Reply) -> WebFail {
    WebFail {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("unexpected answer: {reply:?}"),
    }
}

/// A path id that is not a number: 404, like an unknown one.
pub fn parse_id(text: &str, what: &str) -> Result<u64, WebFail> {
    text.trim_start_matches(['r', '#'])
        .parse()
        .map_err(|_| WebFail::not_found(format!("no {what} {text:?}")))
}

/// `bbctl status`, through the front door.
pub async fn status_of(
    web: &Web,
    who: &Principal,
    filter: StatusFilter,
) -> Result<StatusReply, WebFail> {
    match web.master.status(who, filter).await? {
        Reply::Status(status) => Ok(status),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/v1/status?builder=&state=&limit=`: `bbctl --json status`.
pub async fn status(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(filter): Query<StatusFilter>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    Ok(json(&status_of(&web, &who, filter).await?))
}

/// `GET /api/v1/builders`: the builders of `status`.
pub async fn builders(State(web): State<Web>, headers: HeaderMap) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let status = status_of(&web, &who, StatusFilter::default()).await?;
    Ok(json(&status.builders))
}

/// `GET /api/v1/builders/NAME`: one builder of `status`.
pub async fn builder(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let filter = StatusFilter {
        builder: Some(name.trim_end_matches('*').to_string()),
        ..StatusFilter::default()
    };
    let status = status_of(&web, &who, filter).await?;
    match status.builders.first() {
        Some(b) => Ok(json(b)),
        None => Err(WebFail::not_found(format!("no builder {name:?}"))),
    }
}

/// The query of `/api/v1/builds`.
#[derive(Debug, Default, Deserialize)]
pub struct BuildsQuery {
    /// Only this builder's builds.
    pub builder: Option<String>,
    /// At most this many (default [`DEFAULT_LIMIT`]).
    pub limit: Option<u32>,
    /// Skip this many of the newest first.
    pub offset: Option<u32>,
}

/// Builds newest first, a window of them.
pub async fn builds_window(
    web: &Web,
    who: &Principal,
    q: &BuildsQuery,
) -> Result<Vec<BuildSummary>, WebFail> {
    let (offset, window) = window(q.limit, q.offset, "builds")?;
    match web.master.builds(who, q.builder.clone(), window).await? {
        Reply::Builds(list) => Ok(list.into_iter().skip(offset).collect()),
        other => Err(unexpected(other)),
    }
}

/// `offset` and `limit` of a list read newest first: how many to skip,
/// and how many to ask for (at most [`MAX_WINDOW`]: `what` names them in
/// the refusal).
pub fn window(
    limit: Option<u32>,
    offset: Option<u32>,
    what: &str,
) -> Result<(usize, u32), WebFail> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or(0);
    let window = offset.saturating_add(limit);
    if window > MAX_WINDOW {
        return Err(WebFail::bad_request(format!(
            "offset + limit is {window}; at most {MAX_WINDOW} {what} back can be read"
        )));
    }
    Ok((offset as usize, window))
}

/// `GET /api/v1/builds?builder=&limit=&offset=`: `bbctl --json builds`.
pub async fn builds(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<BuildsQuery>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    Ok(json(&builds_window(&web, &who, &q).await?))
}

/// One build in detail.
pub async fn build_of(web: &Web, who: &Principal, id: BuildId) -> Result<BuildDetail, WebFail> {
    match web.master.build(who, id).await? {
        Reply::Build(b) => Ok(b),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/v1/builds/N`: `bbctl --json build N`.
pub async fn build(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let id = parse_id(&id, "build")?;
    Ok(json(&build_of(&web, &who, id).await?))
}

/// `GET /api/v1/builds/N/steps`: the steps of `bbctl --json build N`.
pub async fn steps(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let id = parse_id(&id, "build")?;
    Ok(json(&build_of(&web, &who, id).await?.steps))
}

/// `GET /api/v1/requests/N`: `bbctl --json request N`.
pub async fn request(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let id: RequestId = parse_id(&id, "request")?;
    match web.master.request_info(&who, id).await? {
        Reply::Request(r) => Ok(json(&r)),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/v1/workers`: `bbctl --json workers`.
pub async fn workers(State(web): State<Web>, headers: HeaderMap) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    match web.master.workers(&who).await? {
        Reply::Workers(w) => Ok(json(&w)),
        other => Err(unexpected(other)),
    }
}

/// The query of `/api/v1/changes`.
#[derive(Debug, Default, Deserialize)]
pub struct ChangesQuery {
    /// At most this many, newest first (default [`DEFAULT_LIMIT`]).
    pub limit: Option<u32>,
    /// Skip this many of the newest first.
    pub offset: Option<u32>,
}

/// `GET /api/v1/changes?limit=&offset=`: the changes, newest first, with
/// the requests and builds each started.
pub async fn changes(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let (offset, window) = window(q.limit, q.offset, "changes")?;
    match web.master.changes(&who, window).await? {
        Reply::Changes(c) => Ok(json(&c.into_iter().skip(offset).collect::<Vec<_>>())),
        other => Err(unexpected(other)),
    }
}

/// The query of `/api/v1/queue`.
#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    /// Only this builder's queue.
    pub builder: Option<String>,
}

/// `GET /api/v1/queue?builder=`: `bbctl --json queue`.
pub async fn queue(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    match web.master.queue(&who, q.builder).await? {
        Reply::Queue(q) => Ok(json(&q)),
        other => Err(unexpected(other)),
    }
}

/// A build's artifacts.
pub async fn artifacts_of(
    web: &Web,
    who: &Principal,
    id: BuildId,
) -> Result<Vec<ArtifactInfo>, WebFail> {
    match web.master.artifacts(who, id).await? {
        Reply::Artifacts(a) => Ok(a),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/v1/builds/N/artifacts`: `bbctl --json artifacts N`.
pub async fn artifacts(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let id = parse_id(&id, "build")?;
    Ok(json(&artifacts_of(&web, &who, id).await?))
}

/// `GET /api/v1/builds/N/artifacts/NAME`: the file's bytes. Only a name
/// the history lists is served (so no path can leave the build's
/// artifacts), as an attachment, never rendered.
pub async fn artifact(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let id = parse_id(&id, "build")?;
    let missing = || WebFail::not_found(format!("build {id} has no artifact named {name:?}"));
    if name.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err(missing());
    }
    let list = artifacts_of(&web, &who, id).await?;
    let info = list
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(missing)?;
    let path = web.dirs.artifact(id, &info.name);
    let file = tokio::fs::File::open(&path).await.map_err(|e| WebFail {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot open artifact {name:?} of build {id}: {e}"),
    })?;
    let body = Body::from_stream(file_chunks(file, info.size));
    let base = info.name.rsplit('/').next().unwrap_or("artifact");
    let disposition: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut response = (super::respond::security_headers(), body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{disposition}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The first `size` bytes of `file`, in chunks (the client paces us).
fn file_chunks(
    file: tokio::fs::File,
    size: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    use tokio::io::AsyncReadExt as _;
    futures_util::stream::unfold((file, size), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 << 10) as usize];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the artifact is shorter than recorded",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}
