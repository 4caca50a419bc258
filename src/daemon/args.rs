//! The `bbmaster` command line, in the library so that its man page is
//! generated from the same definition (see `crate::man`).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The build master: builders, queues, workers and build history.
///
/// With no --config it runs the embedded default: one local worker and the
/// builders `hello` and `slow`. SIGHUP reloads the config (like `bbctl reload`);
/// SIGTERM and SIGINT stop the master at once, keeping the queue and the
/// history: running steps go on with their workers (local ones included)
/// and the next master on the same state dir re-adopts them. Under
/// systemd (`Type=notify`) it sends READY=1 once its sockets take
/// connections. Logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "bbmaster", version)]
pub struct MasterArgs {
    /// The config file (master.toml, see master.toml(5)); the embedded
    /// default when omitted.
    #[arg(short, long, value_name = "FILE", env = "BBMASTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the database, logs and sockets live; overrides the config's
    /// `state_dir` (default: $XDG_STATE_HOME/bbmaster or ~/.local/state/bbmaster).
    #[arg(long, value_name = "DIR", env = "BBMASTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve the web pages and the read-only HTTP API on ADDR (`PORT` alone
    /// is loopback, e.g. 8010; or `HOST:PORT`); overrides `[http] listen`.
    /// See docs/http.md.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_addr)]
    pub http: Option<std::net::SocketAddr>,
    /// This master's name among masters sharing one PostgreSQL store
    /// (`bbctl masters`, the leader named to clients and workers);
    /// default: the host name. See docs/standby.md.
    #[arg(long, value_name = "NAME", env = "BBMASTER_NAME")]
    pub name: Option<String>,
    /// The address workers are sent to when this master leads
    /// (`tls://HOST:PORT`, `tcp://HOST:PORT` with `allow_plaintext`);
    /// default: the first `worker_listen` address, with the host name when
    /// it listens on every interface. See docs/standby.md.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Listen for remote workers on ADDR (`HOST:PORT`, or `PORT` for
    /// loopback) instead of the config's `worker_listen`, for this process
    /// (several masters on one host share a config file); repeatable.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_addr)]
    pub worker_listen: Vec<std::net::SocketAddr>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// How much to log on stderr. BBMASTER_LOG, else RUST_LOG, when set,
    /// replaces it with a full tracing filter (e.g. `info,bbctl::daemon=debug`).
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `--http ADDR`, `--worker-listen ADDR`: a port (loopback) or `HOST:PORT`.
fn parse_http_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    crate::config::parse_listen(text)
        .ok_or_else(|| format!("{text:?} is not a port or an address with a port (127.0.0.1:8010)"))
}

/// Log levels, least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// What the master does: start, reloads, workers, stop.
    Info,
    /// Also details useful when something goes wrong.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The tracing filter directive to use: `BBMASTER_LOG` when set and not
/// empty, else `RUST_LOG` likewise, else `--log-level`.
pub fn log_directive(
    level: LogLevel,
    bbmaster_log: Option<&str>,
    rust_log: Option<&str>,
) -> String {
    [bbmaster_log, rust_log]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|d| !d.is_empty())
        .unwrap_or(level.as_str())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_defaults_to_info_and_parses() {
        let args = MasterArgs::parse_from(["bbmaster"]);
        assert_eq!(args.log_level, LogLevel::Info);
        let args = MasterArgs::parse_from(["bbmaster", "--log-level", "debug"]);
        assert_eq!(args.log_level, LogLevel::Debug);
        assert!(MasterArgs::try_parse_from(["bbmaster", "--log-level", "loud"]).is_err());
    }

    #[test]
    fn environment_overrides_the_level() {
        use LogLevel::*;
        assert_eq!(log_directive(Warn, None, None), "warn");
        assert_eq!(log_directive(Warn, Some("debug"), Some("trace")), "debug");
        assert_eq!(log_directive(Warn, None, Some("trace")), "trace");
        assert_eq!(log_directive(Warn, Some(" "), Some("")), "warn");
    }
}
