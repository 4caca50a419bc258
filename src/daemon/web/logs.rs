//! `GET /api/v1/builds/N/steps/I/log?offset=K[&follow=1]`: a step's raw
//! output from byte `K`, as `text/plain`. With `follow=1` the answer is a
//! chunked stream that grows while the step runs and ends when it has
//! ended (`curl -N` follows it); the header `X-Log-Offset` says where it
//! starts, so a client that lost it resumes at `K` plus what it got.
//!
//! Like `bbctl log --follow` (`daemon::follow`), the log file is the
//! truth and notices only say when to look again: nothing is missed or
//! doubled, and no log is held whole in memory.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast;

use super::Web;
use super::api::{build_of, parse_id, who};
use super::notices::{Relayed, concerns};
use super::respond::WebFail;
use super::tail::Tail;
use crate::daemon::logs::{read_from, step_log_path};
use crate::protocol::{BuildId, Request, StepIndex, StreamRequest, StreamTarget};

/// The most a plain (not followed) answer carries; ask again from the
/// new offset for more.
pub const MAX_READ: usize = 4 << 20;
/// A followed log looks again at least this often (a missed notice
/// costs at most this much delay, never bytes).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The query of a log.
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    /// Start at this byte.
    pub offset: Option<u64>,
    /// Keep the answer open until the step ends (`1`/`true`).
    pub follow: Option<String>,
    /// Long poll: answer once there is output past `offset` or the step
    /// has ended (at most [`LONG_POLL`]); `X-Log-Complete` says which.
    pub wait: Option<String>,
}

/// The longest a `wait=1` answer is held back.
pub const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(25);

fn yes(flag: Option<&str>) -> bool {
    matches!(flag, Some("1" | "true" | "yes"))
}

/// `GET /api/v1/builds/N/steps/I/log`.
pub async fn log(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let build = parse_id(&id, "build")?;
    let detail = build_of(&web, &who, build).await?;
    let index: StepIndex = step
        .parse()
        .ok()
        .filter(|i| detail.steps.iter().any(|s| s.index == *i))
        .ok_or_else(|| WebFail::not_found(format!("build {build} has no step {step:?}")))?;
    let offset = q.offset.unwrap_or(0);
    let follow = yes(q.follow.as_deref());
    let path = step_log_path(&web.logs, build, index);
    let text = |body: Body| {
        let mut r = (super::respond::security_headers(), body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-log-offset", HeaderValue::from(offset));
        r
    };
    if yes(q.wait.as_deref()) && !follow {
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        let (bytes, complete) = long_poll(&web, build, index, offset, deadline).await?;
        let mut response = text(Body::from(bytes));
        response.headers_mut().insert(
            "x-log-complete",
            HeaderValue::from_static(if complete { "true" } else { "false" }),
        );
        return Ok(response);
    }
    if !follow {
        let bytes = tokio::task::spawn_blocking(move || read_from(&path, offset, MAX_READ))
            .await
            .map_err(|e| WebFail::bad_request(e.to_string()))?
            .map_err(|e| WebFail::bad_request(format!("cannot read the log: {e}")))?;
        return Ok(text(Body::from(bytes)));
    }
    web.master.may_follow(
        &who,
        &Request::Stream(StreamRequest {
            target: StreamTarget::Build(build),
            step: Some(index.to_string()),
            output: true,
            follow: true,
        }),
    )?;
    let follower = Follower::start(web, build, index, offset).await;
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|piece| (piece, f))
    });
    let mut response = text(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Has the step (or its whole build) ended? Asked before a read, so that
/// the read after it sees everything the step wrote.
async fn step_ended(web: &Web, build: BuildId, step: StepIndex) -> bool {
    match web.master.snapshot(StreamTarget::Build(build)).await {
        Ok(snap) => snap.build.is_none_or(|b| {
            b.summary.finished_at_ms.is_some()
                || b.steps
                    .iter()
                    .any(|s| s.index == step && s.finished_at_ms.is_some())
        }),
        Err(_) => true,
    }
}

/// Wait for news of `build`'s `step`: its log grew (`true`: no need to
/// ask the master whether it ended), or it may have ended, or a notice
/// was missed (`false`: look). Growth notices already queued behind the
/// first are taken with it: one look at the file covers them all.
async fn news(notices: &mut broadcast::Receiver<Relayed>, build: BuildId, step: StepIndex) -> bool {
    use broadcast::error::{RecvError, TryRecvError};
    loop {
        let item = match notices.recv().await {
            Ok(item) => item,
            Err(RecvError::Lagged(_)) => return false,
            Err(RecvError::Closed) => std::future::pending::<Relayed>().await,
        };
        match concerns(&item, build, step) {
            Some(true) => loop {
                match notices.try_recv() {
                    Ok(item) if concerns(&item, build, step) == Some(false) => return false,
                    Ok(_) => {}
                    Err(TryRecvError::Empty | TryRecvError::Closed) => return true,
                    Err(TryRecvError::Lagged(_)) => return false,
                }
            },
            Some(false) => return false,
            None => {}
        }
    }
}

/// `wait=1`: the output past `offset` once there is some, and whether
/// the log is complete (the step ended and all of it is in the answer).
/// A log that cannot be read is an error (500), never an empty log.
async fn long_poll(
    web: &Web,
    build: BuildId,
    step: StepIndex,
    offset: u64,
    deadline: tokio::time::Instant,
) -> Result<(Vec<u8>, bool), WebFail> {
    let unreadable = |e: String| WebFail {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot read the log of build {build} step {step}: {e}"),
    };
    let mut notices = web.notices.subscribe();
    let path = step_log_path(&web.logs, build, step);
    loop {
        let ended = step_ended(web, build, step).await;
        let p = path.clone();
        let bytes = tokio::task::spawn_blocking(move || read_from(&p, offset, MAX_READ))
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .map_err(|e| unreadable(e.to_string()))?;
        if !bytes.is_empty() || ended {
            let complete = ended && (bytes.len() < MAX_READ);
            return Ok((bytes, complete));
        }
        tokio::select! {
            _ = news(&mut notices, build, step) => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = tokio::time::sleep_until(deadline) => return Ok((Vec::new(), false)),
            () = web.master.shutting_down() => return Ok((Vec::new(), false)),
        }
    }
}

/// A followed log, as the answer's body pulls it: the log from an offset
/// until the step has ended and all of it is sent, or the master stops.
/// Dropped (its wait with it) when the client leaves.
struct Follower {
    web: Web,
    build: BuildId,
    step: StepIndex,
    offset: u64,
    tail: Arc<Tail>,
    notices: broadcast::Receiver<Relayed>,
    /// Whether the step had ended at the last look: asked of the master
    /// loop only at first and when a notice says it may have (never for
    /// each growth of the log: a crowd of followers would keep the loop
    /// busy).
    ended: bool,
}

impl Follower {
    async fn start(web: Web, build: BuildId, step: StepIndex, offset: u64) -> Follower {
        // Subscribed before the first look: nothing written after it is missed.
        let notices = web.notices.subscribe();
        let tail = web.tails.follow(step_log_path(&web.logs, build, step));
        let ended = step_ended(&web, build, step).await;
        Follower {
            web,
            build,
            step,
            offset,
            tail,
            notices,
            ended,
        }
    }

    /// The next piece of the log, once there is one; `None` at its end.
    /// A failed read is an error: the answer is then cut off without its
    /// last chunk, so that the client sees a broken transfer, never a log
    /// that merely looks complete.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let bytes = match self.tail.read(self.offset).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(
                        "http: cannot read the log of build {} step {}: {e}",
                        self.build,
                        self.step
                    );
                    return Some(Err(e));
                }
            };
            if !bytes.is_empty() {
                self.offset += bytes.len() as u64;
                return Some(Ok(bytes));
            }
            if self.ended {
                return None;
            }
            let grew = tokio::select! {
                grew = news(&mut self.notices, self.build, self.step) => grew,
                () = tokio::time::sleep(RECHECK) => false,
                () = self.web.master.shutting_down() => return None,
            };
            if !grew {
                self.ended = step_ended(&self.web, self.build, self.step).await;
            }
        }
    }
}
