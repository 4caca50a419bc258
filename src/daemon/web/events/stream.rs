//! Serving the event log over HTTP: `/api/v1/events` and the pages asked
//! for `text/event-stream`, with ids, `Last-Event-ID` resume, keepalive
//! comments and a `lagged` event for a client that fell behind.

use super::*;

/// `GET /api/v1/events`: the event stream (`text/event-stream`).
pub async fn sse(State(web): State<Web>, headers: HeaderMap) -> Result<Response, WebFail> {
    stream(&web, &headers, Topic::All).await
}

/// Does the request ask for an event stream (`Accept: text/event-stream`)
/// rather than the page?
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The event stream of `topic` for the asker of `headers`: the framing,
/// ids, keepalive and `Last-Event-ID` resume of `/api/v1/events`.
pub async fn stream(web: &Web, headers: &HeaderMap, topic: Topic) -> Result<Response, WebFail> {
    let who = crate::daemon::web::api::who(web, headers)?;
    web.master
        .authorize(
            &who,
            crate::daemon::auth::Ask::Request(&crate::protocol::Request::Events),
        )
        .map_err(|r| WebFail {
            status: axum::http::StatusCode::FORBIDDEN,
            message: r.reason,
        })?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let log = Arc::clone(&web.events);
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let (backlog, after, live) = match log.resume_point(last_id.as_deref()) {
        Ok(after) => {
            let (backlog, last, live) = log.follow(after);
            (backlog, after.unwrap_or(last), live)
        }
        Err(()) => {
            let (_, last, live) = log.follow(None);
            (None, last, live)
        }
    };
    let resumed = last_id.is_some();
    tokio::spawn(pump(
        web.master.clone(),
        log,
        topic,
        tx,
        backlog,
        resumed,
        after,
        live,
    ));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
        .into_response();
    let h = response.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    Ok(response)
}

/// A `lagged` event without an id: the client missed events (how many is
/// unknown: `missed` 0) and should read `status` again.
fn lagged() -> SseEvent {
    let event = Event {
        at_ms: crate::paths::now_ms(),
        generation: 0,
        kind: EventKind::Lagged { missed: 0 },
    };
    SseEvent::default().data(stamped(&event).to_string())
}

/// Feed one client: its backlog, then live events, until it leaves or the
/// master stops.
#[allow(clippy::too_many_arguments)]
async fn pump(
    master: MasterHandle,
    log: Arc<EventLog>,
    topic: Topic,
    tx: mpsc::Sender<SseEvent>,
    backlog: Option<Vec<Arc<Numbered>>>,
    resumed: bool,
    mut sent: u64,
    mut live: broadcast::Receiver<Arc<Numbered>>,
) {
    let send = |e: &Numbered| SseEvent::default().id(log.id(e.seq)).data(e.json.clone());
    // The events of a backlog the topic wants; false when the client left.
    let replay = async |events: Vec<Arc<Numbered>>, sent: &mut u64| {
        for e in events {
            if topic.wants(&e.scope) && tx.send(send(&e)).await.is_err() {
                return false;
            }
            *sent = e.seq;
        }
        true
    };
    let first = SseEvent::default().retry(RETRY).comment("events");
    if tx.send(first).await.is_err() {
        return;
    }
    let caught_up = match backlog {
        Some(events) => replay(events, &mut sent).await,
        None => !resumed || tx.send(lagged()).await.is_ok(),
    };
    if !caught_up {
        return;
    }
    loop {
        let next = tokio::select! {
            r = live.recv() => r,
            () = tx.closed() => return,
            () = master.shutting_down() => return,
        };
        match next {
            Ok(e) if e.seq <= sent => {}
            Ok(e) if !topic.wants(&e.scope) => sent = e.seq,
            Ok(e) => {
                if tx.send(send(&e)).await.is_err() {
                    return;
                }
                sent = e.seq;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow for the live channel: catch up from the log.
                let (backlog, _, rx) = log.follow(Some(sent));
                live = rx;
                match backlog {
                    Some(events) => {
                        if !replay(events, &mut sent).await {
                            return;
                        }
                    }
                    None => {
                        if tx.send(lagged()).await.is_err() {
                            return;
                        }
                        sent = log.kept.lock().unwrap_or_else(|e| e.into_inner()).next - 1;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
