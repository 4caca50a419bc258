//! `bbmaster`: the build master daemon. All logic lives in `bbctl::daemon`.

use std::process::ExitCode;

use bbctl::daemon::args::MasterArgs as Args;
use clap::Parser;

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
