//! OpenDHT's settings (`--opendht`, `--opendht-bootstrap`, `--opendht-port`, `--opendht-bridge`),
//! resolved and checked beside the component. Always compiled (`config` holds them with or
//! without the `opendht` feature), so it must not depend on the library.

use crate::settings::ConfigError;

/// Upstream's bootstrap node: where upstream nodes join their OpenDHT network.
pub const DEFAULT_BOOTSTRAP: &str = "bootstrap.sentrypeer.org:4222";
/// Upstream's OpenDHT port (UDP). Our QUIC listener moves to [`QUIC_PORT_BESIDE_OPENDHT`] when
/// both run with their defaults.
pub const DEFAULT_PORT: u16 = 4222;
/// Where the peer network's QUIC listener goes by default when OpenDHT takes UDP 4222.
pub const QUIC_PORT_BESIDE_OPENDHT: u16 = 4223;

/// OpenDHT settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDhtConfig {
    /// The bootstrap node's host (name or address) and port, as OpenDHT resolves them.
    pub bootstrap_host: String,
    pub bootstrap_port: u16,
    /// The UDP port the OpenDHT node binds (IPv4 and IPv6); 0: any.
    pub port: u16,
    /// Relay peers' events to OpenDHT as well as this node's own.
    pub bridge: bool,
    /// Accept values whose source is private or loopback (labs and tests).
    pub allow_private: bool,
}

/// The raw values `config` gathers.
#[derive(Debug, Default)]
pub struct RawOpenDhtConfig {
    pub enabled: bool,
    pub bootstrap: Option<String>,
    pub port: Option<String>,
    pub bridge: bool,
    pub allow_private: bool,
}

impl OpenDhtConfig {
    /// `None` when `--opendht` is off (other OpenDHT options are then ignored with a warning).
    pub fn resolve(
        raw: RawOpenDhtConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Option<OpenDhtConfig>, ConfigError> {
        if !raw.enabled {
            if raw.bootstrap.is_some() || raw.port.is_some() || raw.bridge {
                warnings.push(
                    "OpenDHT options are set but OpenDHT is off (no --opendht): they have no effect."
                        .into(),
                );
            }
            return Ok(None);
        }
        let bootstrap = raw.bootstrap.unwrap_or_else(|| DEFAULT_BOOTSTRAP.into());
        let (bootstrap_host, bootstrap_port) = split_host_port(&bootstrap).ok_or_else(|| {
            ConfigError::new(
                "--opendht-bootstrap",
                &bootstrap,
                "expected HOST:PORT ([ADDRESS]:PORT for IPv6), a port from 1 to 65535",
            )
        })?;
        let port = match raw.port {
            None => DEFAULT_PORT,
            Some(p) => p.trim().parse::<u16>().map_err(|_| {
                ConfigError::new("--opendht-port", &p, "expected a UDP port from 0 to 65535")
            })?,
        };
        Ok(Some(OpenDhtConfig {
            bootstrap_host,
            bootstrap_port,
            port,
            bridge: raw.bridge,
            allow_private: raw.allow_private,
        }))
    }

    /// Refuses a layout where OpenDHT and the peer network's QUIC listener want one UDP port.
    pub fn check_ports(&self, p2p_listen: &[String]) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Ok(());
        }
        for addr in p2p_listen {
            if udp_port(addr) == Some(self.port) {
                return Err(ConfigError::new(
                    "--opendht-port",
                    self.port,
                    format!(
                        "UDP port {} is also a --p2p-listen address ({addr})",
                        self.port
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`, the port from 1 to 65535.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    ok.then(|| (host.to_string(), port))
}

/// The UDP port of a multiaddr (`/ip4/0.0.0.0/udp/4222/quic-v1`), if it has one.
fn udp_port(multiaddr: &str) -> Option<u16> {
    let mut parts = multiaddr.split('/');
    while let Some(p) = parts.next() {
        if p == "udp" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: RawOpenDhtConfig) -> Result<Option<OpenDhtConfig>, ConfigError> {
        OpenDhtConfig::resolve(raw, &mut Vec::new())
    }

    #[test]
    fn defaults_are_upstreams_bootstrap_and_port() {
        let c = resolve(RawOpenDhtConfig {
            enabled: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(c.bootstrap_host, "bootstrap.sentrypeer.org");
        assert_eq!((c.bootstrap_port, c.port), (4222, 4222));
        assert!(!c.bridge);
    }

    #[test]
    fn bootstrap_takes_host_port_and_bracketed_ipv6() {
        for (text, host, port) in [
            ("127.0.0.1:4000", "127.0.0.1", 4000),
            ("[::1]:4222", "::1", 4222),
            ("dht.example.org:5", "dht.example.org", 5),
        ] {
            let c = resolve(RawOpenDhtConfig {
                enabled: true,
                bootstrap: Some(text.into()),
                ..Default::default()
            })
            .unwrap()
            .unwrap();
            assert_eq!((c.bootstrap_host.as_str(), c.bootstrap_port), (host, port));
        }
        for bad in [
            "host",
            "host:0",
            "host:70000",
            "::1:4222",
            ":4222",
            "a b:1",
            "[::1:4222",
        ] {
            let e = resolve(RawOpenDhtConfig {
                enabled: true,
                bootstrap: Some(bad.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(e.option, "--opendht-bootstrap", "{bad}");
        }
        let e = resolve(RawOpenDhtConfig {
            enabled: true,
            port: Some("65536".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.option, "--opendht-port");
    }

    #[test]
    fn options_without_opendht_warn_and_do_nothing() {
        let mut w = Vec::new();
        let c = OpenDhtConfig::resolve(
            RawOpenDhtConfig {
                port: Some("5000".into()),
                ..Default::default()
            },
            &mut w,
        )
        .unwrap();
        assert!(c.is_none());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_quic_listener_on_the_opendht_port_is_refused() {
        let c = resolve(RawOpenDhtConfig {
            enabled: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let clash = ["/ip4/0.0.0.0/udp/4222/quic-v1".to_string()];
        assert_eq!(c.check_ports(&clash).unwrap_err().option, "--opendht-port");
        let fine = [
            "/ip4/0.0.0.0/udp/4223/quic-v1".to_string(),
            "/ip4/0.0.0.0/tcp/4222".to_string(),
        ];
        c.check_ports(&fine).unwrap();
    }
}
