//! One authenticated connection: read the master's orders, run steps,
//! send their output and ends, and stop them all when the session ends.
//!
//! Frames are read in their own task (`read_frame` is not cancel-safe, so it
//! must never sit in a `select!` branch) and written by one writer task fed
//! by a bounded channel, which gives step output backpressure.

use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::connection::Link;
use super::signals::ShutdownSignals;
use super::steps::Steps;
use crate::protocol::{MAX_FRAME, MasterToWorker, WorkerToMaster, read_msg, write_msg};

/// Messages queued for the master before step output has to wait.
pub const OUTGOING_QUEUE: usize = 256;

/// How long queued messages (the last step ends) may take to go out when
/// the session closes.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The master said Goodbye.
    Goodbye,
    /// The connection broke or the master hung up.
    Lost,
    /// We got SIGTERM or SIGINT.
    Signalled,
}

/// Serve one connection until it ends; every step started in it has been
/// stopped and has reported its end (as far as the link allows) on return.
pub(crate) async fn serve(link: Link, dir: &Path, signals: &mut ShutdownSignals) -> SessionEnd {
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let mut writer = tokio::spawn(write_loop(link.writer, out_rx));
    let (in_tx, mut in_rx) = mpsc::channel(16);
    let reader = tokio::spawn(read_loop(link.reader, in_tx));
    let mut steps = Steps::new(dir.to_path_buf());
    let mut writer_done = false;

    let end = loop {
        tokio::select! {
            incoming = in_rx.recv() => match incoming {
                Some(MasterToWorker::StartStep(assignment)) => {
                    steps.start(assignment, out_tx.clone());
                }
                Some(MasterToWorker::StopStep { build, step }) => steps.stop((build, step)),
                Some(MasterToWorker::Abandon { build, step }) => steps.stop((build, step)),
                Some(MasterToWorker::Resume { build, step, .. }) => {
                    warn!(build, step, "the master asked to resume a step this worker does not keep");
                }
                Some(MasterToWorker::Ping { seq }) => {
                    let _ = out_tx.send(WorkerToMaster::Pong { seq }).await;
                }
                Some(MasterToWorker::Pong { .. }) => {}
                Some(MasterToWorker::Goodbye { reason }) => {
                    info!("the master said goodbye: {reason}");
                    break SessionEnd::Goodbye;
                }
                None => break SessionEnd::Lost,
            },
            () = steps.next_ended() => {}
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break SessionEnd::Lost;
            }
            name = signals.recv() => {
                info!("{name} received; stopping");
                break SessionEnd::Signalled;
            }
        }
    };

    if !steps.is_empty() {
        info!("stopping the running steps");
    }
    steps.stop_all().await;
    reader.abort();
    drop(out_tx);
    if !writer_done
        && tokio::time::timeout(FLUSH_LIMIT, &mut writer)
            .await
            .is_err()
    {
        warn!("could not send the last messages to the master in time");
        writer.abort();
    }
    end
}

/// Feed the master's messages to the session until the link ends.
async fn read_loop(mut reader: ReadHalf<Stream>, tx: mpsc::Sender<MasterToWorker>) {
    loop {
        match read_msg::<_, MasterToWorker>(&mut reader, MAX_FRAME).await {
            Ok(msg) => {
                debug!(?msg, "from master");
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            Err(e) if e.is_disconnect() => {
                info!("the master closed the connection");
                return;
            }
            Err(e) => {
                warn!("bad message from the master, dropping the connection: {e}");
                return;
            }
        }
    }
}

/// Write queued messages in order; stop at the first failure, which drops
/// the queue so that senders notice the link is gone.
async fn write_loop(mut writer: WriteHalf<Stream>, mut rx: mpsc::Receiver<WorkerToMaster>) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = write_msg(&mut writer, &msg).await {
            if e.is_disconnect() {
                info!("the connection to the master is gone");
            } else {
                warn!("cannot send to the master: {e}");
            }
            return;
        }
    }
    if let Err(e) = writer.shutdown().await {
        debug!("closing the connection: {e}");
    }
}
