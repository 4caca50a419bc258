//! The `bbmaster` command line, in the library so that its man page is
//! generated from the same definition (see `crate::man`).

use std::path::PathBuf;

use clap::Parser;

/// The build master: builders, queues, workers and build history.
///
/// With no --config it runs the embedded default: one local worker and a
/// builder `hello`. SIGHUP reloads the config; SIGTERM and SIGINT stop the
/// master, keeping the queue and the history.
#[derive(Debug, Parser)]
#[command(name = "bbmaster", version)]
pub struct MasterArgs {
    /// The config file (master.toml); the embedded default when omitted.
    #[arg(short, long, value_name = "FILE", env = "BBMASTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the database, logs and sockets live; overrides the config's
    /// `state_dir` (default: $XDG_STATE_HOME/bbmaster or ~/.local/state/bbmaster).
    #[arg(long, value_name = "DIR", env = "BBMASTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    pub print_default_config: bool,
}
