//! `bbmaster`: the build master daemon. All logic lives in `bbctl::daemon`.

use std::process::ExitCode;

use bbctl::daemon::args::{MasterArgs as Args, log_directive};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The master starts its local workers (and they their guards) from
    // this very executable, under the worker's program name.
    if bbctl::worker::cli::invoked_as_worker() {
        return bbctl::worker::cli::main();
    }
    // First of all: a SIGHUP or SIGTERM from now on waits for its handler
    // instead of killing the master (see `bbctl::daemon::signals`).
    if let Err(e) = bbctl::daemon::signals::block_early() {
        eprintln!("bbmaster: error: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", bbctl::config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    init_logging(&args);
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
        http: args.http,
        name: args.name,
        advertise: args.advertise,
        worker_listen: args.worker_listen,
    };
    match runtime.block_on(bbctl::daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bbmaster: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr through tracing: `--log-level`, unless `BBMASTER_LOG` or
/// `RUST_LOG` gives a filter. A filter that does not parse falls back to
/// `--log-level`, with a warning.
fn init_logging(args: &Args) {
    let from_env = |name| std::env::var(name).ok();
    let directive = log_directive(
        args.log_level,
        from_env("BBMASTER_LOG").as_deref(),
        from_env("RUST_LOG").as_deref(),
    );
    let (filter, bad) = match EnvFilter::try_new(&directive) {
        Ok(filter) => (filter, None),
        Err(e) => (
            EnvFilter::new(args.log_level.as_str()),
            Some((directive, e)),
        ),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
    if let Some((directive, e)) = bad {
        tracing::warn!("ignoring the log filter {directive:?}: {e}");
    }
}
