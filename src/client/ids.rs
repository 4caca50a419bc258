//! How `bbctl` writes and reads ids, so that a request id and a build id
//! can never be taken for each other (`docs/cli.md`, "Ids"): a request is
//! `r8`, a build is `7` in sentences (`build 7`) and `#7` in tables.
//! Arguments take the same forms: a request `r8` (or a bare `8`), a build
//! `#7` (or a bare `7`); the other kind's notation is a usage error that
//! says which command takes it.

use crate::protocol::{BuildId, RequestId};

/// A request id as bbctl prints it: `r8`.
pub fn request(id: RequestId) -> String {
    format!("r{id}")
}

/// Parse a REQUEST argument: `r8` or `8`.
pub fn parse_request(s: &str) -> Result<RequestId, String> {
    if let Some(rest) = s.strip_prefix('#') {
        return Err(format!(
            "`{s}` is a build id, and this command takes a request id (`r8`, as force-build prints it); \
             `bbctl build {rest}` shows the build with its request"
        ));
    }
    let digits = s.strip_prefix(['r', 'R']).unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("`{s}` is not a request id like `r8`"))
}

/// Parse a BUILD argument: `#7` or `7`.
pub fn parse_build(s: &str) -> Result<BuildId, String> {
    if let Some(rest) = s.strip_prefix(['r', 'R'])
        && rest.parse::<u64>().is_ok()
    {
        return Err(format!(
            "`{s}` is a request id, and this command takes a build id (`7` or `#7`); \
             `bbctl wait {s}` follows a request, and its events and `bbctl builds` show its build"
        ));
    }
    let digits = s.strip_prefix('#').unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("`{s}` is not a build id like `7` or `#7`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_its_own_notation_and_refuses_the_other() {
        assert_eq!(parse_request("r8"), Ok(8));
        assert_eq!(parse_request("8"), Ok(8));
        assert_eq!(parse_build("#7"), Ok(7));
        assert_eq!(parse_build("7"), Ok(7));
        assert!(parse_build("r8").unwrap_err().contains("is a request id"));
        assert!(parse_request("#7").unwrap_err().contains("is a build id"));
        assert!(parse_build("x").is_err());
        assert_eq!(request(8), "r8");
    }
}
