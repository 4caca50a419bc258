//! The `bbworker` command line, in the library so that its man page is
//! generated from the same definition (see `crate::man`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

use super::address::MasterAddr;
use super::tls::{TlsOptions, Verify};

/// Connect to a bbmaster and run the build steps it assigns.
#[derive(Debug, Parser)]
#[command(name = "bbworker", version)]
#[command(group(ArgGroup::new("secret").required(true).args(["secret_file", "secret_stdin"])))]
pub struct WorkerArgs {
    /// Where the master is: `tls://HOST:PORT` (TLS 1.3; HOST a name, an
    /// IPv4 address or `[IPv6]`), `tcp://HOST:PORT` (plain TCP, for a
    /// master with `allow_plaintext = true` on loopback or a VPN), or the
    /// path of its Unix worker socket (also `unix:PATH`). Repeat it for a
    /// leader and its standbys: one per master, tried in this order.
    ///
    /// Several masters share one PostgreSQL store (docs/standby.md): a
    /// standby's refusal naming the leader sends the worker straight
    /// there (once per round), a master that cannot be reached moves it
    /// on to the next, and only a round of failures on all of them waits
    /// (the back-off).
    #[arg(
        long = "master",
        value_name = "URL",
        value_parser = parse_master,
        required = true
    )]
    pub master: Vec<MasterAddr>,

    /// Trust the master's certificate iff its SHA-256 fingerprint is this
    /// one (as `bbctl status` shows it: `sha256:` and 64 hex digits). Name
    /// and expiry are not checked: it is a pin, like SSH's known hosts.
    /// Repeat it for several masters with their own certificates: a
    /// certificate matching any of them is trusted.
    #[arg(long, value_name = "sha256:HEX", value_parser = parse_pin, conflicts_with = "ca")]
    pub fingerprint: Vec<[u8; 32]>,

    /// Verify the master's certificate against the CAs in this PEM file
    /// (and its name against the URL's host, or `--tls-name`). Without
    /// `--ca` or `--fingerprint`, the system's trusted CAs are used. With
    /// several masters, it verifies each of them.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The name the master's certificate must carry, when it is not the
    /// host of `--master` (e.g. connecting by IP address); with several
    /// masters, each certificate must carry it.
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,

    /// Present this certificate (PEM, chain first) to a master that
    /// requires client certificates (`client_ca`); its name must be this
    /// worker's name.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// The private key of `--client-cert` (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

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
    /// `5m`) while holding no step (with several masters: from every one
    /// of them). Without it, the worker reconnects forever. With it, the
    /// first connection is also given up after 10 s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub orphan_timeout: Option<Duration>,

    /// Keep at most this much output per step on disk while it waits to be
    /// sent (e.g. `1G`, `512M`, `65536`); the rest is dropped with a note.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub spool_limit: u64,
}

impl WorkerArgs {
    /// The TLS options given.
    pub fn tls_options(&self) -> TlsOptions {
        let verify = match (self.fingerprint.as_slice(), &self.ca) {
            ([pin], _) => Verify::Fingerprint(*pin),
            ([], Some(ca)) => Verify::Ca(ca.clone()),
            ([], None) => Verify::SystemRoots,
            (pins, _) => Verify::Fingerprints(pins.to_vec()),
        };
        TlsOptions {
            verify,
            server_name: self.tls_name.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
        }
    }
}

/// `--master`: a URL or a socket path.
fn parse_master(text: &str) -> Result<MasterAddr, String> {
    text.parse()
        .map_err(|e: super::address::AddrError| e.to_string())
}

/// `--fingerprint`, as pasted.
fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    crate::net::parse_fingerprint(text)
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
        assert_eq!(args.master, [MasterAddr::Unix("m".into())]);
        assert_eq!(args.tls_options(), TlsOptions::default());
    }

    fn try_parse(extra: &[&str]) -> Result<WorkerArgs, String> {
        let base = ["bbworker", "--name", "n", "--dir", "d", "--secret-stdin"];
        WorkerArgs::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn tls_options_from_the_command_line() {
        let fp = crate::net::fingerprint(b"cert");
        let args = try_parse(&["--master", "tls://m.example:9989", "--fingerprint", &fp]).unwrap();
        let pin = crate::net::parse_fingerprint(&fp).unwrap();
        assert_eq!(args.tls_options().verify, Verify::Fingerprint(pin));
        let args = try_parse(&[
            "--master",
            "tls://10.0.0.1:9989",
            "--ca",
            "ca.pem",
            "--tls-name",
            "m.example",
            "--client-cert",
            "c.pem",
            "--client-key",
            "k.pem",
        ])
        .unwrap();
        let tls = args.tls_options();
        assert_eq!(tls.verify, Verify::Ca("ca.pem".into()));
        assert_eq!(tls.server_name.as_deref(), Some("m.example"));
        assert_eq!(tls.client_cert, Some(("c.pem".into(), "k.pem".into())));
    }

    #[test]
    fn several_masters_and_fingerprints_in_order() {
        let a = crate::net::fingerprint(b"a");
        let b = crate::net::fingerprint(b"b");
        let args = try_parse(&[
            "--master",
            "tls://b.example:9989",
            "--fingerprint",
            &a,
            "--master",
            "tls://a.example:9989",
            "--fingerprint",
            &b,
        ])
        .unwrap();
        let addrs: Vec<String> = args.master.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["tls://b.example:9989", "tls://a.example:9989"]);
        let pins = [a, b].map(|fp| crate::net::parse_fingerprint(&fp).unwrap());
        assert_eq!(
            args.tls_options().verify,
            Verify::Fingerprints(pins.to_vec())
        );
        // No master at all is a usage error naming the option.
        let e = try_parse(&[]).map(|_| ()).unwrap_err();
        assert!(e.contains("--master"), "{e}");
    }

    #[test]
    fn conflicting_or_bad_tls_options_are_refused() {
        let fp = crate::net::fingerprint(b"cert");
        let cases: &[(&[&str], &str)] = &[
            (
                &["--master", "tls://m:1", "--fingerprint", &fp, "--ca", "x"],
                "cannot be used with",
            ),
            (
                &["--master", "tls://m:1", "--client-cert", "c"],
                "--client-key",
            ),
            (
                &["--master", "tls://m:1", "--client-key", "k"],
                "--client-cert",
            ),
            (
                &["--master", "tls://m:1", "--fingerprint", "sha256:12"],
                "64 hex digits",
            ),
            (&["--master", "tls://m"], "no port"),
            (&["--master", "http://m:1"], "unknown scheme"),
        ];
        for (extra, expected) in cases {
            let e = try_parse(extra).map(|_| ()).unwrap_err();
            assert!(e.contains(expected), "{extra:?}: {e}");
        }
    }
}
