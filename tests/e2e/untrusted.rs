//! Untrusted build code: a step must never hold the master's authority or
//! see what its worker (or the master) keeps in its environment.

use crate::harness::{Master, text};

const ENV_CONFIG: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "env"
workers = ["local-1"]
pass_env = ["BB_TEST_OPTED_IN"]
env = { FROM_CONFIG = "yes" }

  [[builder.step]]
  name = "env"
  command = ["env"]
"#;

/// A step of a local worker sees neither the master's secrets nor the
/// worker's, only the allow-list, what `pass_env` opts in, the configured
/// `env` and the `BB_*` variables.
#[test]
fn steps_start_from_a_clean_environment() {
    let m = Master::start_with_env(
        ENV_CONFIG,
        &[
            ("MASTER_ONLY_TOKEN", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
            ("BB_TEST_OPTED_IN", "z"),
            ("LANG", "C.UTF-8"),
        ],
    );
    let out = m.bbctl_code(&["force-build", "env", "--follow"], 0);
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(!names.contains(&"MASTER_ONLY_TOKEN"), "{stdout}");
    assert!(!names.contains(&"AWS_SECRET_ACCESS_KEY"), "{stdout}");
    for wanted in [
        "PATH",
        "LANG",
        "FROM_CONFIG",
        "BB_TEST_OPTED_IN",
        "BB_BUILDER",
        "BB_BUILD_ID",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing:\n{stdout}");
    }
    // Nor can a step read them from its worker's /proc/<pid>/environ.
    let pid = std::fs::read_to_string(m.state_dir().join("local-workers/local-1.pid")).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    assert!(
        !has(&environ, b"MASTER_ONLY_TOKEN") && !has(&environ, b"AWS_SECRET_ACCESS_KEY"),
        "the local worker inherited the master's secrets"
    );
    assert!(
        has(&environ, b"BB_TEST_OPTED_IN=z"),
        "pass_env did not reach the worker"
    );
    for name in &names {
        let allowed = bbctl::worker::INHERITED.iter().any(|a| {
            a.strip_suffix('*')
                .map_or(a == name, |p| name.starts_with(p))
        });
        assert!(
            allowed || name.starts_with("BB_") || *name == "FROM_CONFIG",
            "{name} reached the step:\n{stdout}"
        );
    }
}

/// A symlink planted at the lock file's name is never followed: the master
/// refuses to start and the link's target is untouched.
#[test]
fn a_symlink_at_the_lock_file_is_refused() {
    let dir = crate::harness::temp_dir();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&precious, state.join("bbmaster.lock")).unwrap();
    crate::durability::master_refuses(dir.path(), &state, &["bbmaster.lock"]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}

/// A state dir owned by another user is refused (only testable as root,
/// who can give a directory away).
#[test]
fn a_state_dir_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown a directory to another user");
        return;
    }
    let dir = crate::harness::temp_dir();
    let state = dir.path().join("s");
    std::fs::create_dir(&state).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&state, Some(nobody), None).unwrap();
    crate::durability::master_refuses(dir.path(), &state, &["belongs to uid 65534"]);
    assert!(
        !state.join("master.db").exists(),
        "the master wrote into a foreign state dir"
    );
}

const STEP_ATTACK: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "evil"
workers = ["local-1"]

  [[builder.step]]
  name = "attack"
  shell = """
'@BBCTL@' --socket '@SOCK@' force-build evil; echo direct=$?
(setsid sh -c "sleep 0.3; '@BBCTL@' --socket '@SOCK@' force-build evil 2>'@DIR@/escaped.err'; echo \\$? > '@DIR@/escaped.tmp'; mv '@DIR@/escaped.tmp' '@DIR@/escaped.code'" &)
# Give it time to leave the step's process group, which dies with the step.
sleep 0.5
echo spawned
"""
"#;

/// A step (of a local worker, same uid as the master) cannot use the
/// control socket: not directly, and not from a process it detached with
/// `setsid` and a double fork, which outlives the step itself.
#[test]
fn a_step_cannot_use_the_control_socket() {
    let m = Master::start(
        &STEP_ATTACK
            .replace("@BBCTL@", crate::harness::BBCTL)
            .replace("@SOCK@", "@DIR@/s/control.sock"),
    );
    assert_eq!(m.control_socket(), m.path().join("s").join("control.sock"));
    let out = m.bbctl_code(&["force-build", "evil", "--follow"], 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("direct=3"), "{stdout}");
    assert!(
        stdout.contains("build steps may not use the control socket"),
        "{stdout}"
    );
    // The detached process outlives the step, then tries again.
    let code_file = m.path().join("escaped.code");
    crate::harness::wait_until(
        "the detached process to finish",
        std::time::Duration::from_secs(20),
        || code_file.exists(),
    );
    let code = std::fs::read_to_string(&code_file).unwrap();
    let err = std::fs::read_to_string(m.path().join("escaped.err")).unwrap();
    assert_eq!(code.trim(), "3", "{err}");
    assert!(
        err.contains("build steps may not use the control socket"),
        "{err}"
    );
    // The detached process was adopted by the worker (its subreaper), and
    // reaped there when it ended: no zombie is left.
    let pid_file = m.state_dir().join("local-workers").join("local-1.pid");
    let wpid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    crate::harness::wait_until(
        "the worker to reap what the step left",
        std::time::Duration::from_secs(10),
        || zombie_children(wpid).is_empty(),
    );
    // Nothing the step asked for happened.
    let builds = m.bbctl_json(&["builds"]);
    assert_eq!(builds.as_array().unwrap().len(), 1, "{builds}");
}

/// Children of `pid` that have exited and were not reaped.
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if crate::harness::process_state(child) == Some('Z') {
                zombies.push(child);
            }
        }
    }
    zombies
}

const NOISY: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "noisy"
workers = ["local-1"]

  [[builder.step]]
  name = "noise"
  shell = "printf '\\033]0;pwned\\007\\033]52;c;SGVsbG8=\\007\\033[2J\\033[31mred\\033[0m\\n'"
"#;

/// `cmd` run with its stdout on a pseudo-terminal (`script`), as a person
/// at a terminal would see it.
fn on_a_terminal(m: &Master, args: &[&str]) -> Vec<u8> {
    let mut line = format!(
        "'{}' --socket '{}'",
        crate::harness::BBCTL,
        m.control_socket().display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = crate::harness::command("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let out = crate::harness::run_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(
        crate::harness::code(&out),
        0,
        "{}",
        crate::harness::describe(&out)
    );
    out.stdout
}

fn has(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Step output reaches a terminal with its colours but without its other
/// escape sequences (window title, OSC 52 clipboard, screen clear), which
/// are shown escaped; `--raw` and a pipe get the bytes as written; a
/// reason in a table is escaped wherever it is printed.
#[test]
fn untrusted_text_is_escaped_on_a_terminal() {
    let m = Master::start(NOISY);
    m.bbctl_code(
        &[
            "force-build",
            "noisy",
            "--wait",
            "--reason",
            "evil\x1b]0;x\x07\nforged row",
        ],
        0,
    );
    let shown = on_a_terminal(&m, &["log", "1"]);
    assert!(has(&shown, b"\\x1b]0;pwned\\x07"), "{shown:?}");
    assert!(has(&shown, b"\\x1b]52;c;SGVsbG8=\\x07"), "{shown:?}");
    assert!(has(&shown, b"\\x1b[2J"), "{shown:?}");
    assert!(has(&shown, b"\x1b[31mred\x1b[0m"), "{shown:?}");
    assert!(
        !has(&shown, b"\x1b]"),
        "an OSC sequence got through: {shown:?}"
    );
    assert!(
        !has(&shown, b"\x1b[2J"),
        "a screen clear got through: {shown:?}"
    );

    let raw = on_a_terminal(&m, &["--raw", "log", "1"]);
    assert!(has(&raw, b"\x1b]0;pwned\x07"), "{raw:?}");
    let piped = m.bbctl_code(&["log", "1"], 0).stdout;
    assert!(has(&piped, b"\x1b]52;c;SGVsbG8=\x07\x1b[2J"), "{piped:?}");

    {
        let args = ["build", "1"];
        let out = m.bbctl_code(&args, 0).stdout;
        assert!(!out.contains(&0x1b), "{args:?}: {}", text(&out));
        assert!(
            has(&out, b"evil\\x1b]0;x\\x07\\nforged row"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(
            !text(&out).lines().any(|l| l.starts_with("forged row")),
            "{args:?}: a newline in the reason forged a line: {}",
            text(&out)
        );
    }
}

const SEPARATE_USER: &str = r#"
[master]
worker_socket = "@DIR@/worker.sock"

[[worker]]
name = "local-1"
local = true
user = "nobody"

[[builder]]
name = "probe"
workers = ["local-1"]

  [[builder.step]]
  name = "probe"
  shell = """
echo uid=$(id -u) home=$HOME
cat '@DIR@/s/master.db' > /dev/null 2>&1 && echo READ-DB || echo no-db
ls '@DIR@/s' > /dev/null 2>&1 && echo LIST-STATE || echo no-state
cat '@DIR@/s/local-workers/local-1.secret' > /dev/null 2>&1 && echo READ-SECRET || echo no-secret
pwd
"""
"#;

/// A local worker with `user = "nobody"` (master as root) runs its steps
/// as that user, in a work dir outside the state dir, and they can read
/// nothing of the master's: not the database, not the state dir, not the
/// worker's own secret.
#[test]
fn a_local_worker_runs_as_its_own_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a local worker as another user");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    // The worker socket sits outside the owner-only state dir, in the
    // temp dir opened to others.
    let m = Master::start_copied_for_others(SEPARATE_USER);
    let out = m.bbctl_code(&["force-build", "probe", "--wait", "--follow"], 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("uid={}", nobody.uid)),
        "{stdout}\n{}",
        m.stderr()
    );
    for leak in ["READ-DB", "LIST-STATE", "READ-SECRET"] {
        assert!(!stdout.contains(leak), "{leak}:\n{stdout}");
    }
    let work = m.path().join("s.work").join("local-1").join("probe");
    assert!(stdout.contains(&work.display().to_string()), "{stdout}");
    assert!(
        !m.stderr().contains("run as this master's own user"),
        "a separated worker was warned about: {}",
        m.stderr()
    );
    // Outside the state dir, the worker socket is open to the worker's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.path().join("worker.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
}

/// The default setup (a local worker of the master's own user) is warned
/// about at start, in one line that says what it means.
#[test]
fn a_shared_uid_is_warned_about_at_start() {
    let m = Master::start_default();
    let warned: Vec<String> = m
        .stderr()
        .lines()
        .filter(|l| l.contains("run as this master's own user"))
        .map(str::to_string)
        .collect();
    assert_eq!(warned.len(), 1, "{}", m.stderr());
    assert!(warned[0].contains("local-1"), "{}", warned[0]);
    assert!(warned[0].contains("user = "), "{}", warned[0]);
}

const POSE_AS_WORKER: &str = r#"
[[worker]]
name = "local-1"
local = true

[[worker]]
name = "box"
secret_file = "@DIR@/box.secret"

[[builder]]
name = "evil"
workers = ["local-1"]

  [[builder.step]]
  name = "pose"
  shell = "timeout 20 '@BBWORKER@' --master '@DIR@/s/worker.sock' --name box --secret-file '@DIR@/box.secret' --dir '@DIR@/evil-w' --orphan-timeout 3s; echo worker-exit=$?"
"#;

/// A step that holds a worker's secret (a shared uid can read it) still
/// cannot connect as that worker: the worker socket refuses peers that
/// descend from a worker too.
#[test]
fn a_step_cannot_pose_as_a_worker() {
    let m = Master::start_with_files(
        &POSE_AS_WORKER.replace("@BBWORKER@", crate::harness::BBWORKER),
        &[("box.secret", "box-secret-0123456789\n")],
    );
    let out = m.bbctl_code(&["force-build", "evil", "--follow"], 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("build steps may not connect as workers"),
        "{stdout}\n{}",
        m.stderr()
    );
    assert!(!stdout.contains("worker-exit=0"), "{stdout}");
    let s = m.bbctl_json(&["status"]);
    let boxed = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "box")
        .unwrap();
    assert_eq!(boxed["connected"], false, "{s}");
}

const KILL_THE_WORKER: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "evil"
workers = ["local-1"]
retry = false

  [[builder.step]]
  name = "attack"
  shell = """
(setsid sh -c "sleep 1; '@BBCTL@' --socket '@DIR@/s/control.sock' force-build evil 2>'@DIR@/orphan.err'; echo \\$? > '@DIR@/orphan.tmp'; mv '@DIR@/orphan.tmp' '@DIR@/orphan.code'" &)
sleep 0.3
kill -9 $PPID
sleep 30
"""
"#;

/// A step that detaches a process and then kills its own worker does not
/// free that process from the ancestry rule: it is reparented to the
/// master (their subreaper), and still refused the control socket.
#[test]
fn a_step_that_kills_its_worker_leaves_nothing_with_authority() {
    let m = Master::start(&KILL_THE_WORKER.replace("@BBCTL@", crate::harness::BBCTL));
    m.bbctl_code(&["force-build", "evil"], 0);
    let code_file = m.path().join("orphan.code");
    crate::harness::wait_until(
        "the orphaned process to try the control socket",
        std::time::Duration::from_secs(20),
        || code_file.exists(),
    );
    let code = std::fs::read_to_string(&code_file).unwrap();
    let err = std::fs::read_to_string(m.path().join("orphan.err")).unwrap();
    assert_eq!(code.trim(), "3", "{err}\n{}", m.stderr());
    assert!(err.contains("descends from this master"), "{err}");
    let builds = m.bbctl_json(&["builds"]);
    assert_eq!(builds.as_array().unwrap().len(), 1, "{builds}");
}
