//! Webhooks as change sources: `POST /hooks/NAME` for each
//! `[[http.hook]]` (docs/http.md, "Webhooks"). A delivery is accepted only
//! with a valid HMAC-SHA256 of its body under the hook's secret (checked
//! by `ring::hmac::verify`, in constant time); a push becomes one change
//! per commit, added through the front door as the change source
//! `hook:NAME`, for the schedulers to see.
//!
//! Replayed deliveries are ignored. A delivery is known by its id (the
//! sender's delivery header) and by the SHA-256 of its body: the id is
//! not covered by the signature, so a captured delivery sent again under
//! a new id (or none) is still known by its body, which is. GitHub and
//! Gitea keep the id of an event when it is redelivered, and a push's
//! body is never the same for two pushes (it names the commits and the
//! time); a generic sender that means to send the same change twice
//! makes the bodies differ (a `when`, a property). The last
//! [`REMEMBERED`] keys of each hook are kept in memory (bounded; one
//! older than that many deliveries is accepted again). They survive a
//! restart without a table of their own: every change a delivery adds
//! carries the properties [`HOOK_PROPERTY`] (the hook's name),
//! [`DELIVERY_PROPERTY`] (the delivery id, if any) and [`BODY_PROPERTY`]
//! (the body's digest), stored with the change in the same batch, and
//! before the first delivery after a start those of the last
//! [`RELOADED`] changes are read back through the history (off the
//! master loop).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Web;
use super::respond::{WebFail, stamped};
use crate::config::HttpHook;
use crate::daemon::auth::Principal;
use crate::daemon::handle::MasterHandle;
use crate::protocol::{ChangeBatch, NewChange, Reply};

/// Delivery keys remembered per hook (two per delivery that has an id:
/// the last 1,024 deliveries).
pub const REMEMBERED: usize = 2048;
/// How many of the newest stored changes are read at the first delivery
/// after a start, for the delivery ids of earlier runs.
pub const RELOADED: u32 = crate::daemon::store::MAX_LIST;
/// The longest delivery id taken (it is stored with each change).
pub const MAX_DELIVERY_ID: usize = 200;
/// The change property naming the hook that added a change.
pub const HOOK_PROPERTY: &str = "hook";
/// The change property holding the delivery id that added a change.
pub const DELIVERY_PROPERTY: &str = "hook_delivery";
/// The change property holding the digest (`sha256:` and hex, as
/// `net::fingerprint` writes it) of the body of the delivery that added
/// a change.
pub const BODY_PROPERTY: &str = "hook_body_sha256";
/// The largest hook body read.
pub const MAX_HOOK_BODY: usize = 1 << 20;
/// The most changes one delivery may add.
const MAX_COMMITS: usize = 512;

/// One hook's delivery ids, oldest first, and the same as a set.
type Recent = (VecDeque<String>, HashSet<String>);

/// The delivery ids seen lately, per hook.
#[derive(Default)]
pub struct Seen {
    by_hook: Mutex<HashMap<String, Recent>>,
    /// Set once the ids of earlier runs were read from the history.
    loaded: tokio::sync::OnceCell<()>,
}

impl Seen {
    /// Before the first delivery of this run: remember the delivery ids
    /// the last [`RELOADED`] stored changes carry (oldest first, so the
    /// bound keeps the newest). A failed read is retried at the next
    /// delivery, which is refused meanwhile (503 while the master stops).
    async fn load(&self, master: &MasterHandle) -> Result<(), WebFail> {
        self.loaded
            .get_or_try_init(|| async {
                let changes = match master.changes(&Principal::HttpAnonymous, RELOADED).await? {
                    Reply::Changes(c) => c,
                    _ => Vec::new(),
                };
                let mut n = 0;
                for c in changes.iter().rev() {
                    let props = &c.change.new.properties;
                    let Some(hook) = props.get(HOOK_PROPERTY) else {
                        continue;
                    };
                    let keys = Keys {
                        id: props.get(DELIVERY_PROPERTY).cloned(),
                        body: props.get(BODY_PROPERTY).cloned(),
                    };
                    if self.first_time(hook, &keys) {
                        n += 1;
                    }
                }
                tracing::debug!("http: {n} webhook delivery ids read back from the history");
                Ok::<(), WebFail>(())
            })
            .await
            .map(|_| ())
    }

    /// Was a delivery with any of these `keys` seen for `hook` already?
    /// Remembers them if not.
    fn first_time(&self, hook: &str, keys: &Keys) -> bool {
        let mut all = self.by_hook.lock().unwrap_or_else(|e| e.into_inner());
        let (order, set) = all.entry(hook.to_string()).or_default();
        if keys.all().any(|k| set.contains(&k)) {
            return false;
        }
        for key in keys.all() {
            if order.len() == REMEMBERED
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
            order.push_back(key.clone());
            set.insert(key);
        }
        true
    }

    /// Forget a delivery (its changes could not be added: a retry must
    /// work).
    fn forget(&self, hook: &str, keys: &Keys) {
        let mut all = self.by_hook.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((order, set)) = all.get_mut(hook) {
            for key in keys.all() {
                set.remove(&key);
                order.retain(|o| *o != key);
            }
        }
    }
}

/// What a delivery is known by: its id, if it has one, and its body's
/// digest (`sha256:HEX`; a change stored before digests were kept has
/// none). Ids are kept apart from digests by an `id:` prefix.
struct Keys {
    id: Option<String>,
    body: Option<String>,
}

impl Keys {
    fn of(id: Option<&str>, body: &[u8]) -> Keys {
        Keys {
            id: id.map(str::to_string),
            body: Some(crate::net::fingerprint(body)),
        }
    }

    fn all(&self) -> impl Iterator<Item = String> + '_ {
        let id = self.id.as_deref().map(|i| format!("id:{i}"));
        id.into_iter().chain(self.body.clone())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Is `signature` (hex, maybe `sha256=`-prefixed) the HMAC-SHA256 of
/// `body` under `secret`? Constant time in the comparison.
pub fn signed(secret: &str, body: &[u8], signature: &str) -> bool {
    let hex = signature.trim().trim_start_matches("sha256=");
    let Some(tag) = unhex(hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, body, &tag).is_ok()
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A push of GitHub or Gitea (the keys both send).
#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Vec<Commit>,
    #[serde(default)]
    head_commit: Option<Commit>,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    author: Option<Person>,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Person {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
}

/// A generic hook's body: one change, or `{"changes": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Generic {
    Many { changes: Vec<NewChange> },
    One(Box<NewChange>),
}

/// The changes of a GitHub/Gitea push: one per commit, oldest first;
/// none for a deleted branch.
fn push_changes(body: &[u8]) -> Result<Vec<NewChange>, WebFail> {
    let push: Push = serde_json::from_slice(body)
        .map_err(|e| WebFail::bad_request(format!("not a push event: {e}")))?;
    let deleted = push.deleted
        || push
            .after
            .as_deref()
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b == b'0'));
    if deleted {
        return Ok(Vec::new());
    }
    let repository = push
        .repository
        .clone_url
        .or(push.repository.html_url)
        .or(push.repository.full_name)
        .ok_or_else(|| WebFail::bad_request("the push names no repository"))?;
    let branch = push
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(&push.git_ref)
        .to_string();
    let mut commits = push.commits;
    if commits.is_empty()
        && let Some(head) = push.head_commit
    {
        commits.push(head);
    }
    if commits.len() > MAX_COMMITS {
        return Err(WebFail::bad_request(format!(
            "{} commits in one push; at most {MAX_COMMITS}",
            commits.len()
        )));
    }
    Ok(commits
        .into_iter()
        .map(|c| {
            let author = c.author.map(|p| match (p.name, p.email) {
                (Some(n), Some(e)) => format!("{n} <{e}>"),
                (Some(n), None) => n,
                (None, Some(e)) => format!("<{e}>"),
                (None, None) => String::new(),
            });
            let mut files = c.added;
            files.extend(c.removed);
            files.extend(c.modified);
            NewChange {
                repository: repository.clone(),
                branch: branch.clone(),
                revision: c.id,
                files,
                author: author.filter(|a| !a.is_empty()),
                comments: c.message,
                when_ms: None,
                properties: Default::default(),
                category: Some("push".into()),
            }
        })
        .collect())
}

/// What a hook's headers say: the signature, the delivery id, the event.
fn delivery<'a>(
    hook: &HttpHook,
    headers: &'a HeaderMap,
) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>) {
    match hook.kind.as_str() {
        "github" => (
            header(headers, "x-hub-signature-256"),
            header(headers, "x-github-delivery"),
            header(headers, "x-github-event"),
        ),
        "gitea" => (
            header(headers, "x-gitea-signature").or_else(|| header(headers, "x-hub-signature-256")),
            header(headers, "x-gitea-delivery"),
            header(headers, "x-gitea-event"),
        ),
        _ => (
            header(headers, "x-bb-signature"),
            header(headers, "x-bb-delivery"),
            Some("changes"),
        ),
    }
}

fn accepted(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(stamped(&value))).into_response()
}

/// `POST /hooks/NAME`.
pub async fn hook(
    State(web): State<Web>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebFail> {
    let hook = web
        .settings
        .hooks
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| WebFail::not_found(format!("no hook {name:?}")))?;
    let (signature, id, event) = delivery(hook, &headers);
    let Some(signature) = signature else {
        return Err(super::tokens::unauthorized("the delivery is not signed"));
    };
    if !signed(&hook.secret.0, &body, signature) {
        tracing::warn!("http: hook `{name}`: a delivery with a bad signature was refused");
        return Err(super::tokens::unauthorized("bad signature"));
    }
    match event {
        Some("ping") => return Ok(accepted(StatusCode::OK, json!({ "message": "pong" }))),
        Some("push" | "changes") => {}
        other => {
            return Ok(accepted(
                StatusCode::ACCEPTED,
                json!({ "message": format!("event {:?} ignored", other.unwrap_or("?")) }),
            ));
        }
    }
    if let Some(id) = id
        && (id.is_empty() || id.len() > MAX_DELIVERY_ID)
    {
        return Err(WebFail::bad_request(format!(
            "the delivery id has {} bytes; 1 to {MAX_DELIVERY_ID} are taken",
            id.len()
        )));
    }
    web.seen.load(&web.master).await?;
    let keys = Keys::of(id, &body);
    if !web.seen.first_time(&name, &keys) {
        let which = match id {
            Some(id) => format!("delivery {id}"),
            None => "this delivery".to_string(),
        };
        return Ok(accepted(
            StatusCode::OK,
            json!({ "message": format!("{which} seen before (its id or its body); ignored"), "change_ids": [] }),
        ));
    }
    let forget = || web.seen.forget(&name, &keys);
    let changes = match hook.kind.as_str() {
        "github" | "gitea" => push_changes(&body),
        _ => serde_json::from_slice::<Generic>(&body)
            .map(|g| match g {
                Generic::Many { changes } => changes,
                Generic::One(c) => vec![*c],
            })
            .map_err(|e| WebFail::bad_request(format!("not a change: {e}"))),
    };
    let mut changes = changes.inspect_err(|_| forget())?;
    // Who added them, stored with them: how a restarted master knows the
    // deliveries it has seen.
    for c in &mut changes {
        c.properties.insert(HOOK_PROPERTY.to_string(), name.clone());
        match id {
            Some(id) => c
                .properties
                .insert(DELIVERY_PROPERTY.to_string(), id.to_string()),
            None => c.properties.remove(DELIVERY_PROPERTY),
        };
        if let Some(digest) = &keys.body {
            c.properties
                .insert(BODY_PROPERTY.to_string(), digest.clone());
        }
    }
    if let Some(problem) = changes.iter().find_map(NewChange::problem) {
        forget();
        return Err(WebFail::bad_request(problem));
    }
    if changes.is_empty() {
        return Ok(accepted(
            StatusCode::ACCEPTED,
            json!({ "message": "no changes", "change_ids": [] }),
        ));
    }
    let who = Principal::ChangeSource {
        name: format!("hook:{name}"),
    };
    let ids = web
        .master
        .add_changes(
            &who,
            ChangeBatch {
                changes,
                cursor: None,
            },
        )
        .await
        .inspect_err(|_| forget())?;
    Ok(accepted(
        StatusCode::ACCEPTED,
        json!({ "message": format!("{} change(s) added", ids.len()), "change_ids": ids }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_hmac_passes() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-s3cret-s3cret");
        let tag = ring::hmac::sign(&key, b"body");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(signed(
            "s3cret-s3cret-s3cret",
            b"body",
            &format!("sha256={hex}")
        ));
        assert!(signed("s3cret-s3cret-s3cret", b"body", &hex));
        assert!(!signed("s3cret-s3cret-s3cret", b"body!", &hex));
        assert!(!signed("other-secret-xxxxxxx", b"body", &hex));
        assert!(!signed("s3cret-s3cret-s3cret", b"body", "sha256=zz"));
    }

    #[test]
    fn a_delivery_is_taken_once_by_its_id_or_its_body_within_the_bound() {
        let seen = Seen::default();
        let a = Keys::of(Some("a"), b"push 1");
        assert!(seen.first_time("gh", &a));
        assert!(!seen.first_time("gh", &a));
        assert!(seen.first_time("other", &a));
        // The same body under another id (the id is not signed), or none.
        assert!(!seen.first_time("gh", &Keys::of(Some("b"), b"push 1")));
        assert!(!seen.first_time("gh", &Keys::of(None, b"push 1")));
        // The same id with another body.
        assert!(!seen.first_time("gh", &Keys::of(Some("a"), b"push 2")));
        seen.forget("gh", &a);
        assert!(seen.first_time("gh", &a));
        for i in 0..REMEMBERED / 2 {
            let id = i.to_string();
            assert!(seen.first_time("gh", &Keys::of(Some(&id), id.as_bytes())));
        }
        // `a` was pushed out by the bound.
        assert!(seen.first_time("gh", &a));
    }

    #[test]
    fn a_push_becomes_one_change_per_commit() {
        let body = br#"{"ref":"refs/heads/main","after":"b2","repository":{"clone_url":"https://x/r.git"},
            "commits":[{"id":"b1","message":"one","author":{"name":"A","email":"a@x"},"added":["f"],"modified":["g"]},
                       {"id":"b2","message":"two"}]}"#;
        let changes = push_changes(body).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].branch, "main");
        assert_eq!(changes[0].files, ["f", "g"]);
        assert_eq!(changes[0].author.as_deref(), Some("A <a@x>"));
        assert_eq!(changes[1].revision, "b2");
        let deleted = br#"{"ref":"refs/heads/x","after":"0000000","repository":{"clone_url":"u"}}"#;
        assert!(push_changes(deleted).unwrap().is_empty());
        assert!(push_changes(b"{").is_err());
    }
}
