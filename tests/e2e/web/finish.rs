//! The rest of docs/http.md end to end: the `/changes` page, the pages'
//! event streams (`Accept: text/event-stream`), webhook replays across a
//! restart, and rebuild/cancel over HTTP and from the pages' forms.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{self, get, open, request};
use super::{CI_TOKEN, HOOK_SECRET, OPS_TOKEN, events_until, hmac, next_event, start, web_addr};
use crate::harness::{Master, describe, wait_until};

const SSE: (&str, &str) = ("accept", "text/event-stream");

/// Deliver `changes` through the generic hook in one signed delivery.
fn deliver(addr: SocketAddr, delivery: &str, changes: &Value) -> client::Answer {
    let body = json!({ "changes": changes }).to_string();
    request(
        addr,
        "POST",
        "/hooks/changes",
        &[
            ("x-bb-signature", &hmac(HOOK_SECRET, body.as_bytes())),
            ("x-bb-delivery", delivery),
        ],
        body.as_bytes(),
    )
}

/// The rows of the `/changes` table, as the text between `<tr>` tags.
fn rows(page: &str) -> Vec<&str> {
    page.split("<tr").skip(2).collect()
}

/// Wait until request `id` has a finished build; the build's id.
fn finished_build_of(addr: SocketAddr, request_id: u64) -> u64 {
    let mut build = 0;
    wait_until(
        &format!("request {request_id} to finish"),
        Duration::from_secs(20),
        || {
            let r = get(addr, &format!("/api/v1/requests/{request_id}")).json();
            match (r["state"].as_str(), r["build"].as_u64()) {
                (Some("finished"), Some(b)) => {
                    build = b;
                    true
                }
                _ => false,
            }
        },
    );
    build
}

/// `/changes`: newest first, with repository, branch, short revision,
/// author, the comments' first line and links to the builds each started;
/// 50 a page with links to older and newer ones; in the navigation.
#[test]
fn the_changes_page_lists_changes_with_their_builds() {
    let (m, addr) = start();
    let long_rev = "0123456789abcdef0123456789abcdef01234567";
    let a = deliver(
        addr,
        "c-1",
        &json!([{
            "repository": "https://git.example/app.git",
            "branch": "built",
            "revision": long_rev,
            "author": "Ann <ann@example>",
            "comments": "fix the <parser>\n\nlong explanation on line three",
            "files": ["src/a.rs"],
        }]),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    let built = a.json()["change_ids"][0].as_u64().unwrap();
    // The branch scheduler starts a build of `fast` for it.
    let mut build = 0;
    wait_until("a build for the change", Duration::from_secs(20), || {
        let c = get(addr, "/api/v1/changes").json();
        match c[0]["requests"][0]["builds"][0].as_u64() {
            Some(b) => {
                build = b;
                true
            }
            None => false,
        }
    });
    let b = m.bbctl_json(&["build", &build.to_string()]);
    assert_eq!(b["builder"], "fast", "{b}");
    // Its page shows the source stamp and links to the change.
    let page = get(addr, &format!("/builds/{build}")).text();
    assert!(page.contains("id=\"source\""), "{page}");
    assert!(page.contains("https://git.example/app.git"), "{page}");
    assert!(page.contains(&format!("<code>{long_rev}</code>")), "{page}");
    assert!(
        page.contains(&format!("href=\"/changes#change-{built}\"")),
        "{page}"
    );
    // 60 more changes on a branch nothing builds.
    let many: Vec<Value> = (0..60)
        .map(|i| json!({"repository": "r", "branch": "other", "revision": format!("rev{i:03}")}))
        .collect();
    assert_eq!(deliver(addr, "c-2", &json!(many)).status, 202);

    let first = get(addr, "/changes");
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        first.headers
    );
    let page = first.text();
    let r = rows(&page);
    assert_eq!(r.len(), 50, "{page}");
    // Newest first: the last of the 60 on top.
    assert!(r[0].contains("rev059"), "{}", r[0]);
    assert!(r[49].contains("rev010"), "{}", r[49]);
    assert!(
        page.contains("href=\"/changes?offset=50\">older</a>"),
        "{page}"
    );
    assert!(!page.contains(">newer</a>"), "{page}");

    let second = get(addr, "/changes?offset=50").text();
    let r = rows(&second);
    assert_eq!(r.len(), 11, "{second}");
    let mine = r.last().unwrap();
    assert!(mine.contains(&format!("<td>{built}</td>")), "{mine}");
    assert!(mine.contains("https://git.example/app.git"), "{mine}");
    assert!(mine.contains("<td>built</td>"), "{mine}");
    assert!(mine.contains(">0123456789ab</code>"), "{mine}");
    assert!(mine.contains("Ann &lt;ann@example&gt;"), "{mine}");
    assert!(mine.contains("fix the &lt;parser&gt;"), "{mine}");
    assert!(!mine.contains("line three"), "{mine}");
    assert!(
        mine.contains(&format!("href=\"/builds/{build}\"")),
        "{mine}"
    );
    assert!(
        second.contains("href=\"/changes?offset=0\">newer</a>"),
        "{second}"
    );
    assert!(!second.contains(">older</a>"), "{second}");
    // In the navigation of every page.
    assert!(get(addr, "/").text().contains("href=\"/changes\""));
    assert_eq!(get(addr, "/changes?offset=99999").status, 400);
}

/// The page URLs answer `Accept: text/event-stream` with the events of
/// what the page shows, numbered and resumable like `/api/v1/events`;
/// HTML otherwise; an unknown build or builder is 404.
#[test]
fn pages_stream_their_events_when_asked() {
    let (m, addr) = start();
    let mut all = open(addr, "/", &[SSE]);
    let mut fast = open(addr, "/builders/fast", &[SSE]);
    let mut queue = open(addr, "/queue", &[SSE]);
    for s in [&all, &fast, &queue] {
        assert_eq!(s.status, 200);
        let header = |k: &str| {
            s.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("text/event-stream"));
        assert_eq!(header("x-accel-buffering"), Some("no"));
    }
    let bad = super::run_build(&m, &["bad"], 1);
    let one = super::run_build(&m, &["fast"], 0);
    // `/`: every event, the bad build's too.
    let seen = events_until(&mut all, "build_finished", bad);
    assert!(seen.iter().any(|(_, e)| e["event"] == "step_started"));
    let seen = events_until(&mut all, "build_finished", one);
    let all_ids: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    // `/builders/fast`: only fast's, step events included (they name no
    // builder: the server knows the build's).
    let of_fast = events_until(&mut fast, "build_finished", one);
    let kinds: Vec<&str> = of_fast
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "build_queued",
            "build_started",
            "step_started",
            "step_finished",
            "build_finished"
        ],
        "{of_fast:?}"
    );
    for (id, _) in &of_fast {
        assert!(
            all_ids.contains(id),
            "{id} is not an id of the whole stream"
        );
    }
    // `/queue`: what changes the queue, no steps.
    let mut q = Vec::new();
    loop {
        let (_, e) = next_event(&mut queue).expect("the queue stream ended");
        let done = e["event"] == "build_started" && e["build"] == one;
        q.push(e);
        if done {
            break;
        }
    }
    assert!(
        q.iter()
            .all(|e| ["build_queued", "build_started"].contains(&e["event"].as_str().unwrap())),
        "{q:?}"
    );
    // `/builds/N` from the start of this run: that build's events, with
    // the ids of the whole stream, once each.
    let run = all_ids[0].split('.').next().unwrap();
    let mut build = open(
        addr,
        &format!("/builds/{one}"),
        &[SSE, ("last-event-id", &format!("{run}.0"))],
    );
    let of_build = events_until(&mut build, "build_finished", one);
    let kinds: Vec<&str> = of_build
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "build_started",
            "step_started",
            "step_finished",
            "build_finished"
        ],
        "{of_build:?}"
    );
    assert!(of_build.iter().all(|(_, e)| e["build"] == one));
    // Resumed after its second event: the last two, nothing else.
    let mut resumed = open(
        addr,
        &format!("/builds/{one}"),
        &[SSE, ("last-event-id", &of_build[1].0)],
    );
    let again = events_until(&mut resumed, "build_finished", one);
    assert_eq!(
        again.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        of_build[2..]
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    );
    // Unknown ones: 404; without the header: the page.
    for path in ["/builds/999999", "/builders/nope"] {
        let a = request(addr, "GET", path, &[SSE], b"");
        assert_eq!(a.status, 404, "{path}: {}", a.text());
    }
    let page = request(
        addr,
        "GET",
        &format!("/builds/{one}"),
        &[("accept", "text/html")],
        b"",
    );
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
}

/// A delivery seen before a restart of the master is still a replay
/// after it, known by its id or by its body (both are stored with the
/// changes it added): the id is not signed, so the same signed body
/// under a new id is a replay too.
#[test]
fn a_replayed_delivery_is_ignored_after_a_restart() {
    let (mut m, addr) = start();
    let change = json!([{"repository": "r", "branch": "other", "revision": "r1"}]);
    let a = deliver(addr, "once-1", &change);
    assert_eq!(a.status, 202, "{}", a.text());
    let stored = get(addr, "/api/v1/changes").json();
    assert_eq!(
        stored[0]["properties"]["hook_delivery"], "once-1",
        "{stored}"
    );
    assert_eq!(stored[0]["properties"]["hook"], "changes", "{stored}");
    m.bbctl_ok(&["shutdown"]);
    m.wait_exit(Duration::from_secs(10));
    m.spawn();
    let addr = web_addr(&m);
    let a = deliver(addr, "once-1", &change);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("seen before"), "{}", a.text());
    let again = deliver(addr, "captured-and-sent-again", &change);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains("seen before"), "{}", again.text());
    assert_eq!(
        get(addr, "/api/v1/changes").json().as_array().map(Vec::len),
        Some(1)
    );
    // A new delivery is taken; an id too long to store is refused.
    let other = json!([{"repository": "r", "branch": "other", "revision": "r2"}]);
    assert_eq!(deliver(addr, "once-2", &other).status, 202);
    let third = json!([{"repository": "r", "branch": "other", "revision": "r3"}]);
    assert_eq!(deliver(addr, &"x".repeat(201), &third).status, 400);
    // Paged like builds: newest first, `offset` skips.
    let older = get(addr, "/api/v1/changes?limit=1&offset=1").json();
    assert_eq!(older.as_array().map(Vec::len), Some(1), "{older}");
    assert_eq!(older[0]["properties"]["hook_delivery"], "once-1", "{older}");
    assert_eq!(get(addr, "/api/v1/changes?offset=10000").status, 400);
}

/// `POST /api/v1/builds/N/rebuild`: a token whose `may` lists `rebuild`
/// (`force` is not enough) queues the build's builder again with its
/// properties; the build page's form does the same; the queue page's
/// form cancels; forms from another site are refused.
#[test]
fn rebuild_and_cancel_over_http_need_a_token_that_may() {
    let (m, addr) = start();
    let first = super::run_build(&m, &["fast", "-p", "X=5"], 0);
    let rebuild = |token: Option<&str>, build: u64, body: &str| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        request(
            addr,
            "POST",
            &format!("/api/v1/builds/{build}/rebuild"),
            &headers,
            body.as_bytes(),
        )
    };
    let a = rebuild(None, first, "");
    assert_eq!(a.status, 401, "{}", a.text());
    let a = rebuild(Some(CI_TOKEN), first, "");
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("may not rebuild"), "{}", a.text());
    let a = rebuild(Some(OPS_TOKEN), 999_999, "");
    assert_eq!(a.status, 404, "{}", a.text());
    let a = rebuild(Some(OPS_TOKEN), first, "{\"nope\": 1}");
    assert_eq!(a.status, 400, "{}", a.text());
    let a = rebuild(Some(OPS_TOKEN), first, "");
    assert_eq!(a.status, 201, "{}", a.text());
    crate::json_schema::assert_shape(&a.json(), "force-build");
    assert_eq!(a.json()["builder"], "fast");
    let again = finished_build_of(addr, a.json()["request_id"].as_u64().unwrap());
    let detail = m.bbctl_json(&["build", &again.to_string()]);
    assert_eq!(detail["properties"]["X"], "5", "{detail}");
    assert_eq!(
        detail["request_reason"],
        format!("rebuild of build {first} (http token ops)"),
        "{detail}"
    );

    // The build page's form.
    let page = get(addr, &format!("/builds/{first}")).text();
    assert!(
        page.contains(&format!("action=\"/builds/{first}/rebuild\"")),
        "{page}"
    );
    let form = format!("token={OPS_TOKEN}&reason=from+the+page");
    let post = |path: &str, extra: &[(&str, &str)], body: &str| {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        headers.extend_from_slice(extra);
        request(addr, "POST", path, &headers, body.as_bytes())
    };
    let a = post(&format!("/builds/{first}/rebuild"), &[], &form);
    assert_eq!(a.status, 303, "{}", a.text());
    assert_eq!(a.header("location"), Some("/builders/fast"));
    let a = post(
        &format!("/builds/{first}/rebuild"),
        &[("sec-fetch-site", "cross-site")],
        &form,
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let ci_form = format!("token={CI_TOKEN}");
    let a = post(&format!("/builds/{first}/rebuild"), &[], &ci_form);
    assert_eq!(a.status, 403, "{}", a.text());

    // Cancel a queued request from the queue page.
    m.force_build("slow");
    m.force_build("slow");
    super::wait_running(addr);
    let queued = m.force_build("slow");
    // The builder's page shows the lock its builds take, and who holds it.
    let mut running = 0;
    wait_until("a running slow build", Duration::from_secs(10), || {
        let b = get(addr, "/api/v1/builders/slow").json();
        running = b["running_builds"][0].as_u64().unwrap_or(0);
        running != 0
    });
    let page = get(addr, "/builders/slow").text();
    assert!(page.contains("id=\"locks\""), "{page}");
    assert!(page.contains("<td>slots</td>"), "{page}");
    assert!(
        page.contains(&format!("href=\"/builds/{running}\">#{running}</a> slow")),
        "{page}"
    );
    assert!(!get(addr, "/builders/fast").text().contains("id=\"locks\""));
    let page = get(addr, "/queue").text();
    assert!(page.contains("action=\"/queue/cancel\""), "{page}");
    let a = post(
        "/queue/cancel",
        &[("origin", "http://evil.example")],
        &format!("token={OPS_TOKEN}&request=r{queued}"),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let a = post(
        "/queue/cancel",
        &[],
        &format!("token={CI_TOKEN}&request=r{queued}"),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let a = post(
        "/queue/cancel",
        &[],
        &format!("token={OPS_TOKEN}&request=r{queued}"),
    );
    assert_eq!(a.status, 303, "{}", a.text());
    assert_eq!(a.header("location"), Some("/queue"));
    let r = get(addr, &format!("/api/v1/requests/{queued}")).json();
    assert_eq!(r["state"], "cancelled", "{r}: {}", describe_queue(&m));
}

fn describe_queue(m: &Master) -> String {
    describe(&m.bbctl(&["queue"]))
}

/// Gitea's own headers: `X-Gitea-Signature` (bare hex), `X-Gitea-Event`,
/// `X-Gitea-Delivery`; a push adds one change per commit, a bad signature
/// is 401, the same delivery again is ignored.
#[test]
fn a_gitea_push_adds_its_commits_once() {
    let (_m, addr) = start();
    let push = br#"{"ref":"refs/heads/dev","after":"g2","repository":{"clone_url":"https://gitea.example/o/r.git"},
        "commits":[{"id":"g1","message":"one","author":{"name":"Bo","email":"bo@example"},"modified":["m.rs"]},
                   {"id":"g2","message":"two"}]}"#;
    let send = |sig: &str, id: &str| {
        request(
            addr,
            "POST",
            "/hooks/gitea",
            &[
                ("content-type", "application/json"),
                ("x-gitea-signature", sig),
                ("x-gitea-delivery", id),
                ("x-gitea-event", "push"),
            ],
            push,
        )
    };
    let good = hmac(HOOK_SECRET, push);
    let bare = good.trim_start_matches("sha256=");
    let bad = hmac("wrong-secret-0123456789", push);
    let a = send(bad.trim_start_matches("sha256="), "e0");
    assert_eq!(a.status, 401, "{}", a.text());
    let a = send(bare, "e1");
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["change_ids"].as_array().map(Vec::len), Some(2));
    let a = send(bare, "e1");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("seen before"), "{}", a.text());
    let changes = get(addr, "/api/v1/changes").json();
    let revisions: Vec<&Value> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["revision"])
        .collect();
    assert_eq!(revisions, [&json!("g2"), &json!("g1")], "{changes}");
    assert_eq!(changes[0]["branch"], "dev", "{changes}");
    assert_eq!(changes[0]["repository"], "https://gitea.example/o/r.git");
    assert_eq!(changes[0]["properties"]["hook_delivery"], "e1");
}

/// Behind a reverse proxy: links in pages start with `base_url`'s path; a
/// page's form posted from `base_url`'s origin is this server's, whatever
/// `Host` the proxy passes on; `X-Forwarded-Host` is believed only with
/// `trust_proxy = true`.
#[test]
fn behind_a_proxy_base_url_and_trust_proxy_decide_what_is_this_server() {
    let with = |extra: &str| {
        let config = super::CONFIG.replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!("listen = \"127.0.0.1:0\"\n{extra}"),
        );
        let m = Master::start_with_files(
            &config,
            &[
                ("ci.token", CI_TOKEN),
                ("ops.token", super::OPS_TOKEN),
                ("hook.secret", HOOK_SECRET),
            ],
        );
        let addr = web_addr(&m);
        (m, addr)
    };
    let force = |addr: SocketAddr, headers: &[(&str, &str)]| {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        let form = format!("token={CI_TOKEN}&reason=proxied");
        request(addr, "POST", "/builders/fast/force", &all, form.as_bytes()).status
    };
    let proxied = [
        ("origin", "https://ci.example.org"),
        ("x-forwarded-host", "ci.example.org"),
    ];

    let (_m, addr) = with("base_url = \"https://ci.example.org/bb/\"\n");
    let page = get(addr, "/").text();
    assert!(page.contains("href=\"/bb/builders/fast\""), "{page}");
    assert_eq!(force(addr, &[("origin", "https://ci.example.org")]), 303);
    assert_eq!(force(addr, &[("origin", "https://other.example.org")]), 403);

    let (_m, addr) = with("");
    assert_eq!(force(addr, &proxied), 403, "X-Forwarded-Host believed");
    let (_m, addr) = with("trust_proxy = true\n");
    assert_eq!(force(addr, &proxied), 303);
    assert_eq!(
        force(
            addr,
            &[
                ("origin", "https://ci.example.org"),
                ("x-forwarded-host", "evil.example")
            ]
        ),
        403
    );
}
