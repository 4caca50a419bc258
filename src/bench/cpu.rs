//! CPU time from `/proc`: of a process, and of its threads by name, so a
//! scenario can say where the time of a run went (the master's own
//! threads, its web threads, the benchmark's clients).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/*/stat`'s times.
fn hz() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// A `stat` file's name (`comm`) and the fields after it (field 3 on).
fn stat(path: &str) -> Result<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let open = text.find('(').context("bad stat")?;
    let close = text.rfind(')').context("bad stat")?;
    let fields = text[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Ok((text[open + 1..close].to_string(), fields))
}

/// CPU time of `pid` so far, in seconds: its own (user + system) and
/// that of the children it waited for.
pub fn cpu_secs(pid: u32) -> Result<(f64, f64)> {
    let (_, f) = stat(&format!("/proc/{pid}/stat"))?;
    // utime, stime, cutime, cstime are fields 14..=17 of stat: 11..=14 here.
    let hz = hz();
    Ok(((f[11] + f[12]) / hz, (f[13] + f[14]) / hz))
}

/// The CPU times of a process and of each of its live threads, at one
/// moment.
pub struct Snapshot {
    at: Instant,
    total: f64,
    threads: HashMap<String, (String, f64)>,
}

/// CPU spent between two snapshots, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    /// Wall time between them.
    pub wall_ms: f64,
    /// The whole process (threads that ended included).
    pub total_ms: f64,
    /// The threads whose name starts with the prefix asked for: the
    /// whole less the live threads of other names (a thread's own
    /// `stat` truncates to a tick, and the named ones can be a hundred
    /// blocking threads, so they are not summed one by one).
    pub named_ms: f64,
}

impl Snapshot {
    /// Read `pid`'s times now.
    pub fn take(pid: u32) -> Result<Snapshot> {
        let at = Instant::now();
        let hz = hz();
        let (own, _) = cpu_secs(pid)?;
        let mut threads = HashMap::new();
        let dir = format!("/proc/{pid}/task");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
            let tid = entry?.file_name().to_string_lossy().into_owned();
            // A thread that ended since the listing is skipped.
            if let Ok((name, f)) = stat(&format!("{dir}/{tid}/stat")) {
                threads.insert(tid, (name, (f[11] + f[12]) / hz));
            }
        }
        Ok(Snapshot {
            at,
            total: own,
            threads,
        })
    }

    /// What was spent since `before`; `named_ms` counts the threads
    /// named `prefix...` (a thread started since counts from 0).
    pub fn since(&self, before: &Snapshot, prefix: &str) -> Spent {
        let others: f64 = self
            .threads
            .iter()
            .filter(|(_, (name, _))| !name.starts_with(prefix))
            .map(|(tid, (_, now))| now - before.threads.get(tid).map_or(0.0, |t| t.1))
            .sum();
        let total = self.total - before.total;
        Spent {
            wall_ms: (self.at - before.at).as_secs_f64() * 1e3,
            total_ms: total * 1e3,
            named_ms: (total - others).max(0.0) * 1e3,
        }
    }
}

/// CPU time of the calling thread so far, in ms (user + system).
pub fn this_thread_ms() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0.0, |u| {
        let (us, ss) = (u.user_time(), u.system_time());
        (us.tv_sec() as f64 + ss.tv_sec() as f64) * 1e3
            + (us.tv_usec() as f64 + ss.tv_usec() as f64) / 1e3
    })
}

/// Put the calling thread in the background: `SCHED_OTHER` at nice 19
/// (out of the `chrt -f` the benchmark runs under), so it stands for a
/// client on another machine rather than for work of this one.
pub fn background_this_thread() -> Result<()> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
    )
    .map_err(|e| anyhow::anyhow!("cannot put a client thread in the background: {e:?}"))
}
