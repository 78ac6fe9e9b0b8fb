//! The bad-actor set served as a DNS blocklist (RFC 5782), so that a mail server, a PBX or a
//! firewall script asks "is 192.0.2.7 a SIP bad actor?" with an ordinary DNS query.
//!
//! Names under the zone (`--dnsbl-zone`, here `bl.example`):
//! - `7.2.0.192.bl.example`: an IPv4 address, octets reversed; IPv6 as 32 reversed nibbles
//!   (`1.0.0.0…8.b.d.0.1.0.0.2.bl.example` for 2001:db8::1), as in RFC 5782 §2.1–2.4;
//! - `8.7.6.5.4.3.2.1.0.2.4.4.numbers.bl.example`: a dialled number, digits reversed one per
//!   label as ENUM writes them (RFC 6116). ENUM drops the `+`, so a name has no `+` either: it
//!   matches the number dialled as `442012345678` and as `+442012345678`, whichever is listed.
//!
//! A listed name answers `A 127.0.0.2` and a `TXT` with when it was last seen and how often; a
//! name not listed is NXDOMAIN with the zone's SOA, so resolvers cache the negative answer
//! ([`NEGATIVE_TTL`]). `127.0.0.2` (and `::ffff:127.0.0.2`) is always listed and `127.0.0.1`
//! never: RFC 5782 §5's test entries, so a mail server can check the list works. Answers last
//! [`ANSWER_TTL`] at most (less when the listing ends sooner): a blocklist that follows probes
//! minute by minute should not be cached for hours.
//!
//! What it owns: its settings (`--dnsbl-listen`, `--dnsbl-zone`, `--dnsbl-ns`), the zone's
//! names (`zone.rs`, pure), query → answer on the wire (`wire.rs`, pure but for the lookup it
//! is handed), and its sockets (`serve.rs`: UDP, and TCP with the 2-byte length prefix).
//!
//! What it must not depend on: `app`, `api`, the outputs or the pipeline. It reads the
//! database through `store::ReadPool` and decides "listed" only through
//! `store::actors::ActorRow::listed_until` with the node's `actors::Rules`: nothing here
//! re-derives the rule. `app` binds its sockets and starts it as intake.

#[cfg(feature = "dnsbl")]
pub mod serve;
#[cfg(feature = "dnsbl")]
pub mod wire;
#[cfg(feature = "dnsbl")]
pub mod zone;

use std::net::SocketAddr;

use crate::capture::Listen;
use crate::settings::ConfigError;

/// The longest a listed answer may be cached (seconds): a minute, so that a listing that ends
/// (TTL, allowlist) stops blocking within a minute of it.
pub const ANSWER_TTL: u32 = 60;
/// How long a resolver caches "not listed" (the SOA's minimum and TTL, RFC 2308): a minute,
/// so that a new bad actor is blocked within a minute of its first probe.
pub const NEGATIVE_TTL: u32 = 60;

/// The DNS blocklist's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblConfig {
    /// Where to answer, over UDP and TCP on the same port.
    pub listen: Vec<Listen>,
    /// The zone, lower case, without the final dot.
    pub zone: String,
    /// The name server's host name as the parent zone delegates to it (NS and the SOA's
    /// primary), lower case; the zone itself when not given.
    pub ns: String,
}

/// The raw values, as given on the command line, in the environment or the config file.
#[derive(Debug, Default, Clone)]
pub struct RawDnsblConfig {
    pub listen: Vec<String>,
    pub zone: Option<String>,
    pub ns: Option<String>,
}

impl DnsblConfig {
    /// `None` when no `--dnsbl-listen` is given (a zone alone is warned about: it does
    /// nothing). A listen address needs a zone; each must be valid.
    pub fn resolve(
        raw: RawDnsblConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Option<DnsblConfig>, ConfigError> {
        if raw.listen.is_empty() {
            if let Some(zone) = raw.zone {
                warnings.push(format!(
                    "A DNSBL zone (--dnsbl-zone {zone}) is set but no --dnsbl-listen: it has no effect."
                ));
            }
            return Ok(None);
        }
        let listen = raw
            .listen
            .iter()
            .map(|v| {
                v.trim()
                    .parse::<SocketAddr>()
                    .map(|addr| Listen {
                        addr,
                        optional: false,
                    })
                    .map_err(|_| {
                        ConfigError::new(
                            "--dnsbl-listen",
                            v,
                            "expected IP:PORT, such as 0.0.0.0:53 or [::]:53",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zone = raw.zone.ok_or_else(|| {
            ConfigError::new(
                "--dnsbl-zone",
                "",
                "required with --dnsbl-listen: the zone to answer for, such as bl.example.org",
            )
        })?;
        let zone =
            domain_name(&zone).map_err(|why| ConfigError::new("--dnsbl-zone", &zone, why))?;
        let ns = match raw.ns {
            None => zone.clone(),
            Some(ns) => domain_name(&ns).map_err(|why| ConfigError::new("--dnsbl-ns", &ns, why))?,
        };
        Ok(Some(DnsblConfig { listen, zone, ns }))
    }
}

/// A host or zone name in lower case without the final dot, or why it is not one: labels of
/// 1 to 63 letters, digits, hyphens (not first or last) and underscores, 253 characters in all.
pub fn domain_name(text: &str) -> Result<String, &'static str> {
    let name = text.trim();
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Err("expected a domain name, such as bl.example.org");
    }
    if name.len() > 253 {
        return Err("longer than a domain name may be (253 characters)");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a label may hold only letters, digits, '-' and '_'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not begin or end with '-'");
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &[&str], zone: Option<&str>) -> RawDnsblConfig {
        RawDnsblConfig {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            zone: zone.map(str::to_string),
            ns: None,
        }
    }

    #[test]
    fn dnsbl_zone_names_are_checked_and_lower_cased() {
        assert_eq!(domain_name("BL.Example.org."), Ok("bl.example.org".into()));
        assert_eq!(domain_name("bl"), Ok("bl".into()));
        assert_eq!(domain_name("_dnsbl.example"), Ok("_dnsbl.example".into()));
        for bad in [
            "",
            ".",
            "bl..example",
            "-bl.example",
            "bl-.example",
            "bl example",
            "bl.exa*mple",
            "ünï.example",
        ] {
            assert!(domain_name(bad).is_err(), "{bad:?}");
        }
        assert!(domain_name(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(domain_name(&["abcdefghi"; 26].join(".")).is_err());
    }

    #[test]
    fn dnsbl_listen_needs_a_valid_zone_and_names_the_option() {
        let mut w = Vec::new();
        assert_eq!(DnsblConfig::resolve(raw(&[], None), &mut w).unwrap(), None);
        assert!(w.is_empty());
        assert_eq!(
            DnsblConfig::resolve(raw(&[], Some("bl.example")), &mut w).unwrap(),
            None
        );
        assert!(w[0].contains("--dnsbl-listen"), "{w:?}");

        let e = DnsblConfig::resolve(raw(&["127.0.0.1:5353"], None), &mut w).unwrap_err();
        assert_eq!(e.option, "--dnsbl-zone");
        let e =
            DnsblConfig::resolve(raw(&["127.0.0.1:5353"], Some("bad zone")), &mut w).unwrap_err();
        assert_eq!(e.option, "--dnsbl-zone");
        let e =
            DnsblConfig::resolve(raw(&["localhost:53"], Some("bl.example")), &mut w).unwrap_err();
        assert_eq!(e.option, "--dnsbl-listen");

        let c = DnsblConfig::resolve(
            raw(&["127.0.0.1:5353", "[::1]:0"], Some("BL.example.")),
            &mut w,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.zone, "bl.example");
        assert_eq!(c.ns, "bl.example");
        assert_eq!(c.listen.len(), 2);
        assert!(!c.listen[1].optional);
        let mut r = raw(&["127.0.0.1:5353"], Some("bl.example"));
        r.ns = Some("NS1.Example.".into());
        assert_eq!(
            DnsblConfig::resolve(r.clone(), &mut w).unwrap().unwrap().ns,
            "ns1.example"
        );
        r.ns = Some("ns 1".into());
        assert_eq!(
            DnsblConfig::resolve(r, &mut w).unwrap_err().option,
            "--dnsbl-ns"
        );
    }
}
