//! The docs hold for the binaries, and the suite holds the docs to them
//! (issue 21, "Keep it true"), the way `json_schema.rs` does for the JSON
//! shapes:
//!
//! - every case of the exit-code table ([`bbctl::client::cli::EXIT_CODES`],
//!   the text of `--help`, `bbctl(1)` and `docs/cli.md`) is claimed by a
//!   scenario in [`EXIT_CASES`] that makes the real `bbctl` exit with that
//!   code against a real master; a case in the table that no scenario
//!   claims, or a claim the table no longer makes, fails;
//! - every event kind of `docs/json.md` is produced through `bbctl events
//!   --json` and checked key by key against the doc's own table (types from
//!   the doc, and no key the doc does not name); a documented kind that no
//!   scenario produced, or a kind the doc does not list, fails;
//! - every row of the reload table of `docs/reload.md` maps (by its first
//!   cell) to the end-to-end tests that prove it ([`RELOAD_ROWS`]); a row
//!   without a mapping, or a mapping to a row or a test that does not
//!   exist, fails. The restart-only settings the table lists are checked
//!   against `needs_restart` key by key.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::Duration;

use bbctl::protocol::frame::encode;
use bbctl::protocol::{ClientRequest, Hello, Request, Role};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

use crate::harness::{
    LineReader, Master, await_subscription, code, command, describe, start_worker, text,
    wait_child, wait_until,
};

/// How long any one thing a scenario waits for may take.
const WAIT: Duration = Duration::from_secs(15);

/// A file of the repository, as text.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The body of the `## ` section of `doc` whose heading contains `heading`.
fn section(doc: &str, heading: &str) -> String {
    let mut out: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with("## ") {
            if out.is_some() {
                break;
            }
            if line.contains(heading) {
                out = Some(String::new());
            }
        } else if let Some(s) = out.as_mut() {
            s.push_str(line);
            s.push('\n');
        }
    }
    out.unwrap_or_else(|| panic!("no `## ` section with {heading:?}"))
}

/// The cells of the body rows of the first Markdown table in `text` that
/// starts after a line containing `after` (the header row and its `---`
/// line skipped).
fn table_rows(text: &str, after: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.contains(after));
    let mut rows = Vec::new();
    let mut header_seen = 0;
    for line in lines.by_ref() {
        let line = line.trim();
        if !line.starts_with('|') {
            if header_seen > 0 {
                break;
            }
            continue;
        }
        header_seen += 1;
        if header_seen <= 2 {
            continue;
        }
        let inner = line.trim_start_matches('|').trim_end_matches('|');
        rows.push(inner.split(" | ").map(|c| c.trim().to_string()).collect());
    }
    assert!(!rows.is_empty(), "no table after {after:?}");
    rows
}

/// A type as the docs write it (`int`, `string or null`) as a shape type
/// of `json_schema.rs` (`int`, `string|null`).
fn doc_type(words: &str) -> String {
    let types: Vec<&str> = words.split(" or ").map(str::trim).collect();
    for t in &types {
        assert!(
            ["int", "string", "bool", "null", "float", "object"].contains(t),
            "docs/json.md: unknown type {t:?} in {words:?}"
        );
    }
    types.join("|")
}

// ---------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------

/// How a scenario runs: on the master the exit-code test shares (its
/// config is [`SHARED`]; a shared scenario leaves it as it found it), or on
/// masters of its own (it starts what it needs).
#[derive(Clone, Copy)]
enum Run {
    Shared(fn(&Master)),
    Own(fn()),
}

/// One scenario and the cases of the exit-code table it proves: `(code,
/// words)`, the words a verbatim piece of that code's text.
struct ExitCase {
    name: &'static str,
    covers: &'static [(u8, &'static str)],
    run: Run,
}

/// Every case of the exit-code table, with the scenario that triggers it.
/// Adding a case to the table fails [`exit_code_table_has_a_scenario_for_every_case`]
/// until a scenario here claims it.
const EXIT_CASES: &[ExitCase] = &[
    ExitCase {
        name: "success",
        covers: &[(0, "success")],
        run: Run::Shared(exit_0_success),
    },
    ExitCase {
        name: "ping of a worker that is not connected",
        covers: &[(1, "the operation failed")],
        run: Run::Shared(exit_1_operation_failed),
    },
    ExitCase {
        name: "a failing build waited for",
        covers: &[(
            1,
            "with --wait, --follow or `wait`: the build did not succeed",
        )],
        run: Run::Shared(exit_1_build_failed),
    },
    ExitCase {
        name: "check-config of an invalid file",
        covers: &[(1, "`check-config`: the file is invalid")],
        run: Run::Shared(exit_1_invalid_file),
    },
    ExitCase {
        name: "usage errors",
        covers: &[
            (2, "usage error"),
            (2, "unknown command"),
            (2, "option"),
            (2, "missing"),
            (2, "malformed argument"),
        ],
        run: Run::Shared(exit_2_usage),
    },
    ExitCase {
        name: "no master on the socket",
        covers: &[(
            3,
            "the master cannot be reached (the message names the socket tried)",
        )],
        run: Run::Own(exit_3_unreachable),
    },
    ExitCase {
        name: "max_clients, then a master that does not come back",
        covers: &[
            (3, "refused the connection (too many clients: max_clients)"),
            (
                3,
                "did not come back within --reconnect-for while bbctl waited for a build",
            ),
        ],
        run: Run::Own(exit_3_refused_and_gone),
    },
    ExitCase {
        name: "names and ids that do not exist",
        covers: &[
            (4, "not found: no such build"),
            (4, "request"),
            (4, "builder"),
            (4, "worker"),
            (4, "step"),
            (4, "artifact"),
        ],
        run: Run::Shared(exit_4_not_found),
    },
    ExitCase {
        name: "refusals of a running master",
        covers: &[
            (
                5,
                "rejected: the master refused (an invalid config for `reload`",
            ),
            (5, "`cancel` of a finished request"),
            (5, "`stop` of a finished build"),
            (5, "`shutdown --cancel` when not draining for shutdown"),
        ],
        run: Run::Shared(exit_5_refusals),
    },
    ExitCase {
        name: "a full queue, a drain for shutdown, the master going away",
        covers: &[
            (5, "`force-build` to a master draining for shutdown"),
            (5, "a full queue"),
            (5, "`undrain` during a drain for shutdown"),
            (1, "`events`: the master went away"),
        ],
        run: Run::Own(exit_5_shutdown_and_full_queue),
    },
    ExitCase {
        name: "a state change asked of a standby master",
        covers: &[(
            5,
            "anything that changes state, asked of a standby master: the message names the leader",
        )],
        run: Run::Own(exit_5_standby),
    },
    ExitCase {
        name: "Ctrl-C while waiting",
        covers: &[
            (
                130,
                "interrupted by Ctrl-C while waiting (`force-build --wait/--follow`",
            ),
            (130, "`wait`"),
            (130, "`log --follow`"),
            (130, "the build goes on"),
            (130, "stderr says how to re-attach"),
        ],
        run: Run::Shared(exit_130_interrupted),
    },
];

/// The text of each code's row of the table, as `bbctl::client::cli`
/// parses it (the one parser of the one text `--help`, `bbctl(1)` and
/// `docs/cli.md` show; `docs.rs` keeps the three identical).
fn exit_table() -> BTreeMap<u8, String> {
    bbctl::client::cli::exit_codes().into_iter().collect()
}

/// Words that only join the cases of a row.
const JOINERS: &[&str] = &["or", "and"];

/// Both ways: every claimed piece is in its code's text, and once every
/// claimed piece is struck out of the text nothing but joiners and
/// punctuation is left. A case added to the table (or reworded) without a
/// scenario claiming it fails here.
#[test]
fn exit_code_table_has_a_scenario_for_every_case() {
    let mut table = exit_table();
    assert!(
        table.len() >= 7,
        "the exit-code table did not parse: {table:?}"
    );
    let mut problems = Vec::new();
    for case in EXIT_CASES {
        for (code, words) in case.covers {
            match table.get_mut(code) {
                None => problems.push(format!(
                    "scenario `{}` claims exit code {code}, which the table does not list",
                    case.name
                )),
                Some(text) => match text.find(words) {
                    // Struck out with a marker, so that what was around it
                    // cannot join into a new phrase.
                    Some(at) => text.replace_range(at..at + words.len(), " … "),
                    None => problems.push(format!(
                        "scenario `{}` claims {words:?} for exit code {code}, which its text does not say (any more)",
                        case.name
                    )),
                },
            }
        }
    }
    for (code, rest) in &table {
        let left: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
            .filter(|w| !w.is_empty() && !JOINERS.contains(w))
            .collect();
        if !left.is_empty() {
            problems.push(format!(
                "exit code {code}: no scenario in EXIT_CASES claims {:?} (the text left: {rest:?})",
                left.join(" ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the exit-code table (src/client/cli.rs EXIT_CODES) and EXIT_CASES disagree:\n{}",
        problems.join("\n")
    );
}

/// The master the shared scenarios run on: a local worker with room for
/// the builds they hold, a remote worker that never connects, builders
/// that succeed, fail, hold until `<dir>/go` exists, and upload a file.
const SHARED: &str = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 4

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "ok"
workers = ["local-1"]
  [[builder.step]]
  name = "say"
  shell = "echo hi"

[[builder]]
name = "bad"
workers = ["local-1"]
  [[builder.step]]
  name = "fail"
  shell = "echo oops; exit 3"

[[builder]]
name = "hold"
workers = ["local-1"]
  [[builder.step]]
  name = "hold"
  shell = "echo holding; for i in $(seq 600); do [ -e @DIR@/go ] && exit 0; sleep 0.05; done; exit 1"

[[builder]]
name = "publish"
workers = ["local-1"]
  [[builder.step]]
  name = "make"
  shell = "echo artifact > a.txt"
  [[builder.step]]
  name = "upload"
  upload = { from = "a.txt" }
"#;

/// A secret long enough not to be warned about.
const SECRET: &str = "w1-secret-0123456789abcdef\n";

/// Every shared scenario, in the order of [`EXIT_CASES`], on one master.
#[test]
fn exit_codes_on_a_shared_master() {
    let m = Master::start_with_files(SHARED, &[("w1.secret", SECRET)]);
    for case in EXIT_CASES {
        if let Run::Shared(run) = case.run {
            eprintln!("exit-code scenario: {}", case.name);
            run(&m);
        }
    }
}

/// Every scenario with masters of its own, side by side.
#[test]
fn exit_codes_on_masters_of_their_own() {
    thread::scope(|s| {
        for case in EXIT_CASES {
            if let Run::Own(run) = case.run {
                thread::Builder::new()
                    .name(case.name.to_string())
                    .spawn_scoped(s, run)
                    .expect("cannot start a thread");
            }
        }
    });
}

/// Two masters on one PostgreSQL store: the standby refuses
/// `force-build` with exit 5, naming the leader (docs/standby.md).
fn exit_5_standby() {
    let cluster = crate::harness::Cluster::start(2, SHARED_STANDBY, &[]);
    let out = cluster.master(1).bbctl_code(&["force-build", "ok"], 5);
    let err = text(&out.stderr);
    assert!(
        err.contains("the leader is m0 at"),
        "the refusal must name the leader: {err}"
    );
}

/// A builder for [`exit_5_standby`] (no local worker: a PostgreSQL store
/// refuses them).
const SHARED_STANDBY: &str = r#"
[[worker]]
name = "far"
secret = "far-secret-0123456789abcdef"

[[builder]]
name = "ok"
workers = ["far"]

  [[builder.step]]
  name = "ok"
  shell = "true"
"#;

/// The JSON outcome (last line) of a `--json` waiting command.
fn last_json(stdout: &[u8]) -> Value {
    let out = text(stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON last line ({e}):\n{out}"))
}

fn exit_0_success(m: &Master) {
    m.bbctl_code(&["status"], 0);
    let out = m.bbctl_code(&["--json", "force-build", "ok", "--wait"], 0);
    assert_eq!(last_json(&out.stdout)["result"], "success");
}

fn exit_1_operation_failed(m: &Master) {
    let out = m.bbctl_code(&["ping", "w1"], 1);
    assert!(
        text(&out.stderr).contains("not connected"),
        "{}",
        describe(&out)
    );
}

fn exit_1_build_failed(m: &Master) {
    let out = m.bbctl_code(&["--json", "force-build", "bad", "--wait"], 1);
    let request = last_json(&out.stdout)["request_id"].as_u64().unwrap();
    m.bbctl_code(&["force-build", "bad", "--follow"], 1);
    m.bbctl_code(&["wait", &request.to_string()], 1);
}

fn exit_1_invalid_file(m: &Master) {
    let bad = m.path().join("invalid.toml");
    fs::write(&bad, "[[worker]]\nname = \"w\"\nmax_builds = 0\n").unwrap();
    m.bbctl_code(&["check-config", bad.to_str().unwrap()], 1);
}

fn exit_2_usage(m: &Master) {
    m.bbctl_code(&["frobnicate"], 2);
    m.bbctl_code(&["status", "--frobnicate"], 2);
    m.bbctl_code(&["build"], 2);
    m.bbctl_code(&["build", "seven"], 2);
}

fn exit_3_unreachable() {
    let dir = crate::harness::temp_dir();
    let socket = dir.path().join("nobody.sock");
    let mut cmd = command(crate::harness::BBCTL);
    cmd.arg("--socket").arg(&socket).arg("status");
    let out = crate::harness::run_with_timeout(cmd, WAIT);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(&socket.to_string_lossy().into_owned()),
        "the message names the socket: {}",
        describe(&out)
    );
}

/// A process with stdout and stderr in files, for the waits that need to
/// see a line before the process ends.
struct Spawned {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Spawned {
    fn start(m: &Master, tag: &str, args: &[&str]) -> Spawned {
        let out = m.path().join(format!("{tag}.out"));
        let err = m.path().join(format!("{tag}.err"));
        let child = m
            .bbctl_command(args)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .expect("cannot start bbctl");
        Spawned { child, out, err }
    }

    fn wait_for(&self, which: &Path, needle: &str) {
        wait_until(&format!("{needle:?} in {}", which.display()), WAIT, || {
            fs::read_to_string(which).is_ok_and(|s| s.contains(needle))
        });
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("cannot signal bbctl");
    }

    /// Wait (bounded) for the exit; the code, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        let status = wait_child(&mut self.child, WAIT).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "bbctl did not exit within {WAIT:?}; stderr:\n{}",
                fs::read_to_string(&self.err).unwrap_or_default()
            )
        });
        (
            status.code().unwrap_or(-1),
            fs::read_to_string(&self.out).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default(),
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exit_3_refused_and_gone() {
    let mut m = Master::start(
        r#"
[master]
max_clients = 1

[[worker]]
name = "local-1"
local = true

[[builder]]
name = "hold"
workers = ["local-1"]
  [[builder.step]]
  name = "nap"
  command = ["sleep", "30"]
"#,
    );
    // Every slot taken: `max_clients`, and the slots kept for the
    // master's own user beyond it (docs/cli.md).
    let slots = 1 + bbctl::daemon::client_slots::OWNER_RESERVE;
    let held: Vec<UnixStream> = (0..slots).map(|_| hello(&m)).collect();
    let out = m.bbctl_code(&["status"], 3);
    assert!(
        text(&out.stderr).contains("max_clients"),
        "{}",
        describe(&out)
    );
    drop(held);
    wait_until("the slots to be free again", WAIT, || {
        code(&m.bbctl(&["status"])) == 0
    });

    let waiter = Spawned::start(
        &m,
        "waiter",
        &["--reconnect-for", "1s", "force-build", "hold", "--wait"],
    );
    waiter.wait_for(&waiter.err, "queued");
    m.kill9();
    let (code, _, err) = waiter.finish();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("did not come back within"), "{err}");
}

fn exit_4_not_found(m: &Master) {
    m.bbctl_code(&["build", "999999"], 4);
    m.bbctl_code(&["cancel", "999999"], 4);
    m.bbctl_code(&["wait", "999999"], 4);
    m.bbctl_code(&["force-build", "nope"], 4);
    m.bbctl_code(&["ping", "nope"], 4);
    m.bbctl_code(&["drain", "--worker", "nope"], 4);
    let out = m.bbctl_code(&["--json", "force-build", "publish", "--wait"], 0);
    let build = last_json(&out.stdout)["build_id"]
        .as_u64()
        .unwrap()
        .to_string();
    m.bbctl_code(&["log", &build, "99"], 4);
    m.bbctl_code(&["artifact", &build, "nope.txt"], 4);
}

fn exit_5_refusals(m: &Master) {
    let config = m.config_path();
    let good = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("bogus = 1\n{good}")).unwrap();
    m.bbctl_code(&["reload"], 5);
    fs::write(&config, good).unwrap();
    let out = m.bbctl_code(&["--json", "force-build", "ok", "--wait"], 0);
    let outcome = last_json(&out.stdout);
    let request = outcome["request_id"].as_u64().unwrap().to_string();
    let build = outcome["build_id"].as_u64().unwrap().to_string();
    m.bbctl_code(&["cancel", &request], 5);
    m.bbctl_code(&["stop", &build], 5);
    m.bbctl_code(&["shutdown", "--cancel"], 5);
}

fn exit_5_shutdown_and_full_queue() {
    let mut m = Master::start(
        r#"
[master]
max_queued = 1

[[worker]]
name = "local-1"
local = true

[[builder]]
name = "hold"
workers = ["local-1"]
  [[builder.step]]
  name = "hold"
  shell = "for i in $(seq 600); do [ -e @DIR@/go ] && exit 0; sleep 0.05; done; exit 1"
"#,
    );
    let events = Spawned::start(&m, "events", &["--json", "events"]);
    wait_until("events to subscribe", WAIT, || {
        m.bbctl_code(&["undrain"], 0);
        fs::read_to_string(&events.out).is_ok_and(|s| !s.is_empty())
    });
    m.bbctl_code(&["drain", "--worker", "local-1"], 0);
    m.force_build("hold");
    let out = m.bbctl_code(&["force-build", "hold"], 5);
    assert!(text(&out.stderr).contains("full"), "{}", describe(&out));
    m.bbctl_code(&["undrain", "--worker", "local-1"], 0);
    wait_until("the build to run", WAIT, || {
        m.bbctl_json(&["status"])["running"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    });
    m.bbctl_code(&["shutdown", "--drain"], 0);
    m.bbctl_code(&["force-build", "hold"], 5);
    m.bbctl_code(&["undrain"], 5);
    fs::write(m.path().join("go"), "").unwrap();
    m.wait_exit(WAIT);
    let (code, _, err) = events.finish();
    assert_eq!(code, 1, "{err}");
}

fn exit_130_interrupted(m: &Master) {
    let interrupt = |s: Spawned, again: &str| {
        s.signal(Signal::SIGINT);
        let (code, _, err) = s.finish();
        assert_eq!(code, 130, "{err}");
        assert!(err.contains(&format!("Re-attach with: {again}")), "{err}");
    };
    let running = |request: u64| -> Option<u64> {
        m.bbctl_json(&["status"])["running"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["request"] == request)
            .and_then(|r| r["build"].as_u64())
    };
    let mut requests = Vec::new();
    for flag in ["--wait", "--follow"] {
        let s = Spawned::start(m, &format!("fb{flag}"), &["force-build", "hold", flag]);
        s.wait_for(&s.err, "queued");
        let err = fs::read_to_string(&s.err).unwrap();
        let request: u64 = err
            .split_whitespace()
            .find_map(|w| w.strip_prefix('r')?.parse().ok())
            .unwrap_or_else(|| panic!("no request id in {err:?}"));
        interrupt(s, "bbctl wait r");
        requests.push(request);
    }
    // The builds go on.
    let mut builds = Vec::new();
    for &request in &requests {
        wait_until("the interrupted request's build to run", WAIT, || {
            running(request).is_some()
        });
        builds.push(running(request).unwrap());
    }
    let r = format!("r{}", requests[0]);
    let s = Spawned::start(m, "wait", &["wait", "--follow", &r]);
    s.wait_for(&s.out, "holding");
    interrupt(s, &format!("bbctl wait {r} --follow"));
    let b = builds[0].to_string();
    let s = Spawned::start(m, "log", &["log", "--follow", &b]);
    s.wait_for(&s.out, "holding");
    interrupt(s, &format!("bbctl log {b} --follow"));
    assert_eq!(running(requests[0]), Some(builds[0]), "the build goes on");
    fs::write(m.path().join("go"), "").unwrap();
    for request in requests {
        m.bbctl_code(&["wait", &request.to_string()], 0);
    }
    fs::remove_file(m.path().join("go")).unwrap();
}

// ---------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------

/// The shape of every event as `docs/json.md` documents it, by kind: the
/// keys every line has (the first table of the `events` section) and the
/// keys of the kind (its row of the second), each with its type.
pub(crate) fn documented_events() -> BTreeMap<String, Map<String, Value>> {
    let doc = repo_file("docs/json.md");
    let events = section(&doc, "`events`");
    let mut common = Map::new();
    for row in table_rows(&events, "Every line has") {
        let key = row[0].trim_matches('`');
        common.insert(key.to_string(), json!(doc_type(&row[1])));
    }
    let mut kinds = BTreeMap::new();
    for row in table_rows(&events, "and the keys of its kind") {
        let kind = row[0].trim_matches('`').to_string();
        let mut shape = common.clone();
        for (key, ty) in row_keys(&row[1]) {
            shape.insert(key, json!(ty));
        }
        kinds.insert(kind, shape);
    }
    kinds
}

/// The keys of an event row: `` `request` (int), `into` (int: the request
/// that ran) ``, up to the first `:` outside parentheses (prose follows).
fn row_keys(cell: &str) -> Vec<(String, String)> {
    let mut depth = 0;
    let mut end = cell.len();
    for (i, c) in cell.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ':' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let list = &cell[..end];
    let mut keys = Vec::new();
    let mut rest = list;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let close = after.find('`').expect("an unclosed backtick");
        let key = &after[..close];
        let after = after[close + 1..].trim_start();
        let inner = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(')'))
            .unwrap_or_else(|| panic!("docs/json.md: `{key}` has no (type) in {cell:?}"));
        let ty = inner.0.split(':').next().unwrap();
        keys.push((key.to_string(), doc_type(ty)));
        rest = inner.1;
    }
    assert!(!keys.is_empty(), "docs/json.md: no keys in {cell:?}");
    keys
}

/// What is wrong with `event` against its documented shape: a key missing
/// or of another type, or a key the doc does not name. Each problem is
/// said without the event, so that many events with one problem say it
/// once.
fn event_problems(event: &Value, documented: &BTreeMap<String, Map<String, Value>>) -> Vec<String> {
    let kind = event["event"].as_str().unwrap_or("<no event key>");
    let Some(shape) = documented.get(kind) else {
        return vec![format!("kind `{kind}` is not documented in docs/json.md")];
    };
    let mut problems = Vec::new();
    crate::json_schema::check(event, &Value::Object(shape.clone()), kind, &mut problems);
    for p in &mut problems {
        // `check` quotes the value; keep the message alone.
        if let Some((what, _)) = p.split_once(" in {") {
            *p = what.to_string();
        }
    }
    if let Some(map) = event.as_object() {
        for key in map.keys() {
            if !shape.contains_key(key) {
                problems.push(format!("{kind}: key `{key}` is not documented"));
            }
        }
    }
    problems
}

/// The master of the events scenario: a local worker, a remote one whose
/// loss retries its build after 1 s, a collapsing builder.
const EVENTS_CONFIG: &str = r#"
[master]
worker_grace = "1s"

[[worker]]
name = "local-1"
local = true

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "fast"
workers = ["local-1"]
  [[builder.step]]
  name = "say"
  shell = "echo hi"

[[builder]]
name = "dedup"
workers = ["local-1"]
collapse = true
  [[builder.step]]
  name = "say"
  shell = "echo $BB_PROP_X"

[[builder]]
name = "remote"
workers = ["w1"]
  [[builder.step]]
  name = "nap"
  shell = "echo napping; exec sleep 30"
"#;

/// Read `reader` until a line holds every one of `needles`; the JSON of
/// that line.
fn read_event(reader: &mut LineReader, needles: &[&str]) -> Value {
    let lines = reader.read_until(&format!("{needles:?}"), WAIT, |l| {
        needles.iter().all(|n| l.contains(n))
    });
    serde_json::from_str(lines.last().unwrap()).unwrap()
}

/// Wait (bounded) for `cond`; whether it came to hold.
fn wait_until_ok(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A raw control connection past its hello, holding a slot.
fn hello(m: &Master) -> UnixStream {
    let mut stream = UnixStream::connect(m.control_socket()).expect("cannot connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(&encode(&Hello::new(Role::Client)).unwrap())
        .unwrap();
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .expect("no answer to a hello");
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream
        .read_exact(&mut body)
        .expect("a cut answer to a hello");
    match bbctl::protocol::frame::decode::<bbctl::protocol::HelloReply>(&body) {
        Ok(bbctl::protocol::HelloReply::Welcome { .. }) => stream,
        other => panic!("a hello was not welcomed: {other:?}"),
    }
}

/// Send `count` `undrain` requests (each emits `master_draining`) on one
/// raw control connection, as fast as the master takes them.
fn flood_undrains(m: &Master, count: u64) {
    let mut stream = hello(m);
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    // Answers are read and dropped, so that the master never blocks on us.
    let drain = thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut batch = Vec::new();
    for id in 1..=count {
        let request = ClientRequest {
            id,
            body: Request::Drain {
                worker: None,
                drain: false,
            },
        };
        batch.extend(encode(&request).unwrap());
    }
    stream.write_all(&batch).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    drain.join().unwrap();
}

/// Every kind of event `docs/json.md` lists happens, through the real
/// `bbctl events --json`, and each line has exactly the documented keys
/// with the documented types; no line has a kind the doc does not list.
#[test]
fn every_documented_event_kind_happens_as_documented() {
    let documented = documented_events();
    assert!(documented.len() >= 10, "{documented:?}");
    let m = Master::start_with_files(EVENTS_CONFIG, &[("w1.secret", SECRET)]);
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");

    // A build from queue to end.
    m.bbctl_code(&["force-build", "fast", "--wait"], 0);
    read_event(&mut events, &["\"build_finished\""]);

    // A drained worker: requests wait; one is cancelled, two collapse.
    m.bbctl_code(&["drain", "--worker", "local-1"], 0);
    read_event(&mut events, &["\"worker_draining\"", "local-1"]);
    let cancelled = m.force_build("fast");
    m.bbctl_code(&["cancel", &cancelled.to_string()], 0);
    read_event(&mut events, &["\"request_cancelled\""]);
    m.bbctl_code(&["force-build", "dedup", "-p", "X=1"], 0);
    m.bbctl_code(&["force-build", "dedup", "-p", "X=1"], 0);
    m.bbctl_code(&["undrain", "--worker", "local-1"], 0);
    read_event(&mut events, &["\"worker_undrained\"", "local-1"]);
    read_event(&mut events, &["\"request_skipped\""]);

    // A remote worker comes, runs a build, and is killed: its build is
    // retried once the grace has passed.
    let worker = start_worker(&m, "w1", &m.path().join("w1.secret"));
    read_event(&mut events, &["\"worker_connected\"", "w1"]);
    let retried = m.force_build("remote");
    read_event(&mut events, &["\"build_started\"", "\"remote\""]);
    // Killed once its output reached the master: the worker sends output
    // only after it has registered the step with its guard, which then
    // kills the step when the worker dies. (Killed earlier, between the
    // step's spawn and that registration, the step would outlive it: a
    // known limit of the guard, see src/worker/guard.rs.)
    wait_until("the remote step's output to reach the master", WAIT, || {
        let builds = m.bbctl_json(&["builds", "--builder", "remote"]);
        let Some(id) = builds[0]["id"].as_u64() else {
            return false;
        };
        text(&m.bbctl(&["log", &id.to_string()]).stdout).contains("napping")
    });
    worker.kill9();
    read_event(&mut events, &["\"worker_lost\"", "w1"]);
    read_event(&mut events, &["\"build_retried\""]);
    m.bbctl_code(&["cancel", &retried.to_string()], 0);

    // A change stored (no scheduler takes it).
    m.bbctl_code(
        &[
            "sendchange",
            "--repository",
            "r",
            "--branch",
            "main",
            "--revision",
            "abc",
        ],
        0,
    );
    read_event(&mut events, &["\"change_added\""]);

    // Reloads: a refused one, an applied one.
    let good = fs::read_to_string(m.config_path()).unwrap();
    fs::write(m.config_path(), format!("bogus = 1\n{good}")).unwrap();
    m.bbctl_code(&["reload"], 5);
    read_event(&mut events, &["\"reload_rejected\""]);
    m.write_config(&format!(
        "{EVENTS_CONFIG}\n[[builder]]\nname = \"more\"\nworkers = [\"local-1\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n"
    ));
    m.bbctl_code(&["reload"], 0);
    read_event(&mut events, &["\"reload_applied\""]);
    let mut lines = std::mem::take(&mut events.seen);
    drop(events);

    // A subscriber that stops reading falls behind and is told so.
    let slow = Spawned::start(&m, "slow-events", &["--json", "events"]);
    wait_until("the slow subscriber to subscribe", WAIT, || {
        m.bbctl_code(&["undrain"], 0);
        fs::read_to_string(&slow.out).is_ok_and(|s| !s.is_empty())
    });
    // The master keeps 4096 events per subscriber, and the socket holds a
    // few thousand more; should a larger socket buffer take them all, a
    // bigger flood follows.
    let lagged = || fs::read_to_string(&slow.out).is_ok_and(|s| s.contains("\"lagged\""));
    for round in 1..=3 {
        slow.signal(Signal::SIGSTOP);
        flood_undrains(&m, 12_000 * round);
        slow.signal(Signal::SIGCONT);
        if round == 3 {
            slow.wait_for(&slow.out, "\"lagged\"");
        } else if wait_until_ok(Duration::from_secs(5), lagged) {
            break;
        }
    }
    let (_, out, _) = {
        slow.signal(Signal::SIGTERM);
        slow.finish()
    };
    lines.extend(out.lines().map(str::to_string));

    // Each distinct problem once, with the first line that shows it.
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for line in &lines {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for problem in event_problems(&event, &documented) {
            found.entry(problem).or_insert_with(|| line.clone());
        }
        if let Some(kind) = event["event"].as_str() {
            seen.insert(kind.to_string());
        }
    }
    let mut problems: Vec<String> = found
        .into_iter()
        .map(|(problem, line)| format!("{problem}, e.g. {line}"))
        .collect();
    for kind in documented.keys() {
        if !seen.contains(kind) {
            problems.push(format!(
                "docs/json.md lists event `{kind}`, which no scenario here produced"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "events and docs/json.md disagree:\n{}",
        problems.join("\n")
    );
}

/// The doc's event table parses into shapes with the keys its prose
/// promises (a guard on the parser: a kind with no keys, or a type the
/// parser misread, would make the check above weaker than it looks).
#[test]
fn the_event_table_parses() {
    let documented = documented_events();
    let finished = &documented["build_finished"];
    assert_eq!(finished["reason"], "string|null");
    assert_eq!(finished["build"], "int");
    assert_eq!(finished["schema"], "int");
    let skipped = &documented["request_skipped"];
    assert_eq!(
        skipped.keys().cloned().collect::<Vec<_>>(),
        [
            "at_ms",
            "build",
            "event",
            "generation",
            "into",
            "request",
            "schema"
        ]
    );
    assert_eq!(
        documented["worker_lost"]
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["at_ms", "event", "generation", "reason", "schema", "worker"]
    );
}

// ---------------------------------------------------------------------
// The reload table
// ---------------------------------------------------------------------

/// Each row of the table in `docs/reload.md` ("What happens to what"), by
/// its first cell verbatim, with the end-to-end tests that prove it
/// (`module::test` in tests/e2e/). A reworded row is a new row: check that
/// its tests still prove it, then update the key.
const RELOAD_ROWS: &[(&str, &[&str])] = &[
    (
        "several masters on one PostgreSQL store (`store = { postgres = ... }`, docs/standby.md)",
        &["standby::a_standby_answers_read_only_and_names_the_leader"],
    ),
    (
        "invalid file (syntax, unknown key, unknown worker, duplicate name, bad value, unreadable `secret_file`)",
        &["reload::invalid_file_changes_nothing"],
    ),
    (
        "config or `secret_file` that cannot be read within 5 s (a FIFO nobody writes, a hung network mount)",
        &["storage::a_reload_from_a_fifo_does_not_freeze_the_master"],
    ),
    (
        "builder unchanged",
        &["reload::unchanged_file_changes_nothing"],
    ),
    (
        "builder changed (steps, env, workers, `retry`, ...)",
        &["reload::changed_builder_running_keeps_v1_queued_get_v2"],
    ),
    (
        "builder added",
        &["reload::added_builder_dispatches_at_once"],
    ),
    (
        "builder renamed (`previous_names = [\"old\"]`)",
        &["reload::renamed_builder_keeps_queue_and_history"],
    ),
    (
        "builder removed",
        &["reload::removed_builder_finishes_running_and_cancels_queued"],
    ),
    ("worker added", &["docs_agree::reload_row_worker_added"]),
    (
        "scheduler unchanged",
        &["changes::a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows"],
    ),
    (
        "scheduler changed (`builders`, filter, `tree_stable`, ...)",
        &["changes::a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows"],
    ),
    (
        "scheduler added",
        &["changes::a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows"],
    ),
    (
        "scheduler renamed (`previous_names = [\"old\"]`)",
        &["changes::a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows"],
    ),
    (
        "scheduler removed",
        &["changes::a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows"],
    ),
    (
        "`periodic`/`cron` scheduler changed or renamed",
        &["schedulers::a_renamed_and_retimed_periodic_scheduler_keeps_its_last_firing"],
    ),
    (
        "`triggerable` scheduler changed or removed",
        &["schedulers::a_waiting_trigger_step_survives_a_reload_that_removes_its_scheduler"],
    ),
    (
        "worker changed: `max_builds`",
        &["reload::worker_max_builds_applies_to_new_builds"],
    ),
    (
        "worker changed: credentials (`secret`, `secret_file`, `local`)",
        &["reload::changed_secret_drains_then_requires_the_new_one"],
    ),
    (
        "`[irc]`",
        &["irc::irc_bot_joins_answers_refuses_and_announces"],
    ),
    (
        "worker removed",
        &[
            "reload::removed_worker_drains_then_is_disconnected",
            "reload_regression::removed_local_worker_finishes_a_long_build",
            "json_schema::worker_and_drain_events_match_their_shapes",
        ],
    ),
    (
        "`keep_builds`, `keep_logs` (in `[master]` or a builder)",
        &["docs_agree::reload_row_history_settings"],
    ),
    (
        "`[master]` settings that need a restart (`state_dir`, `control_socket`, `worker_socket`, `transfer_dir`, `keepalive`, `max_handshake_frame`, `max_frame`, `max_log_size`, `max_clients`, `allowed_uids`, `allowed_gid`, `max_upload_size`, `max_artifact_bytes_per_build`, `max_artifacts_per_build`, `min_free_space`, `store`)",
        &[
            "reload::restart_settings_wait_and_the_rest_applies",
            "docs_agree::reload_row_master_settings",
        ],
    ),
    (
        "poller unchanged",
        &["git::the_poller_sees_commits_force_pushes_branches_and_tags"],
    ),
    (
        "poller changed (`branches`, `tags`, `interval`, `timeout`, `repository`)",
        &["git::pollers_and_force_properties_follow_a_reload"],
    ),
    (
        "poller added / removed",
        &["git::pollers_and_force_properties_follow_a_reload"],
    ),
    (
        "git step or `force_properties` changed",
        &[
            "git::pollers_and_force_properties_follow_a_reload",
            "reload::changed_builder_running_keeps_v1_queued_get_v2",
        ],
    ),
    (
        "`[[lock]]` `max` lowered, lock removed, scope changed; builder `locks`, `worker_tags`, `worker_choice`, `max_running`; worker `tags`",
        &["locks::a_reload_lowering_max_keeps_the_holders_and_blocks_new_claims"],
    ),
];

/// The rows of the reload table: (first cell, second cell).
fn reload_table() -> Vec<(String, String)> {
    let doc = repo_file("docs/reload.md");
    let body = section(&doc, "What happens to what");
    table_rows(&body, "| change | what happens |")
        .into_iter()
        .map(|row| {
            assert_eq!(row.len(), 2, "a reload row of two cells: {row:?}");
            (row[0].clone(), row[1].clone())
        })
        .collect()
}

/// True when tests/e2e/<module>.rs has `#[test]` on `fn name()`.
fn e2e_test_exists(path: &str) -> bool {
    let Some((module, name)) = path.split_once("::") else {
        return false;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    // A module is `<module>.rs` or `<module>/mod.rs`.
    let Ok(source) = fs::read_to_string(dir.join(format!("{module}.rs")))
        .or_else(|_| fs::read_to_string(dir.join(module).join("mod.rs")))
    else {
        return false;
    };
    let main = repo_file("tests/e2e/main.rs");
    let lines: Vec<&str> = source.lines().collect();
    main.contains(&format!("mod {module};"))
        && lines
            .windows(2)
            .any(|w| w[0].trim() == "#[test]" && w[1].trim().starts_with(&format!("fn {name}()")))
}

/// Both ways: every row of the table has tests, every mapping names a row
/// of the table, and every test named exists (a `#[test]` of a module of
/// the e2e suite). The tests a row of the doc cites itself must exist too.
#[test]
fn every_reload_row_has_a_scenario() {
    let rows = reload_table();
    let mut problems = Vec::new();
    for (first, rest) in &rows {
        match RELOAD_ROWS.iter().find(|(key, _)| key == first) {
            None => problems.push(format!(
                "docs/reload.md row {first:?} has no scenario in RELOAD_ROWS"
            )),
            Some((_, [])) => problems.push(format!("row {first:?} maps to no test")),
            Some(_) => {}
        }
        // A row citing `module::test` cites one that exists.
        for cited in rest.split('`').skip(1).step_by(2) {
            if cited.contains("::") && !cited.contains(' ') && !e2e_test_exists(cited) {
                problems.push(format!("row {first:?} cites `{cited}`, no such e2e test"));
            }
        }
    }
    for (key, tests) in RELOAD_ROWS {
        if !rows.iter().any(|(first, _)| first == key) {
            problems.push(format!(
                "RELOAD_ROWS maps {key:?}, which docs/reload.md no longer has"
            ));
        }
        for test in *tests {
            if !e2e_test_exists(test) {
                problems.push(format!("RELOAD_ROWS: no e2e test `{test}` (row {key:?})"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reload.md and RELOAD_ROWS disagree:\n{}",
        problems.join("\n")
    );
}

/// A builder for the reload scenarios below.
const ONE_LOCAL: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "b"
workers = ["local-1"]
  [[builder.step]]
  name = "s"
  shell = "echo b"
"#;

/// [`ONE_LOCAL`] with a remote worker instead (a store on PostgreSQL
/// refuses local ones).
const ONE_REMOTE: &str = r#"
[[worker]]
name = "remote-1"
secret = "a-secret-of-enough-length"

[[builder]]
name = "b"
workers = ["remote-1"]
  [[builder.step]]
  name = "s"
  shell = "echo b"
"#;

/// Row "worker added": a worker the config does not have is refused;
/// after a reload that adds it, it connects and authenticates, and runs a
/// build of a builder added with it.
#[test]
fn reload_row_worker_added() {
    let m = Master::start_with_files(ONE_LOCAL, &[("w2.secret", SECRET)]);
    let secret = m.path().join("w2.secret");
    let early = start_worker(&m, "w2", &secret);
    let out = early.finish(WAIT);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("w2"),
        "the refusal names the worker: {}",
        describe(&out)
    );
    m.write_config(&format!(
        "{ONE_LOCAL}\n[[worker]]\nname = \"w2\"\nsecret_file = \"@DIR@/w2.secret\"\n\n[[builder]]\nname = \"r\"\nworkers = [\"w2\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"echo remote\"\n"
    ));
    let report = m.bbctl_json(&["reload"]);
    assert_eq!(report["workers_added"], json!(["w2"]), "{report}");
    let _worker = start_worker(&m, "w2", &secret);
    let out = m.bbctl_code(&["force-build", "r", "--follow"], 0);
    assert_eq!(text(&out.stdout), "remote\n");
}

/// Row "`keep_builds`, `keep_logs`": the reload deletes nothing, a builder
/// whose only change is one of them is not in `builders_changed`, and the
/// next prune follows the new values.
#[test]
fn reload_row_history_settings() {
    let m = Master::start(ONE_LOCAL);
    for _ in 0..3 {
        m.bbctl_code(&["force-build", "b", "--wait"], 0);
    }
    let builds = || m.bbctl_json(&["builds"]).as_array().unwrap().len();
    assert_eq!(builds(), 3);
    m.write_config(&format!(
        "[master]\nkeep_logs = \"30d\"\n{}",
        ONE_LOCAL.replace("name = \"b\"\n", "name = \"b\"\nkeep_builds = 1\n")
    ));
    let report = m.bbctl_json(&["reload"]);
    assert_eq!(report["builders_changed"], json!([]), "{report}");
    assert_eq!(builds(), 3, "the reload itself deletes nothing");
    let pruned = m.bbctl_json(&["prune"]);
    assert_eq!(
        pruned["builds_deleted"].as_array().map(Vec::len),
        Some(2),
        "{pruned}"
    );
    assert_eq!(builds(), 1);
}

/// A value different from the default for every `[master]` key of the
/// defaults table (src/config/defaults.rs), to change it by a reload.
fn changed_master_value(key: &str) -> Option<&'static str> {
    Some(match key {
        "state_dir" => "\"@DIR@/other-state\"",
        "control_socket" => "\"@DIR@/other-control.sock\"",
        "worker_socket" => "\"@DIR@/other-worker.sock\"",
        "transfer_dir" => "\"@DIR@/other-files\"",
        "worker_grace" => "\"9s\"",
        "keepalive" => "\"7s\"",
        "max_retries" => "2",
        "max_handshake_frame" => "\"32KiB\"",
        "max_frame" => "\"8MiB\"",
        "max_log_size" => "\"1MiB\"",
        "max_queued" => "99",
        "max_clients" => "17",
        "allowed_uids" => "[4242]",
        "allowed_gid" => "4242",
        "keep_builds" => "5",
        "keep_logs" => "\"30d\"",
        "max_upload_size" => "\"2MiB\"",
        "max_artifact_bytes_per_build" => "\"20MiB\"",
        "max_artifacts_per_build" => "50",
        "min_free_space" => "\"512MiB\"",
        // Not connected to by a dry run: only compared.
        "store" => "{ postgres = \"host=db.example dbname=bb\", shared_dir = \"@DIR@/shared\" }",
        "deadline_grace" => "\"45s\"",
        "worker_listen" => "[\"127.0.0.1:0\"]",
        "allow_plaintext" => "true",
        // A matching pair kept beside the config error corpus.
        "tls_key" => concat!(
            "\"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/config-corpus/tls-key.pem.txt\"\ntls_cert = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/config-corpus/tls-cert.pem.txt\""
        ),
        "tls_cert" => concat!(
            "\"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/config-corpus/tls-cert.pem.txt\"\ntls_key = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/config-corpus/tls-key.pem.txt\""
        ),
        "client_ca" => concat!(
            "\"",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/config-corpus/tls-cert.pem.txt\""
        ),
        _ => return None,
    })
}

/// The backticked words of `text` (but `[master]`).
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| *w != "[master]")
        .map(str::to_string)
        .collect()
}

/// Rows "`[master]` settings that need a restart" and "`keep_builds`,
/// `keep_logs`": every `[master]` key of the defaults table is placed by
/// the reload table (needs a restart, takes effect at once, or a history
/// setting), and a dry-run reload changing it alone lists exactly the
/// restart ones under `needs_restart` as `master.<key>`.
#[test]
fn reload_row_master_settings() {
    let rows = reload_table();
    let row = |prefix: &str| {
        rows.iter()
            .find(|(first, _)| first.starts_with(prefix))
            .unwrap_or_else(|| panic!("docs/reload.md has no row {prefix:?}"))
            .clone()
    };
    let (restart_cell, restart_rest) = row("`[master]` settings that need a restart");
    let restart = backticked(&restart_cell);
    let at_once_text = restart_rest
        .split_once("everything else applies")
        .map(|(_, r)| r.split(')').next().unwrap_or_default())
        .expect("the restart row says what applies at once");
    let at_once = backticked(at_once_text);
    let history = backticked(&row("`keep_builds`").0);
    // `[master]`'s own keys; those of a table inside it (`store.lease`)
    // go with the table.
    let master_keys: Vec<&str> = bbctl::config::defaults::DEFAULTS
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("master."))
        .filter(|k| !k.contains('.'))
        .collect();
    assert!(master_keys.len() >= 10, "{master_keys:?}");
    let mut problems = Vec::new();
    for key in &master_keys {
        let placed = [&restart, &at_once, &history]
            .iter()
            .filter(|list| list.iter().any(|k| k == key))
            .count();
        if placed != 1 {
            problems.push(format!(
                "`master.{key}` is in {placed} of the reload table's lists (restart, at once, history); it must be in one"
            ));
        }
    }
    for key in restart.iter().chain(&at_once).chain(&history) {
        if !master_keys.contains(&key.as_str()) {
            problems.push(format!(
                "docs/reload.md names `{key}`, which is no [master] key of the defaults table"
            ));
        }
    }

    let m = Master::start(ONE_LOCAL);
    for key in &master_keys {
        let Some(value) = changed_master_value(key) else {
            problems.push(format!(
                "no changed value for `master.{key}` in changed_master_value"
            ));
            continue;
        };
        // PostgreSQL rules out local workers: that config has a remote one.
        let workers = if *key == "store" {
            ONE_REMOTE
        } else {
            ONE_LOCAL
        };
        m.write_config(&format!("[master]\n{key} = {value}\n{workers}"));
        let report = m.bbctl_json(&["reload", "--dry-run"]);
        let listed = report["needs_restart"].clone();
        let want = if restart.iter().any(|k| k == key) {
            json!([format!("master.{key}")])
        } else {
            json!([])
        };
        if listed != want {
            problems.push(format!(
                "changing `master.{key}`: needs_restart is {listed}, the table says {want}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reload.md and the master disagree on [master] settings:\n{}",
        problems.join("\n")
    );
}
