//! `bbmaster`: the build master daemon. All logic lives in `bbctl::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The build master: builders, queues, workers and build history.
///
/// With no --config it runs the embedded default: one local worker and a
/// builder `hello`. SIGHUP reloads the config; SIGTERM stops the master.
#[derive(Debug, Parser)]
#[command(name = "bbmaster", version)]
struct Args {
    /// The config file (master.toml); the embedded default when omitted.
    #[arg(short, long, value_name = "FILE", env = "BBMASTER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the database, logs and sockets live; overrides the config's
    /// `state_dir` (default: $XDG_STATE_HOME/bbmaster or ~/.local/state/bbmaster).
    #[arg(long, value_name = "DIR", env = "BBMASTER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", bbctl::config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BBMASTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bbmaster: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = bbctl::daemon::MasterOptions {
        config: args.config,
        state_dir: args.state_dir,
    };
    match runtime.block_on(bbctl::daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bbmaster: error: {e}");
            ExitCode::FAILURE
        }
    }
}
