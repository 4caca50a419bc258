//! The `bbworker` command line, in the library so that its man page is
//! generated from the same definition (see `crate::man`).

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

/// Connect to a bbmaster and run the build steps it assigns.
#[derive(Debug, Parser)]
#[command(name = "bbworker", version, about)]
#[command(group(ArgGroup::new("secret").required(true).args(["secret_file", "secret_stdin"])))]
pub struct WorkerArgs {
    /// The master's worker socket.
    #[arg(long = "master", value_name = "SOCKET")]
    pub master: PathBuf,

    /// This worker's name, as configured on the master.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Read the secret from FILE (trailing whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Read the secret from the first line of standard input.
    #[arg(long)]
    pub secret_stdin: bool,

    /// Directory where steps run, one subdirectory per builder.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// Exit when the master goes away instead of waiting for it to return.
    #[arg(long)]
    pub exit_with_master: bool,
}
