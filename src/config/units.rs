//! Sizes and permission modes as people write them in `master.toml`
//! (`"16MiB"`, `"0644"`, a listen address): a leaf, shared by validation,
//! `bbmaster --http` and the table of
//! defaults, which must not import each other.

/// Parse a size: a whole number with an optional unit `B`, `KiB`, `MiB`,
/// `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err("expected a number".into());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| "the number is too large".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| "the size is too large".to_string())
}

/// Octal permission bits (`"0644"`, `"644"`, `"0o644"`), at most `0777`.
pub fn parse_mode(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// `listen` as written: `HOST:PORT`, or a bare port (loopback).
pub fn parse_listen(text: &str) -> Option<std::net::SocketAddr> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Some(std::net::SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port,
        ));
    }
    text.parse().ok()
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen;

    #[test]
    fn a_bare_port_listens_on_loopback() {
        assert_eq!(parse_listen("8010").unwrap().to_string(), "127.0.0.1:8010");
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert!(parse_listen("localhost").is_none());
    }
}
