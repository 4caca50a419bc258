//! Inputs from clients about requests and builds: force (with the checks
//! on properties), cancel, stop. A worker's link and time passing are in
//! `links.rs`, a step's end in `step_ends.rs`.

use std::collections::BTreeMap;

use crate::protocol::{BuildId, BuildResult, RequestId, SourceStamp};

use super::{Core, CoreError, LiveRequest, Record, WorkerCmd};

/// Most properties one request may carry.
pub const MAX_PROPERTIES: usize = 64;

/// Longest property value, in bytes.
pub const MAX_PROPERTY_VALUE: usize = 4096;

/// Properties become environment variables: names must fit one, values
/// must be representable (no NUL byte) and reasonably small.
fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(CoreError::TooManyProperties(properties.len()));
    }
    for (name, value) in properties {
        if !valid_property_name(name) {
            return Err(CoreError::BadPropertyName(name.clone()));
        }
        let why = if value.contains('\0') {
            "it contains a NUL byte".to_string()
        } else if value.len() > MAX_PROPERTY_VALUE {
            format!("{} bytes long, at most {MAX_PROPERTY_VALUE}", value.len())
        } else {
            continue;
        };
        return Err(CoreError::BadPropertyValue {
            name: name.clone(),
            why,
        });
    }
    Ok(())
}

/// Whether `name` can become part of an environment variable name.
pub fn valid_property_name(name: &str) -> bool {
    if name.len() > 128 {
        return false;
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Core {
    /// Accept a build request of priority 0; see [`Core::force_build_with_priority`].
    pub fn force_build(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        now_ms: u64,
    ) -> Result<RequestId, CoreError> {
        self.force_build_with_priority(builder, reason, properties, 0, now_ms)
    }

    /// Accept a build request without a source stamp; see
    /// [`Core::force_build_with_source`].
    pub fn force_build_with_priority(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        priority: i32,
        now_ms: u64,
    ) -> Result<RequestId, CoreError> {
        self.force_build_with_source(builder, reason, properties, priority, None, now_ms)
    }

    /// Accept a build request; higher priorities run first, then oldest
    /// first. The [`Record::RequestQueued`] effect must be stored before
    /// the id is told to anyone. A `source` (a rebuild of a build that had
    /// one) may name only changes that exist.
    pub fn force_build_with_source(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        priority: i32,
        source: Option<SourceStamp>,
        now_ms: u64,
    ) -> Result<RequestId, CoreError> {
        if self.shutdown {
            return Err(CoreError::Draining);
        }
        if let Some(source) = &source {
            self.check_source(source)?;
        }
        if !self.builders.contains_key(builder) {
            if let Some(b) = self
                .config
                .builders
                .iter()
                .find(|b| b.previous_names.iter().any(|p| p == builder))
            {
                return Err(CoreError::RenamedBuilder {
                    old: builder.to_string(),
                    new: b.name.clone(),
                });
            }
            return Err(CoreError::UnknownBuilder(builder.to_string()));
        }
        check_properties(&properties)?;
        let max = self.config.master.max_queued;
        if self
            .builders
            .get(builder)
            .is_some_and(|b| b.queue.len() >= max as usize)
        {
            return Err(CoreError::QueueFull {
                builder: builder.to_string(),
                max,
            });
        }
        let id = self.queue_request(builder, reason, properties, priority, source, now_ms);
        self.dispatch(now_ms);
        Ok(id)
    }

    /// Queue a request already checked (by a client's force, or a
    /// scheduler's firing) and record it; the caller dispatches.
    pub(super) fn queue_request(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        priority: i32,
        source: Option<SourceStamp>,
        now_ms: u64,
    ) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.record(Record::RequestQueued {
            request: id,
            builder: builder.to_string(),
            reason: reason.clone(),
            properties: properties.clone(),
            priority,
            source: source.clone(),
            at_ms: now_ms,
        });
        self.requests.insert(
            id,
            LiveRequest {
                id,
                builder: builder.to_string(),
                reason,
                properties,
                build: None,
                retries: 0,
                priority,
                submitted_at_ms: now_ms,
                source,
            },
        );
        self.enqueue(builder, id);
        id
    }

    /// Cancel a queued request; a running one has its build stopped.
    pub fn cancel_request(
        &mut self,
        id: RequestId,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        let req = self
            .requests
            .get(&id)
            .ok_or(CoreError::RequestNotLive(id))?;
        if let Some(build) = req.build {
            return self.stop_build(build, reason, now_ms);
        }
        let builder = req.builder.clone();
        if let Some(state) = self.builders.get_mut(&builder) {
            state.queue.retain(|r| *r != id);
        }
        self.requests.remove(&id);
        self.lock_waits.remove(&super::LockWaiter::Request(id));
        self.record(Record::RequestCancelled {
            request: id,
            reason: reason.to_string(),
            at_ms: now_ms,
        });
        self.request_ended(id, BuildResult::Cancelled, now_ms);
        // It held nothing, but it may have kept later claims from a lock
        // (first in, first out) or been its builder's head.
        self.dispatch(now_ms);
        Ok(())
    }

    /// Ask the worker to stop a running build's current step; the build
    /// ends `cancelled` when the worker reports the step's end.
    pub fn stop_build(&mut self, id: BuildId, reason: &str, now_ms: u64) -> Result<(), CoreError> {
        // A build waiting in a trigger step runs nothing on its worker.
        if self.builds.get(&id).is_some_and(|b| b.stopping.is_none())
            && self.stop_waiting(id, reason, now_ms)
        {
            return Ok(());
        }
        let build = self
            .builds
            .get_mut(&id)
            .ok_or(CoreError::BuildNotRunning(id))?;
        if build.stopping.is_some() {
            return Ok(());
        }
        build.stopping = Some(reason.to_string());
        let step = build.step;
        if build.pending_step.is_some() {
            // Waiting between steps for a lock: no step is out to stop.
            self.finish_build(id, BuildResult::Cancelled, Some(reason.to_string()), now_ms);
            self.dispatch(now_ms);
            return Ok(());
        }
        match build.link {
            Some(link) => {
                self.note_stop(id, now_ms);
                self.effects.push(super::Effect::ToWorker {
                    link,
                    cmd: WorkerCmd::Stop { build: id, step },
                });
            }
            None => {
                // Its worker is away: end it now. If the worker comes back
                // still holding the step, it is told to abandon it.
                self.end_build_at_step(
                    id,
                    step,
                    BuildResult::Cancelled,
                    reason.to_string(),
                    now_ms,
                );
                self.dispatch(now_ms);
            }
        }
        Ok(())
    }
}
