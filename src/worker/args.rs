//! The `bbworker` command line, in the library so that its man page is
//! generated from the same definition (see `crate::man`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

/// Connect to a bbmaster and run the build steps it assigns.
#[derive(Debug, Parser)]
#[command(name = "bbworker", version)]
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

    /// Exit after being disconnected from the master this long (e.g. `60s`,
    /// `5m`) while holding no step. Without it, the worker reconnects
    /// forever. With it, the first connection is also given up after 10 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub orphan_timeout: Option<Duration>,

    /// Keep at most this much output per step on disk while it waits to be
    /// sent (e.g. `1G`, `512M`, `65536`); the rest is dropped with a note.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub spool_limit: u64,
}

/// A humantime duration: `300s`, `5m`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try e.g. `60s` or `5m`)"))
}

/// A byte count, optionally with a binary unit: `65536`, `64K`, `512MiB`,
/// `1G`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try e.g. `1G` or `512M`)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn defaults_and_orphan_timeout() {
        let base = ["bbworker", "--master", "m", "--name", "n", "--dir", "d"];
        let args = WorkerArgs::parse_from(base.iter().chain(&["--secret-stdin"]));
        assert_eq!(args.spool_limit, 1 << 30);
        assert_eq!(args.orphan_timeout, None);
        let args = WorkerArgs::parse_from(base.iter().chain(&[
            "--secret-stdin",
            "--orphan-timeout",
            "300s",
        ]));
        assert_eq!(args.orphan_timeout, Some(Duration::from_secs(300)));
    }
}
