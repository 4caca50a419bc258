//! `bbctl watch`: in a real pseudo-terminal (a tmux pane), and on a pipe.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{BBCTL, LineReader, Master, await_subscription, code, describe, text};

/// A builder whose second step holds until `@DIR@/go` exists.
const HELLO: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "hello"
workers = ["local-1"]

  [[builder.step]]
  name = "say"
  shell = "echo hello"

  [[builder.step]]
  name = "hold"
  shell = "while [ ! -e @DIR@/go ]; do sleep 0.02; done"
  timeout = "20s"
"#;

/// How long the screen may take to show something.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A tmux server of its own (`tmux -L NAME`) with one 120x40 session;
/// the server is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Start `shell_command` in a new detached session.
    fn start(shell_command: &str) -> Tmux {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "bbe-watch-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux { socket };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "120",
            "-y",
            "40",
            shell_command,
        ]);
        assert_eq!(code(&out), 0, "tmux new-session: {}", describe(&out));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run tmux (is it installed?)")
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "w"]);
        assert_eq!(code(&out), 0, "tmux capture-pane: {}", describe(&out));
        text(&out.stdout)
    }

    /// Wait (bounded) until the screen satisfies `cond`; returns it.
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen did not show {what} within {SCREEN_TIMEOUT:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send_keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", "w", keys]);
        assert_eq!(code(&out), 0, "tmux send-keys: {}", describe(&out));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A screen line starting with `start` (after `#1 `-style ids) that also
/// holds every one of `words`.
fn has_line(screen: &str, start: &str, words: &[&str]) -> bool {
    screen
        .lines()
        .any(|l| l.starts_with(start) && words.iter().all(|w| l.contains(w)))
}

/// `bbctl watch` in a tmux pane: it shows the BUILDER table with `hello`;
/// a forced build appears as running with its id and current step, then
/// under LAST as `success`; `q` quits with exit 0 and leaves the
/// alternate screen, so the table is gone from the pane.
#[test]
fn watch_in_a_terminal() {
    let m = Master::start(HELLO);
    let state_dir = m.state_dir();
    let tmux = Tmux::start(&format!(
        "env -u BBCTL_SOCKET NO_COLOR=1 BBMASTER_STATE_DIR='{}' '{BBCTL}' watch; echo EXITED $?; sleep 10",
        state_dir.display()
    ));
    tmux.wait_screen("the BUILDER table with hello", |s| {
        has_line(s, "BUILDER ", &["STATE", "QUEUED"]) && has_line(s, "hello ", &["local-1"])
    });

    assert_eq!(m.force_build("hello"), 1);
    tmux.wait_screen("build #1 running its second step", |s| {
        has_line(s, "#1 ", &["hello", "local-1", "2/2 hold"])
    });

    fs::write(m.path().join("go"), "").unwrap();
    let screen = tmux.wait_screen("build #1 as a success under LAST", |s| {
        has_line(s, "#1 ", &["hello", "success"])
    });
    assert!(has_line(&screen, "LAST ", &["RESULT"]), "{screen}");
    assert!(has_line(&screen, "(none running)", &[]), "{screen}");

    tmux.send_keys("q");
    let screen = tmux.wait_screen("EXITED", |s| s.contains("EXITED"));
    assert!(has_line(&screen, "EXITED 0", &[]), "{screen}");
    assert!(
        !screen.contains("BUILDER"),
        "the alternate screen is still shown:\n{screen}"
    );
}

/// A master that goes away under `bbctl watch` (a restart): the view says
/// `master gone` and waits, then shows the new master's builds.
#[test]
fn watch_waits_for_a_restarted_master() {
    let mut m = Master::start(HELLO);
    let state_dir = m.state_dir();
    let tmux = Tmux::start(&format!(
        "env -u BBCTL_SOCKET NO_COLOR=1 BBMASTER_STATE_DIR='{}' '{BBCTL}' watch; echo EXITED $?; sleep 10",
        state_dir.display()
    ));
    tmux.wait_screen("the BUILDER table with hello", |s| {
        has_line(s, "hello ", &["local-1"])
    });
    m.signal(nix::sys::signal::Signal::SIGTERM);
    m.wait_exit(SCREEN_TIMEOUT);
    let screen = tmux.wait_screen("master gone", |s| {
        s.contains("master gone") || s.contains("EXITED")
    });
    assert!(screen.contains("waiting for it to come back"), "{screen}");
    m.spawn();
    fs::write(m.path().join("go"), "").unwrap();
    assert_eq!(m.force_build("hello"), 1);
    let screen = tmux.wait_screen("build #1 of the new master", |s| {
        has_line(s, "#1 ", &["hello", "success"]) || s.contains("EXITED")
    });
    assert!(!screen.contains("master gone"), "{screen}");
    assert!(!screen.contains("EXITED"), "{screen}");
    tmux.send_keys("q");
    let screen = tmux.wait_screen("EXITED", |s| s.contains("EXITED"));
    assert!(has_line(&screen, "EXITED 0", &[]), "{screen}");
}

/// `bbctl watch | cat`: with stdout not a terminal it prints one line per
/// event (`HH:MM:SS.mmmZ gen N  what`), no screen, up to the end of a
/// forced build.
#[test]
fn watch_on_a_pipe_prints_lines() {
    let m = Master::start(HELLO);
    fs::write(m.path().join("go"), "").unwrap();
    let mut watch = LineReader::spawn(m.bbctl_command(&["watch"]));
    await_subscription(&m, &mut watch, "master no longer draining");
    assert_eq!(m.force_build("hello"), 1);
    watch.read_until("finished", SCREEN_TIMEOUT, |l| {
        l.contains("build 1 finished")
    });
    let last = watch.seen.last().unwrap().clone();
    assert!(
        last.ends_with("build 1 finished: success (request r1)"),
        "{last}"
    );
    for line in &watch.seen {
        let (time, rest) = line.split_at(13);
        assert!(
            time.len() == 13 && time.ends_with('Z') && time.as_bytes()[2] == b':',
            "{line:?}"
        );
        assert!(rest.starts_with(" gen 1  "), "{line:?}");
        assert!(!line.contains('\x1b'), "{line:?}");
    }
    let whats: Vec<&str> = watch
        .seen
        .iter()
        .map(|l| l[13..].trim_start_matches(" gen 1  "))
        .filter(|w| w.contains("build 1") || w.contains("request r1"))
        .collect();
    assert_eq!(
        whats,
        [
            "request r1 queued for hello",
            "build 1 of hello started on local-1 (request r1)",
            "build 1 step 0 `say` started",
            "build 1 step 0 finished: success",
            "build 1 step 1 `hold` started",
            "build 1 step 1 finished: success",
            "build 1 finished: success (request r1)",
        ],
    );
    let err = watch.stop();
    assert_eq!(err, "");
}
