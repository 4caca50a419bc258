//! The wire protocol shared by `bbmaster`, `bbworker` and `bbctl`.
//!
//! Framing lives in [`frame`], the opening exchange in [`handshake`], and
//! the two conversations in [`client`] and [`worker`]. See
//! `docs/protocol.md` for the description a reimplementer needs.

pub mod change;
pub mod client;
pub mod events;
pub mod frame;
pub mod handshake;
pub mod masters;
pub mod proof;
pub mod transfer;
pub mod views;
pub mod worker;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use change::{
    Change, ChangeBatch, ChangeId, ChangeInfo, ChangeRequest, NewChange, PollerCursor, SourceStamp,
};
pub use client::*;
pub use events::{DrainMode, Event, EventKind};
pub use frame::{FrameError, MAX_FRAME, MAX_HANDSHAKE_FRAME, read_msg, write_msg};
pub use handshake::{Hello, HelloReply, MAGIC, PROTOCOL_VERSION, RefusalKind, Role, WorkerProof};
pub use masters::{LeaderView, LeadershipStatus, MasterRole, MasterView, MastersReply};
pub use views::*;
pub use worker::*;

/// A build request's id, given when `force-build` is accepted.
pub type RequestId = u64;
/// A build's id; a request gets a build when it is dispatched.
pub type BuildId = u64;
/// A step's position within its build, from 0.
pub type StepIndex = u32;

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildResult {
    /// Every step succeeded.
    Success,
    /// A step failed (non-zero exit, timeout).
    Failure,
    /// Something outside the build went wrong (worker lost, spawn failed).
    Exception,
    /// Stopped or cancelled by someone.
    Cancelled,
    /// Cut short by a lost worker that did not come back in time; its
    /// request was queued again.
    Retry,
    /// A request merged into an identical one that ran (`collapse = true`).
    Skipped,
}

/// How a step ended; the same words as builds use.
pub type StepResult = BuildResult;

impl BuildResult {
    /// The lowercase word used in tables, JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildResult::Success => "success",
            BuildResult::Failure => "failure",
            BuildResult::Exception => "exception",
            BuildResult::Cancelled => "cancelled",
            BuildResult::Retry => "retry",
            BuildResult::Skipped => "skipped",
        }
    }

    /// Parse the word written by [`BuildResult::as_str`].
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "success" => BuildResult::Success,
            "failure" => BuildResult::Failure,
            "exception" => BuildResult::Exception,
            "cancelled" => BuildResult::Cancelled,
            "retry" => BuildResult::Retry,
            "skipped" => BuildResult::Skipped,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BuildResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
