//! `prune`: delete the history that `keep_builds`/`keep_logs` no longer
//! keep; and the disk line of `status`.

use std::io::{self, Write};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::protocol::{BuildId, DiskUsage, PruneReport, Reply, Request};

/// `bbctl prune [--dry-run]`: exit 0 whatever was (or was not) deleted.
pub async fn prune(ctx: &mut Ctx, dry_run: bool) -> Result<u8, CliError> {
    let report = match ctx.call(Request::Prune { dry_run }).await? {
        Reply::Pruned(r) => r,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(0)
}

fn print_report(r: &PruneReport) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let (verb, suffix) = if r.dry_run {
        ("would delete", " (dry run)")
    } else {
        ("deleted", "")
    };
    if r.builds_deleted.is_empty() && r.logs_deleted.is_empty() {
        return writeln!(out, "nothing to prune{suffix}");
    }
    if !r.builds_deleted.is_empty() {
        writeln!(
            out,
            "{verb} {} build(s): {}",
            r.builds_deleted.len(),
            ids(&r.builds_deleted)
        )?;
    }
    if !r.logs_deleted.is_empty() {
        writeln!(
            out,
            "{verb} the logs of {} build(s): {}",
            r.logs_deleted.len(),
            ids(&r.logs_deleted)
        )?;
    }
    writeln!(out, "{} freed{suffix}", size(r.bytes_freed))
}

fn ids(ids: &[BuildId]) -> String {
    ids.iter()
        .map(BuildId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `disk:` line of `bbctl status`.
pub fn disk_line(disk: Option<&DiskUsage>) -> String {
    match disk {
        None => "disk: not measured yet".to_owned(),
        Some(d) => format!(
            "disk: logs {}, artifacts {}, database {}",
            size(d.logs_bytes),
            size(d.artifacts_bytes),
            size(d.db_bytes)
        ),
    }
}

/// Bytes as people read them: `512 B`, `1.5 KiB`, `12.0 MiB`.
fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12 << 20), "12.0 MiB");
    }
}
