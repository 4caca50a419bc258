//! The web server end to end (docs/http.md): a real `bbmaster` with
//! `[http]`, driven over HTTP by a raw client ([`client`]) and compared
//! with the real `bbctl --json`; the pages in headless Chromium
//! ([`browser`]).

mod bounds;
mod browser;
mod client;
mod finish;
mod logs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Master, describe, wait_until};
use crate::json_schema::assert_shape;
use client::{get, open, request};

/// Builders for every page and route; the web server on a free port with
/// two tokens.
pub const CONFIG: &str = r#"
[master]
worker_listen = ["127.0.0.1:0"]

[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "fast"
workers = ["local-1"]
  [[builder.step]]
  name = "say"
  shell = "echo 'hi <b>bold</b>' $BB_PROP_X"

[[builder]]
name = "bad"
workers = ["local-1"]
  [[builder.step]]
  name = "fail"
  shell = "echo oops; exit 3"

[[builder]]
name = "ticks"
workers = ["local-1"]
  [[builder.step]]
  name = "count"
  shell = "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.3; done"

[[builder]]
name = "gated"
workers = ["local-1"]
  [[builder.step]]
  name = "count"
  shell = "echo tick 1; while [ ! -e \"$BB_PROP_GATE\" ]; do sleep 0.05; done; for i in 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.3; done"

[[lock]]
name = "slots"
max = 4

[[builder]]
name = "slow"
workers = ["local-1"]
locks = [{ name = "slots", access = "counting" }]
  [[builder.step]]
  name = "nap"
  command = ["sleep", "30"]

[[builder]]
name = "publish"
workers = ["local-1"]
  [[builder.step]]
  name = "make"
  shell = "echo artifact > a.txt"
  [[builder.step]]
  name = "upload"
  upload = { from = "a.txt" }

[[scheduler]]
name = "on-built"
kind = "branch"
builders = ["fast"]
branches = ["built"]
tree_stable = "0s"

[http]
listen = "127.0.0.1:0"

[[http.token]]
name = "ci"
token_file = "ci.token"
may = ["force"]

[[http.token]]
name = "ops"
token_file = "ops.token"
may = ["force", "stop", "cancel", "rebuild"]

[[http.hook]]
name = "github"
kind = "github"
secret_file = "hook.secret"

[[http.hook]]
name = "changes"
kind = "json"
secret_file = "hook.secret"

[[http.hook]]
name = "gitea"
kind = "gitea"
secret_file = "hook.secret"
"#;

/// The tokens of [`CONFIG`].
pub const CI_TOKEN: &str = "ci-token-0123456789abcdef";
pub const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
/// The webhooks' HMAC secret.
pub const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";

/// A master on [`CONFIG`] and the address its web server took.
pub fn start() -> (Master, SocketAddr) {
    let m = Master::start_with_files(
        CONFIG,
        &[
            ("ci.token", CI_TOKEN),
            ("ops.token", OPS_TOKEN),
            ("hook.secret", HOOK_SECRET),
        ],
    );
    let addr = web_addr(&m);
    (m, addr)
}

/// The address in the master's "web pages and HTTP API on" line (of
/// its latest start).
pub fn web_addr(m: &Master) -> SocketAddr {
    let mut found = None;
    wait_until(
        "the web server's address in the log",
        Duration::from_secs(10),
        || {
            let log = m.stderr();
            let latest = log.rsplit("--- (restarted)\n").next().unwrap_or("");
            found = latest.lines().find_map(|l| {
                let rest = l.split("HTTP API on http://").nth(1)?;
                rest.trim_end_matches('/').parse().ok()
            });
            found.is_some()
        },
    );
    found.unwrap()
}

/// Run `builder` to its end with bbctl; its build id.
pub fn run_build(m: &Master, args: &[&str], want: i32) -> u64 {
    let mut all = vec!["--json", "force-build"];
    all.extend_from_slice(args);
    all.push("--wait");
    let out = m.bbctl_code(&all, want);
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_string)
        .unwrap_or_default();
    let v: Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    v["build_id"].as_u64().expect("a build id")
}

/// The API serves what `bbctl --json` prints, in the shapes of
/// docs/json.md; unknown ids are 404s, never 500s.
#[test]
fn the_api_serves_what_bbctl_json_prints() {
    let (m, addr) = start();
    let fast = run_build(
        &m,
        &["fast", "-p", "X=1", "-r", "<script>alert(1)</script>"],
        0,
    );
    let bad = run_build(&m, &["bad"], 1);
    let published = run_build(&m, &["publish"], 0);
    m.force_build("slow");
    m.force_build("slow");
    m.force_build("slow");
    wait_until("two running builds", Duration::from_secs(10), || {
        get(addr, "/api/v1/status").json()["running"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });

    let status = get(addr, "/api/v1/status").json();
    assert_shape(&status, "status");
    let builds = get(addr, "/api/v1/builds?limit=50");
    assert_eq!(builds.status, 200);
    assert_eq!(builds.header("content-type"), Some("application/json"));
    assert_shape(&builds.json(), "builds");
    assert_eq!(builds.json(), m.bbctl_json(&["builds", "-n", "50"]));
    // limit and offset make windows of the same list.
    let all = builds.json();
    let window = get(addr, "/api/v1/builds?limit=2&offset=1").json();
    assert_eq!(window, json!([all[1], all[2]]));
    let of_bad = get(addr, "/api/v1/builds?builder=bad").json();
    assert_eq!(of_bad.as_array().map(Vec::len), Some(1), "{of_bad}");
    assert_eq!(of_bad[0]["id"], bad);

    for id in [fast, bad, published] {
        let detail = get(addr, &format!("/api/v1/builds/{id}")).json();
        assert_shape(&detail, "build");
        assert_eq!(detail, m.bbctl_json(&["build", &id.to_string()]));
        let steps = get(addr, &format!("/api/v1/builds/{id}/steps")).json();
        let mut want = detail["steps"].clone();
        for s in want.as_array_mut().unwrap() {
            s["schema"] = json!(1);
        }
        assert_eq!(steps, want);
    }
    let artifacts = get(addr, &format!("/api/v1/builds/{published}/artifacts")).json();
    assert_shape(&artifacts, "artifacts");
    assert_eq!(
        artifacts,
        m.bbctl_json(&["artifacts", &published.to_string()])
    );
    let file = get(addr, &format!("/api/v1/builds/{published}/artifacts/a.txt"));
    assert_eq!((file.status, file.text().as_str()), (200, "artifact\n"));
    assert!(
        file.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );

    let workers = get(addr, "/api/v1/workers").json();
    assert_shape(&workers, "workers");
    let queue = get(addr, "/api/v1/queue").json();
    assert_shape(&queue, "queue");
    assert_eq!(queue.as_array().map(Vec::len), Some(1), "{queue}");
    let builders = get(addr, "/api/v1/builders").json();
    assert_eq!(builders, {
        let mut b = status["builders"].clone();
        for o in b.as_array_mut().unwrap() {
            o["schema"] = json!(1);
        }
        b
    });
    assert_eq!(get(addr, "/api/v1/builders/fast").json()["name"], "fast");
    let request = get(addr, "/api/v1/requests/1").json();
    assert_eq!(request["builder"], "fast");

    // Raw logs from a byte offset.
    let log = get(addr, &format!("/api/v1/builds/{fast}/steps/0/log"));
    assert_eq!(log.text(), "hi <b>bold</b> 1\n");
    assert_eq!(
        log.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let tail = get(addr, &format!("/api/v1/builds/{fast}/steps/0/log?offset=3"));
    assert_eq!(tail.text(), "<b>bold</b> 1\n");
    assert_eq!(tail.header("x-log-offset"), Some("3"));

    // Unknown ids, names and paths: 404 with a JSON error, never 500.
    for path in [
        "/api/v1/builds/999".to_string(),
        "/api/v1/builds/abc".to_string(),
        "/api/v1/builds/999/steps/0/log".to_string(),
        format!("/api/v1/builds/{fast}/steps/7/log"),
        "/api/v1/builders/nope".to_string(),
        "/api/v1/requests/999".to_string(),
        "/api/v1/nothing".to_string(),
        format!("/api/v1/builds/{published}/artifacts/..%2F..%2Fmaster.db"),
        format!("/api/v1/builds/{published}/artifacts/../../master.db"),
        format!("/api/v1/builds/{published}/artifacts/b.txt"),
    ] {
        let a = get(addr, &path);
        assert_eq!(a.status, 404, "{path}: {}", a.text());
        if path.starts_with("/api/") && a.status == 404 && !a.body.is_empty() {
            assert_eq!(a.json()["schema"], 1, "{path}");
        }
    }
    assert_eq!(get(addr, "/builds/999").status, 404);
    assert_eq!(get(addr, "/builders/nope").status, 404);
    assert_eq!(get(addr, "/badge/nope.svg").status, 404);
    assert_eq!(
        get(addr, "/api/v1/builds?limit=9999&offset=9999").status,
        400
    );

    // Pages: escaped build output and reasons, a strict CSP.
    for path in [
        "/",
        "/builders/fast",
        "/workers",
        "/queue",
        &format!("/builds/{fast}"),
    ] {
        let page = get(addr, path);
        assert_eq!(page.status, 200, "{path}");
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'nonce-"), "{csp}");
        assert!(
            !page.text().contains("<b>bold</b>"),
            "{path}: unescaped output"
        );
        assert!(
            !page.text().contains("<script>alert"),
            "{path}: unescaped reason"
        );
    }
    let page = get(addr, &format!("/builds/{fast}")).text();
    assert!(page.contains("hi &lt;b&gt;bold&lt;/b&gt; 1"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    let badge = get(addr, "/badge/fast.svg");
    assert_eq!(badge.header("content-type"), Some("image/svg+xml"));
    assert!(badge.text().contains("success"), "{}", badge.text());
    assert!(get(addr, "/badge/bad.svg").text().contains("failure"));
}

/// Writes need a token whose `may` lists them: none is 401, a token
/// without the right 403, the right one does it as the token's name.
#[test]
fn writes_need_a_token_that_may() {
    let (m, addr) = start();
    let bearer = |t: &str| format!("Bearer {t}");
    let force = |headers: &[(&str, &str)], body: &str| {
        request(
            addr,
            "POST",
            "/api/v1/builders/fast/force",
            headers,
            body.as_bytes(),
        )
    };
    let a = force(&[], "");
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.header("www-authenticate").is_some());
    let a = force(&[("authorization", &bearer("wrong-token-0123456789"))], "");
    assert_eq!(a.status, 401, "{}", a.text());
    let a = force(&[("authorization", &bearer(CI_TOKEN))], "{\"reason\": ");
    assert_eq!(a.status, 400, "{}", a.text());
    let a = force(
        &[("authorization", &bearer(CI_TOKEN))],
        r#"{"reason": "nightly", "properties": {"X": "7"}}"#,
    );
    assert_eq!(a.status, 201, "{}", a.text());
    assert_shape(&a.json(), "force-build");
    let request_id = a.json()["request_id"].as_u64().unwrap();
    let out = m.bbctl_code(&["--json", "wait", &request_id.to_string()], 0);
    let outcome: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    let build = outcome["build_id"].as_u64().expect("a build id");
    let detail = m.bbctl_json(&["build", &build.to_string()]);
    assert_eq!(detail["request_reason"], "nightly (http token ci)");
    assert_eq!(detail["properties"]["X"], "7");

    // Unknown builder: 404 with bbctl's words.
    let a = request(
        addr,
        "POST",
        "/api/v1/builders/nope/force",
        &[("authorization", &bearer(CI_TOKEN))],
        b"",
    );
    assert_eq!(a.status, 404, "{}", a.text());

    // Stop: `ci` may not, `ops` may.
    m.force_build("slow");
    let running = wait_running(addr);
    let stop = |t: &str| {
        request(
            addr,
            "POST",
            &format!("/api/v1/builds/{running}/stop"),
            &[("authorization", &bearer(t))],
            b"",
        )
    };
    let a = stop(CI_TOKEN);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("may not stop"), "{}", a.text());
    let a = stop(OPS_TOKEN);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_shape(&a.json(), "done");

    // Cancel a queued request.
    m.force_build("slow");
    wait_running(addr);
    let queued = m.force_build("slow");
    let a = request(
        addr,
        "POST",
        &format!("/api/v1/requests/{queued}/cancel"),
        &[("authorization", &bearer(OPS_TOKEN))],
        b"",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_shape(&a.json(), "done");

    // The page's form: the token in the body; refused from another site.
    let form = format!("token={OPS_TOKEN}&reason=from+the+page");
    let ok = request(
        addr,
        "POST",
        "/builders/fast/force",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert_eq!(ok.header("location"), Some("/builders/fast"));
    let cross = request(
        addr,
        "POST",
        "/builders/fast/force",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("sec-fetch-site", "cross-site"),
        ],
        form.as_bytes(),
    );
    assert_eq!(cross.status, 403, "{}", cross.text());
    let evil = request(
        addr,
        "POST",
        "/builders/fast/force",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        form.as_bytes(),
    );
    assert_eq!(evil.status, 403, "{}", evil.text());
    // A body past the limit: 413, and the master goes on.
    let big = vec![b' '; 128 << 10];
    let a = request(
        addr,
        "POST",
        "/api/v1/builders/fast/force",
        &[("authorization", &bearer(CI_TOKEN))],
        &big,
    );
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(get(addr, "/api/v1/status").status, 200);
}

/// The first running build's id (waits for one).
pub fn wait_running(addr: SocketAddr) -> u64 {
    let mut id = 0;
    wait_until("a running build", Duration::from_secs(10), || {
        let s = get(addr, "/api/v1/status").json();
        match s["running"][0]["build"].as_u64() {
            Some(b) => {
                id = b;
                true
            }
            None => false,
        }
    });
    id
}

/// Queue the `gated` builder and wait until its step printed its first
/// line and waits: the build's id, and the file whose making lets the
/// step go on (it then prints 9 more lines, 0.3 s apart).
pub fn start_gated(m: &Master, addr: SocketAddr) -> (u64, std::path::PathBuf) {
    let gate = m.path().join("gate");
    m.bbctl_ok(&[
        "force-build",
        "gated",
        "-p",
        &format!("GATE={}", gate.display()),
    ]);
    let build = wait_running(addr);
    wait_until("the first line", Duration::from_secs(10), || {
        get(addr, &format!("/api/v1/builds/{build}/steps/0/log")).text() == "tick 1\n"
    });
    (build, gate)
}

/// One SSE event as read: its id and its JSON.
pub fn next_event(stream: &mut client::Stream) -> Option<(Option<String>, Value)> {
    let mut id = None;
    let mut data: Option<String> = None;
    loop {
        let line = stream.line()?;
        if line.is_empty() {
            if let Some(d) = data.take() {
                return Some((id, serde_json::from_str(&d).expect("event data is JSON")));
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_string());
        }
    }
}

/// Read events until one of `kind` for `build`.
pub fn events_until(stream: &mut client::Stream, kind: &str, build: u64) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    loop {
        let (id, event) = next_event(stream).expect("the stream ended early");
        let done = event["event"] == kind && event["build"] == build;
        got.push((id.expect("every event has an id"), event));
        if done {
            return got;
        }
    }
}

/// `/api/v1/events`: `bbctl events --json`'s events with ids; a client
/// that reconnects with `Last-Event-ID` gets every event after it once;
/// an open stream ends when the master stops.
#[test]
fn events_resume_with_last_event_id_and_end_at_shutdown() {
    let (mut m, addr) = start();
    let mut first = open(addr, "/api/v1/events", &[]);
    assert_eq!(first.status, 200);
    let header = |s: &client::Stream, k: &str| {
        s.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(&first, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(header(&first, "x-accel-buffering").as_deref(), Some("no"));
    let one = run_build(&m, &["fast"], 0);
    let seen = events_until(&mut first, "build_finished", one);
    for (_, e) in &seen {
        assert_shape(e, "events");
        assert_shape(e, &format!("events:{}", e["event"].as_str().unwrap()));
    }
    // The client goes away; more happens meanwhile.
    drop(first);
    let last_id = seen.last().unwrap().0.clone();
    let two = run_build(&m, &["fast"], 0);
    let three = run_build(&m, &["bad"], 1);
    let mut again = open(addr, "/api/v1/events", &[("last-event-id", &last_id)]);
    let mut resumed = events_until(&mut again, "build_finished", two);
    resumed.extend(events_until(&mut again, "build_finished", three));
    // Every id once, in order, right after the last one seen.
    let seq = |id: &str| id.rsplit('.').next().unwrap().parse::<u64>().unwrap();
    for (want, (id, _)) in (seq(&last_id) + 1..).zip(resumed.iter()) {
        assert_eq!(seq(id), want, "ids not consecutive: {resumed:?}");
    }
    let kinds: Vec<&str> = resumed
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "build_queued").count(),
        2,
        "{kinds:?}"
    );
    // An id of another run: a `lagged` event first, then live events.
    let mut stale = open(addr, "/api/v1/events", &[("last-event-id", "1.5")]);
    let (id, e) = next_event(&mut stale).unwrap();
    assert_eq!((id, e["event"].as_str()), (None, Some("lagged")));
    // Shutdown with streams open: they end promptly.
    let started = Instant::now();
    m.bbctl_ok(&["shutdown"]);
    while again.line().is_some() {}
    while stale.line().is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "streams took {:?} to end",
        started.elapsed()
    );
    m.wait_exit(Duration::from_secs(10));
}

/// `?follow=1`: the log as it grows, chunked, ending with the step; a
/// client that leaves mid-stream costs nothing.
#[test]
fn a_followed_log_grows_and_ends_with_its_step() {
    let (m, addr) = start();
    m.force_build("ticks");
    let build = wait_running(addr);
    // A client that leaves mid-stream.
    let mut gone = open(
        addr,
        &format!("/api/v1/builds/{build}/steps/0/log?follow=1"),
        &[],
    );
    assert_eq!(gone.line().as_deref(), Some("tick 1"));
    drop(gone);
    let mut follow = open(
        addr,
        &format!("/api/v1/builds/{build}/steps/0/log?follow=1&offset=7"),
        &[],
    );
    assert_eq!(follow.status, 200);
    let mut lines = Vec::new();
    while let Some(line) = follow.line() {
        lines.push(line);
    }
    let want: Vec<String> = (2..=10).map(|i| format!("tick {i}")).collect();
    assert_eq!(lines, want);
    let detail = get(addr, &format!("/api/v1/builds/{build}")).json();
    assert_eq!(detail["result"], "success", "{detail}");
}

/// `sha256=HEX` of `body` under `secret`, as GitHub signs.
pub fn hmac(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Webhooks: a signed push adds one change per commit; a bad or missing
/// signature is 401; a replayed delivery is ignored; bad JSON is 400.
#[test]
fn signed_webhooks_add_changes_once() {
    let (m, addr) = start();
    let push = br#"{"ref":"refs/heads/main","after":"c2","repository":{"clone_url":"https://git.example/r.git"},
        "commits":[{"id":"c1","message":"first","author":{"name":"Ann","email":"ann@example"},"added":["a.rs"]},
                   {"id":"c2","message":"second"}]}"#;
    let send = |path: &str, body: &[u8], headers: &[(&str, &str)]| {
        request(addr, "POST", path, headers, body)
    };
    let good = hmac(HOOK_SECRET, push);
    let github = |sig: &str, id: &str, event: &str| {
        send(
            "/hooks/github",
            push,
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", sig),
                ("x-github-delivery", id),
                ("x-github-event", event),
            ],
        )
    };
    let a = github(&hmac("wrong-secret-0123456789", push), "d0", "push");
    assert_eq!(a.status, 401, "{}", a.text());
    let a = send("/hooks/github", push, &[("x-github-event", "push")]);
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(get(addr, "/api/v1/changes").json(), json!([]));
    let a = github(&good, "d1", "ping");
    assert_eq!(a.status, 200, "{}", a.text());
    let mut sse = open(addr, "/api/v1/events", &[]);
    assert_eq!(sse.status, 200);
    let a = github(&good, "d1", "push");
    assert_eq!(a.status, 202, "{}", a.text());
    // The SSE stream says who sent each stored change.
    let mut added = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while added.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not two change_added events within 10 s: {added:?}"
        );
        let line = sse.line().expect("the stream ended early");
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let e: Value = serde_json::from_str(data).expect("event data is JSON");
        if e["event"] == "change_added" {
            assert_shape(&e, "events:change_added");
            added.push((e["revision"].clone(), e["sent_by"].clone()));
        }
    }
    assert_eq!(
        added,
        [
            (json!("c1"), json!("hook:github")),
            (json!("c2"), json!("hook:github"))
        ]
    );
    assert_eq!(
        a.json()["change_ids"].as_array().map(Vec::len),
        Some(2),
        "{}",
        a.text()
    );
    let changes = get(addr, "/api/v1/changes").json();
    let revisions: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revisions.len(), 2, "{changes}");
    assert_shape(&changes, "changes");
    assert_eq!(changes, m.bbctl_json(&["changes"]));
    assert!(
        revisions.contains(&"c1") && revisions.contains(&"c2"),
        "{changes}"
    );
    let c1 = changes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["revision"] == "c1")
        .unwrap();
    assert_eq!(c1["branch"], "main");
    assert_eq!(c1["repository"], "https://git.example/r.git");
    assert_eq!(c1["author"], "Ann <ann@example>");
    // The same delivery again: ignored.
    let a = github(&good, "d1", "push");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("seen before"), "{}", a.text());
    assert_eq!(
        get(addr, "/api/v1/changes").json().as_array().map(Vec::len),
        Some(2)
    );
    // Malformed JSON, well signed: 400, nothing added.
    let bad = b"{\"ref\": ";
    let a = send(
        "/hooks/github",
        bad,
        &[
            ("x-hub-signature-256", &hmac(HOOK_SECRET, bad)),
            ("x-github-delivery", "d2"),
            ("x-github-event", "push"),
        ],
    );
    assert_eq!(a.status, 400, "{}", a.text());
    // The generic hook: one change as JSON.
    let one = br#"{"repository":"r","branch":"dev","revision":"c9","files":["x"]}"#;
    let a = send(
        "/hooks/changes",
        one,
        &[
            ("x-bb-signature", &hmac(HOOK_SECRET, one)),
            ("x-bb-delivery", "g1"),
        ],
    );
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(
        get(addr, "/api/v1/changes").json().as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(send("/hooks/nope", one, &[]).status, 404);
}

/// `tls = true`: HTTPS with the worker listeners' certificate (here the
/// self-signed one, whose fingerprint `bbctl status` shows).
#[test]
fn tls_serves_https_with_the_listeners_certificate() {
    use std::io::{Read, Write};
    let config = CONFIG.replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntls = true\n",
    );
    let m = Master::start_with_files(
        &config,
        &[
            ("ci.token", CI_TOKEN),
            ("ops.token", OPS_TOKEN),
            ("hook.secret", HOOK_SECRET),
        ],
    );
    let mut found = None;
    wait_until("the https line in the log", Duration::from_secs(10), || {
        found = m.stderr().lines().find_map(|l| {
            let rest = l.split("HTTP API on https://").nth(1)?;
            rest.trim_end_matches('/').parse::<SocketAddr>().ok()
        });
        found.is_some()
    });
    let addr = found.unwrap();
    let status = m.bbctl_json(&["status"]);
    let pin = bbctl::net::parse_fingerprint(status["tls"]["fingerprint"].as_str().unwrap())
        .expect("a fingerprint");
    let tls = bbctl::worker::tls::client_config(&bbctl::worker::tls::TlsOptions {
        verify: bbctl::worker::tls::Verify::Fingerprint(pin),
        ..Default::default()
    })
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls, name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"builders\""), "{answer}");
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = std::panic::catch_unwind(|| get(addr, "/api/v1/status").status);
    assert_ne!(plain.ok(), Some(200));
}

/// `max_connections`: one more connection is answered 503 at once, and
/// the server serves again when one closes.
#[test]
fn connections_beyond_the_cap_get_503() {
    let config = CONFIG.replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nmax_connections = 2\n",
    );
    let m = Master::start_with_files(
        &config,
        &[
            ("ci.token", CI_TOKEN),
            ("ops.token", OPS_TOKEN),
            ("hook.secret", HOOK_SECRET),
        ],
    );
    let addr = web_addr(&m);
    // Two idle connections that the server holds (one it answered 503,
    // having served another first, is made again).
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            loop {
                use std::io::Read;
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut byte = [0u8; 1];
                match c.read(&mut byte) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break c,
                    _ => continue,
                }
            }
        })
        .collect();
    let mut status = 0;
    wait_until(
        "the third connection refused",
        Duration::from_secs(10),
        || {
            status = get(addr, "/api/v1/status").status;
            status == 503
        },
    );
    drop(idle);
    wait_until("served again", Duration::from_secs(10), || {
        get(addr, "/api/v1/status").status == 200
    });
}
