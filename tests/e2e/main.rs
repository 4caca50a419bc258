//! End-to-end tests: the real `bbmaster`, `bbworker` and `bbctl` binaries,
//! each test with its own master in its own temp dir.

mod harness;

mod builds;
mod changes;
mod chaos;
mod cli;
mod client;
mod config;
mod control;
mod docs;
mod docs_agree;
mod durability;
mod end_kept;
mod failover;
mod git;
mod hostile;
mod hostile_worker;
mod irc;
mod json_schema;
mod lifecycle;
mod locks;
mod operator;
mod postgres;
mod proxy;
mod reload;
mod reload_regression;
mod retention;
mod schedulers;
mod standby;
mod startup;
mod storage;
mod tls;
mod tls_master;
mod transfer;
mod untrusted;
mod watch;
mod web;
mod workers;
