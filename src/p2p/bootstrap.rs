//! Bootstrap peers as `-b` gives them, and the addresses dialled for each: upstream's bare host
//! name or IP address (port 4222), `HOST:PORT`, or a multiaddr. A host name is looked up again at
//! every attempt, never at startup alone: DNS may be down when the node boots.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::settings::ConfigError;

/// The port dialled when `-b` gives none: upstream's, and our default peer-to-peer port.
pub(super) const DEFAULT_PORT: u16 = 4222;

const OPTION: &str = "-b (--bootstrap-node)";
const EXPECTED: &str = "expected a host name or IP address (bootstrap.example.org, 192.0.2.7, \
    2001:db8::1), with :PORT if not 4222 ([2001:db8::1]:4222), or a multiaddr \
    (/ip4/192.0.2.7/udp/4222/quic-v1)";

/// A bootstrap peer as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bootstrap {
    /// A multiaddr: dialled as it is.
    Addr(Multiaddr),
    /// An IP address: QUIC and TCP on its port.
    Ip(SocketAddr),
    /// A host name: looked up at each attempt, then QUIC and TCP on the port at every address.
    Name { host: String, port: u16 },
}

impl Bootstrap {
    pub(super) fn parse(s: &str) -> Result<Bootstrap, ConfigError> {
        let s = s.trim();
        let bad = |reason: &str| ConfigError::new(OPTION, s, reason);
        if s.starts_with('/') {
            return s
                .parse()
                .map(Bootstrap::Addr)
                .map_err(|e| ConfigError::new(OPTION, s, e));
        }
        // 192.0.2.7, 2001:db8::1
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Bootstrap::Ip(SocketAddr::new(ip, DEFAULT_PORT)));
        }
        // 192.0.2.7:4222, [2001:db8::1]:4222
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(bad("port 0 cannot be dialled"));
            }
            return Ok(Bootstrap::Ip(sa));
        }
        // [2001:db8::1]
        if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return v6
                .parse::<Ipv6Addr>()
                .map(|ip| Bootstrap::Ip(SocketAddr::new(IpAddr::V6(ip), DEFAULT_PORT)))
                .map_err(|_| bad(EXPECTED));
        }
        let (host, port) = match s.split_once(':') {
            None => (s, DEFAULT_PORT),
            Some((host, port)) => match port.parse::<u16>() {
                Ok(0) => return Err(bad("port 0 cannot be dialled")),
                Ok(port) => (host, port),
                Err(_) => return Err(bad(EXPECTED)),
            },
        };
        if is_host_name(host) {
            Ok(Bootstrap::Name {
                host: host.to_string(),
                port,
            })
        } else {
            Err(bad(EXPECTED))
        }
    }

    /// What is dialled for this peer without a lookup; `None` for a host name.
    pub(super) fn literal_addrs(&self) -> Option<Vec<Multiaddr>> {
        match self {
            Bootstrap::Addr(ma) => Some(vec![ma.clone()]),
            Bootstrap::Ip(sa) => Some(dial_addrs(*sa).to_vec()),
            Bootstrap::Name { .. } => None,
        }
    }
}

/// QUIC, then TCP, at one address and port.
pub(super) fn dial_addrs(sa: SocketAddr) -> [Multiaddr; 2] {
    let ip = match sa.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    let base = Multiaddr::empty().with(ip);
    [
        base.clone()
            .with(Protocol::Udp(sa.port()))
            .with(Protocol::QuicV1),
        base.with(Protocol::Tcp(sa.port())),
    ]
}

/// Looks `host` up with the system's resolver (hosts file, DNS, as configured now) and returns
/// QUIC and TCP on `port` at every address it has.
pub(super) async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<Multiaddr>> {
    let mut out = Vec::new();
    for sa in tokio::net::lookup_host((host, port)).await? {
        for a in dial_addrs(sa) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, not ending in a number
/// (`192.0.2.300` is a mistyped address, not a name).
fn is_host_name(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(label_ok)
        && !h
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is dialled for `-b s` (a name: its host and port, looked up later).
    fn dialled(s: &str) -> Result<Vec<String>, String> {
        let b = Bootstrap::parse(s).map_err(|e| e.to_string())?;
        Ok(match &b {
            Bootstrap::Name { host, port } => vec![format!("lookup {host} port {port}")],
            _ => b
                .literal_addrs()
                .unwrap()
                .iter()
                .map(|a| a.to_string())
                .collect(),
        })
    }

    #[test]
    fn every_accepted_form_maps_to_its_dial_addresses() {
        let cases: &[(&str, &[&str])] = &[
            // Upstream's form: a bare name or address, port 4222, QUIC and TCP.
            (
                "bootstrap.example.org",
                &["lookup bootstrap.example.org port 4222"],
            ),
            ("localhost", &["lookup localhost port 4222"]),
            (
                "peer_1.example.org.",
                &["lookup peer_1.example.org. port 4222"],
            ),
            (
                "192.0.2.7",
                &["/ip4/192.0.2.7/udp/4222/quic-v1", "/ip4/192.0.2.7/tcp/4222"],
            ),
            (
                "2001:db8::1",
                &[
                    "/ip6/2001:db8::1/udp/4222/quic-v1",
                    "/ip6/2001:db8::1/tcp/4222",
                ],
            ),
            (
                "[2001:db8::1]",
                &[
                    "/ip6/2001:db8::1/udp/4222/quic-v1",
                    "/ip6/2001:db8::1/tcp/4222",
                ],
            ),
            ("::1", &["/ip6/::1/udp/4222/quic-v1", "/ip6/::1/tcp/4222"]),
            // With a port.
            (
                "bootstrap.example.org:5222",
                &["lookup bootstrap.example.org port 5222"],
            ),
            (
                "192.0.2.7:5222",
                &["/ip4/192.0.2.7/udp/5222/quic-v1", "/ip4/192.0.2.7/tcp/5222"],
            ),
            (
                "[2001:db8::1]:5222",
                &[
                    "/ip6/2001:db8::1/udp/5222/quic-v1",
                    "/ip6/2001:db8::1/tcp/5222",
                ],
            ),
            // A multiaddr, as it is.
            ("/ip4/192.0.2.7/tcp/4222", &["/ip4/192.0.2.7/tcp/4222"]),
            (
                "/ip6/2001:db8::1/udp/4222/quic-v1",
                &["/ip6/2001:db8::1/udp/4222/quic-v1"],
            ),
            // Spaces around a value (a config file, an environment variable) are ignored.
            (
                " 192.0.2.7 ",
                &["/ip4/192.0.2.7/udp/4222/quic-v1", "/ip4/192.0.2.7/tcp/4222"],
            ),
        ];
        for (given, want) in cases {
            let got = dialled(given).unwrap_or_else(|e| panic!("-b {given}: {e}"));
            assert_eq!(got, *want, "-b {given}");
        }
    }

    #[test]
    fn anything_else_is_an_error_naming_the_option() {
        for bad in [
            "",
            "/ip4/nonsense",
            "host:0",
            "192.0.2.7:0",
            ":4222",
            "host:port",
            "host:99999",
            "2001:db8::1:port",
            "[2001:db8::1",
            "[nonsense]",
            "192.0.2.300",
            "a b",
            "http://example.org",
            "-lead.example.org",
            "exa..mple.org",
        ] {
            let e = Bootstrap::parse(bad).unwrap_err();
            assert!(e.option.contains("bootstrap"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_name_is_looked_up_and_dialled_on_quic_and_tcp_at_every_address() {
        let addrs: Vec<String> = resolve("localhost", DEFAULT_PORT)
            .await
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert!(
            addrs.contains(&"/ip4/127.0.0.1/udp/4222/quic-v1".to_string())
                && addrs.contains(&"/ip4/127.0.0.1/tcp/4222".to_string()),
            "{addrs:?}"
        );
        assert_eq!(addrs.len() % 2, 0, "{addrs:?}");
    }
}
