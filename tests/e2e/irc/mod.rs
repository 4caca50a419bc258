//! The IRC bot against a real IRC server (ngircd, started per test) and,
//! for what ngircd cannot do (SASL, services accounts, a flood kill), a
//! scripted server. docs/irc.md says which covers what.

mod fake;
mod server;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Master, wait_until};
use fake::Fake;
use server::{Client, Ngircd};

/// Builders `pass` and `fail` on one local worker, a scheduler building
/// `fail` for changes on `main`, and `[irc]` as given.
fn config(irc: &str) -> String {
    format!(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "pass"
workers = ["local-1"]

  [[builder.step]]
  name = "ok"
  shell = "echo fine"

[[builder]]
name = "fail"
workers = ["local-1"]

  [[builder.step]]
  name = "compile"
  shell = "echo nope; exit 3"

[[scheduler]]
name = "on-main"
kind = "branch"
builders = ["fail"]
branches = ["main"]
tree_stable = "0s"

{irc}
"#
    )
}

fn plain_irc(port: u16, extra: &str) -> String {
    format!(
        r##"[irc]
server = "127.0.0.1"
port = {port}
tls = false
nick = "bbot"
channels = [{{ name = "#builds", notify = ["failure", "fixed"] }}]
authz = {{ force = ["alice"], stop = ["alice"] }}
{extra}
"##
    )
}

const LONG: Duration = Duration::from_secs(20);

/// A PRIVMSG from the bot to `target` containing `text`.
fn from_bot(line: &str, target: &str, text: &str) -> bool {
    line.starts_with(":bbot!")
        && line.contains(&format!("PRIVMSG {target} :"))
        && line.contains(text)
}

/// The bot joins, answers `status`, refuses `force` from someone without
/// a services account (ngircd has none), announces a failed build; a
/// reload that leaves `[irc]` unchanged makes no new connection, one that
/// adds a channel joins it on the same connection.
#[test]
fn irc_bot_joins_answers_refuses_and_announces() {
    let Some(server) = Ngircd::start() else {
        return;
    };
    let mut alice = Client::connect(server.port, "alice");
    alice.send("JOIN #builds");
    alice.expect("alice in #builds", LONG, |l| {
        l.starts_with(":alice!") && l.contains("JOIN")
    });
    let m = Master::start(&config(&plain_irc(server.port, "")));
    alice.expect("the bot joining #builds", LONG, |l| {
        l.starts_with(":bbot!") && l.contains("JOIN")
    });

    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["irc"]["state"], "connected", "{status}");
    assert_eq!(status["irc"]["nick"], "bbot", "{status}");
    assert_eq!(status["irc"]["channels"][0], "#builds", "{status}");
    assert!(
        m.bbctl_ok(&["status"])
            .contains("irc: connected to 127.0.0.1:")
    );

    alice.send("PRIVMSG #builds :!status");
    alice.expect("an answer to status", LONG, |l| {
        from_bot(l, "#builds", "alice: 2 builders")
    });
    alice.send("PRIVMSG #builds :bbot: list builders");
    alice.expect("the builders", LONG, |l| {
        from_bot(l, "#builds", "pass (idle)")
    });

    alice.send("PRIVMSG #builds :!force pass please");
    alice.expect("force refused", LONG, |l| {
        from_bot(l, "#builds", "force needs a services account")
    });
    let builds = m.bbctl_json(&["builds"]);
    assert_eq!(
        builds.as_array().unwrap().len(),
        0,
        "nothing was built: {builds}"
    );

    m.bbctl(&["force-build", "fail", "--wait"]);
    alice.expect("the failure announced", LONG, |l| {
        from_bot(l, "#builds", "fail #1 failure") && l.contains("step `compile` failed")
    });

    // A build of a change names its revision (12 characters) and branch.
    m.bbctl_ok(&[
        "sendchange",
        "--repository",
        "https://git.example/app.git",
        "--branch",
        "main",
        "--revision",
        "0123456789abcdef0123456789abcdef01234567",
        "--file",
        "src/lib.rs",
    ]);
    let line = alice.expect("the change's failure announced", LONG, |l| {
        from_bot(l, "#builds", "fail #2 failure")
    });
    assert!(
        line.contains(", revision 0123456789ab on main; step `compile` failed"),
        "{line}"
    );

    // A reload with [irc] unchanged: no new connection reaches the server.
    let before = alice.connections_received();
    m.bbctl_ok(&["reload"]);
    let quiet = alice.lines_for(Duration::from_secs(2));
    assert!(
        !quiet.iter().any(|l| l.starts_with(":bbot!")),
        "the bot did something on an unchanged reload: {quiet:?}"
    );
    assert_eq!(alice.connections_received(), before, "a reload reconnected");

    // A new channel: joined on the same connection.
    alice.send("JOIN #more");
    alice.expect("alice in #more", LONG, |l| {
        l.starts_with(":alice!") && l.contains("#more")
    });
    m.write_config(&config(&plain_irc(server.port, "").replace(
        r##"channels = [{ name = "#builds", notify = ["failure", "fixed"] }]"##,
        r##"channels = [{ name = "#builds", notify = ["failure", "fixed"] }, { name = "#more" }]"##,
    )));
    m.bbctl_ok(&["reload"]);
    alice.expect("the bot joining #more", LONG, |l| {
        l.starts_with(":bbot!") && l.contains("JOIN") && l.contains("#more")
    });
    assert_eq!(
        alice.connections_received(),
        before,
        "adding a channel reconnected"
    );
}

/// `kill -STOP` the server: the bot notices by its PONG deadline, then
/// reconnects once the server runs again; after a kill and a restart on
/// the same port, it reconnects with backoff and rejoins.
#[test]
fn irc_bot_notices_a_stalled_server_and_comes_back() {
    let Some(mut server) = Ngircd::start() else {
        return;
    };
    let irc = plain_irc(server.port, "keepalive = \"1s\"\npong_timeout = \"2s\"");
    let mut watcher = Client::connect(server.port, "watcher");
    watcher.send("JOIN #builds");
    watcher.expect("the watcher in #builds", LONG, |l| {
        l.starts_with(":watcher!") && l.contains("JOIN")
    });
    let m = Master::start(&config(&irc));
    watcher.expect("the bot joining", LONG, |l| {
        l.starts_with(":bbot!") && l.contains("JOIN")
    });

    server.signal(Signal::SIGSTOP);
    wait_until(
        "the bot to notice the missing PONG",
        Duration::from_secs(15),
        || m.stderr().contains("no PONG within 2 s"),
    );
    let status = m.bbctl_json(&["status"]);
    assert!(
        status["irc"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no PONG within 2 s")),
        "{status}"
    );
    server.signal(Signal::SIGCONT);
    watcher.expect("the bot back after SIGCONT", Duration::from_secs(40), |l| {
        l.starts_with(":bbot!") && l.contains("JOIN")
    });

    server.restart();
    // The bot may be back in #builds before or after the watcher: ask
    // the server who is there (NAMES) until the bot is.
    let mut watcher = Client::connect(server.port, "watcher");
    watcher.send("JOIN #builds");
    watcher.expect("the watcher in #builds again", LONG, |l| {
        l.starts_with(":watcher!") && l.contains("JOIN")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        watcher.send("NAMES #builds");
        let names = watcher.expect("NAMES", LONG, |l| l.contains(" 353 "));
        if names.split(':').next_back().is_some_and(|n| {
            n.split_whitespace()
                .any(|nick| nick.trim_start_matches(['@', '+']) == "bbot")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bot did not come back to #builds within 40 s after a restart:\n{}",
            m.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(m.stderr().contains("connecting again in"), "{}", m.stderr());
}

/// Writes `secret` into the master's dir as an owner-only file.
fn secret_file(dir: &std::path::Path, name: &str, secret: &str) {
    let path = dir.join(name);
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn sasl_irc(port: u16) -> String {
    format!(
        r##"[irc]
server = "127.0.0.1"
port = {port}
tls = false
nick = "bbot"
sasl = {{ mechanism = "PLAIN", account = "botacct", password_file = "sasl.pw" }}
channels = [{{ name = "#builds" }}]
authz = {{ force = ["alice"] }}
"##
    )
}

/// Registration with SASL up to the welcome, the way the scripted server
/// checks it: CAP LS 302 first, then REQ, AUTHENTICATE PLAIN, the
/// credentials, and CAP END only after 903.
fn sasl_registration(conn: &mut fake::Conn, password: &str, result: &str) {
    assert_eq!(conn.next(LONG), "CAP LS 302", "CAP LS 302 comes first");
    conn.until("USER ", LONG);
    conn.send(":fake CAP * LS :sasl=PLAIN,EXTERNAL account-tag");
    assert_eq!(conn.next(LONG), "CAP REQ :sasl account-tag");
    conn.send(":fake CAP bbot ACK :sasl account-tag");
    assert_eq!(conn.next(LONG), "AUTHENTICATE PLAIN");
    conn.send("AUTHENTICATE +");
    // 2 x 400 bytes of base64 and a lone `+`.
    let mut payload = String::new();
    loop {
        let line = conn.next(LONG);
        let chunk = line
            .strip_prefix("AUTHENTICATE ")
            .expect("AUTHENTICATE lines");
        if chunk == "+" {
            break;
        }
        assert!(chunk.len() <= 400, "{chunk}");
        payload.push_str(chunk);
        if chunk.len() < 400 {
            break;
        }
    }
    let expected = base64(format!("botacct\0botacct\0{password}").as_bytes());
    assert_eq!(payload, expected);
    let quiet = conn.lines_for(Duration::from_millis(300));
    assert!(
        quiet.is_empty(),
        "nothing before the SASL result: {quiet:?}"
    );
    conn.send(result);
}

/// SASL PLAIN against the scripted server, with a password that makes
/// exactly 800 bytes of base64 (two chunks and a `+`); then rights by
/// services account: `force` from account alice (whatever the nick) is
/// obeyed, from account bob (with nick alice) refused.
#[test]
fn irc_bot_logs_in_with_sasl_and_authorizes_by_account() {
    let fake = Fake::start();
    // 600 raw bytes = 800 base64: 7 + 1 + 7 + 1 + 584.
    let password = "p".repeat(584);
    let m = Master::start(&config(""));
    secret_file(m.path(), "sasl.pw", &password);
    m.write_config(&config(&sasl_irc(fake.port)));
    m.bbctl_ok(&["reload"]);
    let mut conn = fake.accept(LONG);
    sasl_registration(
        &mut conn,
        &password,
        ":fake 903 bbot :SASL authentication successful",
    );
    assert_eq!(conn.next(LONG), "CAP END");
    conn.send(":fake 001 bbot :Welcome");
    assert_eq!(conn.until("JOIN", LONG), "JOIN #builds");
    conn.send(":bbot!b@h JOIN #builds");

    conn.send("@account=alice :mallory!m@h PRIVMSG #builds :!force pass from irc");
    let answer = conn.until("PRIVMSG #builds", LONG);
    assert!(
        answer.contains("mallory: request r1 queued for pass"),
        "{answer}"
    );
    conn.send("@account=bob :alice!a@h PRIVMSG #builds :!force pass");
    let answer = conn.until("PRIVMSG #builds", LONG);
    assert!(answer.contains("account bob may not force"), "{answer}");
    wait_until("the forced build", LONG, || {
        m.bbctl_json(&["builds"])
            .as_array()
            .is_some_and(|b| b.len() == 1)
    });
}

/// A refused SASL login is loud (an error in the log) and never ends in
/// `CAP END`; a server's "Excess Flood" kill is followed by a reconnect.
#[test]
fn irc_bot_fails_loudly_when_sasl_is_refused_and_comes_back_after_a_flood_kill() {
    let fake = Fake::start();
    let m = Master::start(&config(""));
    secret_file(m.path(), "sasl.pw", "wrong");
    m.write_config(&config(&sasl_irc(fake.port)));
    m.bbctl_ok(&["reload"]);
    let mut conn = fake.accept(LONG);
    sasl_registration(
        &mut conn,
        "wrong",
        ":fake 904 bbot :SASL authentication failed",
    );
    let rest = conn.lines_for(Duration::from_secs(1));
    assert!(
        !rest.iter().any(|l| l == "CAP END"),
        "no CAP END after a failed, required SASL: {rest:?}"
    );
    wait_until("the failure in the log", LONG, || {
        m.stderr().contains("SASL login failed: 904")
    });
    conn.close();

    // The next try succeeds; then the server kills the bot for flooding.
    let mut conn = fake.accept(LONG);
    sasl_registration(&mut conn, "wrong", ":fake 903 bbot :ok");
    conn.until("CAP END", LONG);
    conn.send(":fake 001 bbot :Welcome");
    conn.until("JOIN #builds", LONG);
    conn.send("ERROR :Closing Link: bbot[127.0.0.1] (Excess Flood)");
    conn.close();
    let mut conn = fake.accept(LONG);
    assert_eq!(conn.next(LONG), "CAP LS 302");
    wait_until("the kill in the log", LONG, || {
        m.stderr().contains("Excess Flood")
    });
}

/// Standard base64, as SASL PLAIN sends it.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// NickServ against the scripted server: the nick is taken (433), so the
/// bot takes its alternate; after the welcome it sends IDENTIFY and joins
/// only once NickServ confirms.
#[test]
fn irc_bot_identifies_to_nickserv_before_joining_and_takes_an_alternate_nick() {
    let fake = Fake::start();
    let m = Master::start(&config(""));
    secret_file(m.path(), "ns.pw", "nspass");
    m.write_config(&config(&format!(
        r##"[irc]
server = "127.0.0.1"
port = {}
tls = false
nick = "bbot"
alt_nicks = ["bbot_"]
nickserv_password_file = "ns.pw"
channels = [{{ name = "#builds" }}]
"##,
        fake.port
    )));
    m.bbctl_ok(&["reload"]);
    let mut conn = fake.accept(LONG);
    assert_eq!(conn.next(LONG), "CAP LS 302");
    assert_eq!(conn.next(LONG), "NICK bbot");
    conn.until("USER ", LONG);
    conn.send(":fake 433 * bbot :Nickname is already in use");
    assert_eq!(conn.next(LONG), "NICK bbot_");
    conn.send(":fake CAP * LS :multi-prefix");
    assert_eq!(conn.next(LONG), "CAP END");
    conn.send(":fake 001 bbot_ :Welcome");
    assert_eq!(conn.next(LONG), "PRIVMSG NickServ :IDENTIFY bbot nspass");
    let early = conn.lines_for(Duration::from_millis(500));
    assert!(
        !early.iter().any(|l| l.starts_with("JOIN")),
        "no JOIN before NickServ confirms: {early:?}"
    );
    conn.send(":NickServ!NickServ@services NOTICE bbot_ :You are now identified for bbot.");
    assert_eq!(conn.until("JOIN", LONG), "JOIN #builds");
    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["irc"]["nick"], "bbot_", "{status}");
}

/// `[irc]` for ngircd's TLS port: the server's certificate checked by the
/// test CA, or (`pin`) by a pinned fingerprint.
fn tls_irc(port: u16, ca: &std::path::Path, pin: Option<&str>) -> String {
    let trust = match pin {
        Some(pin) => format!("tls_fingerprint = \"{pin}\""),
        None => format!("tls_ca = \"{}\"", ca.display()),
    };
    format!(
        r##"[irc]
server = "127.0.0.1"
port = {port}
tls = true
{trust}
nick = "bbot"
channels = [{{ name = "#builds", notify = ["failure"] }}]
"##
    )
}

/// TLS against a real server: ngircd's TLS port (GnuTLS, TLS 1.3) with a
/// certificate signed by the test CA. With `tls_ca` the bot connects,
/// joins and announces; pinned to another certificate's fingerprint it is
/// refused, and `bbctl status` and the master's log say so with both
/// fingerprints.
#[test]
fn irc_bot_speaks_tls_to_a_real_server_and_refuses_a_wrong_pin() {
    let dir = crate::harness::temp_dir();
    let certs = crate::harness::Certs::make(dir.path());
    let Some(server) = Ngircd::start_tls(&certs.server.cert, &certs.server.key) else {
        return;
    };
    let tls_port = server.tls_port.expect("a TLS port");
    let mut alice = Client::connect(server.port, "alice");
    alice.send("JOIN #builds");
    alice.expect("alice in #builds", LONG, |l| {
        l.starts_with(":alice!") && l.contains("JOIN")
    });
    let m = Master::start(&config(&tls_irc(tls_port, &certs.ca_cert, None)));
    alice.expect("the bot joining #builds over TLS", LONG, |l| {
        l.starts_with(":bbot!") && l.contains("JOIN")
    });
    assert!(
        server.log().contains("initialized TLS1.3"),
        "ngircd saw no TLS 1.3 connection:\n{}",
        server.log()
    );
    let status = m.bbctl_ok(&["status"]);
    assert!(
        status.contains(&format!("irc: connected to 127.0.0.1:{tls_port} as bbot")),
        "{status}"
    );
    m.bbctl(&["force-build", "fail", "--wait"]);
    alice.expect("the failure announced over TLS", LONG, |l| {
        from_bot(l, "#builds", "fail #1 failure")
    });

    // Pinned to another certificate: refused, in plain words.
    let wrong = certs.foreign.fingerprint.clone();
    m.write_config(&config(&tls_irc(tls_port, &certs.ca_cert, Some(&wrong))));
    m.bbctl_ok(&["reload"]);
    let words = format!(
        "the server's certificate fingerprint is {}, not the pinned {wrong}",
        certs.server.fingerprint
    );
    wait_until("the refusal in the master's log", LONG, || {
        m.stderr().contains(&words)
    });
    let status = m.bbctl_ok(&["status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("irc:"))
        .unwrap_or_else(|| panic!("no irc line in:\n{status}"));
    assert!(line.contains(&words), "{line}");
    assert!(line.contains("tls_fingerprint"), "{line}");
}

/// A server that offers SASL EXTERNAL only: the bot sends no PLAIN
/// attempt and no `CAP END` (its login is required), quits saying why,
/// and the reason is in the log and in `bbctl status`.
#[test]
fn irc_bot_refuses_a_server_that_offers_only_sasl_external() {
    let fake = Fake::start();
    let m = Master::start(&config(""));
    secret_file(m.path(), "sasl.pw", "secret");
    m.write_config(&config(&sasl_irc(fake.port)));
    m.bbctl_ok(&["reload"]);
    let mut conn = fake.accept(LONG);
    assert_eq!(conn.next(LONG), "CAP LS 302");
    conn.until("USER ", LONG);
    conn.send(":fake CAP * LS :sasl=EXTERNAL account-tag");
    let why = "the server offers SASL mechanisms EXTERNAL only, not PLAIN";
    let quit = conn.until("QUIT", LONG);
    assert!(quit.contains(why), "{quit}");
    let before: Vec<&String> = conn
        .seen
        .iter()
        .filter(|l| l.starts_with("CAP REQ") || l.starts_with("AUTHENTICATE") || *l == "CAP END")
        .collect();
    assert!(before.is_empty(), "no SASL attempt, no CAP END: {before:?}");
    wait_until("the reason in the log", LONG, || m.stderr().contains(why));
    wait_until("the reason in status", LONG, || {
        m.bbctl_json(&["status"])["irc"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(why))
    });
}
