//! `GET /badge/BUILDER.svg`: the result of the builder's last finished
//! build as a small SVG (for READMEs); `unknown` before its first.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Web;
use super::api::{BuildsQuery, builds_window, who};
use super::html::esc;

/// How many recent builds are looked at for a finished one.
const LOOK_BACK: u32 = 50;

/// `GET /badge/NAME.svg`.
pub async fn badge(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return (StatusCode::NOT_FOUND, "badges end in .svg\n").into_response();
    };
    let who = match who(&web, &headers) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let q = BuildsQuery {
        builder: Some(name.to_string()),
        limit: Some(LOOK_BACK),
        offset: None,
    };
    let (status, word) = match builds_window(&web, &who, &q).await {
        Ok(builds) => (
            StatusCode::OK,
            builds
                .iter()
                .find_map(|b| b.result)
                .map_or("unknown", |r| r.as_str()),
        ),
        Err(e) if e.status == StatusCode::NOT_FOUND => (StatusCode::NOT_FOUND, "no such builder"),
        Err(e) => return e.into_response(),
    };
    let mut response = (status, svg(name, word)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// The badge: `label | word`, coloured by the word.
pub fn svg(label: &str, word: &str) -> String {
    let colour = match word {
        "success" => "#2a7d2a",
        "failure" => "#c0392b",
        "exception" => "#8e44ad",
        "retry" => "#d68910",
        _ => "#7f8c8d",
    };
    // About 7 px a character at 11 px Verdana, plus margins.
    let lw = 10 + 7 * label.chars().count().min(64);
    let ww = 10 + 7 * word.len();
    let (label, word) = (esc(label), esc(word));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{label}: {word}\">\
         <title>{label}: {word}</title>\
         <rect width=\"{lw}\" height=\"20\" fill=\"#555\"/><rect x=\"{lw}\" width=\"{ww}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" font-family=\"Verdana,sans-serif\" font-size=\"11\">\
         <text x=\"5\" y=\"14\">{label}</text><text x=\"{x}\" y=\"14\">{word}</text></g></svg>",
        w = lw + ww,
        x = lw + 5,
    )
}
