//! `check-config`: validate a file with no master running.

use std::io::{self, Write};
use std::path::Path;

use super::{Ctx, print_json};
use crate::client::{CliError, EXIT_FAILED};
use crate::config;

/// `bbctl check-config FILE`: exit 0 when valid, 1 when not.
pub fn check_config(ctx: &Ctx, file: &Path) -> Result<u8, CliError> {
    match config::load_file(file) {
        Ok(cfg) => {
            for warning in &cfg.warnings {
                eprintln!("{warning}");
            }
            if ctx.json {
                print_json(&serde_json::json!({
                    "warnings": cfg.warnings,
                    "valid": true,
                    "file": file,
                    "workers": cfg.workers.len(),
                    "builders": cfg.builders.len(),
                    "config_hash": cfg.hash,
                    "problems": [],
                }))?;
            } else {
                writeln!(
                    io::stdout().lock(),
                    "{}: valid ({} worker(s), {} builder(s))",
                    file.display(),
                    cfg.workers.len(),
                    cfg.builders.len()
                )?;
            }
            Ok(0)
        }
        Err(e) => {
            if ctx.json {
                let problems: Vec<_> = e
                    .problems
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "file": p.origin, "line": p.line(), "column": p.column(), "message": p.message,
                        })
                    })
                    .collect();
                print_json(&serde_json::json!({
                    "valid": false,
                    "file": file,
                    "problems": problems,
                }))?;
            }
            let mut err = io::stderr().lock();
            for p in &e.problems {
                writeln!(err, "{p}")?;
            }
            writeln!(
                err,
                "bbctl: error: {} is invalid ({} problem(s))",
                file.display(),
                e.problems.len()
            )?;
            Ok(EXIT_FAILED)
        }
    }
}
