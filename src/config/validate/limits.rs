//! `[master]` limits: sizes like `"16MiB"`, counts, and who may use the
//! control socket.

use toml::Spanned;

use super::Checker;
use crate::config::units::parse_size;

impl Checker<'_> {
    /// A size setting between `min` and `max` bytes, or `default`.
    pub(super) fn size(
        &mut self,
        key: &str,
        raw: &Option<Spanned<String>>,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        let Some(raw) = raw else {
            return default;
        };
        match parse_size(raw.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                self.report(
                    &raw.span(),
                    format!(
                        "master: `{key}` must be between {} and {}, not {n} bytes",
                        human(min),
                        human(max)
                    ),
                );
                default
            }
            Err(why) => {
                self.report(
                    &raw.span(),
                    format!(
                        "master: bad `{key}` {:?}: {why}; write it like \"64KiB\", \"16MiB\" or \"1GiB\"",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A count setting between `min` and `max`, or `default`.
    pub(super) fn count(
        &mut self,
        key: &str,
        raw: &Option<Spanned<i64>>,
        min: u32,
        max: u32,
        default: u32,
    ) -> u32 {
        let Some(raw) = raw else {
            return default;
        };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.report(
                    &raw.span(),
                    format!(
                        "master: `{key}` must be between {min} and {max}, not {}",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// The limits that bound a worker (uploads, free space, deadlines).
    pub(super) fn worker_limits(
        &mut self,
        raw: &super::super::raw::RawMaster,
    ) -> crate::config::WorkerLimits {
        let d = crate::config::WorkerLimits::default();
        crate::config::WorkerLimits {
            max_upload_size: self.size(
                "max_upload_size",
                &raw.max_upload_size,
                1,
                1 << 50,
                d.max_upload_size,
            ),
            max_artifact_bytes_per_build: self.size(
                "max_artifact_bytes_per_build",
                &raw.max_artifact_bytes_per_build,
                1,
                1 << 50,
                d.max_artifact_bytes_per_build,
            ),
            max_artifacts_per_build: self.count(
                "max_artifacts_per_build",
                &raw.max_artifacts_per_build,
                1,
                10_000_000,
                d.max_artifacts_per_build,
            ),
            min_free_space: self.size(
                "min_free_space",
                &raw.min_free_space,
                0,
                1 << 50,
                d.min_free_space,
            ),
            deadline_grace: raw
                .deadline_grace
                .as_ref()
                .and_then(|g| self.duration("master", "deadline_grace", g))
                .unwrap_or(d.deadline_grace),
        }
    }

    /// `allowed_uids`: user ids besides the master's own that may use the
    /// control socket.
    pub(super) fn uids(&mut self, raw: &Option<Spanned<Vec<Spanned<i64>>>>) -> Vec<u32> {
        let Some(list) = raw else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for uid in list.get_ref() {
            match u32::try_from(*uid.get_ref()) {
                Ok(n) => out.push(n),
                Err(_) => self.report(
                    &uid.span(),
                    format!(
                        "master: `allowed_uids` holds user ids (0 or more), not {}",
                        uid.get_ref()
                    ),
                ),
            }
        }
        out
    }
}

/// A size as people write it.
fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("MiB").is_err());
        assert!(
            parse_size("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
