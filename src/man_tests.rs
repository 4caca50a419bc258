//! Tests of the man pages: the checked-in pages match what the clap
//! definitions render (`UPDATE_MAN=1` rewrites them), and `master.toml.5`
//! covers every config key.

use std::collections::BTreeSet;
use std::path::Path;

use super::{CONFIG_KEYS, CONFIG_PAGE};

fn man_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

#[test]
fn man_pages_are_up_to_date() {
    let dir = man_dir();
    let update = std::env::var_os("UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    let pages = super::render_all();
    for (name, text) in &pages {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, text).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "man pages out of date: {stale:?}; run `UPDATE_MAN=1 cargo test --lib man` and commit man/"
    );
    // A page no longer generated (a removed command, an old section)
    // must not linger.
    let expected: BTreeSet<String> = pages
        .into_iter()
        .map(|(name, _)| name)
        .chain([CONFIG_PAGE.to_string()])
        .collect();
    let mut extra = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            if update {
                std::fs::remove_file(dir.join(&name)).unwrap();
            } else {
                extra.push(name);
            }
        }
    }
    assert!(
        extra.is_empty(),
        "man/ holds pages that are no longer generated: {extra:?}; delete them (or run `UPDATE_MAN=1 cargo test --lib man`)"
    );
}

/// `.SH`/`.SS` headings of the config page name the tables as
/// `[master]`, `[[worker]]`, `[[builder]]`, `[[builder.step]]`; each key
/// is a `.B key` line under its table's heading.
#[test]
fn config_page_documents_every_key() {
    let text = std::fs::read_to_string(man_dir().join(CONFIG_PAGE))
        .unwrap_or_else(|e| panic!("man/{CONFIG_PAGE}: {e}"));
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with(".SH") || line.starts_with(".SS") {
            let heading = line[3..].trim().trim_matches('"');
            let table = heading.trim_matches(|c| c == '[' || c == ']');
            let table = if heading.starts_with('[') { table } else { "" };
            sections.push((table.to_string(), Vec::new()));
        } else if let (Some(key), Some((_, keys))) = (line.strip_prefix(".B "), sections.last_mut())
        {
            keys.push(key.trim().to_string());
        }
    }
    let mut missing = Vec::new();
    for key in CONFIG_KEYS {
        let (table, leaf) = match key.rsplit_once('.') {
            Some((table, leaf)) => (table, leaf),
            None => {
                if !sections.iter().any(|(t, _)| t == key) {
                    missing.push(format!("{key} (no section heading [{key}] or [[{key}]])"));
                }
                continue;
            }
        };
        let documented = sections
            .iter()
            .any(|(t, keys)| t == table && keys.iter().any(|k| k == leaf));
        if !documented {
            missing.push(key.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "man/{CONFIG_PAGE} does not document: {missing:?}"
    );
}

/// [`CONFIG_KEYS`] against the source: every `pub field:` of the raw
/// structs, with its table, must be in the list, and the list must hold
/// nothing else.
#[test]
fn config_keys_match_the_raw_structs() {
    let source = include_str!("config/raw.rs");
    let table_of = |name: &str| match name {
        "RawConfig" => Some(&[""][..]),
        "RawMaster" => Some(&["master"][..]),
        "RawWorker" => Some(&["worker"][..]),
        "RawBuilder" => Some(&["builder"][..]),
        "RawStep" => Some(&["builder.step"][..]),
        "RawUpload" => Some(&["builder.step.upload"][..]),
        "RawDownload" => Some(&["builder.step.download"][..]),
        "RawLock" => Some(&["lock"][..]),
        "RawLockClaim" => Some(&["builder.locks", "builder.step.locks"][..]),
        "RawScheduler" => Some(&["scheduler"][..]),
        "RawGit" => Some(&["builder.step.git"][..]),
        "RawForceProperty" => Some(&["builder.force_properties"][..]),
        "RawPoller" => Some(&["poller"][..]),
        "RawTrigger" => Some(&["builder.step.trigger"][..]),
        "RawHttp" => Some(&["http"][..]),
        "RawHttpToken" => Some(&["http.token"][..]),
        "RawHttpHook" => Some(&["http.hook"][..]),
        "RawIrc" => Some(&["irc"][..]),
        "RawIrcSasl" => Some(&["irc.sasl"][..]),
        "RawIrcChannel" => Some(&["irc.channels"][..]),
        "RawIrcAuthz" => Some(&["irc.authz"][..]),
        "RawStore" => Some(&["master.store"][..]),
        _ => None,
    };
    let mut found = BTreeSet::new();
    let mut current: Option<&[&str]> = None;
    for line in source.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.split(|c: char| !c.is_alphanumeric()).next().unwrap();
            current = Some(table_of(name).unwrap_or_else(|| {
                panic!("raw.rs has a new struct {name}: add it to this test and to CONFIG_KEYS")
            }));
            continue;
        }
        if line == "}" {
            current = None;
            continue;
        }
        if let (Some(tables), Some((field, _))) = (
            current,
            line.strip_prefix("pub ").and_then(|r| r.split_once(':')),
        ) {
            let field = field.trim().trim_start_matches("r#");
            for table in tables {
                found.insert(if table.is_empty() {
                    field.to_string()
                } else {
                    format!("{table}.{field}")
                });
            }
        }
    }
    let listed: BTreeSet<String> = CONFIG_KEYS.iter().map(|k| k.to_string()).collect();
    let unlisted: Vec<_> = found.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "CONFIG_KEYS is out of step with src/config/raw.rs: missing {unlisted:?}, not in raw.rs {gone:?}"
    );
}

/// Render a roff page as a reader sees it: `man -l` at 80 columns
/// (man-db; CI installs it with apt-get).
fn render_as_text(roff: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env_remove("MAN_KEEP_FORMATTING")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`man` (man-db) is needed to check the man pages: apt-get install man-db");
    child.stdin.take().unwrap().write_all(roff).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "man -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Strip any overstrike (bold/underline) that a formatter leaves.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

/// The lines of section `name` of a rendered page, up to the next one.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim_end() != name)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect()
}

/// Every bbctl page, rendered by `man`, lists each exit code on a line
/// of its own, followed by the start of its meaning; no other line
/// sits at the codes' indentation (a garbled `not`, `master,`).
#[test]
fn exit_status_reads_right_when_rendered() {
    let codes = crate::client::cli::exit_codes();
    for (name, roff) in super::render_all() {
        if !name.starts_with("bbctl") {
            continue;
        }
        let text = render_as_text(&roff);
        let lines = section(&text, "EXIT STATUS");
        assert!(!lines.is_empty(), "{name}: no EXIT STATUS section:\n{text}");
        let tagged: Vec<&str> = lines
            .iter()
            .filter(|l| l.len() > 7 && l.starts_with("       ") && !l[7..].starts_with(' '))
            .copied()
            .collect();
        assert_eq!(
            tagged.len(),
            codes.len(),
            "{name}: one tagged line per exit code expected:\n{}",
            lines.join("\n")
        );
        for ((code, meaning), line) in codes.iter().zip(&tagged) {
            let mut words = line.split_whitespace();
            assert_eq!(
                words.next(),
                Some(code.to_string().as_str()),
                "{name}: {line}"
            );
            let first: Vec<&str> = meaning.split_whitespace().take(2).collect();
            let got: Vec<&str> = words.take(2).collect();
            assert_eq!(got, first, "{name}: code {code} reads `{line}`");
        }
        // The meaning comes whole: every word of it is in the section.
        // (Words hyphenated at a line's end are joined again.)
        let flat = lines.join(" ");
        let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat.replace("\u{2010} ", "");
        for (code, meaning) in &codes {
            let last = meaning.split_whitespace().last().unwrap();
            assert!(
                flat.contains(last),
                "{name}: code {code}'s meaning is cut: {flat}"
            );
        }
    }
}

/// `docs/cli.md`'s exit-code table says exactly what `--help` and
/// `bbctl(1)` say (all three come from `EXIT_CODES`).
#[test]
fn docs_list_the_same_exit_codes_as_help() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let rows: Vec<(u8, String)> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
            let code = cells.first()?.trim().parse::<u8>().ok()?;
            Some((code, cells.get(1)?.trim().to_string()))
        })
        .collect();
    assert_eq!(
        rows,
        crate::client::cli::exit_codes(),
        "docs/cli.md's exit-code table differs from cli::EXIT_CODES"
    );
}

/// `bbworker(8)` and `bbworker --help` describe the worker, not the
/// whole suite (the crate's description).
#[test]
fn bbworker_describes_the_worker() {
    use clap::CommandFactory;
    let help = crate::worker::args::WorkerArgs::command()
        .render_long_help()
        .to_string();
    assert!(help.starts_with("Connect to a bbmaster"), "{help}");
    let (_, roff) = super::render_all()
        .into_iter()
        .find(|(n, _)| n == "bbworker.8")
        .unwrap();
    let text = render_as_text(&roff);
    let name = section(&text, "NAME").join(" ");
    assert!(name.contains("bbworker - Connect to a bbmaster"), "{name}");
    assert!(!text.contains("whose reload never hurts"), "{text}");
}

/// Every `Default:` of `master.toml(5)` says what
/// [`crate::config::defaults::DEFAULTS`] (the table the code's defaults
/// come from) says, and every key of the table has one.
#[test]
fn config_page_defaults_match_the_code() {
    use crate::config::defaults::DEFAULTS;
    let text = std::fs::read_to_string(man_dir().join(CONFIG_PAGE)).unwrap();
    // (table.key, default as shown), from `.B key` entries.
    let mut table = String::new();
    let mut key: Option<String> = None;
    let mut shown: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    let flush = |key: &Option<String>, pending: &str, shown: &mut Vec<(String, String)>| {
        if let (Some(key), Some((_, rest))) = (key, pending.split_once("Default: ")) {
            let plain = rest
                .replace("\\fB", "")
                .replace("\\fI", "")
                .replace("\\fR", "")
                .replace("\\-", "-");
            let value = plain.split_whitespace().collect::<Vec<_>>().join(" ");
            let value = value.strip_suffix('.').unwrap_or(&value).to_string();
            shown.push((key.clone(), value));
        }
    };
    for line in text.lines() {
        if line.starts_with(".SH") || line.starts_with(".SS") || line.starts_with(".TP") {
            flush(&key, &pending, &mut shown);
            pending.clear();
            key = None;
            if !line.starts_with(".TP") {
                let heading = line[3..].trim().trim_matches('"');
                table = if heading.starts_with('[') {
                    heading.trim_matches(|c| c == '[' || c == ']').to_string()
                } else {
                    String::new()
                };
            }
        } else if let Some(k) = line.strip_prefix(".B ") {
            key = Some(format!("{table}.{}", k.trim()));
        } else if key.is_some() {
            pending.push(' ');
            pending.push_str(line);
        }
    }
    flush(&key, &pending, &mut shown);
    let mut wrong = Vec::new();
    for (key, value) in &shown {
        match DEFAULTS.iter().find(|(k, _)| k == key) {
            None => wrong.push(format!("{key}: the page says {value:?}, the code has none")),
            Some((_, v)) if v != value => {
                wrong.push(format!("{key}: the page says {value:?}, the code {v:?}"))
            }
            Some(_) => {}
        }
    }
    for (key, value) in DEFAULTS {
        if !shown.iter().any(|(k, _)| k == key) {
            wrong.push(format!(
                "{key}: no `Default:` on the page (the code: {value:?})"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "man/{CONFIG_PAGE} and config::defaults::DEFAULTS disagree:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn generated_pages_have_the_right_sections() {
    let pages = super::render_all();
    let find = |name: &str| {
        let (_, text) = pages.iter().find(|(n, _)| n == name).unwrap();
        String::from_utf8(text.clone()).unwrap()
    };
    assert!(find("bbmaster.8").contains(".TH bbmaster 8"));
    assert!(find("bbworker.8").contains(".TH bbworker 8"));
    let bbctl = find("bbctl.1");
    assert!(bbctl.contains(".TH bbctl 1"));
    assert!(bbctl.contains(".SH \"EXIT STATUS\""));
    assert!(!bbctl.contains("bbctl\\-help"), "no page for `help`");
    assert!(find("bbctl-force-build.1").contains(".TH bbctl-force-build 1"));
    for (name, text) in &pages {
        let text = String::from_utf8_lossy(text);
        assert_eq!(text.matches(".ds Aq").count(), 2, "{name}: one preamble");
    }
}
