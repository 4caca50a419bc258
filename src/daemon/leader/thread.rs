//! A future run on a thread of its own, with a current-thread runtime.
//!
//! The lease renewals and the campaign must not wait for the master's
//! runtime: the master loop calls its store synchronously (a PostgreSQL
//! write parks a runtime thread until the server answers), so a busy loop
//! can keep every runtime thread from polling a renewal for a whole lease
//! and lose the leadership of a master nobody paused. Their connections
//! are driven by threads of their own (`store::pg::connect`), so their
//! queries need no particular runtime.

use std::future::Future;

use tokio::sync::oneshot;

/// A future running on its own thread; dropping this stops it.
pub struct OwnThread<T> {
    result: oneshot::Receiver<T>,
    _stop: oneshot::Sender<()>,
}

impl<T: Send + 'static> OwnThread<T> {
    /// Start `future` on a new thread named `name`.
    pub fn spawn<F>(name: &str, future: F) -> std::io::Result<Self>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, result) = oneshot::channel();
        let (stop_tx, stop) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        out = future => {
                            let _ = tx.send(out);
                        }
                        _ = stop => {}
                    }
                });
            })?;
        Ok(OwnThread {
            result,
            _stop: stop_tx,
        })
    }

    /// Its output; `None` if the thread ended without one (it panicked).
    pub async fn join(&mut self) -> Option<T> {
        (&mut self.result).await.ok()
    }
}
