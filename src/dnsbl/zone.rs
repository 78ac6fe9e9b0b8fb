//! The zone's names, pure: which actor a query name asks about (an address reversed, a number
//! under `numbers.`), or that it is the apex, a name between (an empty non-terminal), no name
//! at all, or outside the zone. No I/O, no DNS library: labels in, verdict out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::actors::MAX_NUMBER_DIGITS;

/// The label under the zone that holds dialled numbers.
pub const NUMBERS_LABEL: &[u8] = b"numbers";

/// RFC 5782 §5's test entries: always listed, and never listed.
pub const TEST_LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const TEST_NOT_LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// What a name in the zone stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The zone itself: SOA and NS.
    Apex,
    /// An address (IPv4-mapped IPv6 addresses as IPv4, as the set stores them).
    Ip(IpAddr),
    /// A dialled number's digits, in dialling order, without `+`.
    Number(String),
    /// A name that exists only because names below it may (`2.0.192.bl.example`,
    /// `numbers.bl.example`): no data, but not NXDOMAIN, so that resolvers that minimise query
    /// names (RFC 9156) go on down to the full name.
    Between,
    /// A name in the zone that can never be listed (`www.bl.example`, `1.2.3.4.5.bl.example`).
    NoSuchName,
}

/// The zone: its labels, lower case, in order (`["bl", "example"]`).
#[derive(Debug, Clone)]
pub struct Zone {
    labels: Vec<Vec<u8>>,
}

impl Zone {
    /// From a checked name (`dnsbl::domain_name`).
    pub fn new(name: &str) -> Zone {
        Zone {
            labels: name
                .split('.')
                .filter(|l| !l.is_empty())
                .map(|l| l.to_ascii_lowercase().into_bytes())
                .collect(),
        }
    }

    /// What a query name stands for, its labels given in order (leftmost first, no root
    /// label); `None` when it is not in the zone.
    pub fn target(&self, labels: &[&[u8]]) -> Option<Target> {
        let below = labels.len().checked_sub(self.labels.len())?;
        let in_zone = labels[below..]
            .iter()
            .zip(&self.labels)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
        if !in_zone {
            return None;
        }
        let sub = &labels[..below];
        let Some((last, rest)) = sub.split_last() else {
            return Some(Target::Apex);
        };
        if last.eq_ignore_ascii_case(NUMBERS_LABEL) {
            return Some(number(rest));
        }
        Some(address(sub))
    }
}

/// Digits one per label, reversed (ENUM's form).
fn number(labels: &[&[u8]]) -> Target {
    if labels.is_empty() {
        return Target::Between;
    }
    if labels.len() > MAX_NUMBER_DIGITS
        || !labels.iter().all(|l| l.len() == 1 && l[0].is_ascii_digit())
    {
        return Target::NoSuchName;
    }
    Target::Number(labels.iter().rev().map(|l| char::from(l[0])).collect())
}

/// An IPv4 address as four reversed octets, or an IPv6 address as 32 reversed nibbles; fewer
/// labels of the right form are names between.
fn address(labels: &[&[u8]]) -> Target {
    let octets: Option<Vec<u8>> = labels.iter().map(|l| octet(l)).collect();
    if let Some(octets) = &octets {
        match octets.len() {
            1..=3 => return Target::Between,
            4 => {
                let ip = Ipv4Addr::new(octets[3], octets[2], octets[1], octets[0]);
                return Target::Ip(IpAddr::V4(ip));
            }
            _ => {}
        }
    }
    let nibbles: Option<Vec<u8>> = labels.iter().map(|l| nibble(l)).collect();
    match nibbles {
        Some(n) if n.len() == 32 => {
            let mut v = 0u128;
            for d in n.iter().rev() {
                v = (v << 4) | u128::from(*d);
            }
            Target::Ip(Ipv6Addr::from(v).to_canonical())
        }
        Some(n) if n.len() < 32 => Target::Between,
        _ => Target::NoSuchName,
    }
}

/// A decimal octet as written in an address: `0` to `255`, no leading zeros.
fn octet(label: &[u8]) -> Option<u8> {
    if label.is_empty()
        || label.len() > 3
        || (label.len() > 1 && label[0] == b'0')
        || !label.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

/// One hexadecimal digit, either case.
fn nibble(label: &[u8]) -> Option<u8> {
    match label {
        [c] => char::from(*c).to_digit(16).map(|d| d as u8),
        _ => None,
    }
}

/// The TXT answer for a listed actor: when it was last seen (UTC, to the second) and how often.
pub fn describe(kind: crate::actors::Kind, last_seen_ms: i64, count: i64) -> String {
    let at = crate::actors::export::rfc3339(last_seen_ms);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` → to the second.
    let at = format!("{}Z", at.get(..19).unwrap_or(&at));
    let times = if count == 1 { "time" } else { "times" };
    match kind {
        crate::actors::Kind::Ip => {
            format!("SIP bad actor: last seen {at}, seen {count} {times}")
        }
        crate::actors::Kind::Number => {
            format!("Number dialled by SIP bad actors: last seen {at}, seen {count} {times}")
        }
    }
}

/// The TXT answer for the always-listed test entry.
pub const TEST_ENTRY_TEXT: &str = "RFC 5782 test entry: always listed";

/// The reversed name of an address under a zone, as a client writes it (for tests and tools).
pub fn reversed(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + zone.len());
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str(zone);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Option<Target> {
        let labels: Vec<&[u8]> = name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        Zone::new("bl.example").target(&labels)
    }

    fn ip(s: &str) -> Option<Target> {
        Some(Target::Ip(s.parse().unwrap()))
    }

    #[test]
    fn dnsbl_ipv4_names_are_reversed_octets() {
        assert_eq!(target("4.3.2.1.bl.example"), ip("1.2.3.4"));
        assert_eq!(target("4.3.2.1.BL.Example."), ip("1.2.3.4"));
        assert_eq!(target("2.0.0.127.bl.example"), ip("127.0.0.2"));
        assert_eq!(target("255.0.0.0.bl.example"), ip("0.0.0.255"));
        assert_eq!(target("3.2.1.bl.example"), Some(Target::Between));
        assert_eq!(target("1.bl.example"), Some(Target::Between));
        for none in [
            "256.0.0.1.bl.example",
            "01.0.0.127.bl.example",
            "10.2.3.4.5.bl.example",
            "www.bl.example",
            "-1.0.0.127.bl.example",
        ] {
            assert_eq!(target(none), Some(Target::NoSuchName), "{none}");
        }
    }

    #[test]
    fn dnsbl_ipv6_names_are_32_reversed_nibbles_and_mapped_ipv4_is_ipv4() {
        let zone = "bl.example";
        for a in ["2001:db8::1", "::1", "fe80::abcd:ef01:2345:6789"] {
            let addr: IpAddr = a.parse().unwrap();
            assert_eq!(target(&reversed(addr, zone)), ip(a), "{a}");
            assert_eq!(target(&reversed(addr, zone).to_uppercase()), ip(a), "{a}");
        }
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(target(&reversed(mapped, zone)), ip("127.0.0.2"));
        // 20 nibbles: a prefix, so a name between; 33: none.
        assert_eq!(
            target(&format!("{}bl.example", "a.".repeat(20))),
            Some(Target::Between)
        );
        assert_eq!(
            target(&format!("{}bl.example", "a.".repeat(33))),
            Some(Target::NoSuchName)
        );
        assert_eq!(
            target(&format!("{}bl.example", "ab.".repeat(32))),
            Some(Target::NoSuchName)
        );
    }

    #[test]
    fn dnsbl_numbers_are_reversed_digits_under_numbers_without_the_plus() {
        assert_eq!(
            target("8.7.6.5.4.3.2.1.0.2.4.4.numbers.bl.example"),
            Some(Target::Number("442012345678".into()))
        );
        assert_eq!(
            target("0.0.1.NUMBERS.bl.example"),
            Some(Target::Number("100".into()))
        );
        assert_eq!(target("numbers.bl.example"), Some(Target::Between));
        for none in [
            "12.numbers.bl.example",
            "+.4.4.numbers.bl.example",
            "a.numbers.bl.example",
            "1.x.numbers.bl.example",
        ] {
            assert_eq!(target(none), Some(Target::NoSuchName), "{none}");
        }
        let long = "1.".repeat(MAX_NUMBER_DIGITS + 1);
        assert_eq!(
            target(&format!("{long}numbers.bl.example")),
            Some(Target::NoSuchName)
        );
    }

    #[test]
    fn dnsbl_names_outside_the_zone_are_none_and_the_zone_is_the_apex() {
        assert_eq!(target("bl.example"), Some(Target::Apex));
        assert_eq!(target("BL.EXAMPLE."), Some(Target::Apex));
        for outside in [
            "example",
            "4.3.2.1.bl.example.org",
            "4.3.2.1.xbl.example",
            "",
        ] {
            assert_eq!(target(outside), None, "{outside}");
        }
    }

    #[test]
    fn dnsbl_text_says_when_and_how_often() {
        let ms = 1_796_032_800_000; // 2026-11-30T10:00:00Z
        assert_eq!(
            describe(crate::actors::Kind::Ip, ms + 123, 14),
            "SIP bad actor: last seen 2026-11-30T10:00:00Z, seen 14 times"
        );
        assert!(describe(crate::actors::Kind::Number, ms, 1).ends_with("seen 1 time"));
    }
}
