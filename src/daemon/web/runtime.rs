//! The web server's own threads: a tokio runtime apart from the master's
//! (one worker thread and its blocking pool, all named [`THREAD_NAME`]),
//! whose threads step back in the OS scheduler ([`lower_this_thread`]).
//!
//! Why: the master loop and the worker links run on the daemon's runtime
//! (two worker threads). Streaming logs and events to hundreds of web
//! clients is real work (copying megabytes per second to each); on the
//! same runtime it would occupy those threads and a dispatch would wait
//! for a turn behind it. On a runtime of its own the web can be as busy
//! as its clients make it while the loop's threads stay free; and with
//! the web threads at a lower priority (nice [`NICE`], and out of a
//! real-time policy the master was started under), the OS runs dispatch,
//! worker links and build steps first when the CPU is short. The web
//! still asks only the front door ([`MasterHandle`]'s channels and its
//! history reads), which works from any runtime.
//!
//! [`MasterHandle`]: crate::daemon::handle::MasterHandle

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::task::JoinHandle;
use tracing::debug;

/// The name of every thread of the web's runtime (`ps -L`, `top -H`).
pub const THREAD_NAME: &str = "bb-web";
/// The nice value of the web's threads: well below the master's own
/// threads and build steps (a weight about 1/9 of nice 0's under CFS),
/// yet they are never starved on a machine with idle time.
pub const NICE: i32 = 10;

/// The web server's runtime. Dropping it stops its threads without
/// waiting (it may be dropped inside the daemon's runtime).
pub struct WebRuntime {
    runtime: Option<Runtime>,
}

impl WebRuntime {
    /// Start the runtime's thread (named [`THREAD_NAME`], lowered by
    /// [`lower_this_thread`] to [`NICE`], as is each blocking thread it
    /// starts later).
    pub fn start() -> std::io::Result<WebRuntime> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(THREAD_NAME)
            .on_thread_start(|| {
                if let Err(e) = lower_this_thread(NICE) {
                    debug!("http: cannot lower the priority of a web thread: {e}");
                }
            })
            .enable_all()
            .build()?;
        Ok(WebRuntime {
            runtime: Some(runtime),
        })
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("the runtime is only taken when dropped")
            .handle()
    }

    /// Run `future` on the web's threads.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future)
    }
}

impl Drop for WebRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lower the calling thread (and only it) in the OS scheduler, below
/// the master's own threads: out of a real-time policy (a master started
/// with `chrt`) into `SCHED_OTHER`, and to nice `nice` unless it is
/// already nicer. Linux only (a thread's nice value is its own there);
/// elsewhere it does nothing.
///
/// Not to the lowest real-time priority instead: real-time threads that
/// keep the CPUs busy (a web thread streaming to hundreds of clients)
/// run the whole real-time class into the kernel's throttling
/// (`sched_rt_runtime_us`), which then holds back the master's threads
/// too. Leaving the real-time policy puts the thread at nice 19 first
/// (how `thread_priority` sets `SCHED_OTHER`); from there to `nice`
/// needs `CAP_SYS_NICE` (root has it) and is skipped without: 19 is
/// lower still.
#[cfg(target_os = "linux")]
pub fn lower_this_thread(nice: i32) -> Result<(), String> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id, thread_schedule_policy,
    };
    let policy = thread_schedule_policy().map_err(|e| format!("{e:?}"))?;
    let from_real_time = matches!(policy, ThreadSchedulePolicy::Realtime(_));
    if from_real_time {
        set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        )
        .map_err(|e| format!("cannot leave the real-time policy: {e:?}"))?;
    }
    let me = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(me)).map_err(|e| e.to_string())?;
    if now < nice || (from_real_time && now != nice) {
        match rustix::process::setpriority_process(Some(me), nice) {
            Ok(()) => {}
            // Back up from 19 is a privilege; without it the thread stays lower.
            Err(_) if now > nice => {}
            Err(e) => return Err(format!("cannot set nice {nice}: {e}")),
        }
    }
    Ok(())
}

/// Elsewhere than Linux: nothing (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread(_nice: i32) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_threads_are_named_and_lowered() {
        let rt = WebRuntime::start().expect("runtime");
        let (name, nice) = rt
            .handle()
            .block_on(rt.spawn(async {
                let name = std::thread::current().name().map(str::to_string);
                let me = rustix::thread::gettid();
                (name, rustix::process::getpriority_process(Some(me)).ok())
            }))
            .expect("the task ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert!(nice.is_some_and(|n| n >= NICE), "nice {nice:?}");
    }

    #[test]
    fn lowering_leaves_a_nicer_thread_as_it_is() {
        let got = std::thread::spawn(|| {
            lower_this_thread(15)?;
            lower_this_thread(5)?;
            let me = rustix::thread::gettid();
            rustix::process::getpriority_process(Some(me)).map_err(|e| e.to_string())
        })
        .join()
        .expect("the thread ran");
        assert_eq!(got, Ok(15));
    }
}
