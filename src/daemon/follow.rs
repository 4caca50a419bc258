//! Streaming a build to a client: `log`, `log --follow`, `force-build
//! --follow` and `--wait`.
//!
//! The store and the log files are the truth; notices only say *when* to
//! look again. A follower subscribes before its first look, keeps a byte
//! offset per step, and after any notice it lagged behind on simply looks
//! again, so output is never missed nor doubled.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use crate::daemon::auth::Principal;
use crate::daemon::core::Record;
use crate::daemon::handle::MasterHandle;
use crate::daemon::logs;
use crate::daemon::messages::{Notice, Snapshot};
use crate::protocol::{
    self, BuildDetail, BuildId, ErrorReply, FrameError, Reply, Request, RequestId, ServerMsg,
    StepDetail, StepIndex, StreamItem, StreamRequest, StreamTarget,
};

/// Largest piece of output sent in one item.
const CHUNK: usize = 256 * 1024;

/// How often a follower on a standby looks again.
const STANDBY_POLL: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
struct StepSent {
    started: bool,
    offset: u64,
    finished: bool,
}

struct Follower<'a, W> {
    wr: &'a mut W,
    id: u64,
    req: StreamRequest,
    logs: &'a Path,
    build_started: bool,
    /// Builds of the followed request that ended as `retry`: the stream
    /// goes on with the request's next build.
    retried: Vec<BuildId>,
    /// Follow this request from now on (the one a skipped request was
    /// collapsed into, when its build was retried).
    redirect: Option<RequestId>,
    build: Option<BuildId>,
    steps: BTreeMap<StepIndex, StepSent>,
}

/// Serve one stream request; `Ok` holds the final answer to send.
pub async fn stream<W: AsyncWrite + Unpin>(
    wr: &mut W,
    id: u64,
    req: StreamRequest,
    master: &MasterHandle,
    who: &Principal,
    logs: &Path,
) -> Result<Result<Reply, ErrorReply>, FrameError> {
    if let Err(refused) = master.may_follow(who, &Request::Stream(req.clone())) {
        return Ok(Err(refused));
    }
    let mut rx = master.subscribe_notices();
    // A standby's history is the leader's, read from the database and the
    // shared logs; no notice ever says when to look again.
    let poll = master.is_standby().then_some(STANDBY_POLL);
    let mut target = req.target.clone();
    let mut f = Follower {
        wr,
        id,
        req,
        logs,
        build_started: false,
        retried: Vec::new(),
        redirect: None,
        build: None,
        steps: BTreeMap::new(),
    };
    loop {
        let snap = match master.snapshot(target.clone()).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        if let (Some(build), StreamTarget::Latest) = (&snap.build, &target) {
            // `Latest` is resolved once: later builds are not ours.
            target = StreamTarget::Build(build.summary.id);
        }
        if let Some(done) = f.catch_up(&snap).await? {
            return Ok(done);
        }
        if let Some(into) = f.redirect.take() {
            target = StreamTarget::Request(into);
            continue;
        }
        if !f.req.follow {
            return Ok(Ok(Reply::StreamEnd));
        }
        // Wait until something about our request or build happens.
        let request = match &target {
            StreamTarget::Request(r) => Some(*r),
            _ => None,
        };
        loop {
            let notice = match poll {
                Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                    Ok(notice) => notice,
                    // A standby hears nothing: look again.
                    Err(_) => break,
                },
                None => rx.recv().await,
            };
            match notice {
                Ok(notice) => match &*notice {
                    Notice::Output { build, step } if Some(*build) == f.build => {
                        f.send_output(*build, *step).await?;
                    }
                    Notice::Record(r) if concerns(r, request, f.build) => break,
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    return Ok(Err(ErrorReply::failed("the master is shutting down")));
                }
            }
        }
    }
}

fn concerns(record: &Record, request: Option<RequestId>, build: Option<BuildId>) -> bool {
    match record {
        Record::RequestCancelled { request: r, .. }
        | Record::RequestCollapsed { request: r, .. }
        | Record::BuildStarted { request: r, .. } => Some(*r) == request,
        Record::StepStarted { build: b, .. }
        | Record::StepFinished { build: b, .. }
        | Record::BuildFinished { build: b, .. }
        | Record::BuildRetried { build: b, .. } => Some(*b) == build,
        _ => false,
    }
}

impl<W: AsyncWrite + Unpin> Follower<'_, W> {
    /// Send everything the snapshot has that the client has not seen; the
    /// final answer once the stream is complete.
    async fn catch_up(
        &mut self,
        snap: &Snapshot,
    ) -> Result<Option<Result<Reply, ErrorReply>>, FrameError> {
        let build = snap
            .build
            .as_ref()
            .filter(|b| !self.retried.contains(&b.summary.id));
        let Some(build) = build else {
            if let Some(req) = &snap.request
                && req.state == "cancelled"
            {
                self.item(StreamItem::RequestCancelled {
                    request: req.id,
                    reason: req.reason.clone().unwrap_or_default(),
                })
                .await?;
                return Ok(Some(Ok(Reply::StreamEnd)));
            }
            return Ok(None);
        };
        let build_id = build.summary.id;
        self.build = Some(build_id);
        if let Some(sel) = &self.req.step
            && !build.steps.iter().any(|s| selected(sel, s))
            && (build.summary.result.is_some() || !self.req.follow)
        {
            return Ok(Some(Err(ErrorReply::not_found(format!(
                "build {build_id} has no step `{sel}`"
            )))));
        }
        if !self.build_started {
            self.build_started = true;
            self.item(StreamItem::BuildStarted {
                build: build_id,
                builder: build.summary.builder.clone(),
                worker: build.summary.worker.clone(),
            })
            .await?;
        }
        for step in &build.steps {
            if self
                .req
                .step
                .as_ref()
                .is_some_and(|sel| !selected(sel, step))
            {
                continue;
            }
            self.catch_up_step(build_id, step).await?;
        }
        if let Some(result) = build.summary.result {
            self.finished(build, result).await?;
            if result == protocol::BuildResult::Retry
                && matches!(self.req.target, StreamTarget::Request(_))
            {
                // The request is queued again: follow its next build. A
                // request collapsed into another follows that one's.
                if snap.request.as_ref().is_some_and(|r| r.state == "skipped") {
                    self.redirect = Some(build.summary.request_id);
                }
                self.retried.push(build_id);
                self.build_started = false;
                self.steps.clear();
                self.build = None;
                return Ok(None);
            }
            return Ok(Some(Ok(Reply::StreamEnd)));
        }
        Ok(None)
    }

    async fn catch_up_step(&mut self, build: BuildId, step: &StepDetail) -> Result<(), FrameError> {
        let sent = self.steps.entry(step.index).or_default();
        if !sent.started {
            sent.started = true;
            self.item(StreamItem::StepStarted {
                step: step.index,
                name: step.name.clone(),
            })
            .await?;
        }
        self.send_output(build, step.index).await?;
        let sent = self.steps.entry(step.index).or_default();
        if let Some(result) = step.result
            && !sent.finished
        {
            sent.finished = true;
            self.item(StreamItem::StepFinished {
                step: step.index,
                result,
                reason: step.reason.clone(),
            })
            .await?;
        }
        Ok(())
    }

    async fn finished(
        &mut self,
        build: &BuildDetail,
        result: protocol::BuildResult,
    ) -> Result<(), FrameError> {
        self.item(StreamItem::BuildFinished {
            build: build.summary.id,
            result,
            reason: build.summary.reason.clone(),
        })
        .await
    }

    /// Send a started step's output from where the client is to the end
    /// of the file.
    async fn send_output(&mut self, build: BuildId, step: StepIndex) -> Result<(), FrameError> {
        if !self.req.output {
            return Ok(());
        }
        let Some(sent) = self.steps.get(&step) else {
            return Ok(());
        };
        if !sent.started || sent.finished {
            return Ok(());
        }
        let path = logs::step_log_path(self.logs, build, step);
        let mut offset = sent.offset;
        loop {
            let data = logs::read_from(&path, offset, CHUNK)?;
            if data.is_empty() {
                break;
            }
            offset += data.len() as u64;
            let full = data.len() == CHUNK;
            self.item(StreamItem::Output { step, data }).await?;
            if !full {
                break;
            }
        }
        if let Some(sent) = self.steps.get_mut(&step) {
            sent.offset = offset;
        }
        Ok(())
    }

    async fn item(&mut self, item: StreamItem) -> Result<(), FrameError> {
        protocol::write_msg(self.wr, &ServerMsg::Item { id: self.id, item }).await
    }
}

fn selected(sel: &str, step: &StepDetail) -> bool {
    step.name == sel || step.index.to_string() == sel
}
