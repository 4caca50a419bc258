//! Transcripts of the session, line by line, without I/O.

use super::*;
use crate::daemon::irc::line::base64;

fn id() -> Identity {
    Identity {
        nick: "bb".into(),
        alt_nicks: vec!["bb_".into()],
        ..Identity::default()
    }
}

fn sasl(password: &str, required: bool) -> Option<SaslLogin> {
    Some(SaslLogin {
        account: "bot".into(),
        password: password.into(),
        required,
    })
}

fn chans() -> Vec<Channel> {
    vec![
        Channel {
            name: "#builds".into(),
            key: None,
        },
        Channel {
            name: "#secret".into(),
            key: Some("k3y".into()),
        },
    ]
}

struct T {
    s: Session,
    now: Instant,
}

impl T {
    fn new(id: Identity) -> (T, Vec<Out>) {
        let now = Instant::now();
        let mut s = Session::new(id, Timing::default(), chans(), now);
        let out = s.start(now);
        (T { s, now }, out)
    }
    fn line(&mut self, line: &str) -> Vec<Out> {
        self.s.on_line(&Message::parse(line).unwrap(), self.now)
    }
    fn wait(&mut self, d: Duration) -> Vec<Out> {
        self.now += d;
        self.s.on_tick(self.now)
    }
}

fn sent(out: &[Out]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Out::Send(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

fn closed(out: &[Out]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Out::Close { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn plain_registration_without_caps_joins_with_keys() {
    let (mut t, out) = T::new(Identity {
        server_password: Some("pw".into()),
        ..id()
    });
    assert_eq!(
        sent(&out),
        vec![
            "PASS :pw",
            "CAP LS 302",
            "NICK bb",
            "USER bb 0 * :bbmaster bot"
        ]
    );
    assert_eq!(
        sent(&t.line(":srv CAP * LS :multi-prefix")),
        vec!["CAP END"]
    );
    let out = t.line(":srv 001 bb :Welcome");
    assert!(out.contains(&Out::Ready));
    assert_eq!(sent(&out), vec!["JOIN #builds", "JOIN #secret k3y"]);
    assert_eq!(
        t.line(":bb!u@h JOIN #builds"),
        vec![Out::Joined("#builds".into())]
    );
    assert!(t.s.is_ready());
}

#[test]
fn ping_is_answered_before_registration_ends() {
    let (mut t, _) = T::new(id());
    assert_eq!(sent(&t.line("PING :abc")), vec!["PONG :abc"]);
    // And no PING of ours before registration.
    let out = t.wait(Duration::from_secs(59));
    assert!(sent(&out).is_empty(), "{out:?}");
}

#[test]
fn sasl_plain_waits_for_903_before_cap_end() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("secret", true),
        ..id()
    });
    let out = t.line(":srv CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL");
    assert!(
        sent(&out).is_empty(),
        "multi-line LS: wait for the last line"
    );
    let out = t.line(":srv CAP * LS :account-tag extended-join account-notify");
    assert_eq!(
        sent(&out),
        vec!["CAP REQ :sasl account-tag extended-join account-notify"]
    );
    let out = t.line(":srv CAP * ACK :sasl account-tag extended-join account-notify");
    assert_eq!(sent(&out), vec!["AUTHENTICATE PLAIN"]);
    let out = t.line("AUTHENTICATE +");
    assert_eq!(
        sent(&out),
        vec![format!("AUTHENTICATE {}", base64(b"bot\0bot\0secret"))]
    );
    // 900 alone does not end the negotiation; 903 does.
    let out = t.line(":srv 900 * bb!u@h bot :You are now logged in as bot");
    assert!(sent(&out).is_empty());
    assert_eq!(t.s.logged_in(), Some("bot"));
    assert_eq!(
        sent(&t.line(":srv 903 * :SASL successful")),
        vec!["CAP END"]
    );
    let out = t.line(":srv 001 bb :Welcome");
    assert_eq!(sent(&out), vec!["JOIN #builds", "JOIN #secret k3y"]);
}

#[test]
fn sasl_credentials_are_cut_in_400_byte_chunks_with_a_plus_after_an_exact_multiple() {
    // 3 * (7 + 1 + 7 + 1 + p) / 3 bytes of base64: choose p so that the
    // payload is exactly 400 base64 bytes: raw 300 = 3 + 1 + 3 + 1 + 292.
    let lines = Session::sasl_lines("bot", &"p".repeat(292));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), "AUTHENTICATE ".len() + 400);
    assert_eq!(lines[1], "AUTHENTICATE +");
    // 800 bytes: two chunks and a `+`.
    let lines = Session::sasl_lines("bot", &"p".repeat(592));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], "AUTHENTICATE +");
    // 401..: a full chunk and a short one, no `+`.
    let lines = Session::sasl_lines("bot", &"p".repeat(293));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), "AUTHENTICATE ".len() + 400);
    assert_ne!(lines[1], "AUTHENTICATE +");
    // Short: one line.
    assert_eq!(Session::sasl_lines("bot", "x").len(), 1);
}

#[test]
fn sasl_failure_when_required_fails_loudly_and_never_sends_cap_end() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("wrong", true),
        ..id()
    });
    t.line(":srv CAP * LS :sasl");
    t.line(":srv CAP * ACK :sasl");
    t.line("AUTHENTICATE +");
    let out = t.line(":srv 904 bb :SASL authentication failed");
    assert!(!sent(&out).contains(&"CAP END".to_string()));
    let reason = closed(&out).unwrap();
    assert!(reason.contains("904"), "{reason}");
    assert!(
        out.iter()
            .any(|o| matches!(o, Out::Log(Level::Error, m) if m.contains("SASL login failed")))
    );
}

#[test]
fn sasl_failure_falls_back_to_nickserv_when_not_required() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("wrong", false),
        nickserv_password: Some("nspw".into()),
        ..id()
    });
    t.line(":srv CAP * LS :sasl");
    t.line(":srv CAP * ACK :sasl");
    t.line("AUTHENTICATE +");
    assert_eq!(sent(&t.line(":srv 904 bb :failed")), vec!["CAP END"]);
    let out = t.line(":srv 001 bb :Welcome");
    assert_eq!(sent(&out), vec!["PRIVMSG NickServ :IDENTIFY bot nspw"]);
    assert!(
        !out.contains(&Out::Ready),
        "no JOIN before NickServ confirms"
    );
    let out = t.line(":NickServ!s@services NOTICE bb :You are now identified for bot.");
    assert!(out.contains(&Out::Ready));
    assert_eq!(sent(&out), vec!["JOIN #builds", "JOIN #secret k3y"]);
}

#[test]
fn only_external_offered_is_a_clear_failure() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("x", true),
        ..id()
    });
    let out = t.line(":srv CAP * LS :sasl=EXTERNAL");
    let reason = closed(&out).unwrap();
    assert!(reason.contains("EXTERNAL only, not PLAIN"), "{reason}");
}

#[test]
fn no_sasl_offered_is_a_clear_failure() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("x", true),
        ..id()
    });
    let out = t.line(":srv CAP * LS :multi-prefix");
    assert!(closed(&out).unwrap().contains("does not offer SASL"));
}

#[test]
fn sasl_timeout_aborts_and_falls_back_or_fails() {
    let (mut t, _) = T::new(Identity {
        sasl: sasl("x", false),
        ..id()
    });
    t.line(":srv CAP * LS :sasl");
    t.line(":srv CAP * ACK :sasl");
    assert!(t.wait(Duration::from_secs(19)).is_empty());
    let out = t.wait(Duration::from_secs(1));
    assert_eq!(sent(&out), vec!["AUTHENTICATE *", "CAP END"]);
    let (mut t, _) = T::new(Identity {
        sasl: sasl("x", true),
        ..id()
    });
    t.line(":srv CAP * LS :sasl");
    t.line(":srv CAP * ACK :sasl");
    t.line("AUTHENTICATE +");
    let out = t.wait(Duration::from_secs(20));
    assert!(closed(&out).unwrap().contains("no answer to SASL"));
}

#[test]
fn nickserv_timeout_joins_anyway_with_a_warning() {
    let (mut t, _) = T::new(Identity {
        nickserv_password: Some("nspw".into()),
        ..id()
    });
    t.line(":srv CAP * LS :");
    let out = t.line(":srv 001 bb :Welcome");
    assert_eq!(sent(&out), vec!["PRIVMSG NickServ :IDENTIFY bb nspw"]);
    let out = t.wait(Duration::from_secs(15));
    assert!(out.contains(&Out::Ready));
    assert_eq!(sent(&out).len(), 2);
}

#[test]
fn nick_in_use_tries_the_alternates_then_reclaims() {
    let (mut t, _) = T::new(id());
    t.line(":srv CAP * LS :");
    assert_eq!(sent(&t.line(":srv 433 * bb :in use")), vec!["NICK bb_"]);
    assert_eq!(sent(&t.line(":srv 433 * bb_ :in use")), vec!["NICK bb1"]);
    t.line(":srv 001 bb1 :Welcome");
    assert_eq!(t.s.nick(), "bb1");
    // Later: try the main nick again; still taken: later again.
    let out = t.wait(Duration::from_secs(60));
    assert!(sent(&out).contains(&"NICK bb".to_string()), "{out:?}");
    t.line(":srv 433 bb1 bb :in use");
    t.line(":srv PONG srv :x");
    let out = t.wait(Duration::from_secs(60));
    assert!(sent(&out).contains(&"NICK bb".to_string()));
    t.line(":bb1!u@h NICK :bb");
    assert_eq!(t.s.nick(), "bb");
    let out = t.wait(Duration::from_secs(120));
    assert!(!sent(&out).contains(&"NICK bb".to_string()), "{out:?}");
}

fn ready(id: Identity) -> T {
    let (mut t, _) = T::new(id);
    t.line(":srv CAP * LS :");
    t.line(":srv 001 bb :Welcome");
    t.line(":bb!u@h JOIN #builds");
    t
}

#[test]
fn an_idle_line_gets_our_ping_and_no_pong_closes_it() {
    let mut t = ready(id());
    assert!(t.wait(Duration::from_secs(59)).is_empty());
    let out = t.wait(Duration::from_secs(1));
    assert_eq!(sent(&out), vec!["PING :bbmaster-bb"]);
    // Other lines do not count as the PONG.
    t.line(":x!u@h PRIVMSG #builds :hi");
    let out = t.wait(Duration::from_secs(30));
    assert!(closed(&out).unwrap().contains("no PONG within 30 s"));
}

#[test]
fn a_pong_keeps_the_line_alive() {
    let mut t = ready(id());
    t.wait(Duration::from_secs(60));
    t.now += Duration::from_millis(40);
    t.line(":srv PONG srv :bbmaster-bb");
    assert_eq!(t.s.lag(), Some(Duration::from_millis(40)));
    let out = t.wait(Duration::from_secs(30));
    assert!(closed(&out).is_none());
}

#[test]
fn a_kick_rejoins_after_the_delay_and_join_errors_are_logged() {
    let mut t = ready(id());
    let out = t.line(":op!u@h KICK #builds bb :go away");
    assert!(out.contains(&Out::Left("#builds".into())));
    assert!(sent(&t.wait(Duration::from_secs(9))).is_empty());
    assert_eq!(sent(&t.wait(Duration::from_secs(1))), vec!["JOIN #builds"]);
    let out = t.line(":srv 475 bb #secret :Cannot join channel (+k)");
    assert!(out.iter().any(
        |o| matches!(o, Out::Log(Level::Warn, m) if m.contains("cannot join #secret: wrong or missing channel key"))
    ));
}

#[test]
fn the_servers_error_closes_the_session() {
    let mut t = ready(id());
    let out = t.line("ERROR :Closing Link: bb (Excess Flood)");
    assert!(closed(&out).unwrap().contains("Excess Flood"));
}

#[test]
fn channel_changes_join_and_part_only_the_difference() {
    let mut t = ready(id());
    t.line(":bb!u@h JOIN #secret");
    let out = t.s.set_channels(vec![
        Channel {
            name: "#Builds".into(),
            key: None,
        },
        Channel {
            name: "#new".into(),
            key: None,
        },
    ]);
    assert_eq!(
        sent(&out),
        vec!["PART #secret :no longer configured", "JOIN #new"]
    );
}

#[test]
fn commands_are_recognised_in_channel_and_private() {
    let mut t = ready(id());
    let cmd = |out: Vec<Out>| match out.as_slice() {
        [Out::Command(c)] => Some(c.clone()),
        _ => None,
    };
    let c = cmd(t.line(":al!u@h PRIVMSG #builds :!status hello")).unwrap();
    assert_eq!(
        (c.text.as_str(), c.reply_to.as_str()),
        ("status hello", "#builds")
    );
    let c = cmd(t.line(":al!u@h PRIVMSG #builds :BB: last")).unwrap();
    assert_eq!(c.text, "last");
    let c = cmd(t.line(":al!u@h PRIVMSG #builds :bb, help")).unwrap();
    assert_eq!(c.text, "help");
    assert!(t.line(":al!u@h PRIVMSG #builds :hello all").is_empty());
    let c = cmd(t.line(":al!u@h PRIVMSG bb :version")).unwrap();
    assert_eq!((c.reply_to.as_str(), c.channel), ("al", None));
}

#[test]
fn rights_come_from_the_account_tag_not_the_nick() {
    let (mut t, _) = T::new(id());
    t.line(":srv CAP * LS :account-tag");
    t.line(":srv CAP * ACK :account-tag");
    t.line(":srv 001 bb :Welcome");
    let out = t.line("@account=alice :mallory!u@h PRIVMSG #builds :!force hello");
    let [Out::Command(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(c.account.as_deref(), Some("alice"));
    let out = t.line(":alice!u@h PRIVMSG #builds :!force hello");
    let [Out::Command(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(c.account, None, "no tag: not logged in, whatever the nick");
}

#[test]
fn without_account_tag_force_waits_for_a_whois() {
    let mut t = ready(id());
    let out = t.line(":alice!u@h PRIVMSG #builds :!force hello");
    assert_eq!(sent(&out), vec!["WHOIS alice"]);
    assert!(t.line(":alice!u@h PRIVMSG #builds :!stop 3").is_empty());
    t.line(":srv 330 bb alice alice_acct :is logged in as");
    let out = t.line(":srv 318 bb alice :End of WHOIS");
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| matches!(o, Out::Command(c) if c.account.as_deref() == Some("alice_acct")))
    );
    // Next time, a WHOIS again: no cache that could go stale.
    t.line(":alice!u@h PRIVMSG #builds :!force hello");
    let out = t.line(":srv 318 bb alice :End of WHOIS");
    assert!(matches!(out.as_slice(), [Out::Command(c)] if c.account.is_none()));
}

#[test]
fn extended_join_and_account_notify_give_the_account() {
    let (mut t, _) = T::new(id());
    t.line(":srv CAP * LS :extended-join account-notify");
    t.line(":srv CAP * ACK :extended-join account-notify");
    t.line(":srv 001 bb :Welcome");
    t.line(":alice!u@h JOIN #builds alice_acct :Alice");
    let out = t.line(":alice!u@h PRIVMSG #builds :!force x");
    assert!(
        matches!(out.as_slice(), [Out::Command(c)] if c.account.as_deref() == Some("alice_acct"))
    );
    t.line(":alice!u@h ACCOUNT *");
    let out = t.line(":alice!u@h PRIVMSG #builds :!force x");
    assert!(matches!(out.as_slice(), [Out::Command(c)] if c.account.is_none()));
}

#[test]
fn registration_that_never_completes_times_out() {
    let (mut t, _) = T::new(id());
    let out = t.wait(Duration::from_secs(60));
    assert!(
        closed(&out)
            .unwrap()
            .contains("registration did not complete")
    );
}
