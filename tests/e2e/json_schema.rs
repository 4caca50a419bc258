//! `--json` output against its documented shape (`docs/json.md`).
//!
//! The shapes are written once, as data, in [`shapes`]: per command, the
//! keys every object must have and their JSON types, nested for arrays and
//! objects. Extra keys are allowed (fields are only ever added within a
//! schema version). Every command runs against a real master with builds
//! done, so lists are not empty; and every key of the table must be named
//! in the command's section of `docs/json.md`, so the doc cannot drift from
//! the test.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Master, describe, text, wait_until};

/// A config with a fast builder, a failing one and a slow one.
const CONFIG: &str = r#"
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
  shell = "echo hi $BB_PROP_X"

[[builder]]
name = "bad"
workers = ["local-1"]
  [[builder.step]]
  name = "fail"
  shell = "echo oops; exit 3"

[[lock]]
name = "nap"
max = 2

[[builder]]
name = "slow"
workers = ["local-1"]
locks = [{ name = "nap", access = "counting" }]
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
name = "on-main"
kind = "branch"
builders = ["fast"]
branches = ["main"]
"#;

/// The documented shapes, by the id of their section in `docs/json.md`
/// (a `## ` heading containing the id in backticks).
///
/// A shape is a JSON value: an object lists required keys with their
/// shapes (`"*"` stands for every key of a map); an array holds the shape
/// of every element; a string names the type: `string`, `int`, `bool`,
/// `null`, alternatives joined with `|`. `schema` is required on the
/// top-level objects of the ordinary commands, so it is in their shapes.
fn shapes() -> Vec<(&'static str, Value)> {
    let stamp = |mut v: Value| {
        v["schema"] = json!("int");
        v
    };
    let build_summary = json!({
        "id": "int", "request_id": "int", "builder": "string", "worker": "string",
        "generation": "int", "config_hash": "string", "result": "string|null",
        "reason": "string|null", "started_at_ms": "int", "finished_at_ms": "int|null",
        "source": "object|null",
    });
    let mut build_detail = build_summary.clone();
    build_detail["request_reason"] = json!("string|null");
    build_detail["properties"] = json!({ "*": "string" });
    build_detail["steps"] = json!([{
        "index": "int", "name": "string", "started_at_ms": "int",
        "finished_at_ms": "int|null", "result": "string|null", "reason": "string|null",
        "log_bytes": "int",
    }]);
    vec![
        (
            "status",
            stamp(json!({
                "master_pid": "int", "started_at_ms": "int", "now_ms": "int",
                "generation": "int", "config_hash": "string", "config_origin": "string",
                "draining": "bool", "drain_mode": "string|null",
                "builders_total": "int", "queued_total": "int",
                "builders": [{
                    "name": "string", "state": "string", "queued": "int", "running": "int",
                    "running_builds": ["int"], "workers": ["string"],
                }],
                "workers": [{
                    "name": "string", "connected": "bool", "local": "bool", "draining": "bool",
                    "max_builds": "int", "builders": ["string"], "running_builds": ["int"],
                    "last_error": "string|null",
                }],
                "running": [{
                    "build": "int", "request": "int", "builder": "string", "worker": "string",
                    "step": "int", "step_name": "string", "steps": "int",
                    "started_at_ms": "int", "step_started_at_ms": "int", "generation": "int",
                    "waiting_for_worker": "bool", "waiting_for_lock": "string|null",
                }],
                "lock_waits": [],
                "disk": {
                    "logs_bytes": "int", "artifacts_bytes": "int", "db_bytes": "int",
                    "measured_at_ms": "int",
                },
                "tls": { "fingerprint": "string|null", "listen": ["string"], "plaintext": "bool" },
                "leadership": "object|null",
            })),
        ),
        (
            "force-build",
            stamp(json!({ "request_id": "int", "builder": "string" })),
        ),
        (
            "outcome",
            stamp(json!({
                "request_id": "int|null", "build_id": "int|null",
                "result": "string|null", "reason": "string|null",
            })),
        ),
        ("builds", json!([stamp(build_summary)])),
        (
            "artifacts",
            json!([stamp(json!({
                "name": "string", "size": "int", "sha256": "string", "created_at_ms": "int",
            }))]),
        ),
        ("build", stamp(build_detail)),
        (
            "stream:build_started",
            json!({ "type": "string", "build": "int", "builder": "string", "worker": "string" }),
        ),
        (
            "stream:step_started",
            json!({ "type": "string", "step": "int", "name": "string" }),
        ),
        (
            "stream:output",
            json!({ "type": "string", "step": "int", "text": "string" }),
        ),
        (
            "stream:step_finished",
            json!({ "type": "string", "step": "int", "result": "string", "reason": "string|null" }),
        ),
        (
            "stream:build_finished",
            json!({ "type": "string", "build": "int", "result": "string", "reason": "string|null" }),
        ),
        ("done", stamp(json!({ "ok": "bool", "message": "string" }))),
        ("sendchange", stamp(json!({ "change_id": "int" }))),
        (
            "changes",
            json!([stamp(json!({
                "id": "int", "repository": "string", "branch": "string", "revision": "string",
                "files": ["string"], "author": "string|null", "comments": "string|null",
                "when_ms": "int|null", "properties": { "*": "string" }, "category": "string|null",
                "at_ms": "int",
                "requests": [{ "request_id": "int", "builder": "string", "builds": ["int"] }],
            }))]),
        ),
        (
            "build:source",
            json!({
                "repository": "string", "branch": "string", "revision": "string|null",
                "changes": ["int"],
            }),
        ),
        (
            "queue",
            json!([stamp(json!({
                "request": "int", "builder": "string", "position": "int", "priority": "int",
                "submitted_at_ms": "int", "reason": "string|null", "properties": { "*": "string" },
                "retries": "int",
            }))]),
        ),
        (
            "workers",
            json!([stamp(json!({
                "name": "string", "connected": "bool", "local": "bool", "draining": "bool",
                "max_builds": "int", "builders": ["string"], "running_builds": ["int"],
                "last_error": "string|null", "connected_since_ms": "int|null", "last_seen_ms": "int|null",
                "software": "string|null", "host": "string|null", "pid": "int|null",
                "transport": "string|null", "peer": "string|null", "tls_version": "string|null",
                "ping_rtt_ms": "float|null", "secret_file": "string|null",
            }))]),
        ),
        (
            "locks",
            json!([stamp(json!({
                "name": "string", "scope": "string", "worker": "string|null", "max": "int",
                "configured": "bool",
                "holders": [{
                    "build": "int", "builder": "string", "step": "string|null",
                    "access": "string", "weight": "int", "since_ms": "int",
                }],
                "waiters": [{
                    "lock": "string", "worker": "string|null", "request": "int|null",
                    "build": "int|null", "builder": "string", "held_by": ["int"],
                    "since_ms": "int", "waited_ms": "int", "waiting": "string",
                }],
            }))]),
        ),
        (
            "status:leadership",
            json!({
                "name": "string", "role": "string",
                "leader": {
                    "epoch": "int", "name": "string|null", "address": "string|null",
                    "lease_expired": "bool",
                },
            }),
        ),
        (
            "masters",
            stamp(json!({
                "store": "string", "answered_by": "string", "leader": "object|null",
                "masters": [{
                    "name": "string", "address": "string|null", "role": "string",
                    "epoch": "int|null", "pid": "int|null", "started_at_ms": "int|null",
                    "heartbeat_at_ms": "int|null", "heartbeat_age_ms": "int|null",
                }],
            })),
        ),
        (
            "masters:leader",
            json!({
                "epoch": "int", "name": "string|null", "address": "string|null",
                "lease_expired": "bool",
            }),
        ),
        (
            "ping",
            stamp(json!({ "worker": "string", "round_trip_us": "int", "round_trip_ms": "float" })),
        ),
        (
            "drain",
            stamp(json!({
                "ok": "bool", "message": "string", "worker": "string|null", "draining": "bool",
                "drained": "bool",
            })),
        ),
        (
            "reload",
            stamp(json!({
                "dry_run": "bool", "generation_before": "int", "generation_after": "int",
                "config_hash": "string", "builders_added": ["string"],
                "builders_changed": ["string"], "builders_removed": ["string"],
                "builders_renamed": [["string"]], "workers_added": ["string"],
                "workers_changed": ["string"], "workers_removed": ["string"],
                "workers_draining": ["string"], "requests_moved": ["int"],
                "requests_cancelled": ["int"], "builds_on_old_generations": ["int"],
                "needs_restart": ["string"], "warnings": ["string"],
                "schedulers_added": ["string"], "schedulers_changed": ["string"],
                "schedulers_removed": ["string"], "schedulers_renamed": [["string"]],
                "changes_dropped": [{ "scheduler": "string", "changes": ["int"] }],
                "lock_waiters_released": ["string"],
            })),
        ),
        (
            "prune",
            stamp(json!({
                "dry_run": "bool", "builds_deleted": ["int"], "logs_deleted": ["int"],
                "bytes_freed": "int",
            })),
        ),
        (
            "check-config",
            stamp(json!({
                "valid": "bool", "file": "string", "workers": "int", "builders": "int",
                "config_hash": "string", "warnings": ["string"], "problems": [],
            })),
        ),
        (
            "check-config:invalid",
            stamp(json!({
                "valid": "bool", "file": "string",
                "problems": [{ "file": "string", "line": "int|null", "column": "int|null", "message": "string" }],
            })),
        ),
        (
            "events",
            stamp(json!({ "at_ms": "int", "generation": "int", "event": "string" })),
        ),
    ]
}

fn shape(id: &str) -> Value {
    // The shape of each event kind is read from the doc's own table.
    if let Some(kind) = id.strip_prefix("events:") {
        let documented = crate::docs_agree::documented_events();
        let shape = documented
            .get(kind)
            .unwrap_or_else(|| panic!("docs/json.md documents no event `{kind}`"));
        return Value::Object(shape.clone());
    }
    shapes()
        .into_iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("no shape {id}"))
        .1
}

/// Check `value` against `shape`; problems are pushed as `path: what`.
pub(crate) fn check(value: &Value, shape: &Value, path: &str, problems: &mut Vec<String>) {
    match shape {
        Value::String(types) => {
            let ok = types.split('|').any(|t| match t {
                "string" => value.is_string(),
                "int" => value.is_u64() || value.is_i64(),
                "object" => value.is_object(),
                "float" => value.is_number(),
                "bool" => value.is_boolean(),
                "null" => value.is_null(),
                other => panic!("unknown type {other} in a shape"),
            });
            if !ok {
                problems.push(format!("{path}: expected {types}, got {value}"));
            }
        }
        Value::Array(elements) => match value.as_array() {
            None => problems.push(format!("{path}: expected an array, got {value}")),
            Some(items) => {
                if let Some(element) = elements.first() {
                    for (i, item) in items.iter().enumerate() {
                        check(item, element, &format!("{path}[{i}]"), problems);
                    }
                }
            }
        },
        Value::Object(keys) => match value.as_object() {
            None => problems.push(format!("{path}: expected an object, got {value}")),
            Some(map) => {
                for (key, sub) in keys {
                    if key == "*" {
                        for (k, v) in map {
                            check(v, sub, &format!("{path}.{k}"), problems);
                        }
                    } else {
                        match map.get(key) {
                            None => problems.push(format!("{path}: missing `{key}` in {value}")),
                            Some(v) => check(v, sub, &format!("{path}.{key}"), problems),
                        }
                    }
                }
            }
        },
        other => panic!("bad shape {other}"),
    }
}

#[track_caller]
pub(crate) fn assert_shape(value: &Value, id: &str) {
    let mut problems = Vec::new();
    check(value, &shape(id), id, &mut problems);
    assert!(
        problems.is_empty(),
        "output does not match the documented shape `{id}`:\n{}\n--- output\n{value:#}",
        problems.join("\n")
    );
}

/// Every JSON value printed on stdout (one document, or one per line, or
/// lines followed by a document).
fn json_values(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(stdout)))
}

/// The stream items of `force-build --wait/--follow` and `log`: each
/// must match the shape of its `type`.
fn check_stream_items(items: &[Value]) {
    assert!(!items.is_empty(), "no stream items");
    for item in items {
        let kind = item["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type: {item}"));
        assert_shape(item, &format!("stream:{kind}"));
    }
}

#[test]
fn every_command_prints_its_documented_json() {
    let m = Master::start(CONFIG);
    // A few builds, so that lists are not empty.
    let queued = m.bbctl_json(&["force-build", "fast", "-p", "X=1", "-r", "why"]);
    assert_shape(&queued, "force-build");

    let out = m.bbctl_code(&["--json", "force-build", "fast", "--follow"], 0);
    let mut values = json_values(&out.stdout);
    let outcome = values.pop().unwrap();
    assert_shape(&outcome, "outcome");
    check_stream_items(&values);
    assert!(values.iter().any(|v| v["type"] == "output"));

    let out = m.bbctl_code(&["--json", "force-build", "bad", "--wait"], 1);
    let mut values = json_values(&out.stdout);
    let outcome = values.pop().unwrap();
    assert_shape(&outcome, "outcome");
    assert_eq!(outcome["result"], "failure");
    check_stream_items(&values);

    let builds = m.bbctl_json(&["builds"]);
    assert!(builds.as_array().is_some_and(|b| b.len() >= 2), "{builds}");
    assert_shape(&builds, "builds");
    let first = builds[builds.as_array().unwrap().len() - 1]["id"]
        .as_u64()
        .unwrap();
    let detail = m.bbctl_json(&["build", &first.to_string()]);
    assert_shape(&detail, "build");
    assert_eq!(detail["properties"]["X"], "1");
    assert!(!detail["steps"].as_array().unwrap().is_empty());

    let out = m.bbctl_code(&["--json", "log", &first.to_string()], 0);
    check_stream_items(&json_values(&out.stdout));
    let out = m.bbctl_code(&["--json", "log", "--follow"], 1);
    let mut values = json_values(&out.stdout);
    assert_shape(&values.pop().unwrap(), "outcome");
    check_stream_items(&values);

    // A change on main starts a build of `fast` that carries its source.
    let sent = m.bbctl_json(&[
        "sendchange",
        "--repository",
        "repo",
        "--branch",
        "main",
        "--revision",
        "abc123",
        "--file",
        "src/a.rs",
        "--author",
        "ann",
        "--comments",
        "fix",
        "-p",
        "k=v",
    ]);
    assert_shape(&sent, "sendchange");
    let change = sent["change_id"].as_u64().unwrap();
    let mut changes = Value::Null;
    wait_until("the change's build", Duration::from_secs(10), || {
        changes = m.bbctl_json(&["changes"]);
        changes[0]["requests"][0]["builds"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    });
    assert_shape(&changes, "changes");
    assert_eq!(changes[0]["id"], change);
    assert_eq!(changes[0]["files"], json!(["src/a.rs"]));
    let built = changes[0]["requests"][0]["builds"][0].as_u64().unwrap();
    let detail = m.bbctl_json(&["build", &built.to_string()]);
    assert_shape(&detail["source"], "build:source");
    assert_eq!(detail["source"]["revision"], "abc123");
    assert_eq!(detail["source"]["changes"], json!([change]));

    let out = m.bbctl_code(&["--json", "force-build", "publish", "--wait"], 0);
    let published = json_values(&out.stdout).pop().unwrap()["build_id"]
        .as_u64()
        .unwrap();
    let artifacts = m.bbctl_json(&["artifacts", &published.to_string()]);
    assert_eq!(artifacts.as_array().map(Vec::len), Some(1), "{artifacts}");
    assert_shape(&artifacts, "artifacts");

    // A running build (for status and stop) and a queued one (for cancel).
    m.force_build("slow");
    m.force_build("slow");
    let queued = m.force_build("slow");
    let mut status = Value::Null;
    wait_until("two running builds", Duration::from_secs(10), || {
        status = m.bbctl_json(&["status"]);
        status["running"].as_array().is_some_and(|r| r.len() == 2)
    });
    assert_shape(&status, "status");
    assert!(
        !status["running"].as_array().unwrap().is_empty(),
        "{status}"
    );

    // On SQLite: one master, this one (docs/standby.md).
    let masters = m.bbctl_json(&["masters"]);
    assert_shape(&masters, "masters");
    assert_eq!(masters["store"], "sqlite", "{masters}");
    assert_eq!(masters["leader"], Value::Null, "{masters}");
    assert_eq!(masters["masters"][0]["role"], "leader", "{masters}");
    assert_eq!(status["leadership"], Value::Null, "{status}");

    let locks = m.bbctl_json(&["locks"]);
    assert_eq!(
        locks[0]["holders"].as_array().map(Vec::len),
        Some(2),
        "{locks}"
    );
    assert_shape(&locks, "locks");
    let queue = m.bbctl_json(&["queue"]);
    assert!(queue.as_array().is_some_and(|q| !q.is_empty()), "{queue}");
    assert_shape(&queue, "queue");
    let workers = m.bbctl_json(&["workers"]);
    assert_shape(&workers, "workers");
    let pong = m.bbctl_json(&["ping", "local-1"]);
    assert_shape(&pong, "ping");
    assert_shape(&m.bbctl_json(&["drain", "--worker", "local-1"]), "drain");
    assert_shape(&m.bbctl_json(&["undrain", "--worker", "local-1"]), "drain");
    assert_shape(&m.bbctl_json(&["cancel", &queued.to_string()]), "done");
    let running = status["running"][0]["build"].as_u64().unwrap();
    assert_shape(&m.bbctl_json(&["shutdown", "--drain"]), "done");
    assert_shape(&m.bbctl_json(&["shutdown", "--cancel"]), "done");
    assert_shape(&m.bbctl_json(&["stop", &running.to_string()]), "done");
    let other = status["running"][1]["build"].as_u64().unwrap();
    assert_shape(&m.bbctl_json(&["stop", &other.to_string()]), "done");

    let report = m.bbctl_json(&["reload", "--dry-run"]);
    assert_shape(&report, "reload");
    assert_eq!(report["dry_run"], true);
    let renamed = CONFIG
        .replace(
            "name = \"fast\"",
            "name = \"quick\"\nprevious_names = [\"fast\"]",
        )
        .replace("builders = [\"fast\"]", "builders = [\"quick\"]")
        .replace(
            "name = \"on-main\"",
            "name = \"main-only\"\nprevious_names = [\"on-main\"]",
        );
    m.write_config(&renamed);
    let report = m.bbctl_json(&["reload"]);
    assert_shape(&report, "reload");
    assert_eq!(report["builders_renamed"], json!([["fast", "quick"]]));
    assert_eq!(
        report["schedulers_renamed"],
        json!([["on-main", "main-only"]])
    );

    assert_shape(&m.bbctl_json(&["prune", "--dry-run"]), "prune");

    let config = m.config_path();
    let valid = m.bbctl_json(&["check-config", config.to_str().unwrap()]);
    assert_shape(&valid, "check-config");
    let bad = m.path().join("bad.toml");
    std::fs::write(&bad, "[[worker]]\nname = \"w\"\nmax_builds = 0\n").unwrap();
    let out = m.bbctl_code(&["--json", "check-config", bad.to_str().unwrap()], 1);
    let invalid = json_values(&out.stdout);
    assert_eq!(invalid.len(), 1, "{}", describe(&out));
    assert_shape(&invalid[0], "check-config:invalid");
    assert!(!invalid[0]["problems"].as_array().unwrap().is_empty());
    // Warnings (here: an empty file defines nothing) are strings.
    let empty = m.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let warned = m.bbctl_json(&["check-config", empty.to_str().unwrap()]);
    assert_shape(&warned, "check-config");
    assert_eq!(
        warned["warnings"].as_array().map(Vec::len),
        Some(2),
        "{warned}"
    );
    // An unreadable file: a problem without a position.
    let gone = m.path().join("gone.toml");
    let out = m.bbctl_code(&["--json", "check-config", gone.to_str().unwrap()], 1);
    let unreadable = json_values(&out.stdout);
    assert_shape(&unreadable[0], "check-config:invalid");
    assert_eq!(
        unreadable[0]["problems"][0]["line"],
        Value::Null,
        "{}",
        describe(&out)
    );
}

/// `bbctl events --json`: one object per line, each with `schema`,
/// `at_ms`, `generation` and `event`, and the keys of its kind.
#[test]
fn events_json_lines_match_their_shapes() {
    let m = Master::start(CONFIG);
    let mut cmd = m.bbctl_command(&["--json", "events"]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start bbctl events");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };

    // `events` says nothing once it has subscribed: queue builds until a
    // `build_queued` shows up, then follow that request to its end.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<Value> = Vec::new();
    let mut followed: Option<u64> = None;
    m.force_build("fast");
    let finished = loop {
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("no build_finished event within 20 s; got:\n{seen:#?}");
        }
        let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) else {
            if followed.is_none() {
                m.force_build("fast");
            }
            continue;
        };
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        seen.push(event.clone());
        if followed.is_none() && event["event"] == "build_queued" {
            followed = event["request"].as_u64();
        }
        if followed.is_some()
            && event["event"] == "build_finished"
            && event["request"].as_u64() == followed
        {
            break event;
        }
    };
    kill(&mut child);
    assert_eq!(finished["result"], "success");
    let mut kinds = Vec::new();
    for event in &seen {
        assert_shape(event, "events");
        let kind = event["event"].as_str().unwrap();
        assert_shape(event, &format!("events:{kind}"));
        kinds.push(kind.to_string());
    }
    for kind in [
        "build_queued",
        "build_started",
        "step_started",
        "step_finished",
        "build_finished",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// Every key of every shape is named (in backticks) in its section of
/// `docs/json.md`: the one whose `## ` heading holds the shape's id in
/// backticks, or for variants (`event:build_queued`, `stream:output`) the
/// part of the id before the `:`.
#[test]
fn docs_json_md_names_every_key() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let section = |id: &str| -> Option<String> {
        let mut out = None::<String>;
        for line in doc.lines() {
            if line.starts_with("## ") {
                if out.is_some() {
                    break;
                }
                if line.contains(&format!("`{id}`")) {
                    out = Some(String::new());
                }
            } else if let Some(s) = out.as_mut() {
                s.push_str(line);
                s.push('\n');
            }
        }
        out
    };
    fn keys(shape: &Value, out: &mut Vec<String>) {
        match shape {
            Value::Object(map) => {
                for (k, v) in map {
                    if k != "*" {
                        out.push(k.clone());
                    }
                    keys(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (id, shape) in shapes() {
        let section_id = id.split(':').next().unwrap();
        let Some(text) = section(section_id) else {
            missing.push(format!("no `## ` section for `{section_id}`"));
            continue;
        };
        let mut all = Vec::new();
        keys(&shape, &mut all);
        for key in all {
            if !text.contains(&format!("`{key}`")) {
                missing.push(format!("`{key}` in the section of `{id}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/json.md is behind the shapes of tests/e2e/json_schema.rs:\n{}",
        missing.join("\n")
    );
    // And the schema version the code stamps is the one documented.
    assert!(
        doc.contains("\"schema\": 1"),
        "docs/json.md must show \"schema\": 1"
    );
}

/// The worker and drain events: `drain`/`undrain` give `master_draining`
/// with `mode: maintenance`; a reload that removes an idle local worker
/// gives `worker_lost` for it with `reason: removed by reload` (before,
/// only `reload_applied` said anything), and the local worker that stays
/// is untouched.
#[test]
fn worker_and_drain_events_match_their_shapes() {
    let two = format!("{CONFIG}\n[[worker]]\nname = \"local-2\"\nlocal = true\n");
    let m = Master::start(&two);
    wait_until("local-2 to connect", Duration::from_secs(10), || {
        m.bbctl_json(&["status"])["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["connected"] == true)
            .count()
            == 2
    });
    let mut events = crate::harness::LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    crate::harness::await_subscription(&m, &mut events, "\"master_draining\"");
    m.bbctl_code(&["drain"], 0);
    let lines = events.read_until("a maintenance drain", Duration::from_secs(10), |l| {
        l.contains("\"draining\":true")
    });
    let drained: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_shape(&drained, "events");
    assert_shape(&drained, "events:master_draining");
    assert_eq!(drained["mode"], "maintenance", "{drained}");
    m.bbctl_code(&["undrain"], 0);

    m.write_config(CONFIG);
    m.bbctl_code(&["reload"], 0);
    let lines = events.read_until("local-2 leaving", Duration::from_secs(10), |l| {
        l.contains("\"worker_lost\"")
    });
    let lost: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_shape(&lost, "events");
    assert_shape(&lost, "events:worker_lost");
    assert_eq!(lost["worker"], "local-2", "{lost}");
    assert_eq!(lost["reason"], "removed by reload", "{lost}");
    let left: Vec<String> = events
        .seen
        .iter()
        .filter(|l| l.contains("\"worker_lost\""))
        .cloned()
        .collect();
    assert_eq!(left.len(), 1, "one event per worker that leaves: {left:?}");
}

/// A build from a change carries its source stamp in `build_queued`,
/// `build_started` and `build_finished` (`source`, as in `build`); a
/// forced build carries `source: null`.
#[test]
fn build_events_carry_the_source_stamp() {
    // CONFIG's scheduler builds `fast` for changes on main, at once.
    let config = CONFIG.replace(
        "branches = [\"main\"]\n",
        "branches = [\"main\"]\ntree_stable = \"0s\"\n",
    );
    let m = Master::start(&config);
    let mut events = crate::harness::LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    crate::harness::await_subscription(&m, &mut events, "\"master_draining\"");
    let revision = "0123456789abcdef0123456789abcdef01234567";
    m.bbctl_code(
        &[
            "sendchange",
            "--repository",
            "https://git.example/hello.git",
            "--branch",
            "main",
            "--revision",
            revision,
            "--file",
            "src/lib.rs",
        ],
        0,
    );
    events.read_until(
        "the change's build to finish",
        Duration::from_secs(20),
        |l| l.contains("\"build_finished\""),
    );
    let expected = json!({
        "repository": "https://git.example/hello.git",
        "branch": "main",
        "revision": revision,
        "changes": [1],
    });
    for kind in ["build_queued", "build_started", "build_finished"] {
        let line = events
            .seen
            .iter()
            .find(|l| l.contains(&format!("\"event\":\"{kind}\"")))
            .unwrap_or_else(|| panic!("no {kind} in {:#?}", events.seen));
        let event: Value = serde_json::from_str(line).unwrap();
        assert_shape(&event, &format!("events:{kind}"));
        assert_eq!(event["source"], expected, "{kind}: {event}");
    }
    m.force_build("fast");
    let lines = events.read_until("the forced build to finish", Duration::from_secs(20), |l| {
        l.contains("\"build_finished\"") && !l.contains(revision)
    });
    let forced: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(forced["source"].is_null(), "{forced}");
}
