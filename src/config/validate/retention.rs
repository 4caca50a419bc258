//! Checks of the retention keys: `keep_builds` and `keep_logs`, in
//! `[master]` and per `[[builder]]`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::super::model::{Keep, Retention};
use super::super::raw::{RawBuilder, RawMaster};
use super::Checker;

/// Most builds a builder may be told to keep; more is surely a typo.
const MAX_KEEP_BUILDS: u32 = 10_000_000;

impl Checker<'_> {
    /// The whole policy: the master's keys and each builder's own.
    pub(super) fn retention(&mut self, master: &RawMaster, builders: &[RawBuilder]) -> Retention {
        let default = self.keep("master", &master.keep_builds, &master.keep_logs);
        let mut own = BTreeMap::new();
        for builder in builders {
            if builder.keep_builds.is_none() && builder.keep_logs.is_none() {
                continue;
            }
            let owner = format!("builder `{}`", builder.name.get_ref());
            let keep = self.keep(&owner, &builder.keep_builds, &builder.keep_logs);
            own.insert(builder.name.get_ref().clone(), keep);
        }
        Retention {
            default,
            builders: own,
        }
    }

    /// One table's `keep_builds` (1 or more) and `keep_logs` (a duration).
    fn keep(
        &mut self,
        owner: &str,
        builds: &Option<Spanned<i64>>,
        logs: &Option<Spanned<String>>,
    ) -> Keep {
        let builds = builds
            .as_ref()
            .and_then(|n| match u32::try_from(*n.get_ref()) {
                Ok(k) if (1..=MAX_KEEP_BUILDS).contains(&k) => Some(k),
                _ => {
                    self.report(
                        &n.span(),
                        format!(
                            "{owner}: `keep_builds` must be between 1 and {MAX_KEEP_BUILDS}, not {} \
                             (leave it out to keep every build)",
                            n.get_ref()
                        ),
                    );
                    None
                }
            });
        let logs = logs
            .as_ref()
            .and_then(|d| self.duration(owner, "keep_logs", d));
        Keep { builds, logs }
    }
}
