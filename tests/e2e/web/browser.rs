//! The pages in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) loads `/` and a running build's page and
//! dumps the DOM after the page's script ran. Skipped, saying so, only
//! when no Chromium is installed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{get, start, wait_running};
use crate::harness::{run_with_timeout, temp_dir, text};

/// Chromium's executable, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
}

/// The DOM of `url` after its scripts ran (for up to `budget` of the
/// page's time).
fn dump_dom(exe: &PathBuf, url: &str, budget: Duration) -> String {
    let profile = temp_dir();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={}", budget.as_millis()))
    .arg("--dump-dom")
    .arg(url);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `/` lists the builders; a running build's page follows its log while
/// the step runs and shows the result when it ends.
#[test]
fn pages_work_in_headless_chromium() {
    let Some(exe) = chromium() else {
        eprintln!(
            "SKIPPED pages_work_in_headless_chromium: no chromium on PATH \
             (`apt-get install chromium`; .ci/run installs it)"
        );
        return;
    };
    let (m, addr) = start();
    let index = dump_dom(&exe, &format!("http://{addr}/"), Duration::from_secs(1));
    assert!(index.contains("id=\"builders\""), "{index}");
    assert!(index.contains(">ticks</a>"), "{index}");

    m.force_build("ticks");
    let build = wait_running(addr);
    let first = get(addr, &format!("/builds/{build}")).text();
    assert!(
        !first.contains("tick 10"),
        "the build ended too soon: {first}"
    );
    let dom = dump_dom(
        &exe,
        &format!("http://{addr}/builds/{build}"),
        Duration::from_secs(20),
    );
    // The script appended what the step printed after the page loaded,
    // each line once, and showed the result.
    for i in 1..=10 {
        let line = format!("tick {i}\n");
        assert_eq!(dom.matches(&line).count(), 1, "{line:?} in:\n{dom}");
    }
    assert!(dom.contains("data-done=\"1\""), "{dom}");
    assert!(
        dom.contains("id=\"result\" class=\"r success\">success<"),
        "{dom}"
    );
}
