//! Requests that change builds: `force-build`, `cancel`, `stop`.

use std::collections::BTreeMap;

use crate::daemon::actor::Master;
use crate::daemon::core::CoreError;
use crate::daemon::handlers::core_error;
use crate::protocol::{BuildId, ErrorReply, Reply, RequestId, SourceStamp};

impl Master {
    /// `bbctl force-build`: queue a request. Its id is told only once the
    /// request is on disk (see `Master::flush`, which takes it back if the
    /// write fails).
    pub(in crate::daemon) fn force_build(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        priority: i32,
        source: Option<SourceStamp>,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        let properties = self
            .core
            .force_properties(builder, properties)
            .map_err(|e| self.explain(e))?;
        let id = self
            .core
            .force_build_with_source(builder, reason, properties, priority, source, now)
            .map_err(|e| self.explain(e))?;
        Ok(Reply::Queued { request_id: id })
    }

    /// `bbctl cancel`: a queued request.
    pub(in crate::daemon) fn cancel(
        &mut self,
        request: RequestId,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        match self
            .core
            .cancel_request(request, "cancelled by `bbctl cancel`", now)
        {
            Ok(()) => Ok(Reply::Done {
                message: format!("request r{request} cancelled"),
            }),
            Err(CoreError::RequestNotLive(_)) => {
                let info = self
                    .store
                    .request(request)
                    .map_err(|e| ErrorReply::failed(e.to_string()))?
                    .ok_or_else(|| ErrorReply::not_found(format!("no request r{request}")))?;
                Err(ErrorReply::rejected(format!(
                    "request r{request} is already {}",
                    info.state
                )))
            }
            Err(e) => Err(core_error(e)),
        }
    }

    /// `bbctl stop`: a running build.
    pub(in crate::daemon) fn stop(
        &mut self,
        build: BuildId,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        match self.core.stop_build(build, "stopped by `bbctl stop`", now) {
            Ok(()) => {
                // Say whose build it is: request and build ids differ.
                let of = match self.store.build_summary(build) {
                    Ok(Some(b)) => format!(" (request r{})", b.request_id),
                    _ => String::new(),
                };
                Ok(Reply::Done {
                    message: format!("build {build}{of} is stopping"),
                })
            }
            Err(CoreError::BuildNotRunning(_)) => {
                let summary = self
                    .store
                    .build_summary(build)
                    .map_err(|e| ErrorReply::failed(e.to_string()))?
                    .ok_or_else(|| ErrorReply::not_found(format!("no build {build}")))?;
                Err(ErrorReply::rejected(format!(
                    "build {build} already finished ({})",
                    summary.result.map(|r| r.as_str()).unwrap_or("unknown")
                )))
            }
            Err(e) => Err(core_error(e)),
        }
    }
}
