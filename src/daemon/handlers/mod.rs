//! One handler per kind of command on the master's side of the front door
//! (see docs/architecture.md): this file only routes a [`Command`] or a
//! client [`Request`] to the method that answers it, in the file of its
//! kind.
//!
//! Handlers run inside the master loop, on its one copy of the core and
//! its one writing connection; reads of the history are not among them
//! (the front door answers those off the loop, `daemon/history.rs`). They
//! never carry out the core's effects themselves: the loop collects them
//! after every command (`Master::absorb`), so none can slip into the next
//! batch.

mod builds;
mod changes;
mod drain;
mod queries;
mod reload;
mod shutdown;
mod status;
mod workers;

pub use reload::reload_summary;

use std::sync::Arc;

use crate::daemon::actor::{Deferred, Master};
use crate::daemon::core::CoreError;
use crate::daemon::messages::Command;
use crate::paths::now_ms;
use crate::protocol::{ErrorReply, Reply, Request};

impl Master {
    /// Run one command other than a shutdown through its handler.
    pub(in crate::daemon) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Client { request, reply } => {
                let answer = self.client_request(request);
                self.replies.push(Deferred::Client(reply, answer));
            }
            Command::AddChanges {
                batch,
                sent_by,
                reply,
            } => self.add_changes(batch, &sent_by, reply, now_ms()),
            Command::KnownBuilder { name, reply } => {
                let _ = reply.send(self.known_builder(name));
            }
            Command::Config { reply } => {
                let _ = reply.send(Arc::clone(self.core.config()));
            }
            Command::WorkerHello {
                name,
                proof,
                held,
                meta,
                link,
                tx,
                replaces,
                reply,
            } => {
                let answer = self.worker_hello(name, &proof, &held, *meta, link, tx, replaces);
                self.replies.push(Deferred::Hello(reply, answer));
            }
            Command::StepEnded {
                link,
                build,
                step,
                end,
            } => self.step_ended(link, build, step, end),
            Command::WorkerSilent { link } => self.worker_silent(link),
            Command::WorkerGone { link } => self.worker_gone(link),
            Command::Reload {
                dry_run,
                config,
                reply,
            } => self.start_reload(dry_run, config, reply),
            Command::ReloadRead {
                dry_run,
                path,
                config,
                reply,
            } => self.reload_read(dry_run, path, config, reply),
            Command::LinkOf { worker, reply } => {
                let _ = reply.send(self.link_of(&worker));
            }
            Command::Artifact {
                build,
                artifact,
                reply,
            } => self.record_artifact(build, artifact, reply),
            Command::Shutdown { .. } => {}
        }
    }

    /// A client request answered inside the loop.
    fn client_request(&mut self, request: Request) -> Result<Reply, ErrorReply> {
        let now = now_ms();
        match request {
            Request::Status(filter) => self.status_request(&filter, now),
            Request::ForceBuild {
                builder,
                reason,
                properties,
                priority,
                source,
            } => self.force_build(&builder, reason, properties, priority, source, now),
            Request::Queue { builder } => self.queue(builder),
            Request::Workers => Ok(Reply::Workers(self.worker_details())),
            Request::Locks => Ok(Reply::Locks(self.core.lock_status(now))),
            // Answered by the handle, from the database.
            Request::Masters => Err(ErrorReply::failed("masters is answered by the handle")),
            Request::Drain { worker, drain } => self.drain(worker, drain, now),
            Request::Cancel { request } => self.cancel(request, now),
            Request::Stop { build } => self.stop(build, now),
            // Reads of the history are answered off the loop (history.rs).
            Request::Builds { .. }
            | Request::Build { .. }
            | Request::RequestInfo { .. }
            | Request::Artifacts { .. }
            | Request::Stream(_)
            | Request::Shutdown { .. }
            | Request::Events
            | Request::Artifact { .. }
            | Request::Reload { .. }
            | Request::Prune { .. }
            | Request::SendChange { .. }
            | Request::Changes { .. }
            | Request::Ping { .. } => Err(ErrorReply::rejected(
                "this request is handled by the connection, not the master loop",
            )),
        }
    }

    /// A core refusal as a client error; a name not found comes with the
    /// closest names of that kind ("did you mean").
    pub(in crate::daemon) fn explain(&self, e: CoreError) -> ErrorReply {
        let config = self.core.config();
        let hint = match &e {
            CoreError::UnknownBuilder(name) => {
                crate::suggest::did_you_mean(name, config.builders.iter().map(|b| b.name.as_str()))
            }
            CoreError::UnknownWorker(name) => {
                crate::suggest::did_you_mean(name, config.workers.iter().map(|w| w.name.as_str()))
            }
            CoreError::ForceProperty(crate::daemon::core::ForcePropertyError::Unknown {
                name,
                names,
                ..
            }) => crate::suggest::did_you_mean(name, names.iter().map(String::as_str)),
            _ => String::new(),
        };
        let mut reply = core_error(e);
        reply.message.push_str(&hint);
        reply
    }
}

/// A client error for a core refusal.
pub(in crate::daemon) fn core_error(e: CoreError) -> ErrorReply {
    match e {
        CoreError::UnknownBuilder(_)
        | CoreError::RenamedBuilder { .. }
        | CoreError::UnknownWorker(_) => ErrorReply::not_found(e.to_string()),
        _ => ErrorReply::rejected(e.to_string()),
    }
}
