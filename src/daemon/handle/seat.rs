//! The handle's side of a master among others on a shared store: its
//! seat (role, `bbctl masters`), what a standby refuses outside its loop,
//! and the write lease that bounds a leader's file writes.

use tokio::sync::oneshot;

use super::MasterHandle;
use crate::daemon::auth::Principal;
use crate::daemon::leader::write_lease::WriteLease;
use crate::daemon::messages::Command;
use crate::protocol::{ErrorReply, Reply, Request};

impl MasterHandle {
    /// The same handle, with the leader's deadline for writing files on
    /// the shared storage (see [`WriteLease`]).
    pub fn with_write_lease(mut self, files: WriteLease) -> Self {
        self.files = files;
        self
    }

    /// Whether this master may still write step logs and artifacts: always
    /// on SQLite; on PostgreSQL while its lease surely holds.
    pub fn may_write_files(&self) -> bool {
        self.files.valid()
    }

    /// The same handle, showing leadership in `status` and answering
    /// `masters` from `seat`.
    pub fn with_seat(mut self, seat: crate::daemon::leader::Seat) -> Self {
        self.seat = Some(seat);
        self
    }

    /// `bbctl masters`: every master sharing the store, read from the
    /// database (on SQLite: this one).
    pub async fn masters(&self, who: &Principal) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::Masters)?;
        let seat = self
            .seat
            .as_ref()
            .ok_or_else(|| ErrorReply::failed("the masters are not known here"))?;
        seat.masters()
            .await
            .map(Reply::Masters)
            .map_err(|e| ErrorReply::failed(e.to_string()))
    }

    /// Whether this handle serves a standby (the PostgreSQL store): it
    /// has no events of its own and hears of no build, so followers read
    /// the database and the shared logs again on a timer.
    pub fn is_standby(&self) -> bool {
        self.seat
            .as_ref()
            .is_some_and(|s| s.role == crate::protocol::MasterRole::Standby)
    }

    /// How a standby refuses `request` (naming the leader and its
    /// address), for requests served outside its loop.
    pub async fn standby_refusal(&self, request: Request) -> ErrorReply {
        let (reply, rx) = oneshot::channel();
        match self
            .round_trip(Command::Client { request, reply }, rx)
            .await
        {
            Some(Err(refused)) => refused,
            _ => ErrorReply::rejected("this master is a standby"),
        }
    }
}
