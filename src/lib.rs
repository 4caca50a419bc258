//! bbctl: a build master whose reload never hurts.
//!
//! Three programs share this library: `bbmaster` (the daemon, [`daemon`]),
//! `bbworker` (runs steps, [`worker`]) and `bbctl` (the command line,
//! [`client`]). They speak the protocol of [`protocol`] over Unix sockets
//! and read `master.toml` through [`config`]. The master's decisions live in
//! the pure state machine [`daemon::core`]; everything else is I/O around it.

pub mod bench;
pub mod client;
pub mod config;
pub mod daemon;
pub mod man;
pub mod net;
pub mod paths;
pub mod protocol;
pub mod suggest;
pub mod testkit;
pub mod untrusted;
pub mod worker;
