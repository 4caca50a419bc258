//! The IRC bot: one more adapter on the front door (docs/irc.md).
pub mod flood;
pub mod line;
pub mod session;
