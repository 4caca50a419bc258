//! Who is asking ([`Principal`]) and whether they may ([`authorize`]): the
//! one place that decides, for every adapter of the front door.
//!
//! Adapters find out who is on the other end (peer credentials, process
//! ancestry, a worker's name, later an IRC account or an HTTP token) and
//! describe it as a [`Principal`]; this module holds no I/O. Today's rules
//! are the control socket's policy (docs/security.md): the master's own
//! user, `allowed_uids` and `allowed_gid` may connect; a build step (a
//! process under a worker of this master) never may, whatever its uid.
//! An IRC services account may read, and `force` or `stop` only when
//! `[irc] authz` lists it (docs/irc.md).

use crate::config::MasterSettings;
use crate::daemon::lineage::WorkerAncestor;
use crate::daemon::messages::Refusal;
use crate::protocol::{RefusalKind, Request};

/// Who is asking the master something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A process on this machine, on a local socket.
    LocalUser {
        /// Its effective uid (`None`: the socket did not say).
        uid: Option<u32>,
        /// Its effective gid.
        gid: Option<u32>,
        /// Its process id.
        pid: Option<i32>,
        /// The worker of this master it runs under, if any: then it is a
        /// build step.
        under_worker: Option<WorkerAncestor>,
    },
    /// A worker, by the name it authenticated with.
    Worker {
        /// The worker's name.
        name: String,
    },
    /// An IRC user, by the services account the server vouched for
    /// (`None`: not logged in); never by nick.
    IrcAccount {
        /// The account name, if logged in.
        account: Option<String>,
    },
    /// The holder of an HTTP token (`[[http.token]]`): reads, and the
    /// writes its `may` lists.
    HttpToken {
        /// The token's name (never the secret).
        name: String,
    },
    /// A change source inside the master (a poller), by its configured
    /// name: it may add changes and read its cursors, nothing else.
    ChangeSource {
        /// The source's name (`[[poller]] name`).
        name: String,
    },
    /// A web client without a token: reads only.
    HttpAnonymous,
}

impl Principal {
    /// Who this is in one word, for the `sent_by` of a `change_added`
    /// event: `uid:1000`, `worker:NAME`, `irc:ACCOUNT`, `token:NAME`,
    /// `poller:NAME`, `hook:NAME` (a webhook's source is already named
    /// so), `anonymous`.
    pub fn label(&self) -> String {
        match self {
            Principal::LocalUser { uid: Some(uid), .. } => format!("uid:{uid}"),
            Principal::LocalUser { uid: None, .. } => "uid:?".into(),
            Principal::Worker { name } => format!("worker:{name}"),
            Principal::IrcAccount { account } => {
                format!("irc:{}", account.as_deref().unwrap_or("?"))
            }
            Principal::HttpToken { name } => format!("token:{name}"),
            Principal::ChangeSource { name } if name.starts_with("hook:") => name.clone(),
            Principal::ChangeSource { name } => format!("poller:{name}"),
            Principal::HttpAnonymous => "anonymous".into(),
        }
    }
}

/// What is asked: to open a connection, or one request on it.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// Opening a control connection (before its handshake).
    Connect,
    /// One client request.
    Request(&'a Request),
    /// Adding changes (`sendchange`, a poller's batch) and reading a
    /// poller's cursors.
    AddChanges,
    /// Queueing a build again with the properties and source stamp of an
    /// earlier one (`POST /api/v1/builds/N/rebuild`): for local users as a
    /// force, over HTTP a `may` of its own (`rebuild`).
    Rebuild,
}

/// The policy the rules read: who besides the master's own user may use
/// the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The master's own effective uid: always allowed.
    pub own_uid: u32,
    /// Other uids allowed (`allowed_uids`).
    pub allowed_uids: Vec<u32>,
    /// A group allowed (`allowed_gid`).
    pub allowed_gid: Option<u32>,
    /// HTTP tokens by name, with what each may do (`[[http.token]] may`).
    pub http_tokens: std::collections::BTreeMap<String, Vec<String>>,
    /// Services accounts allowed `force` and `stop` on IRC (`[irc] authz`).
    pub irc: crate::config::IrcAuthz,
}

impl Policy {
    /// The policy of a master running as `own_uid` with these settings
    /// (read once at start, like the other limits).
    pub fn from_settings(settings: &MasterSettings, own_uid: u32) -> Self {
        Policy {
            own_uid,
            allowed_uids: settings.allowed_uids.clone(),
            allowed_gid: settings.allowed_gid,
            http_tokens: settings
                .http
                .iter()
                .flat_map(|h| &h.tokens)
                .map(|t| (t.name.clone(), t.may.clone()))
                .collect(),
            irc: Default::default(),
        }
    }

    /// May a local user with these credentials use the control socket?
    fn admits(&self, uid: Option<u32>, gid: Option<u32>) -> bool {
        match uid {
            Some(uid) if uid == self.own_uid || self.allowed_uids.contains(&uid) => true,
            Some(_) => self.allowed_gid.is_some() && self.allowed_gid == gid,
            None => false,
        }
    }
}

/// May `who` do `what`? The one decision; `Err` says why not, in words
/// for the asker.
pub fn authorize(policy: &Policy, who: &Principal, what: Ask<'_>) -> Result<(), Refusal> {
    let deny = |reason: String| Err(Refusal::new(RefusalKind::Other, reason));
    match who {
        // Rule 1: build steps run untrusted code and never get the
        // master's authority, even as the master's own user.
        Principal::LocalUser {
            pid,
            under_worker: Some(worker),
            ..
        } => deny(format!(
            "permission denied: process {} {}; build steps may not use the control socket",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            worker.describe()
        )),
        // Rule 2: the master's own user, `allowed_uids`, `allowed_gid`.
        Principal::LocalUser { uid, gid, .. } => {
            if policy.admits(*uid, *gid) {
                Ok(())
            } else {
                deny(format!(
                    "permission denied: uid {} may not use this master (it serves uid {}; see `allowed_uids`/`allowed_gid`)",
                    uid.map(|u| u.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    policy.own_uid
                ))
            }
        }
        // Rule 3: workers speak the worker protocol, not client requests.
        Principal::Worker { name } => deny(format!(
            "permission denied: worker `{}` may not make client requests",
            crate::untrusted::Escaped(name)
        )),
        // Rule 4: a change source adds changes and nothing else.
        Principal::ChangeSource { name } => match what {
            Ask::AddChanges => Ok(()),
            _ => deny(format!(
                "permission denied: change source `{}` may only add changes",
                crate::untrusted::Escaped(name)
            )),
        },
        // Rule 5: over HTTP, everyone may read (the server binds loopback
        // unless configured otherwise); a token may also do what its `may`
        // lists; nothing else (reload, shutdown, drain, prune) is for HTTP.
        Principal::HttpAnonymous | Principal::HttpToken { .. } => {
            let needed = match what {
                Ask::Connect => return Ok(()),
                Ask::Rebuild => "rebuild",
                Ask::Request(request) if http_read(request) => return Ok(()),
                Ask::Request(request) => match http_write(request) {
                    Some(needed) => needed,
                    None => {
                        return deny("permission denied: this is not available over HTTP".into());
                    }
                },
                Ask::AddChanges => {
                    return deny("permission denied: this is not available over HTTP".into());
                }
            };
            match who {
                Principal::HttpToken { name } => match policy.http_tokens.get(name) {
                    Some(may) if may.iter().any(|m| m == needed) => Ok(()),
                    Some(_) => deny(format!(
                        "permission denied: token `{}` may not {needed} (its `may` does not list it)",
                        crate::untrusted::Escaped(name)
                    )),
                    None => deny(format!(
                        "permission denied: token `{}` is not configured",
                        crate::untrusted::Escaped(name)
                    )),
                },
                _ => deny(format!(
                    "permission denied: {needed} needs a bearer token (Authorization: Bearer ...)"
                )),
            }
        }
        // Rule 6: IRC users read; `force` and `stop` need a services
        // account listed in `[irc] authz` (a nick proves nothing).
        Principal::IrcAccount { account } => irc_rule(&policy.irc, account.as_deref(), what),
    }
}

/// Rule 6 of [`authorize`]: what an IRC user may ask.
fn irc_rule(
    authz: &crate::config::IrcAuthz,
    account: Option<&str>,
    what: Ask<'_>,
) -> Result<(), Refusal> {
    let (command, allowed) = match what {
        Ask::Connect => return Ok(()),
        Ask::AddChanges => {
            return Err(Refusal::new(
                RefusalKind::Other,
                "permission denied: changes are not sent from IRC",
            ));
        }
        Ask::Rebuild => {
            return Err(Refusal::new(
                RefusalKind::Other,
                "permission denied: this is not asked from IRC",
            ));
        }
        Ask::Request(
            Request::Status(_)
            | Request::Queue { .. }
            | Request::Workers
            | Request::Builds { .. }
            | Request::Build { .. }
            | Request::RequestInfo { .. }
            | Request::Events,
        ) => return Ok(()),
        Ask::Request(Request::ForceBuild { .. }) => ("force", &authz.force),
        Ask::Request(Request::Stop { .. }) => ("stop", &authz.stop),
        Ask::Request(_) => {
            return Err(Refusal::new(
                RefusalKind::Other,
                "permission denied: this is not asked from IRC",
            ));
        }
    };
    match account {
        Some(account) if allowed.iter().any(|a| a.eq_ignore_ascii_case(account)) => Ok(()),
        Some(account) => Err(Refusal::new(
            RefusalKind::Other,
            format!(
                "permission denied: account {} may not {command} (see [irc] authz)",
                crate::daemon::irc::line::clean(account)
            ),
        )),
        None => Err(Refusal::new(
            RefusalKind::Other,
            format!(
                "permission denied: {command} needs a services account; log in to services first"
            ),
        )),
    }
}

/// Reads: what any HTTP client may ask.
fn http_read(request: &Request) -> bool {
    matches!(
        request,
        Request::Status(_)
            | Request::Queue { .. }
            | Request::Workers
            | Request::Builds { .. }
            | Request::Build { .. }
            | Request::RequestInfo { .. }
            | Request::Stream(_)
            | Request::Artifacts { .. }
            | Request::Artifact { .. }
            | Request::Events
            | Request::Changes { .. }
            | Request::Locks
    )
}

/// The `may` word a write over HTTP needs; `None`: not over HTTP at all.
fn http_write(request: &Request) -> Option<&'static str> {
    match request {
        Request::ForceBuild { .. } => Some("force"),
        Request::Stop { .. } => Some("stop"),
        Request::Cancel { .. } => Some("cancel"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            own_uid: 1000,
            allowed_uids: vec![1001],
            allowed_gid: Some(50),
            http_tokens: [("ci".to_string(), vec!["force".to_string()])].into(),
            irc: Default::default(),
        }
    }

    fn user(uid: Option<u32>, gid: Option<u32>) -> Principal {
        Principal::LocalUser {
            uid,
            gid,
            pid: Some(42),
            under_worker: None,
        }
    }

    /// The rules `Limits::allows` had, moved here with their asserts.
    #[test]
    fn only_the_owner_by_default() {
        let p = Policy::from_settings(&MasterSettings::default(), 1000);
        assert!(p.admits(Some(1000), Some(1000)));
        assert!(!p.admits(Some(1001), Some(1000)));
        assert!(!p.admits(None, None));
    }

    #[test]
    fn listed_users_and_a_group_may_be_let_in() {
        let mut m = MasterSettings {
            allowed_uids: vec![1001],
            ..MasterSettings::default()
        };
        let p = Policy::from_settings(&m, 1000);
        assert!(p.admits(Some(1001), Some(5)));
        assert!(!p.admits(Some(1002), Some(5)));
        m.allowed_uids.clear();
        m.allowed_gid = Some(50);
        let p = Policy::from_settings(&m, 1000);
        assert!(p.admits(Some(1002), Some(50)));
        assert!(!p.admits(Some(1002), Some(51)));
    }

    #[test]
    fn the_own_user_listed_users_and_the_group_may_connect() {
        let p = policy();
        assert!(authorize(&p, &user(Some(1000), Some(1)), Ask::Connect).is_ok());
        assert!(authorize(&p, &user(Some(1001), Some(1)), Ask::Connect).is_ok());
        assert!(authorize(&p, &user(Some(7), Some(50)), Ask::Connect).is_ok());
        let ask = Request::Workers;
        assert!(authorize(&p, &user(Some(1000), None), Ask::Request(&ask)).is_ok());
    }

    #[test]
    fn other_users_and_unknown_peers_are_refused_with_the_reason() {
        let p = policy();
        let e = authorize(&p, &user(Some(7), Some(51)), Ask::Connect).unwrap_err();
        assert_eq!(e.kind, RefusalKind::Other);
        assert_eq!(
            e.reason,
            "permission denied: uid 7 may not use this master (it serves uid 1000; see `allowed_uids`/`allowed_gid`)"
        );
        let e = authorize(&p, &user(None, None), Ask::Connect).unwrap_err();
        assert!(e.reason.contains("uid unknown"), "{}", e.reason);
        let owner_only = Policy {
            own_uid: 1000,
            allowed_uids: vec![],
            allowed_gid: None,
            http_tokens: Default::default(),
            irc: Default::default(),
        };
        assert!(authorize(&owner_only, &user(Some(1001), Some(50)), Ask::Connect).is_err());
    }

    #[test]
    fn a_build_step_is_refused_even_as_the_own_user() {
        let step = Principal::LocalUser {
            uid: Some(1000),
            gid: Some(1000),
            pid: Some(42),
            under_worker: Some(WorkerAncestor {
                pid: 7,
                name: Some("w1".into()),
            }),
        };
        let e = authorize(&policy(), &step, Ask::Connect).unwrap_err();
        assert_eq!(
            e.reason,
            "permission denied: process 42 runs under worker w1 (pid 7); \
             build steps may not use the control socket"
        );
    }

    #[test]
    fn workers_and_callers_without_an_adapter_are_refused() {
        let p = policy();
        let ask = Request::Workers;
        for who in [
            Principal::Worker { name: "w1".into() },
            Principal::IrcAccount {
                account: Some("nick".into()),
            },
        ] {
            if matches!(who, Principal::IrcAccount { .. }) {
                // IRC reads (rule 6) but never sends changes.
                assert!(authorize(&p, &who, Ask::AddChanges).is_err(), "{who:?}");
                continue;
            }
            assert!(authorize(&p, &who, Ask::Request(&ask)).is_err(), "{who:?}");
            assert!(authorize(&p, &who, Ask::AddChanges).is_err(), "{who:?}");
        }
    }

    #[test]
    fn change_sources_only_add_changes_and_users_send_them_like_forcing() {
        let p = policy();
        let poller = Principal::ChangeSource {
            name: "origin".into(),
        };
        assert!(authorize(&p, &poller, Ask::AddChanges).is_ok());
        let e = authorize(&p, &poller, Ask::Request(&Request::Workers)).unwrap_err();
        assert_eq!(
            e.reason,
            "permission denied: change source `origin` may only add changes"
        );
        assert!(authorize(&p, &poller, Ask::Connect).is_err());
        assert!(authorize(&p, &user(Some(1000), None), Ask::AddChanges).is_ok());
        assert!(authorize(&p, &user(Some(7), Some(51)), Ask::AddChanges).is_err());
    }

    #[test]
    fn over_http_everyone_reads_and_a_token_writes_what_it_may() {
        let p = policy();
        let force = Request::ForceBuild {
            builder: "b".into(),
            reason: None,
            properties: Default::default(),
            priority: 0,
            source: None,
        };
        let stop = Request::Stop { build: 1 };
        let reload = Request::Reload {
            dry_run: false,
            config: None,
        };
        let anonymous = Principal::HttpAnonymous;
        let ci = Principal::HttpToken { name: "ci".into() };
        let gone = Principal::HttpToken { name: "old".into() };
        for who in [&anonymous, &ci, &gone] {
            assert!(authorize(&p, who, Ask::Request(&Request::Workers)).is_ok());
            assert!(authorize(&p, who, Ask::Request(&Request::Events)).is_ok());
            assert!(authorize(&p, who, Ask::Request(&Request::Locks)).is_ok());
            let e = authorize(&p, who, Ask::Request(&reload)).unwrap_err();
            assert!(e.reason.contains("not available over HTTP"), "{}", e.reason);
        }
        assert!(authorize(&p, &ci, Ask::Request(&force)).is_ok());
        let e = authorize(&p, &ci, Ask::Request(&stop)).unwrap_err();
        assert!(e.reason.contains("token `ci` may not stop"), "{}", e.reason);
        let e = authorize(&p, &anonymous, Ask::Request(&force)).unwrap_err();
        assert!(
            e.reason.contains("force needs a bearer token"),
            "{}",
            e.reason
        );
        let e = authorize(&p, &gone, Ask::Request(&force)).unwrap_err();
        assert!(e.reason.contains("not configured"), "{}", e.reason);
        assert!(authorize(&p, &ci, Ask::AddChanges).is_err());
        // Rebuild is a `may` of its own: `force` does not imply it.
        let e = authorize(&p, &ci, Ask::Rebuild).unwrap_err();
        assert!(e.reason.contains("may not rebuild"), "{}", e.reason);
        let mut p2 = p.clone();
        p2.http_tokens
            .insert("rb".into(), vec!["rebuild".to_string()]);
        let rb = Principal::HttpToken { name: "rb".into() };
        assert!(authorize(&p2, &rb, Ask::Rebuild).is_ok());
        assert!(authorize(&p2, &rb, Ask::Request(&force)).is_err());
        assert!(authorize(&p2, &anonymous, Ask::Rebuild).is_err());
        assert!(authorize(&p2, &user(Some(1000), None), Ask::Rebuild).is_ok());
    }

    #[test]
    fn irc_accounts_read_and_force_or_stop_only_when_listed() {
        let mut p = policy();
        p.irc.force = vec!["alice".into()];
        p.irc.stop = vec!["alice".into(), "bob".into()];
        let irc = |a: Option<&str>| Principal::IrcAccount {
            account: a.map(str::to_owned),
        };
        let force = Request::ForceBuild {
            builder: "b".into(),
            reason: None,
            properties: Default::default(),
            priority: 0,
            source: None,
        };
        let stop = Request::Stop { build: 1 };
        let read = Request::Workers;
        assert!(authorize(&p, &irc(None), Ask::Request(&read)).is_ok());
        assert!(authorize(&p, &irc(Some("Alice")), Ask::Request(&force)).is_ok());
        let e = authorize(&p, &irc(Some("bob")), Ask::Request(&force)).unwrap_err();
        assert_eq!(
            e.reason,
            "permission denied: account bob may not force (see [irc] authz)"
        );
        assert!(authorize(&p, &irc(Some("bob")), Ask::Request(&stop)).is_ok());
        let e = authorize(&p, &irc(None), Ask::Request(&stop)).unwrap_err();
        assert!(
            e.reason.contains("needs a services account"),
            "{}",
            e.reason
        );
        let reload = Request::Reload {
            dry_run: false,
            config: None,
        };
        assert!(authorize(&p, &irc(Some("alice")), Ask::Request(&reload)).is_err());
    }
}
