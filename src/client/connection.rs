//! A control connection to the master: connect, handshake, request.

use std::path::{Path, PathBuf};

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::protocol::{
    self, ClientRequest, ErrorReply, Event, FrameError, Hello, HelloReply, MAX_FRAME,
    MAX_HANDSHAKE_FRAME, Reply, Request, Role, ServerMsg, StreamItem,
};

/// Why talking to the master failed (as opposed to the master saying no).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Nothing answers on the socket.
    #[error("cannot reach the master at {}: {source}", path.display())]
    Unreachable {
        /// Where we looked.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The master refused the handshake.
    #[error("the master at {} refused the connection: {reason}", path.display())]
    Refused {
        /// Where we looked.
        path: PathBuf,
        /// Its reason.
        reason: String,
    },
    /// The conversation broke.
    #[error("lost the connection to the master: {0}")]
    Frame(#[from] FrameError),
    /// Our own output failed (a closed pipe, say).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// The master sent something that makes no sense here.
    #[error("unexpected answer from the master: {0}")]
    Unexpected(String),
}

/// How long the master has to answer our hello.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An open, welcomed control connection.
pub struct Connection {
    rd: ReadHalf<Stream>,
    wr: WriteHalf<Stream>,
    next_id: u64,
}

impl Connection {
    /// Connect to the control socket at `path` and do the handshake.
    pub async fn open(path: &Path) -> Result<Self, ConnectionError> {
        let unreachable = |source| ConnectionError::Unreachable {
            path: path.to_path_buf(),
            source,
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(unreachable)?;
        let stream = Stream::connect(name).await.map_err(unreachable)?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        // A master that refuses us (too many clients, wrong user) may say
        // so and close before reading our hello: read its answer even if
        // writing the hello failed.
        let handshake = async {
            let wrote = protocol::write_msg(&mut wr, &Hello::new(Role::Client)).await;
            (
                wrote,
                protocol::read_msg(&mut rd, MAX_HANDSHAKE_FRAME).await,
            )
        };
        // The kernel accepts a connection for a master that cannot (out of
        // file descriptors) or does not (stopped) take it: without a bound
        // we would wait forever.
        let (wrote, answer) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                unreachable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "it took the connection but did not answer within {} s \
                         (out of file descriptors, or stopped? see its log)",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                ))
            })?;
        match answer {
            Ok(HelloReply::Welcome { .. }) => {
                wrote?;
                Ok(Connection { rd, wr, next_id: 1 })
            }
            Ok(HelloReply::Refused { reason, .. }) => Err(ConnectionError::Refused {
                path: path.to_path_buf(),
                reason,
            }),
            // Only workers are challenged: this is the worker socket.
            Ok(HelloReply::Challenge { .. }) => Err(ConnectionError::Refused {
                path: path.to_path_buf(),
                reason: "this is a worker socket, not the control socket".into(),
            }),
            Err(e) => Err(wrote.err().unwrap_or(e).into()),
        }
    }

    /// Send a request and wait for its answer.
    pub async fn call(
        &mut self,
        body: Request,
    ) -> Result<Result<Reply, ErrorReply>, ConnectionError> {
        self.stream(body, |_| Ok(())).await
    }

    /// Send a request and hand every stream item to `on_item` until the
    /// final answer comes. An error from `on_item` (say, a closed stdout)
    /// ends the call.
    pub async fn stream<F>(
        &mut self,
        body: Request,
        mut on_item: F,
    ) -> Result<Result<Reply, ErrorReply>, ConnectionError>
    where
        F: FnMut(StreamItem) -> std::io::Result<()>,
    {
        let id = self.next_id;
        self.next_id += 1;
        protocol::write_msg(&mut self.wr, &ClientRequest { id, body }).await?;
        loop {
            match protocol::read_msg(&mut self.rd, MAX_FRAME).await? {
                ServerMsg::Item { id: got, item } if got == id => {
                    on_item(item).map_err(ConnectionError::Output)?
                }
                ServerMsg::Response { id: got, result } if got == id || got == 0 => {
                    return Ok(result);
                }
                other => {
                    return Err(ConnectionError::Unexpected(format!("{other:?}")));
                }
            }
        }
    }

    /// Turn this connection into a subscription to the master's events.
    /// A task reads the stream (frame reads are not cancel-safe, so they
    /// do not belong in a `select!`) and hands each event over; the channel
    /// ends with an error when the connection does.
    /// The master's refusal (not allowed, or a standby, which has no
    /// events) comes back as the inner `Err`.
    pub async fn subscribe(
        mut self,
    ) -> Result<Result<mpsc::Receiver<Result<Event, ConnectionError>>, ErrorReply>, ConnectionError>
    {
        let id = self.next_id;
        self.next_id += 1;
        let body = Request::Events;
        protocol::write_msg(&mut self.wr, &ClientRequest { id, body }).await?;
        // Wait for the master's first event: once it is here, the
        // subscription is in place and no later event can be missed.
        match protocol::read_msg::<_, ServerMsg>(&mut self.rd, MAX_FRAME).await? {
            ServerMsg::Event {
                event:
                    Event {
                        kind: crate::protocol::EventKind::Subscribed,
                        ..
                    },
                ..
            } => {}
            ServerMsg::Response { result: Err(e), .. } => return Ok(Err(e)),
            other => return Err(ConnectionError::Unexpected(format!("{other:?}"))),
        }
        let (tx, rx) = mpsc::channel(256);
        let mut rd = self.rd;
        let wr = self.wr;
        tokio::spawn(async move {
            let _keep_open = wr;
            loop {
                let next = match protocol::read_msg::<_, ServerMsg>(&mut rd, MAX_FRAME).await {
                    Ok(ServerMsg::Event { event, .. }) => Ok(event),
                    Ok(ServerMsg::Response { result: Err(e), .. }) => {
                        Err(ConnectionError::Unexpected(e.message))
                    }
                    Ok(other) => Err(ConnectionError::Unexpected(format!("{other:?}"))),
                    Err(e) => Err(ConnectionError::Frame(e)),
                };
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Ok(rx))
    }
}
