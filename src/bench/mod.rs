//! `bbbench`: the benchmark runner (issue 7). It starts real `bbmaster` and
//! `bbworker` processes in a scratch dir under `/tmp`, drives them with the
//! real `bbctl`, runs each scenario with warm-up and repeats, and prints one
//! table (see [`report`]) with each figure's baseline measured in the same
//! run and its target. See `docs/benchmarks.md`.
//!
//! The runner exits non-zero only when a scenario fails to run, never
//! because a target was missed.

pub mod harness;
pub mod report;
pub mod stats;

mod change_flood;
mod changes;
mod clients;
mod cpu;
mod fleet;
mod irc;
mod latency;
mod locks;
mod pg;
mod pollers;
mod readopt;
mod remote;
mod sampling;
mod scale;
mod takeover;
mod throughput;
mod tls;
mod tls_scale;
mod upload;
mod web;

use std::cell::OnceCell;
use std::process::ExitCode;

use anyhow::{Result, bail};

use harness::{Bins, Scratch};
use report::{Report, Row};

/// Sizes and repeat counts of one run.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// `--quick`: small sizes for CI.
    pub quick: bool,
    /// Unmeasured runs before each measured series.
    pub warmup: usize,
    /// Measured runs of a short operation (one `bbctl` call).
    pub repeats: usize,
    /// Builds per throughput run.
    pub throughput_builds: usize,
    /// Throughput and log-streaming runs.
    pub long_repeats: usize,
    /// Bytes written by the log-streaming step.
    pub log_bytes: u64,
    /// Builders of the scale master.
    pub builders: usize,
    /// Remote workers (never connecting) of the scale master.
    pub workers: usize,
    /// Queued requests in the scale master's database.
    pub queued: usize,
    /// Finished builds in the scale master's database.
    pub finished: usize,
    /// Reloads for the memory-growth check.
    pub reloads: usize,
    /// Concurrent `bbctl status` loops.
    pub clients: usize,
    /// How long the concurrent clients run, in seconds.
    pub clients_secs: f64,
    /// Requests per client in the concurrent force-build rate.
    pub submit_per_client: usize,
    /// Bytes of step output and of the uploaded file over TLS.
    pub tls_bytes: u64,
    /// Workers of the TLS connection generator.
    pub tls_workers: usize,
    /// Builds held running by generator workers across a master restart.
    pub tls_builds: usize,
    /// Changes sent at once by one client in the change flood.
    pub flood_changes: usize,
    /// Branch schedulers the flood's changes are spread over.
    pub flood_schedulers: usize,
}

impl Sizes {
    /// The sizes of the issues' targets, or small ones with `quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                quick,
                warmup: 1,
                repeats: 5,
                throughput_builds: 100,
                long_repeats: 2,
                log_bytes: 32 << 20,
                builders: 100,
                workers: 10,
                queued: 1_000,
                finished: 5_000,
                reloads: 50,
                clients: 8,
                clients_secs: 1.5,
                submit_per_client: 50,
                tls_bytes: 16 << 20,
                tls_workers: 50,
                tls_builds: 5,
                flood_changes: 1_000,
                flood_schedulers: 10,
            }
        } else {
            Sizes {
                quick,
                warmup: 3,
                repeats: 30,
                throughput_builds: 2_000,
                long_repeats: 3,
                log_bytes: 1 << 30,
                builders: 1_000,
                workers: 100,
                queued: 10_000,
                finished: 100_000,
                reloads: 1_000,
                clients: 50,
                clients_secs: 10.0,
                submit_per_client: 500,
                tls_bytes: 1 << 30,
                tls_workers: 1_000,
                tls_builds: 100,
                flood_changes: 10_000,
                flood_schedulers: 100,
            }
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    /// The product's binaries.
    pub bins: Bins,
    /// Sizes of this run.
    pub sizes: Sizes,
    /// Where state dirs go.
    pub scratch: Scratch,
    fixture: OnceCell<scale::Fixture>,
}

/// A scenario: its `--only` name and what runs it.
struct Scenario {
    name: &'static str,
    run: fn(&Ctx, &mut Report) -> Result<()>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "dispatch",
        run: latency::dispatch,
    },
    Scenario {
        name: "throughput",
        run: throughput::throughput,
    },
    Scenario {
        name: "log",
        run: throughput::log_streaming,
    },
    Scenario {
        name: "status",
        run: latency::status,
    },
    Scenario {
        name: "builds",
        run: scale::builds,
    },
    Scenario {
        name: "reload",
        run: scale::reload,
    },
    Scenario {
        name: "startup",
        run: scale::startup,
    },
    Scenario {
        name: "readopt",
        run: readopt::readopt,
    },
    Scenario {
        name: "upload",
        run: upload::upload,
    },
    Scenario {
        name: "memory",
        run: latency::memory,
    },
    Scenario {
        name: "clients",
        run: clients::many_clients,
    },
    Scenario {
        name: "tls-dispatch",
        run: tls::dispatch,
    },
    Scenario {
        name: "tls-log",
        run: tls::log,
    },
    Scenario {
        name: "tls-upload",
        run: tls::upload,
    },
    Scenario {
        name: "tls-scale",
        run: tls_scale::scale,
    },
    Scenario {
        name: "sendchange",
        run: changes::sendchange,
    },
    Scenario {
        name: "pollers",
        run: pollers::pollers,
    },
    Scenario {
        name: "locks",
        run: locks::locks,
    },
    Scenario {
        name: "pg",
        run: pg::pg,
    },
    Scenario {
        name: "takeover",
        run: takeover::takeover,
    },
    Scenario {
        name: "irc-notify",
        run: irc::notify,
    },
    Scenario {
        name: "irc-flood",
        run: irc::flood,
    },
    Scenario {
        name: "change-flood",
        run: change_flood::flood,
    },
    Scenario {
        name: "web-pages",
        run: web::pages,
    },
    Scenario {
        name: "web-sse",
        run: web::followers,
    },
];

/// Parsed command line.
#[derive(Debug, Default)]
struct Options {
    quick: bool,
    markdown: bool,
    only: Vec<String>,
}

const USAGE: &str = "usage: bbbench [--quick] [--markdown] [--only NAME...]
  --quick      small sizes and few repeats (CI)
  --markdown   print the table in Markdown
  --only NAME  run only these scenarios (repeatable, or several names after one --only)";

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options> {
    let mut opts = Options::default();
    let mut in_only = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--markdown" => opts.markdown = true,
            "--only" => in_only = true,
            "-h" | "--help" => bail!("{USAGE}"),
            name if in_only && !name.starts_with('-') => {
                if !SCENARIOS.iter().any(|s| s.name == name) {
                    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    bail!("no scenario `{name}`; there are: {}", names.join(", "));
                }
                opts.only.push(name.to_string());
            }
            other => bail!("unexpected argument `{other}`\n{USAGE}"),
        }
    }
    if in_only && opts.only.is_empty() {
        bail!("--only needs at least one scenario name\n{USAGE}");
    }
    Ok(opts)
}

/// Run the benchmarks as the command line asks; the exit code is non-zero
/// if the arguments are wrong or any scenario failed to run.
pub fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let ctx = match Bins::locate().and_then(|bins| {
        Ok(Ctx {
            bins,
            sizes: Sizes::new(opts.quick),
            scratch: Scratch::new()?,
            fixture: OnceCell::new(),
        })
    }) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("bbbench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::default();
    for scenario in SCENARIOS {
        if !opts.only.is_empty() && !opts.only.iter().any(|n| n == scenario.name) {
            continue;
        }
        eprintln!("== {}", scenario.name);
        let start = std::time::Instant::now();
        if let Err(e) = (scenario.run)(&ctx, &mut report) {
            report.push(Row::failed(scenario.name, &e));
        }
        eprintln!("   ({:.1} s)", start.elapsed().as_secs_f64());
    }
    if opts.markdown {
        print!("{}", report.render_markdown());
    } else {
        print!("{}", report.render_text());
    }
    if report.any_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn arguments() {
        let o = parse_args(args("--quick --only dispatch status")).unwrap();
        assert!(o.quick);
        assert_eq!(o.only, vec!["dispatch", "status"]);
        assert!(parse_args(args("--only nope")).is_err());
        assert!(parse_args(args("--only")).is_err());
        assert!(parse_args(args("dispatch")).is_err());
    }
}
