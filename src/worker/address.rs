//! Where the master is, as `bbworker --master` names it: a Unix socket path
//! (bare or `unix:PATH`), `tcp://HOST:PORT` or `tls://HOST:PORT`. Parsed
//! once, at the command line, so that a typo is one clear error at start
//! rather than a retry loop.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use crate::net::Transport;

/// The master's address for workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterAddr {
    /// A Unix socket on this host (how the master starts its local
    /// workers: a bare path).
    Unix(PathBuf),
    /// Plain TCP (a master with `allow_plaintext = true`: loopback, VPN).
    Tcp(HostPort),
    /// TLS 1.3 over TCP.
    Tls(HostPort),
}

/// A host and a port, as written after `tcp://` or `tls://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host: a DNS name or an IP address.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

/// A host as the URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, resolved at each connection attempt.
    Name(String),
    /// An IPv4 or IPv6 address (the latter written `[v6]`).
    Ip(IpAddr),
}

/// Why a `--master` value is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// A `scheme://` we do not speak.
    #[error(
        "unknown scheme `{scheme}://` in {text:?} (use tls://HOST:PORT, tcp://HOST:PORT, or a socket path)"
    )]
    Scheme {
        /// The scheme written.
        scheme: String,
        /// The whole value.
        text: String,
    },
    /// Nothing usable as a host.
    #[error("no host in {text:?} (expected {scheme}://HOST:PORT)")]
    NoHost {
        /// The scheme written.
        scheme: &'static str,
        /// The whole value.
        text: String,
    },
    /// No `:PORT` after the host.
    #[error(
        "no port in {text:?} (expected {scheme}://HOST:PORT, e.g. {scheme}://build.example.org:9989)"
    )]
    NoPort {
        /// The scheme written.
        scheme: &'static str,
        /// The whole value.
        text: String,
    },
    /// A port that is not a number from 1 to 65535.
    #[error("bad port {port:?} in {text:?} (a number from 1 to 65535)")]
    BadPort {
        /// The port as written.
        port: String,
        /// The whole value.
        text: String,
    },
    /// A bracketed host that is not an IPv6 address, or an IPv6 address
    /// without brackets.
    #[error("bad host {host:?} in {text:?} (IPv6 addresses are written in brackets: [::1]:9989)")]
    BadHost {
        /// The host as written.
        host: String,
        /// The whole value.
        text: String,
    },
    /// Something after the port (a path, a query).
    #[error("unexpected {rest:?} after the port in {text:?}")]
    Trailing {
        /// What follows the port.
        rest: String,
        /// The whole value.
        text: String,
    },
    /// An empty socket path.
    #[error("empty master socket path")]
    EmptyPath,
}

impl MasterAddr {
    /// The transport this address uses.
    pub fn transport(&self) -> Transport {
        match self {
            MasterAddr::Unix(_) => Transport::Unix,
            MasterAddr::Tcp(_) => Transport::Tcp,
            MasterAddr::Tls(_) => Transport::Tls,
        }
    }

    /// The socket path, for a Unix address.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        match self {
            MasterAddr::Unix(path) => Some(path),
            MasterAddr::Tcp(_) | MasterAddr::Tls(_) => None,
        }
    }
}

impl std::str::FromStr for MasterAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, AddrError> {
        if let Some(rest) = text.strip_prefix("tls://") {
            return Ok(MasterAddr::Tls(host_port("tls", rest, text)?));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return Ok(MasterAddr::Tcp(host_port("tcp", rest, text)?));
        }
        if let Some(path) = text.strip_prefix("unix://").or(text.strip_prefix("unix:")) {
            return unix(path);
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(AddrError::Scheme {
                scheme: scheme.to_string(),
                text: text.to_string(),
            });
        }
        // A bare path, exactly as before URLs (the master starts its local
        // workers this way).
        unix(text)
    }
}

/// A Unix socket address.
fn unix(path: &str) -> Result<MasterAddr, AddrError> {
    if path.is_empty() {
        return Err(AddrError::EmptyPath);
    }
    Ok(MasterAddr::Unix(PathBuf::from(path)))
}

/// `HOST:PORT`, `[V6]:PORT`.
fn host_port(scheme: &'static str, rest: &str, text: &str) -> Result<HostPort, AddrError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad_host = |host: &str| AddrError::BadHost {
        host: host.to_string(),
        text: text.to_string(),
    };
    let (host, after) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(bad_host(rest));
        };
        let ip: Ipv6Addr = inside.parse().map_err(|_| bad_host(inside))?;
        (Host::Ip(IpAddr::V6(ip)), after)
    } else {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.matches(':').count() > 1 {
            // `::1:9989`: an IPv6 address without brackets.
            return Err(bad_host(authority));
        }
        let end = rest.find([':', '/', '?', '#']).unwrap_or(rest.len());
        let (host, after) = rest.split_at(end);
        if host.is_empty() {
            return Err(AddrError::NoHost {
                scheme,
                text: text.to_string(),
            });
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if valid_name(host) => Host::Name(host.to_ascii_lowercase()),
            Err(_) => return Err(bad_host(host)),
        };
        (host, after)
    };
    let Some(port_and_rest) = after.strip_prefix(':') else {
        if after.is_empty() {
            return Err(AddrError::NoPort {
                scheme,
                text: text.to_string(),
            });
        }
        return Err(AddrError::Trailing {
            rest: after.to_string(),
            text: text.to_string(),
        });
    };
    let end = port_and_rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(port_and_rest.len());
    let (digits, trailing) = port_and_rest.split_at(end);
    if digits.is_empty() && trailing.is_empty() {
        return Err(AddrError::NoPort {
            scheme,
            text: text.to_string(),
        });
    }
    if !trailing.is_empty() {
        return Err(if digits.is_empty() {
            AddrError::BadPort {
                port: trailing.to_string(),
                text: text.to_string(),
            }
        } else {
            AddrError::Trailing {
                rest: trailing.to_string(),
                text: text.to_string(),
            }
        });
    }
    let port = digits
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| AddrError::BadPort {
            port: digits.to_string(),
            text: text.to_string(),
        })?;
    Ok(HostPort { host, port })
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterAddr::Unix(path) => write!(f, "{}", path.display()),
            MasterAddr::Tcp(hp) => write!(f, "tcp://{hp}"),
            MasterAddr::Tls(hp) => write!(f, "tls://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(text: &str) -> Result<MasterAddr, AddrError> {
        text.parse()
    }

    fn tls(host: Host, port: u16) -> MasterAddr {
        MasterAddr::Tls(HostPort { host, port })
    }

    #[test]
    fn bare_paths_stay_unix_sockets() {
        for path in ["/run/bbmaster/worker.sock", "rel/w.sock", "w.sock", "./a:b"] {
            assert_eq!(parse(path), Ok(MasterAddr::Unix(path.into())), "{path}");
        }
        assert_eq!(
            parse("unix:/s/w.sock"),
            Ok(MasterAddr::Unix("/s/w.sock".into()))
        );
        assert_eq!(
            parse("unix:///s/w.sock"),
            Ok(MasterAddr::Unix("/s/w.sock".into()))
        );
        assert_eq!(parse(""), Err(AddrError::EmptyPath));
        assert_eq!(parse("unix:"), Err(AddrError::EmptyPath));
    }

    #[test]
    fn urls_name_hosts_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            parse("tls://Build.Example.org:9989"),
            Ok(tls(Host::Name("build.example.org".into()), 9989))
        );
        assert_eq!(
            parse("tls://127.0.0.1:9989/"),
            Ok(tls(Host::Ip(Ipv4Addr::LOCALHOST.into()), 9989))
        );
        assert_eq!(
            parse("tcp://[::1]:1"),
            Ok(MasterAddr::Tcp(HostPort {
                host: Host::Ip(Ipv6Addr::LOCALHOST.into()),
                port: 1
            }))
        );
        for text in [
            "tls://build.example.org:9989",
            "tcp://10.0.0.2:65535",
            "tls://[fe80::1]:9989",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(parse("tls://[::1]:9").unwrap().transport(), Transport::Tls);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("https://h:1", "unknown scheme `https://`"),
            ("tls://h", "no port"),
            ("tls://h:", "no port"),
            ("tls://:9989", "no host"),
            ("tls://h:0", "bad port \"0\""),
            ("tls://h:65536", "bad port \"65536\""),
            ("tls://h:abc", "bad port \"abc\""),
            ("tls://h:99/x", "unexpected \"/x\""),
            ("tls://::1:9989", "in brackets"),
            ("tls://[::1:9989", "in brackets"),
            ("tls://[nope]:1", "bad host \"nope\""),
            ("tls://bad host:1", "bad host"),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(e.contains(text) || text.starts_with("https"), "{text}: {e}");
        }
    }
}
