//! Real parts for tests and benchmarks, started and owned by the caller:
//! the e2e suite, the unit tests and `bbbench` all need the same
//! throwaway PostgreSQL, so it lives here rather than in one of them; the
//! IRC bot's e2e tests and benchmarks share an IRC server (`ircd`).
//!
//! Nothing in the programs themselves uses this module.

pub mod ircd;
pub mod postgres;
