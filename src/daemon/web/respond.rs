//! Answers of the web server: JSON stamped like `bbctl --json`
//! (docs/json.md), errors with the right status code, HTML with its
//! security headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::protocol::{ErrorKind, ErrorReply};

/// The JSON schema version, the same as `bbctl --json`'s.
pub const SCHEMA: u32 = 1;

/// An error answer: a status code and a message (JSON for the API).
#[derive(Debug)]
pub struct WebFail {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl WebFail {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        WebFail {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        WebFail {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<ErrorReply> for WebFail {
    fn from(e: ErrorReply) -> Self {
        let status = match e.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Rejected if e.message.starts_with("permission denied") => {
                StatusCode::FORBIDDEN
            }
            ErrorKind::Rejected => StatusCode::CONFLICT,
            ErrorKind::Failed if e.message.contains("shutting down") => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        WebFail {
            status,
            message: e.message,
        }
    }
}

impl IntoResponse for WebFail {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({ "error": self.message, "schema": SCHEMA })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bbmaster\""),
            );
        }
        response
    }
}

/// `value` as JSON stamped with `"schema": 1`: on the object itself, or
/// on each object of a list (as `bbctl --json` prints it).
pub fn stamped<T: Serialize>(value: &T) -> Value {
    let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
    stamp(&mut value);
    value
}

/// Put `"schema": 1` on an object, or on each object of a list.
pub fn stamp(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.insert("schema".into(), json!(SCHEMA));
        }
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    map.insert("schema".into(), json!(SCHEMA));
                }
            }
        }
        _ => {}
    }
}

/// A JSON answer of `value`, stamped.
pub fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(stamped(value)).into_response()
}

/// An unknown path: 404 (JSON under `/api`, text elsewhere).
pub async fn no_route(uri: axum::http::Uri) -> Response {
    let message = format!("no such page: {}", uri.path());
    if uri.path().starts_with("/api/") {
        WebFail::not_found(message).into_response()
    } else {
        (StatusCode::NOT_FOUND, security_headers(), message).into_response()
    }
}

/// Headers every answer of ours carries: no sniffing, no framing, no
/// referrer leaving the site.
pub fn security_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ]
}

/// An HTML page whose inline script may run only with `nonce`: build
/// output shown in it can never run script (it is escaped, and the
/// Content-Security-Policy admits no other script).
pub fn html_page(status: StatusCode, body: String, nonce: &str) -> Response {
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    let mut response = (
        status,
        security_headers(),
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A fresh random nonce for one page's script.
pub fn nonce() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
