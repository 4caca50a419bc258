//! `notify on|off` per channel, kept durably in the state dir
//! (`irc-notify.json`), so that a restart or a reconnect keeps what the
//! channel asked for.
//!
//! An override remembers the config's list it was made against: when a
//! reload changes that channel's `notify` in the config, the config wins
//! (the operator's latest word) and the override is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::line::irc_lower;

/// One channel's override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Override {
    /// The config's list when the override was made.
    base: Vec<String>,
    /// The events the channel wants.
    events: Vec<String>,
}

/// The overrides and where they are kept.
#[derive(Debug)]
pub struct Prefs {
    path: Option<PathBuf>,
    overrides: BTreeMap<String, Override>,
}

impl Prefs {
    /// Reads `<state_dir>/irc-notify.json` (none yet: no overrides; an
    /// unreadable file is logged and ignored, never fatal).
    pub fn load(state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|d| d.join("irc-notify.json"));
        let overrides = match path.as_deref().map(std::fs::read) {
            Some(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "irc: ignoring {}: {e}",
                    path.as_deref().unwrap_or(Path::new("")).display()
                );
                BTreeMap::new()
            }),
            _ => BTreeMap::new(),
        };
        Prefs { path, overrides }
    }

    /// The events `channel` is notified of, given its config list.
    pub fn effective(&self, channel: &str, config: &[String]) -> Vec<String> {
        match self.overrides.get(&irc_lower(channel)) {
            Some(o) if o.base == config => o.events.clone(),
            _ => config.to_vec(),
        }
    }

    /// Turns events on or off for `channel`, and saves.
    pub fn set(
        &mut self,
        channel: &str,
        config: &[String],
        events: &[String],
        on: bool,
    ) -> Result<Vec<String>, String> {
        let mut now = self.effective(channel, config);
        for e in events {
            if on && !now.contains(e) {
                now.push(e.clone());
            }
            if !on {
                now.retain(|x| x != e);
            }
        }
        self.overrides.insert(
            irc_lower(channel),
            Override {
                base: config.to_vec(),
                events: now.clone(),
            },
        );
        self.save()?;
        Ok(now)
    }

    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.overrides).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot save {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_persist_and_yield_to_a_changed_config() {
        let dir = std::env::temp_dir().join(format!("bb-irc-prefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = vec!["failure".to_string()];
        let mut p = Prefs::load(Some(&dir));
        assert_eq!(p.effective("#b", &config), config);
        let now = p.set("#B", &config, &["started".into()], true).unwrap();
        assert_eq!(now, vec!["failure", "started"]);
        let p = Prefs::load(Some(&dir));
        assert_eq!(p.effective("#b", &config), vec!["failure", "started"]);
        let changed = vec!["fixed".to_string()];
        assert_eq!(p.effective("#b", &changed), changed);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
