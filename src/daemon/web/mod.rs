//! The web server (`[http]`, `bbmaster --http`): server-rendered pages,
//! the JSON API under `/api/v1`, live events as server-sent events, and
//! token-guarded writes (docs/http.md).
//!
//! One more adapter on the front door: it asks only
//! [`MasterHandle`] (whose history reads are off the master loop), speaks
//! the views of `protocol::views` in the JSON of `bbctl --json`
//! (docs/json.md), and lets `daemon::auth` decide who may do what
//! ([`Principal::HttpAnonymous`] reads, [`Principal::HttpToken`] writes
//! what its `may` lists). A slow client only slows its own connection.
//!
//! Split by job: [`api`] (JSON reads), [`writes`] (POSTs), [`events`]
//! (the numbered event log behind SSE), [`logs`] (raw and followed step
//! logs), [`pages`] and [`html`] (HTML), [`badge`], [`tokens`] (who is
//! asking), [`hooks`] (webhooks that add changes), [`respond`] (answers
//! and errors), [`runtime`] (the web's own threads).
//!
//! The server runs on a tokio runtime of its own ([`Running::start`],
//! [`runtime`]): one worker thread at a lower OS priority, so that
//! serving many clients never takes the threads of the master loop and
//! the worker links (docs/http.md, "Its own threads").

pub mod api;
pub mod badge;
pub mod events;
pub mod hooks;
pub mod html;
pub mod logs;
pub mod notices;
pub mod pages;
pub mod respond;
pub mod runtime;
pub mod tail;
pub mod tokens;
pub mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::config::HttpSettings;
use crate::daemon::auth::Principal;
use crate::daemon::dirs::Dirs;
use crate::daemon::handle::MasterHandle;

/// How long a client may take to send a request's headers (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request with a body may take, body and answer together.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read (a force's JSON, a form).
pub const MAX_BODY: usize = 64 << 10;
/// The largest request head (headers) buffered.
pub const MAX_HEAD: usize = 64 << 10;
/// How long open connections get to finish once the master stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What every request handler shares.
#[derive(Clone)]
pub struct Web {
    /// The front door.
    pub master: MasterHandle,
    /// Where step logs are (`<state_dir>/logs`).
    pub logs: PathBuf,
    /// Where artifacts are.
    pub dirs: Dirs,
    /// `[http]`.
    pub settings: Arc<HttpSettings>,
    /// The numbered event log behind `/api/v1/events`.
    pub events: Arc<events::EventLog>,
    /// Path prefix of every link in pages (the path of `base_url`).
    pub prefix: String,
    /// Webhook deliveries seen lately (replays are ignored).
    pub seen: Arc<hooks::Seen>,
    /// The master's notices, relayed for the followed logs.
    pub notices: Arc<notices::Relay>,
    /// The output of the followed logs, read once for all followers.
    pub tails: Arc<tail::Tails>,
}

impl Web {
    /// The context of a server with these settings.
    pub fn new(master: MasterHandle, logs: PathBuf, dirs: Dirs, settings: HttpSettings) -> Self {
        let prefix = link_prefix(settings.base_url.as_deref());
        Web {
            events: events::EventLog::start(&master),
            notices: notices::Relay::start(&master),
            master,
            logs,
            dirs,
            settings: Arc::new(settings),
            prefix,
            seen: Arc::default(),
            tails: Arc::default(),
        }
    }

    /// The principal for a request without a token.
    pub fn anonymous() -> Principal {
        Principal::HttpAnonymous
    }
}

/// The path of `base_url` (`https://ci.example.org/bb` -> `/bb`), which
/// every link in pages starts with; empty without one.
pub fn link_prefix(base_url: Option<&str>) -> String {
    base_url
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

/// Every route of the server.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/builders/{name}", get(pages::builder))
        .route("/builds/{id}", get(pages::build))
        .route("/builds/{id}/stop", post(writes::page_stop))
        .route("/builds/{id}/rebuild", post(writes::page_rebuild))
        .route("/queue/cancel", post(writes::page_cancel))
        .route("/builders/{name}/force", post(writes::page_force))
        .route("/workers", get(pages::workers))
        .route("/queue", get(pages::queue))
        .route("/changes", get(pages::changes))
        .route("/badge/{file}", get(badge::badge))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/builders", get(api::builders))
        .route("/api/v1/builders/{name}", get(api::builder))
        .route("/api/v1/builders/{name}/force", post(writes::force))
        .route("/api/v1/builds", get(api::builds))
        .route("/api/v1/builds/{id}", get(api::build))
        .route("/api/v1/builds/{id}/stop", post(writes::stop))
        .route("/api/v1/builds/{id}/rebuild", post(writes::rebuild))
        .route("/api/v1/builds/{id}/steps", get(api::steps))
        .route("/api/v1/builds/{id}/steps/{step}/log", get(logs::log))
        .route("/api/v1/builds/{id}/artifacts", get(api::artifacts))
        .route("/api/v1/builds/{id}/artifacts/{*name}", get(api::artifact))
        .route("/api/v1/requests/{id}", get(api::request))
        .route("/api/v1/requests/{id}/cancel", post(writes::cancel))
        .route("/api/v1/workers", get(api::workers))
        .route("/api/v1/queue", get(api::queue))
        .route("/api/v1/events", get(events::sse))
        .route("/api/v1/changes", get(api::changes))
        .route(
            "/hooks/{name}",
            post(hooks::hook).layer(DefaultBodyLimit::max(hooks::MAX_HOOK_BODY)),
        )
        .fallback(respond::no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(body_deadline))
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(web)
}

/// Say how long the server took to answer (`Server-Timing: app;dur=MS`):
/// for a page or a JSON answer, the whole of its making; for a stream, up
/// to its first byte. The benchmarks read it (docs/benchmarks.md).
async fn server_timing(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}

/// A request with a body (a form, a force's JSON, a webhook) is answered
/// within [`BODY_TIMEOUT`], or with 408: the head has its own bound
/// ([`HEADER_TIMEOUT`], hyper's), and without this one a client trickling
/// a body would hold its connection slot for as long as it liked.
async fn body_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse as _;
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match tokio::time::timeout(BODY_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut r = respond::WebFail {
                status: axum::http::StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request's body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            }
            .into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `tls = true` but the certificate could not be set up.
    #[error("http: {0}")]
    Tls(#[from] crate::daemon::tls::TlsError),
    /// The web's own threads could not be started.
    #[error("cannot start the web server's threads: {0}")]
    Runtime(std::io::Error),
}

/// A web server serving on its own runtime ([`runtime::WebRuntime`]).
/// Dropping it stops the runtime's threads (without waiting for them).
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    addr: Option<SocketAddr>,
    // Last: the task's runtime outlives the handle above.
    _runtime: runtime::WebRuntime,
}

impl Running {
    /// Start the web's runtime, bind `settings.listen` there (with `tls`,
    /// HTTPS) and serve on it; each connection holds a clone of `open`
    /// and ends when the master stops (see `daemon::run`).
    pub async fn start(
        master: MasterHandle,
        logs: PathBuf,
        dirs: Dirs,
        settings: HttpSettings,
        tls: Option<Arc<rustls::ServerConfig>>,
        open: mpsc::Sender<()>,
    ) -> Result<Running, WebError> {
        let runtime = runtime::WebRuntime::start().map_err(WebError::Runtime)?;
        // Built and bound on the web's runtime: the event log's task and
        // the listening socket belong to it.
        let server = runtime
            .spawn(async move { Server::bind(Web::new(master, logs, dirs, settings), tls).await })
            .await
            .map_err(|e| WebError::Runtime(std::io::Error::other(e)))??;
        let addr = server.local_addr();
        let task = runtime.spawn(server.run(open));
        Ok(Running {
            task,
            addr,
            _runtime: runtime,
        })
    }

    /// The address bound (a port 0 shows its real port).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Take no more connections (the listening socket is closed); open
    /// ones end by themselves on the master's shutdown signal.
    pub fn stop_accepting(&self) {
        self.task.abort();
    }
}

/// A bound web server, not yet serving.
pub struct Server {
    listener: TcpListener,
    web: Web,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Bind `web.settings.listen`; with `tls`, serve HTTPS with `tls`'s
    /// rustls config (the workers' listeners' certificate).
    pub async fn bind(
        web: Web,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Server, WebError> {
        let addr = web.settings.listen;
        // The workers' bind: a listen backlog of 1,024 (tokio's own bind
        // asks for 128, and a crowd opening pages at once overflowed it:
        // each dropped connection waited a second for its SYN to be sent
        // again).
        let listener = crate::daemon::listeners::tcp::bind(addr)
            .map_err(|source| WebError::Bind { addr, source })?;
        Ok(Server {
            listener,
            web,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    /// The address bound (a port 0 shows its real port).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve until the task is aborted; each connection holds a clone of
    /// `open` (see `daemon::run`) and ends when the master stops.
    pub async fn run(self, open: mpsc::Sender<()>) {
        let Server { listener, web, tls } = self;
        if let Ok(addr) = listener.local_addr() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            info!("web pages and HTTP API on {scheme}://{addr}/");
        }
        let slots = Arc::new(Semaphore::new(web.settings.max_connections as usize));
        let router = router(web.clone());
        let master = web.master.clone();
        crate::daemon::listeners::accept_loop(
            "http".into(),
            listener,
            open,
            move |(stream, peer): (tokio::net::TcpStream, SocketAddr)| {
                let router = router.clone();
                let master = master.clone();
                let slots = Arc::clone(&slots);
                let tls = tls.clone();
                async move {
                    let Ok(_slot) = slots.try_acquire_owned() else {
                        busy(stream, peer).await;
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => serve_conn(stream, router, &master).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => serve_conn(stream, router, &master).await,
                                Ok(Err(e)) => debug!("http: TLS with {peer} failed: {e}"),
                                Err(_) => debug!("http: TLS with {peer} timed out"),
                            }
                        }
                    }
                }
            },
        )
        .await;
    }
}

/// Every connection slot is taken: say so and close.
async fn busy(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt as _;
    warn!("http: connection from {peer} refused: max_connections reached");
    let body = "too many connections; try again later\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, briefly: closing with unread bytes
        // would reset the connection before the client reads the answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// One HTTP/1.1 connection, bounded: headers within [`HEADER_TIMEOUT`],
/// at most [`MAX_HEAD`] of them; it ends soon after the master stops.
async fn serve_conn<S>(stream: S, router: Router, master: &MasterHandle)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use tower::ServiceExt as _;
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // Both: the read buffer's bound alone is soft (a read may fill
        // all the buffer's spare room, past it); this one is checked on
        // the parsed head.
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_HEAD)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!("http connection: {e}");
            }
        }
        () = master.shutting_down() => {
            // Streams end on their own (they wait on the same signal);
            // an ordinary answer in flight gets a moment to be written.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::link_prefix;

    #[test]
    fn links_start_with_the_path_of_base_url() {
        assert_eq!(link_prefix(None), "");
        assert_eq!(link_prefix(Some("https://ci.example.org")), "");
        assert_eq!(link_prefix(Some("https://ci.example.org/")), "");
        assert_eq!(link_prefix(Some("https://ci.example.org/bb/")), "/bb");
        assert_eq!(link_prefix(Some("http://h:8/a/b")), "/a/b");
    }
}
