//! Who is asking over HTTP: no token is [`Principal::HttpAnonymous`]; a
//! bearer token that matches a `[[http.token]]` (compared in constant
//! time) is [`Principal::HttpToken`] with that token's name; a token that
//! matches none is refused (401), never taken for anonymous.

use axum::http::{HeaderMap, StatusCode, header};

use super::respond::WebFail;
use crate::config::HttpSettings;
use crate::daemon::auth::Principal;

/// The principal of a request with these headers.
pub fn principal(settings: &HttpSettings, headers: &HeaderMap) -> Result<Principal, WebFail> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Principal::HttpAnonymous);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
    by_token(settings, token)
}

/// The principal holding `token` (from a header or a page's form).
pub fn by_token(settings: &HttpSettings, token: &str) -> Result<Principal, WebFail> {
    // Every configured token is compared, whichever matches, so that the
    // time taken says nothing about which one nearly did.
    let mut found = None;
    for t in &settings.tokens {
        if same(t.token.0.as_bytes(), token.as_bytes()) {
            found = Some(t.name.clone());
        }
    }
    match found {
        Some(name) => Ok(Principal::HttpToken { name }),
        None => Err(unauthorized("unknown token")),
    }
}

/// A 401 with `message`.
pub fn unauthorized(message: &str) -> WebFail {
    WebFail {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_string(),
    }
}

/// Constant-time equality: SHA-256 both sides (equal lengths whatever the
/// input), then ring's constant-time compare.
fn same(a: &[u8], b: &[u8]) -> bool {
    let ha = ring::digest::digest(&ring::digest::SHA256, a);
    let hb = ring::digest::digest(&ring::digest::SHA256, b);
    #[allow(deprecated)]
    let equal = ring::constant_time::verify_slices_are_equal(ha.as_ref(), hb.as_ref()).is_ok();
    equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HttpToken, Secret};

    fn settings() -> HttpSettings {
        let mut s = HttpSettings::quick("127.0.0.1:0".parse().unwrap());
        s.tokens.push(HttpToken {
            name: "ci".into(),
            token: Secret("0123456789abcdef-ci".into()),
            may: vec!["force".into()],
        });
        s
    }

    #[test]
    fn no_header_is_anonymous_and_a_wrong_token_is_refused() {
        let s = settings();
        let mut h = HeaderMap::new();
        assert_eq!(principal(&s, &h).unwrap(), Principal::HttpAnonymous);
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-ci".parse().unwrap(),
        );
        assert_eq!(
            principal(&s, &h).unwrap(),
            Principal::HttpToken { name: "ci".into() }
        );
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-cj".parse().unwrap(),
        );
        assert_eq!(principal(&s, &h).unwrap_err().status, 401);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(principal(&s, &h).unwrap_err().status, 401);
    }
}
