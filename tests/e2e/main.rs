//! End-to-end tests: the real `bbmaster`, `bbworker` and `bbctl` binaries,
//! each test with its own master in its own temp dir.

mod harness;

mod builds;
mod cli;
mod config;
mod control;
mod docs;
mod json_schema;
mod lifecycle;
mod reload;
mod reload_regression;
mod workers;
