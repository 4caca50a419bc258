//! Real parts for tests and benchmarks, started and owned by the caller:
//! the e2e suite, the unit tests and `bbbench` all need the same
//! throwaway PostgreSQL, so it lives here rather than in one of them.
//!
//! Nothing in the programs themselves uses this module.

pub mod postgres;
