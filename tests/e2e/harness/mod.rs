//! The fixtures of the end-to-end suite: a real `bbmaster` in a temp dir,
//! the real `bbctl` pointed at it, and remote `bbworker` processes.
//!
//! Every wait here is bounded, and every process a test starts is gone
//! when its fixture drops (the master's local workers included: a leftover
//! one fails the test).

#![allow(dead_code)]

mod certs;
mod cluster;
mod fixtures;
mod master;
mod process;
mod proxy;
mod transport;
mod wait;

pub use certs::*;
pub use cluster::*;
pub use fixtures::*;
pub use master::*;
pub use process::*;
pub use proxy::*;
pub use transport::*;
pub use wait::*;

use std::time::Duration;

/// The `bbmaster` under test.
pub const BBMASTER: &str = env!("CARGO_BIN_EXE_bbmaster");
/// The `bbctl` under test.
pub const BBCTL: &str = env!("CARGO_BIN_EXE_bbctl");
/// The `bbworker` under test.
pub const BBWORKER: &str = env!("CARGO_BIN_EXE_bbworker");

/// How long a `bbctl` run may take before the test fails.
pub const BBCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a master may take to answer after it starts.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to exit once told to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
