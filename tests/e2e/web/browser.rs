//! The pages in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`) loads `/` and a running build's page and
//! dumps the DOM after the page's script ran. Skipped, saying so, only
//! when no Chromium is installed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{start, start_gated};
use crate::harness::{run_with_timeout, temp_dir, text, wait_until};

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

/// Is a TCP connection to local `port` established (the server's side,
/// from `/proc/net/tcp`)?
fn connected_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
    })
}

/// `/` lists the builders; a running build's page follows its log while
/// the step runs and shows the result when it ends. The step prints its
/// first line and then waits for the test, which lets it go on only once
/// Chromium is connected: the page is served while the build runs, so
/// every later line and the result can only come from the page's script.
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

    let (build, gate) = start_gated(&m, addr);
    wait_until(
        "no connection before Chromium's",
        Duration::from_secs(10),
        || !connected_to(addr.port()),
    );
    let url = format!("http://{addr}/builds/{build}");
    let browser = std::thread::spawn(move || dump_dom(&exe, &url, Duration::from_secs(20)));
    wait_until("Chromium connected", Duration::from_secs(60), || {
        connected_to(addr.port())
    });
    std::fs::write(&gate, "").unwrap();
    let dom = browser.join().unwrap();
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
