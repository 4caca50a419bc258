//! Read-only views answered by the loop: `status`, `queue`, `workers`.

use std::sync::atomic::Ordering;

use crate::daemon::actor::Master;
use crate::daemon::core::CoreError;
use crate::protocol::{ErrorReply, Reply, StatusFilter, StatusReply, WorkerDetail, WorkerStatus};

impl Master {
    /// `bbctl status`: a builder filter naming no builder is a typo.
    pub(in crate::daemon) fn status_request(
        &self,
        filter: &StatusFilter,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        if let Some(name) = &filter.builder
            && !name.ends_with('*')
            && !self.core.has_builder(name)
        {
            return Err(self.explain(CoreError::UnknownBuilder(name.clone())));
        }
        Ok(Reply::Status(self.status(filter, now)))
    }

    /// `bbctl queue`, for all builders or one.
    pub(in crate::daemon) fn queue(&self, builder: Option<String>) -> Result<Reply, ErrorReply> {
        if let Some(b) = &builder
            && !self.core.has_builder(b)
        {
            return Err(self.explain(CoreError::UnknownBuilder(b.clone())));
        }
        Ok(Reply::Queue(self.core.queue_status(builder.as_deref())))
    }

    /// `status`, with builders (and the workers and running builds that go
    /// with them) filtered on the master.
    pub(in crate::daemon) fn status(&self, filter: &StatusFilter, now: u64) -> StatusReply {
        let all = self.core.builder_status();
        let builders_total = all.len() as u32;
        let queued_total = all.iter().map(|b| b.queued).sum();
        let mut builders: Vec<_> = all
            .into_iter()
            .filter(|b| filter.admits(&b.name, &b.state))
            .collect();
        if let Some(limit) = filter.limit {
            builders.truncate(limit as usize);
        }
        let mut workers = self.worker_status();
        let mut running = self.core.running_status();
        if !filter.is_empty() {
            let shown: std::collections::HashSet<&str> =
                builders.iter().map(|b| b.name.as_str()).collect();
            workers.retain(|w| w.builders.iter().any(|b| shown.contains(b.as_str())));
            running.retain(|r| shown.contains(r.builder.as_str()));
        }
        StatusReply {
            master_pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            now_ms: now,
            generation: self.core.generation(),
            config_hash: self.core.config().hash.clone(),
            config_origin: self.core.config().origin.clone(),
            builders,
            workers,
            running,
            draining: self.core.is_draining(),
            drain_mode: self.core.drain_mode(),
            builders_total,
            queued_total,
            // Filled in by the control connection from the retention task.
            disk: None,
            // Filled in by the handle from the listeners.
            tls: None,
            pollers: Vec::new(),
            lock_waits: self.core.lock_waiters(now),
            irc: None,
            // Filled in by the handle.
            leadership: None,
        }
    }

    /// The core's worker status, with why each local worker last failed to
    /// start or exited (which only the shell knows).
    pub(in crate::daemon) fn worker_status(&self) -> Vec<WorkerStatus> {
        let mut workers = self.core.worker_status();
        for w in workers.iter_mut().filter(|w| w.local) {
            w.last_error = self.local.last_error(&w.name);
        }
        workers
    }

    /// Worker status joined with what each live link told us.
    pub(in crate::daemon) fn worker_details(&self) -> Vec<WorkerDetail> {
        self.worker_status()
            .into_iter()
            .map(|status| {
                let link = self.links.values().find(|l| l.worker == status.name);
                WorkerDetail {
                    connected_since_ms: link.map(|l| l.connected_at_ms),
                    last_seen_ms: link.map(|l| l.meta.last_seen_ms.load(Ordering::Relaxed)),
                    software: link.map(|l| l.meta.software.clone()),
                    host: link.and_then(|l| l.meta.host.clone()),
                    pid: link.and_then(|l| l.meta.pid),
                    secret_file: self
                        .core
                        .config()
                        .master
                        .worker_secret_files
                        .get(&status.name)
                        .map(|p| p.display().to_string()),
                    transport: link.map(|l| {
                        match l.meta.transport {
                            crate::net::Transport::Unix => "unix",
                            crate::net::Transport::Tcp => "tcp",
                            crate::net::Transport::Tls => "tls",
                        }
                        .to_string()
                    }),
                    peer: link.and_then(|l| l.meta.peer.map(|a| a.to_string())),
                    tls_version: link.and_then(|l| l.meta.tls_version.clone()),
                    ping_rtt_ms: link
                        .map(|l| l.meta.ping_rtt_us.load(Ordering::Relaxed))
                        .filter(|us| *us != u64::MAX)
                        .map(|us| us as f64 / 1000.0),
                    status,
                }
            })
            .collect()
    }
}
