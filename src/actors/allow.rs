//! Address ranges that are never listed: the operator's allowlist (`--allow`, `--allow-file`) and
//! the ranges this node itself lives in. Parsing is strict (a bad entry is an error naming it);
//! lookups cost one hash probe per distinct prefix length in the list, so a list of thousands of
//! ranges is as cheap to consult per event as a list of three.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// An address range: a network address (host bits zero) and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an address or address/prefix")]
    NotAnAddress,
    #[error("the prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    BadPrefix,
}

impl Cidr {
    /// Parses `192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32` or `[2001:db8::1]`. Host bits set
    /// below the prefix (`198.51.100.7/24`) are cleared, as routers and firewalls read it.
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::NotAnAddress)?;
        let addr = addr.to_canonical();
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or(CidrError::BadPrefix)?,
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The range holding exactly this address.
    pub fn host(addr: IpAddr) -> Cidr {
        let addr = addr.to_canonical();
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// A set of ranges, looked up by masking the address once per prefix length present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    ranges: HashSet<Cidr>,
    /// The distinct prefix lengths in `ranges`, longest first, per family.
    v4_prefixes: BTreeSet<u8>,
    v6_prefixes: BTreeSet<u8>,
}

/// A line of an allow file that did not parse.
#[derive(Debug, thiserror::Error)]
pub enum AllowFileError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("line {line}: `{text}`: {error}")]
    Line {
        line: usize,
        text: String,
        error: CidrError,
    },
}

/// The longest allow file line echoed in an error.
const MAX_ECHOED_LINE: usize = 80;

impl AllowList {
    pub fn new(ranges: impl IntoIterator<Item = Cidr>) -> AllowList {
        let mut list = AllowList::default();
        for r in ranges {
            list.insert(r);
        }
        list
    }

    pub fn insert(&mut self, range: Cidr) {
        if range.addr.is_ipv4() {
            self.v4_prefixes.insert(range.prefix);
        } else {
            self.v6_prefixes.insert(range.prefix);
        }
        self.ranges.insert(range);
    }

    /// Reads one range per line; `#` starts a comment, blank lines are skipped.
    pub fn parse_file_text(text: &str) -> Result<Vec<Cidr>, AllowFileError> {
        let mut out = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let cidr = Cidr::parse(line).map_err(|error| AllowFileError::Line {
                line: i + 1,
                text: line.chars().take(MAX_ECHOED_LINE).collect(),
                error,
            })?;
            out.push(cidr);
        }
        Ok(out)
    }

    pub fn read_file(path: &Path) -> Result<Vec<Cidr>, AllowFileError> {
        Self::parse_file_text(&std::fs::read_to_string(path)?)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.ranges.is_empty() {
            return false;
        }
        let ip = ip.to_canonical();
        let prefixes = if ip.is_ipv4() {
            &self.v4_prefixes
        } else {
            &self.v6_prefixes
        };
        prefixes.iter().rev().any(|&prefix| {
            self.ranges.contains(&Cidr {
                addr: mask(ip, prefix),
                prefix,
            })
        })
    }

    /// The ranges, sorted, for display.
    pub fn ranges(&self) -> Vec<Cidr> {
        let mut v: Vec<Cidr> = self.ranges.iter().copied().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_in_every_usual_form_and_clear_host_bits() {
        assert_eq!(
            Cidr::parse("198.51.100.7/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            Cidr::parse("192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            Cidr::parse(" 2001:db8::1/32 ").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            Cidr::parse("[2001:db8::1]").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            Cidr::parse("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(Cidr::parse("192.0.2.1/33"), Err(CidrError::BadPrefix));
        assert_eq!(Cidr::parse("192.0.2.1/x"), Err(CidrError::BadPrefix));
        assert_eq!(Cidr::parse("example.org"), Err(CidrError::NotAnAddress));
        assert_eq!(Cidr::parse(""), Err(CidrError::NotAnAddress));
    }

    #[test]
    fn an_allow_list_matches_addresses_inside_its_ranges_only() {
        let list = AllowList::new(
            [
                "198.51.100.0/24",
                "192.0.2.7",
                "2001:db8:1::/48",
                "10.0.0.0/8",
            ]
            .into_iter()
            .map(|s| Cidr::parse(s).unwrap()),
        );
        for yes in [
            "198.51.100.0",
            "198.51.100.255",
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "2001:db8:1:ffff::1",
            "10.200.1.1",
        ] {
            assert!(list.contains(ip(yes)), "{yes}");
        }
        for no in [
            "198.51.101.1",
            "192.0.2.8",
            "2001:db8:2::1",
            "11.0.0.1",
            "::1",
        ] {
            assert!(!list.contains(ip(no)), "{no}");
        }
        assert!(!AllowList::default().contains(ip("192.0.2.7")));
        let everything = AllowList::new([Cidr::parse("0.0.0.0/0").unwrap()]);
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(!everything.contains(ip("2001:db8::1")));
    }

    #[test]
    fn an_allow_file_takes_comments_and_names_the_bad_line() {
        let got = AllowList::parse_file_text(
            "# our trunks\n198.51.100.0/24\n\n  2001:db8::/32  # v6 office\n",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        let err = AllowList::parse_file_text("192.0.2.1\nnot-an-ip\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: `not-an-ip`: not an address or address/prefix"
        );
    }
}
