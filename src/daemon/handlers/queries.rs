//! Questions answered from the store: `builds`, `build`, `request`, where
//! a followed build stands, and recording an uploaded file.

use crate::daemon::actor::Master;
use crate::daemon::core::CoreError;
use crate::daemon::logs;
use crate::daemon::messages::Snapshot;
use crate::daemon::store::Store;
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, ErrorReply, Reply, RequestId, RequestInfo, StreamTarget,
};

impl Master {
    /// `bbctl builds`: the history, newest first.
    pub(in crate::daemon) fn builds(
        &self,
        builder: Option<String>,
        limit: u32,
    ) -> Result<Reply, ErrorReply> {
        let builds = self
            .store
            .builds(builder.as_deref(), limit)
            .map_err(|e| ErrorReply::failed(e.to_string()))?;
        // A builder that neither exists nor ever built is a typo.
        if let Some(b) = &builder
            && builds.is_empty()
            && !self.core.has_builder(b)
        {
            return Err(self.explain(CoreError::UnknownBuilder(b.clone())));
        }
        Ok(Reply::Builds(builds))
    }

    /// A worker link stored an uploaded file: record it.
    pub(in crate::daemon) fn record_artifact(
        &mut self,
        build: BuildId,
        artifact: &ArtifactInfo,
    ) -> Result<(), String> {
        self.store
            .add_artifact(build, artifact)
            .map_err(|e| e.to_string())
    }

    /// One build with its steps and their log sizes.
    pub(in crate::daemon) fn build_detail(
        &self,
        build: BuildId,
    ) -> Result<BuildDetail, ErrorReply> {
        let mut detail = self
            .store
            .build(build)
            .map_err(|e| ErrorReply::failed(e.to_string()))?
            .ok_or_else(|| ErrorReply::not_found(format!("no build {build}")))?;
        for step in &mut detail.steps {
            step.log_bytes = logs::log_len(&logs::step_log_path(&self.logs, build, step.index));
        }
        Ok(detail)
    }

    /// One request.
    pub(in crate::daemon) fn request_info(
        &self,
        request: RequestId,
    ) -> Result<RequestInfo, ErrorReply> {
        self.store
            .request(request)
            .map_err(|e| ErrorReply::failed(e.to_string()))?
            .ok_or_else(|| ErrorReply::not_found(format!("no request r{request}")))
    }

    /// Where a build stands, for a follower.
    pub(in crate::daemon) fn snapshot(
        &self,
        target: &StreamTarget,
    ) -> Result<Snapshot, ErrorReply> {
        let (request, build) = match target {
            StreamTarget::Request(id) => {
                let info = self.request_info(*id)?;
                let build = info.build;
                (Some(info), build)
            }
            StreamTarget::Build(id) => (None, Some(*id)),
            StreamTarget::Latest => {
                let latest = self
                    .store
                    .latest_build()
                    .map_err(|e| ErrorReply::failed(e.to_string()))?
                    .ok_or_else(|| ErrorReply::not_found("no builds yet"))?;
                (None, Some(latest))
            }
        };
        let build = build.map(|b| self.build_detail(b)).transpose()?;
        Ok(Snapshot { request, build })
    }
}

/// `bbctl artifacts BUILD`: the build's artifacts, or not found.
pub(in crate::daemon) fn list_artifacts(
    store: &impl Store,
    build: BuildId,
) -> Result<Vec<ArtifactInfo>, crate::protocol::ErrorReply> {
    use crate::protocol::ErrorReply;
    match store.build(build) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(ErrorReply::not_found(format!("no build {build}"))),
        Err(e) => return Err(ErrorReply::failed(e.to_string())),
    }
    store
        .artifacts(build)
        .map_err(|e| ErrorReply::failed(e.to_string()))
}
