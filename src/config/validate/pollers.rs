//! Checks of `[[poller]]` entries: name, repository, branches, timing.

use std::path::Path;
use std::time::Duration;

use super::super::defaults;
use super::super::model::PollerDef;
use super::super::raw::RawPoller;
use super::Checker;

/// Shortest `interval`: below it a poller is a load, not a watch.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl Checker<'_> {
    /// All pollers, then their names across entries.
    pub(super) fn pollers(&mut self, raw: &[RawPoller]) -> Vec<PollerDef> {
        let pollers = raw.iter().map(|p| self.poller(p)).collect();
        self.duplicates(raw.iter().map(|p| &p.name), |n| {
            format!("duplicate poller name `{n}`")
        });
        pollers
    }

    fn poller(&mut self, raw: &RawPoller) -> PollerDef {
        self.name("poller", &raw.name);
        let name = raw.name.get_ref();
        let owner = format!("poller `{name}`");
        let repository = match &raw.repository {
            None => {
                self.report(
                    &raw.name.span(),
                    format!("{owner} needs `repository`, a URL or a path"),
                );
                String::new()
            }
            Some(r) => {
                self.repository(&owner, "repository", r);
                resolve_repository(r.get_ref(), self.base_dir)
            }
        };
        let tags = raw.tags.as_ref().is_some_and(|t| *t.get_ref());
        let branches = match &raw.branches {
            None => vec!["**".to_owned()],
            Some(list) => {
                if list.get_ref().is_empty() && !tags {
                    self.report(
                        &list.span(),
                        format!(
                            "{owner}: `branches` is empty and `tags` is off: it watches nothing"
                        ),
                    );
                }
                for b in list.get_ref() {
                    let text = b.get_ref();
                    let why = if text.is_empty() {
                        Some("is empty")
                    } else if text.starts_with("refs/") {
                        Some("starts with `refs/`; write branch names as `main`, `release/*`")
                    } else if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
                        Some("has an empty part between `/`")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        self.report(&b.span(), format!("{owner}: branch pattern {text:?} {why}"));
                    }
                }
                self.duplicates(list.get_ref().iter(), |b| {
                    format!("{owner}: branch pattern {b:?} is listed twice")
                });
                list.get_ref().iter().map(|b| b.get_ref().clone()).collect()
            }
        };
        let interval = raw
            .interval
            .as_ref()
            .and_then(|i| {
                let d = self.duration(&owner, "interval", i)?;
                if d < MIN_INTERVAL {
                    self.report(
                        &i.span(),
                        format!("{owner}: `interval` must be at least 1s"),
                    );
                    return None;
                }
                Some(d)
            })
            .unwrap_or_else(|| defaults::duration("poller.interval"));
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(&owner, "timeout", t))
            .unwrap_or_else(|| defaults::duration("poller.timeout"));
        PollerDef {
            name: name.clone(),
            repository,
            branches,
            tags,
            interval,
            timeout,
        }
    }
}

/// A repository as git will be given it: URLs (`scheme://...`) and
/// scp-like addresses (`host:path`, a `:` before any `/`) as written, a
/// path made absolute against the config's directory (the poller runs git
/// in its mirror, not where the config is).
pub fn resolve_repository(text: &str, base_dir: &Path) -> String {
    let is_url = text.contains("://")
        || text
            .find(':')
            .is_some_and(|colon| !text[..colon].contains('/'));
    if is_url {
        text.to_owned()
    } else {
        base_dir.join(text).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_repository;
    use std::path::Path;

    #[test]
    fn paths_resolve_urls_stay() {
        let base = Path::new("/etc/bb");
        assert_eq!(resolve_repository("repo.git", base), "/etc/bb/repo.git");
        assert_eq!(resolve_repository("/srv/r.git", base), "/srv/r.git");
        assert_eq!(
            resolve_repository("https://h/x.git", base),
            "https://h/x.git"
        );
        assert_eq!(
            resolve_repository("git@host:org/x.git", base),
            "git@host:org/x.git"
        );
        assert_eq!(resolve_repository("./a:b", base), "/etc/bb/./a:b");
    }
}
