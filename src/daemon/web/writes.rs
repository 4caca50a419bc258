//! Writes over HTTP: force, stop, cancel, rebuild. Each needs a token
//! (`[[http.token]]`) whose `may` lists it; `daemon::auth` decides, and
//! the request goes through the front door with the token's name as the
//! principal (and in the request's reason).
//!
//! The API takes the token as `Authorization: Bearer TOKEN`, which a
//! browser never adds on its own, so another site cannot make a visitor's
//! browser write (CSRF). The pages' buttons are forms that carry the
//! token in their body, typed by the person; a form posted from another
//! site (`Sec-Fetch-Site: cross-site`, or an `Origin` of another host) is
//! refused as well.

use std::collections::BTreeMap;

use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::Web;
use super::api::{parse_id, who};
use super::html::url_segment;
use super::respond::{WebFail, stamped};
use super::tokens;
use crate::daemon::auth::{Ask, Principal};
use crate::protocol::{Reply, Request};

/// The body of `POST /api/v1/builders/NAME/force` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceBody {
    /// Why, shown in the history.
    pub reason: Option<String>,
    /// Properties, given to steps as `BB_PROP_<NAME>`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
}

/// May `who` make `request`? A refusal is 401 without a token, 403 with.
fn allowed(web: &Web, who: &Principal, request: &Request) -> Result<(), WebFail> {
    may(web, who, Ask::Request(request))
}

/// May `who` ask `what`? A refusal is 401 without a token, 403 with.
fn may(web: &Web, who: &Principal, what: Ask<'_>) -> Result<(), WebFail> {
    web.master
        .authorize(who, what)
        .map_err(|refusal| match who {
            Principal::HttpAnonymous => tokens::unauthorized(&refusal.reason),
            _ => WebFail {
                status: StatusCode::FORBIDDEN,
                message: refusal.reason,
            },
        })
}

/// The reason a request made over HTTP carries: who asked, and why
/// (`default` when the asker gave no reason).
fn reason_of(who: &Principal, reason: Option<String>, default: &str) -> String {
    let name = match who {
        Principal::HttpToken { name } => name.as_str(),
        _ => "?",
    };
    match reason.filter(|r| !r.trim().is_empty()) {
        Some(r) => format!("{r} (http token {name})"),
        None => format!("{default} (http token {name})"),
    }
}

/// Queue a build of `builder` for `who`.
async fn do_force(
    web: &Web,
    who: &Principal,
    builder: String,
    body: ForceBody,
) -> Result<u64, WebFail> {
    let request = Request::ForceBuild {
        builder: builder.clone(),
        reason: None,
        properties: body.properties.clone(),
        priority: body.priority,
        source: None,
    };
    allowed(web, who, &request)?;
    let reason = reason_of(who, body.reason, "forced over HTTP");
    match web
        .master
        .force_build(
            who,
            builder,
            Some(reason),
            body.properties,
            body.priority,
            None,
        )
        .await?
    {
        Reply::Queued { request_id } => Ok(request_id),
        other => Err(WebFail::bad_request(format!(
            "unexpected answer: {other:?}"
        ))),
    }
}

/// `POST /api/v1/builders/NAME/force` (body: optional JSON [`ForceBody`]):
/// `bbctl --json force-build`'s answer.
pub async fn force(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(builder): Path<String>,
    body: Bytes,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let body: ForceBody = if body.iter().all(u8::is_ascii_whitespace) {
        ForceBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WebFail::bad_request(format!("the body is not a force request: {e}")))?
    };
    let request_id = do_force(&web, &who, builder.clone(), body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(stamped(
            &json!({ "request_id": request_id, "builder": builder }),
        )),
    )
        .into_response())
}

/// A `done` answer (`bbctl --json stop`/`cancel`).
fn done(reply: Reply) -> Response {
    let message = match reply {
        Reply::Done { message } => message,
        other => format!("{other:?}"),
    };
    axum::Json(stamped(&json!({ "ok": true, "message": message }))).into_response()
}

/// `POST /api/v1/builds/N/stop`.
pub async fn stop(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let build = parse_id(&id, "build")?;
    allowed(&web, &who, &Request::Stop { build })?;
    Ok(done(web.master.stop(&who, build).await?))
}

/// `POST /api/v1/requests/N/cancel`.
pub async fn cancel(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let request = parse_id(&id, "request")?;
    allowed(&web, &who, &Request::Cancel { request })?;
    Ok(done(web.master.cancel(&who, request).await?))
}

/// The body of `POST /api/v1/builds/N/rebuild` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildBody {
    /// Why, shown in the history (default: `rebuild of build N`).
    pub reason: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
}

/// Queue build `build` again for `who` (its builder, properties and
/// source stamp); the new request's id and its builder.
async fn do_rebuild(
    web: &Web,
    who: &Principal,
    build: u64,
    body: RebuildBody,
) -> Result<(u64, String), WebFail> {
    may(web, who, Ask::Rebuild)?;
    let reason = reason_of(who, body.reason, &format!("rebuild of build {build}"));
    match web
        .master
        .rebuild(who, build, reason, body.priority)
        .await?
    {
        (Reply::Queued { request_id }, builder) => Ok((request_id, builder)),
        (other, _) => Err(WebFail::bad_request(format!(
            "unexpected answer: {other:?}"
        ))),
    }
}

/// `POST /api/v1/builds/N/rebuild` (body: optional JSON [`RebuildBody`]):
/// a new request with build N's builder, properties and source stamp;
/// `bbctl --json rebuild`'s answer (201).
pub async fn rebuild(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WebFail> {
    let who = who(&web, &headers)?;
    let build = parse_id(&id, "build")?;
    let body: RebuildBody = if body.iter().all(u8::is_ascii_whitespace) {
        RebuildBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WebFail::bad_request(format!("the body is not a rebuild request: {e}")))?
    };
    let (request_id, builder) = do_rebuild(&web, &who, build, body).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(stamped(
            &json!({ "request_id": request_id, "builder": builder }),
        )),
    )
        .into_response())
}

/// A page's form: the token typed by the person, and for force a reason.
#[derive(Debug, Deserialize)]
pub struct PageForm {
    /// The bearer token.
    pub token: String,
    /// Why (force and rebuild).
    #[serde(default)]
    pub reason: Option<String>,
    /// The request to cancel (the queue page's form).
    #[serde(default)]
    pub request: Option<String>,
}

/// Refuse a form posted from another site.
fn same_site(web: &Web, headers: &HeaderMap) -> Result<(), WebFail> {
    let refuse = || WebFail {
        status: StatusCode::FORBIDDEN,
        message: "refused: this form was posted from another site".into(),
    };
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return Err(refuse());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // The public address in `base_url` is this server's by definition
        // (a proxy may pass requests on with a `Host` of its own).
        if web
            .settings
            .base_url
            .as_deref()
            .is_some_and(|base| origin_of(base) == origin)
        {
            return Ok(());
        }
        let host = if web.settings.trust_proxy {
            headers
                .get("x-forwarded-host")
                .or_else(|| headers.get(header::HOST))
        } else {
            headers.get(header::HOST)
        }
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        if origin != "null" && origin_host != host {
            return Err(refuse());
        }
    }
    Ok(())
}

/// The origin (`scheme://host[:port]`) of a URL, as a browser's `Origin`
/// header gives it.
fn origin_of(url: &str) -> &str {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let host = rest.find('/').map_or(rest, |i| &rest[..i]);
    &url[..scheme.len() + 3 + host.len()]
}

/// `POST /builders/NAME/force` from the builder page: queue, then back to
/// the page (303).
pub async fn page_force(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(builder): Path<String>,
    Form(form): Form<PageForm>,
) -> Result<Response, WebFail> {
    same_site(&web, &headers)?;
    let who = tokens::by_token(&web.settings, form.token.trim())?;
    let body = ForceBody {
        reason: form.reason,
        ..ForceBody::default()
    };
    do_force(&web, &who, builder.clone(), body).await?;
    Ok(Redirect::to(&format!(
        "{}/builders/{}",
        web.prefix,
        url_segment(&builder)
    ))
    .into_response())
}

/// `POST /builds/N/stop` from the build page: stop, then back (303).
pub async fn page_stop(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<PageForm>,
) -> Result<Response, WebFail> {
    same_site(&web, &headers)?;
    let who = tokens::by_token(&web.settings, form.token.trim())?;
    let build = parse_id(&id, "build")?;
    allowed(&web, &who, &Request::Stop { build })?;
    web.master.stop(&who, build).await?;
    Ok(Redirect::to(&format!("{}/builds/{build}", web.prefix)).into_response())
}

/// `POST /builds/N/rebuild` from the build page: queue it again, then to
/// the builder's page (303).
pub async fn page_rebuild(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<PageForm>,
) -> Result<Response, WebFail> {
    same_site(&web, &headers)?;
    let who = tokens::by_token(&web.settings, form.token.trim())?;
    let build = parse_id(&id, "build")?;
    let body = RebuildBody {
        reason: form.reason,
        ..RebuildBody::default()
    };
    let (_, builder) = do_rebuild(&web, &who, build, body).await?;
    Ok(Redirect::to(&format!(
        "{}/builders/{}",
        web.prefix,
        url_segment(&builder)
    ))
    .into_response())
}

/// `POST /queue/cancel` from the queue page (the request's number in the
/// form): cancel it, then back to the queue (303).
pub async fn page_cancel(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<PageForm>,
) -> Result<Response, WebFail> {
    same_site(&web, &headers)?;
    let who = tokens::by_token(&web.settings, form.token.trim())?;
    let request = parse_id(form.request.as_deref().unwrap_or("").trim(), "request")?;
    allowed(&web, &who, &Request::Cancel { request })?;
    web.master.cancel(&who, request).await?;
    Ok(Redirect::to(&format!("{}/queue", web.prefix)).into_response())
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn the_origin_of_base_url_is_its_scheme_and_host() {
        assert_eq!(
            origin_of("https://ci.example.org/bb/"),
            "https://ci.example.org"
        );
        assert_eq!(
            origin_of("https://ci.example.org:8443"),
            "https://ci.example.org:8443"
        );
        assert_eq!(origin_of("http://h/a/b"), "http://h");
    }
}
