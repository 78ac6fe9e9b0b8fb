//! The BGP-4 messages an announce-only speaker needs (RFC 4271), as bytes: OPEN with
//! capabilities (RFC 5492: multiprotocol RFC 4760, 4-octet AS numbers RFC 6793), UPDATE with
//! ORIGIN, AS_PATH (and AS4_PATH for a 2-octet peer), NEXT_HOP, LOCAL_PREF (iBGP),
//! COMMUNITIES (RFC 1997), LARGE_COMMUNITY (RFC 8092) and MP_REACH/MP_UNREACH_NLRI for IPv6,
//! KEEPALIVE and NOTIFICATION. Many host routes are packed into each UPDATE, up to the
//! 4,096-byte message limit.
//!
//! Pure: no I/O. Parsing what a peer sends is bounded by the message length and never panics;
//! UPDATEs received are not decoded at all (this speaker installs nothing).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The 16-byte marker, the length and the type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the extended-message capability (which we never offer).
pub const MAX_MESSAGE: usize = 4096;
/// The AS number a 2-octet-only peer sees in place of a 4-octet one (RFC 6793).
pub const AS_TRANS: u16 = 23456;

pub const OPEN: u8 = 1;
pub const UPDATE: u8 = 2;
pub const NOTIFICATION: u8 = 3;
pub const KEEPALIVE: u8 = 4;
pub const ROUTE_REFRESH: u8 = 5;

/// NOTIFICATION error codes and the subcodes we send.
pub mod error {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;
    pub const OPEN: u8 = 2;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_IDENTIFIER: u8 = 3;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const CEASE_ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_COLLISION: u8 = 7;
}

/// An address family and subsequent address family (unicast only here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }
}

/// A community to tag every route with: standard `ASN:VALUE` or large `A:B:C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Standard(u32),
    Large(u32, u32, u32),
}

/// RFC 7999's BLACKHOLE community, 65535:666.
pub const BLACKHOLE: Community = Community::Standard(0xFFFF_029A);
/// RFC 1997's NO_EXPORT, 65535:65281.
pub const NO_EXPORT: Community = Community::Standard(0xFFFF_FF01);

impl std::str::FromStr for Community {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str| p.trim().parse::<u32>().ok();
        match parts.as_slice() {
            [a, b] => match (a.trim().parse::<u16>().ok(), b.trim().parse::<u16>().ok()) {
                (Some(a), Some(b)) => Ok(Community::Standard((u32::from(a) << 16) | u32::from(b))),
                _ => Err("a standard community is two numbers of 0-65535, ASN:VALUE"),
            },
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(a), Some(b), Some(c)) => Ok(Community::Large(a, b, c)),
                _ => Err("a large community is three numbers of 0-4294967295, A:B:C"),
            },
            _ => Err("expected ASN:VALUE or a large community A:B:C"),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xFFFF),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

/// What every route we announce carries, and what the peer can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAttrs {
    pub local_as: u32,
    /// The peer is in our AS: empty AS_PATH and a LOCAL_PREF.
    pub ibgp: bool,
    /// The peer offered 4-octet AS numbers.
    pub four_octet: bool,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub communities: Vec<Community>,
}

/// Frames a message: marker, length, type, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + body.len());
    m.extend_from_slice(&[0xFF; 16]);
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

pub fn keepalive() -> Vec<u8> {
    message(KEEPALIVE, &[])
}

pub fn notification(code: u8, subcode: u8, data: &[u8]) -> Vec<u8> {
    let mut body = vec![code, subcode];
    body.extend_from_slice(&data[..data.len().min(MAX_MESSAGE - HEADER_LEN - 2)]);
    message(NOTIFICATION, &body)
}

/// An OPEN offering the given families and 4-octet AS numbers.
pub fn open(local_as: u32, hold_time: u16, router_id: Ipv4Addr, families: &[Family]) -> Vec<u8> {
    let mut caps = Vec::new();
    for f in families {
        let (afi, safi) = f.afi_safi();
        caps.extend_from_slice(&[1, 4]);
        caps.extend_from_slice(&afi.to_be_bytes());
        caps.extend_from_slice(&[0, safi]);
    }
    caps.extend_from_slice(&[65, 4]);
    caps.extend_from_slice(&local_as.to_be_bytes());
    let my_as = u16::try_from(local_as).unwrap_or(AS_TRANS);
    let mut body = vec![4];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold_time.to_be_bytes());
    body.extend_from_slice(&router_id.octets());
    // One optional parameter (type 2, capabilities) holding them all.
    body.push((caps.len() + 2) as u8);
    body.push(2);
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

/// One path attribute, with the extended-length flag when the value needs it.
fn attr(out: &mut Vec<u8>, flags: u8, kind: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | 0x10);
        out.push(kind);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags);
        out.push(kind);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

const WELL_KNOWN: u8 = 0x40;
const OPTIONAL_TRANSITIVE: u8 = 0xC0;
const OPTIONAL: u8 = 0x80;

/// ORIGIN, AS_PATH (+ AS4_PATH), NEXT_HOP if given, LOCAL_PREF for iBGP, the communities.
fn common_attrs(a: &RouteAttrs, next_hop: Option<Ipv4Addr>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    attr(&mut out, WELL_KNOWN, 1, &[0]); // ORIGIN IGP
    if a.ibgp {
        attr(&mut out, WELL_KNOWN, 2, &[]);
    } else if a.four_octet {
        let mut seg = vec![2, 1];
        seg.extend_from_slice(&a.local_as.to_be_bytes());
        attr(&mut out, WELL_KNOWN, 2, &seg);
    } else {
        let mut seg = vec![2, 1];
        seg.extend_from_slice(&u16::try_from(a.local_as).unwrap_or(AS_TRANS).to_be_bytes());
        attr(&mut out, WELL_KNOWN, 2, &seg);
    }
    if let Some(nh) = next_hop {
        attr(&mut out, WELL_KNOWN, 3, &nh.octets());
    }
    if a.ibgp {
        attr(&mut out, WELL_KNOWN, 5, &100u32.to_be_bytes());
    }
    let standard: Vec<u8> = a
        .communities
        .iter()
        .filter_map(|c| match c {
            Community::Standard(v) => Some(v.to_be_bytes()),
            Community::Large(..) => None,
        })
        .flatten()
        .collect();
    if !standard.is_empty() {
        attr(&mut out, OPTIONAL_TRANSITIVE, 8, &standard);
    }
    if !a.ibgp && !a.four_octet && a.local_as > u32::from(u16::MAX) {
        let mut seg = vec![2, 1];
        seg.extend_from_slice(&a.local_as.to_be_bytes());
        attr(&mut out, OPTIONAL_TRANSITIVE, 17, &seg);
    }
    let large: Vec<u8> = a
        .communities
        .iter()
        .filter_map(|c| match c {
            Community::Large(x, y, z) => Some([*x, *y, *z]),
            Community::Standard(_) => None,
        })
        .flatten()
        .flat_map(u32::to_be_bytes)
        .collect();
    if !large.is_empty() {
        attr(&mut out, OPTIONAL_TRANSITIVE, 32, &large);
    }
    out
}

/// An UPDATE: withdrawn routes, path attributes, NLRI.
fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + withdrawn.len() + attrs.len() + nlri.len());
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(UPDATE, &body)
}

/// Room in an UPDATE for withdrawn routes, attributes and NLRI together.
const UPDATE_ROOM: usize = MAX_MESSAGE - HEADER_LEN - 4;
/// A host route's prefix: the length byte and the address.
const V4_PREFIX: usize = 5;
const V6_PREFIX: usize = 17;

fn push_v4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    out.push(32);
    out.extend_from_slice(&ip.octets());
}

fn push_v6(out: &mut Vec<u8>, ip: Ipv6Addr) {
    out.push(128);
    out.extend_from_slice(&ip.octets());
}

/// UPDATEs announcing a /32 for each address, as few as the size limit allows. Empty without
/// an IPv4 next hop.
pub fn announce_v4(ips: &[Ipv4Addr], a: &RouteAttrs) -> Vec<Vec<u8>> {
    let Some(nh) = a.next_hop_v4 else {
        return Vec::new();
    };
    let attrs = common_attrs(a, Some(nh));
    let per = (UPDATE_ROOM - attrs.len()) / V4_PREFIX;
    ips.chunks(per.max(1))
        .map(|chunk| {
            let mut nlri = Vec::with_capacity(chunk.len() * V4_PREFIX);
            for ip in chunk {
                push_v4(&mut nlri, *ip);
            }
            update(&[], &attrs, &nlri)
        })
        .collect()
}

/// UPDATEs withdrawing a /32 for each address.
pub fn withdraw_v4(ips: &[Ipv4Addr]) -> Vec<Vec<u8>> {
    ips.chunks(UPDATE_ROOM / V4_PREFIX)
        .map(|chunk| {
            let mut w = Vec::with_capacity(chunk.len() * V4_PREFIX);
            for ip in chunk {
                push_v4(&mut w, *ip);
            }
            update(&w, &[], &[])
        })
        .collect()
}

/// MP_REACH_NLRI's fixed part: AFI 2, SAFI 1, the 16-byte next hop, the reserved byte.
const MP_REACH_FIXED: usize = 2 + 1 + 1 + 16 + 1;
/// An extended-length attribute's header.
const ATTR_HEADER_EXT: usize = 4;

/// UPDATEs announcing a /128 for each address in MP_REACH_NLRI. Empty without an IPv6 next
/// hop.
pub fn announce_v6(ips: &[Ipv6Addr], a: &RouteAttrs) -> Vec<Vec<u8>> {
    let Some(nh) = a.next_hop_v6 else {
        return Vec::new();
    };
    let common = common_attrs(a, None);
    let per = (UPDATE_ROOM - common.len() - ATTR_HEADER_EXT - MP_REACH_FIXED) / V6_PREFIX;
    ips.chunks(per.max(1))
        .map(|chunk| {
            let mut mp = Vec::with_capacity(MP_REACH_FIXED + chunk.len() * V6_PREFIX);
            mp.extend_from_slice(&2u16.to_be_bytes());
            mp.push(1);
            mp.push(16);
            mp.extend_from_slice(&nh.octets());
            mp.push(0);
            for ip in chunk {
                push_v6(&mut mp, *ip);
            }
            let mut attrs = Vec::with_capacity(common.len() + mp.len() + ATTR_HEADER_EXT);
            // MP_REACH_NLRI first, as is customary.
            attr(&mut attrs, OPTIONAL, 14, &mp);
            attrs.extend_from_slice(&common);
            update(&[], &attrs, &[])
        })
        .collect()
}

/// UPDATEs withdrawing a /128 for each address in MP_UNREACH_NLRI.
pub fn withdraw_v6(ips: &[Ipv6Addr]) -> Vec<Vec<u8>> {
    let per = (UPDATE_ROOM - ATTR_HEADER_EXT - 3) / V6_PREFIX;
    ips.chunks(per)
        .map(|chunk| {
            let mut mp = Vec::with_capacity(3 + chunk.len() * V6_PREFIX);
            mp.extend_from_slice(&2u16.to_be_bytes());
            mp.push(1);
            for ip in chunk {
                push_v6(&mut mp, *ip);
            }
            let mut attrs = Vec::with_capacity(mp.len() + ATTR_HEADER_EXT);
            attr(&mut attrs, OPTIONAL, 15, &mp);
            update(&[], &attrs, &[])
        })
        .collect()
}

/// The End-of-RIB marker of a family (RFC 4724): the initial table is complete.
pub fn end_of_rib(family: Family) -> Vec<u8> {
    match family {
        Family::Ipv4Unicast => update(&[], &[], &[]),
        Family::Ipv6Unicast => {
            let mut attrs = Vec::new();
            attr(&mut attrs, OPTIONAL, 15, &[0, 2, 1]);
            update(&[], &attrs, &[])
        }
    }
}

/// What is wrong with a message received: the NOTIFICATION to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
    pub why: &'static str,
}

impl WireError {
    fn new(code: u8, subcode: u8, data: &[u8], why: &'static str) -> WireError {
        WireError {
            code,
            subcode,
            data: data.to_vec(),
            why,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (error {}/{})", self.why, self.code, self.subcode)
    }
}

/// A peer's OPEN, as far as we use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 4-octet AS when offered, else the 2-octet field.
    pub peer_as: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub four_octet: bool,
    /// Families offered; empty means IPv4 unicast only (RFC 4760, section 8).
    pub families: Vec<Family>,
    /// Whether any multiprotocol capability was present.
    pub multiprotocol: bool,
}

impl Open {
    /// Whether the peer takes routes of this family.
    pub fn accepts(&self, f: Family) -> bool {
        if self.multiprotocol {
            self.families.contains(&f)
        } else {
            f == Family::Ipv4Unicast
        }
    }
}

/// A message received, decoded as far as an announce-only speaker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    /// Never decoded: counted and ignored.
    Update,
    Notification {
        code: u8,
        subcode: u8,
        data: Vec<u8>,
    },
    Keepalive,
    RouteRefresh,
}

/// Splits the first whole message off `buf`: `Ok(None)` when more bytes are needed, else the
/// message and how many bytes it took.
pub fn next_message(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        // A bad marker is reported as soon as it is seen.
        if buf.iter().take(16).any(|b| *b != 0xFF) {
            return Err(WireError::new(
                error::HEADER,
                error::HEADER_NOT_SYNCHRONIZED,
                &[],
                "bad marker",
            ));
        }
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xFF) {
        return Err(WireError::new(
            error::HEADER,
            error::HEADER_NOT_SYNCHRONIZED,
            &[],
            "bad marker",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let min = match kind {
        OPEN => HEADER_LEN + 10,
        UPDATE => HEADER_LEN + 4,
        NOTIFICATION => HEADER_LEN + 2,
        KEEPALIVE => HEADER_LEN,
        ROUTE_REFRESH => HEADER_LEN + 4,
        _ => {
            return Err(WireError::new(
                error::HEADER,
                error::HEADER_BAD_TYPE,
                &[kind],
                "unknown message type",
            ));
        }
    };
    if len < min || len > MAX_MESSAGE || (kind == KEEPALIVE && len != HEADER_LEN) {
        return Err(WireError::new(
            error::HEADER,
            error::HEADER_BAD_LENGTH,
            &buf[16..18],
            "bad message length",
        ));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let m = match kind {
        OPEN => Message::Open(parse_open(body)?),
        UPDATE => Message::Update,
        NOTIFICATION => Message::Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        },
        KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh,
    };
    Ok(Some((m, len)))
}

fn parse_open(b: &[u8]) -> Result<Open, WireError> {
    let bad = |why| WireError::new(error::OPEN, 0, &[], why);
    let version = b[0];
    if version != 4 {
        return Err(WireError::new(
            error::OPEN,
            error::OPEN_UNSUPPORTED_VERSION,
            &4u16.to_be_bytes(),
            "unsupported BGP version",
        ));
    }
    let my_as = u16::from_be_bytes([b[1], b[2]]);
    let hold_time = u16::from_be_bytes([b[3], b[4]]);
    let router_id = Ipv4Addr::new(b[5], b[6], b[7], b[8]);
    let params_len = usize::from(b[9]);
    let params = b
        .get(10..10 + params_len)
        .ok_or(bad("optional parameters overrun the message"))?;
    let mut open = Open {
        version,
        peer_as: u32::from(my_as),
        hold_time,
        router_id,
        four_octet: false,
        families: Vec::new(),
        multiprotocol: false,
    };
    let mut p = params;
    while !p.is_empty() {
        let [kind, len, rest @ ..] = p else {
            return Err(bad("truncated optional parameter"));
        };
        let value = rest
            .get(..usize::from(*len))
            .ok_or(bad("optional parameter overruns the message"))?;
        if *kind == 2 {
            parse_capabilities(value, &mut open)?;
        }
        p = &rest[usize::from(*len)..];
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(WireError::new(
            error::OPEN,
            error::OPEN_UNACCEPTABLE_HOLD_TIME,
            &[],
            "hold time of 1 or 2 seconds",
        ));
    }
    if router_id.is_unspecified() {
        return Err(WireError::new(
            error::OPEN,
            error::OPEN_BAD_IDENTIFIER,
            &[],
            "BGP identifier 0.0.0.0",
        ));
    }
    Ok(open)
}

fn parse_capabilities(mut c: &[u8], open: &mut Open) -> Result<(), WireError> {
    let bad = |why| WireError::new(error::OPEN, 0, &[], why);
    while !c.is_empty() {
        let [code, len, rest @ ..] = c else {
            return Err(bad("truncated capability"));
        };
        let value = rest
            .get(..usize::from(*len))
            .ok_or(bad("capability overruns its parameter"))?;
        match (*code, value) {
            (1, [a0, a1, _, safi]) => {
                open.multiprotocol = true;
                match (u16::from_be_bytes([*a0, *a1]), *safi) {
                    (1, 1) => open.families.push(Family::Ipv4Unicast),
                    (2, 1) => open.families.push(Family::Ipv6Unicast),
                    _ => {}
                }
            }
            (65, [a, b, c2, d]) => {
                open.four_octet = true;
                open.peer_as = u32::from_be_bytes([*a, *b, *c2, *d]);
            }
            _ => {}
        }
        c = &rest[usize::from(*len)..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> RouteAttrs {
        RouteAttrs {
            local_as: 65000,
            ibgp: false,
            four_octet: true,
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            next_hop_v6: Some("100::1".parse().unwrap()),
            communities: vec![BLACKHOLE, NO_EXPORT, Community::Large(65000, 666, 1)],
        }
    }

    /// Splits an UPDATE into (withdrawn, attributes as (flags, type, value), NLRI).
    #[allow(clippy::type_complexity)]
    fn split(m: &[u8]) -> (Vec<u8>, Vec<(u8, u8, Vec<u8>)>, Vec<u8>) {
        assert_eq!(&m[..16], &[0xFF; 16]);
        assert_eq!(usize::from(u16::from_be_bytes([m[16], m[17]])), m.len());
        assert_eq!(m[18], UPDATE);
        let b = &m[HEADER_LEN..];
        let wl = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let withdrawn = b[2..2 + wl].to_vec();
        let al = usize::from(u16::from_be_bytes([b[2 + wl], b[3 + wl]]));
        let mut a = &b[4 + wl..4 + wl + al];
        let nlri = b[4 + wl + al..].to_vec();
        let mut out = Vec::new();
        while !a.is_empty() {
            let (flags, kind) = (a[0], a[1]);
            let (len, at) = if flags & 0x10 != 0 {
                (usize::from(u16::from_be_bytes([a[2], a[3]])), 4)
            } else {
                (usize::from(a[2]), 3)
            };
            out.push((flags, kind, a[at..at + len].to_vec()));
            a = &a[at + len..];
        }
        (withdrawn, out, nlri)
    }

    #[test]
    fn keepalive_and_notification_are_framed() {
        assert_eq!(keepalive(), [vec![0xFF; 16], vec![0, 19, 4]].concat());
        let n = notification(6, 2, b"bye");
        assert_eq!(n.len(), 24);
        assert_eq!(&n[18..], &[3, 6, 2, b'b', b'y', b'e']);
        let (m, used) = next_message(&n).unwrap().unwrap();
        assert_eq!(used, 24);
        assert_eq!(
            m,
            Message::Notification {
                code: 6,
                subcode: 2,
                data: b"bye".to_vec()
            }
        );
    }

    #[test]
    fn an_open_round_trips_with_its_capabilities() {
        let m = open(
            4_200_000_001,
            90,
            Ipv4Addr::new(192, 0, 2, 9),
            &[Family::Ipv4Unicast, Family::Ipv6Unicast],
        );
        let (Message::Open(o), used) = next_message(&m).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(used, m.len());
        // The 2-octet field says AS_TRANS; the capability the real number.
        assert_eq!(u16::from_be_bytes([m[20], m[21]]), AS_TRANS);
        assert_eq!(o.peer_as, 4_200_000_001);
        assert!(o.four_octet && o.multiprotocol);
        assert_eq!(o.hold_time, 90);
        assert_eq!(o.router_id, Ipv4Addr::new(192, 0, 2, 9));
        assert!(o.accepts(Family::Ipv6Unicast) && o.accepts(Family::Ipv4Unicast));
    }

    #[test]
    fn an_open_without_capabilities_means_ipv4_only_and_a_2_octet_as() {
        let mut body = vec![4, 0xFD, 0xE8, 0, 180, 10, 0, 0, 1, 0];
        let m = message(OPEN, &body);
        let (Message::Open(o), _) = next_message(&m).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(o.peer_as, 65000);
        assert!(!o.four_octet);
        assert!(o.accepts(Family::Ipv4Unicast) && !o.accepts(Family::Ipv6Unicast));
        body[3..5].copy_from_slice(&2u16.to_be_bytes());
        let e = next_message(&message(OPEN, &body)).unwrap_err();
        assert_eq!(
            (e.code, e.subcode),
            (error::OPEN, error::OPEN_UNACCEPTABLE_HOLD_TIME)
        );
        body[0] = 3;
        let e = next_message(&message(OPEN, &body)).unwrap_err();
        assert_eq!(
            (e.code, e.subcode),
            (error::OPEN, error::OPEN_UNSUPPORTED_VERSION)
        );
    }

    #[test]
    fn announcements_carry_every_attribute_and_pack_many_routes() {
        let ips: Vec<Ipv4Addr> = (0..2000u32)
            .map(|i| Ipv4Addr::from(0xC612_0000 + i))
            .collect();
        let msgs = announce_v4(&ips, &attrs());
        assert!(msgs.len() <= 3, "{} messages", msgs.len());
        let mut seen = Vec::new();
        for m in &msgs {
            assert!(m.len() <= MAX_MESSAGE);
            let (w, a, nlri) = split(m);
            assert!(w.is_empty());
            let kinds: Vec<u8> = a.iter().map(|x| x.1).collect();
            assert_eq!(kinds, [1, 2, 3, 8, 32]);
            assert_eq!(a[0].2, [0]);
            assert_eq!(a[1].2, [2, 1, 0, 0, 0xFD, 0xE8]);
            assert_eq!(a[2].2, [192, 0, 2, 1]);
            assert_eq!(a[3].2, [0xFF, 0xFF, 0x02, 0x9A, 0xFF, 0xFF, 0xFF, 0x01]);
            assert_eq!(a[4].2.len(), 12);
            for p in nlri.chunks(5) {
                assert_eq!(p[0], 32);
                seen.push(Ipv4Addr::new(p[1], p[2], p[3], p[4]));
            }
        }
        assert_eq!(seen, ips);
    }

    #[test]
    fn a_2_octet_peer_sees_as_trans_and_the_real_path_in_as4_path() {
        let a = RouteAttrs {
            local_as: 4_200_000_001,
            four_octet: false,
            ..attrs()
        };
        let (_, at, _) = split(&announce_v4(&[Ipv4Addr::new(198, 51, 100, 7)], &a)[0]);
        let path = at.iter().find(|x| x.1 == 2).unwrap();
        assert_eq!(path.2, [2, 1, 0x5B, 0xA0]);
        let as4 = at.iter().find(|x| x.1 == 17).unwrap();
        assert_eq!(as4.2, [2, 1, 0xFA, 0x56, 0xEA, 0x01]);
        // iBGP: empty AS_PATH and a LOCAL_PREF.
        let ibgp = RouteAttrs {
            ibgp: true,
            ..attrs()
        };
        let (_, at, _) = split(&announce_v4(&[Ipv4Addr::new(198, 51, 100, 7)], &ibgp)[0]);
        assert!(at.iter().any(|x| x.1 == 2 && x.2.is_empty()));
        assert!(at.iter().any(|x| x.1 == 5 && x.2 == [0, 0, 0, 100]));
    }

    #[test]
    fn ipv6_routes_go_in_mp_reach_and_mp_unreach() {
        let ips: Vec<Ipv6Addr> = (0..500u128)
            .map(|i| Ipv6Addr::from(0x2001_0db8_u128 << 96 | i))
            .collect();
        let msgs = announce_v6(&ips, &attrs());
        let mut seen = Vec::new();
        for m in &msgs {
            assert!(m.len() <= MAX_MESSAGE);
            let (w, a, nlri) = split(m);
            assert!(w.is_empty() && nlri.is_empty());
            let mp = &a[0];
            assert_eq!((mp.0 & 0xEF, mp.1), (0x80, 14));
            assert_eq!(&mp.2[..4], &[0, 2, 1, 16]);
            assert_eq!(
                &mp.2[4..20],
                &"100::1".parse::<Ipv6Addr>().unwrap().octets()
            );
            assert_eq!(mp.2[20], 0);
            for p in mp.2[21..].chunks(17) {
                assert_eq!(p[0], 128);
                seen.push(Ipv6Addr::from(<[u8; 16]>::try_from(&p[1..]).unwrap()));
            }
            assert!(!a.iter().any(|x| x.1 == 3), "no NEXT_HOP for IPv6 alone");
        }
        assert_eq!(seen, ips);
        assert_eq!(msgs.len(), 3);
        let w = withdraw_v6(&ips);
        let mut gone = 0;
        for m in &w {
            let (_, a, _) = split(m);
            assert_eq!(a[0].1, 15);
            assert_eq!(&a[0].2[..3], &[0, 2, 1]);
            gone += (a[0].2.len() - 3) / 17;
        }
        assert_eq!(gone, 500);
        let (_, a, _) = split(&end_of_rib(Family::Ipv6Unicast));
        assert_eq!(a, [(0x80, 15, vec![0, 2, 1])]);
    }

    #[test]
    fn withdrawals_fill_the_withdrawn_routes_field() {
        let ips: Vec<Ipv4Addr> = (0..1000u32)
            .map(|i| Ipv4Addr::from(0x0A00_0000 + i))
            .collect();
        let msgs = withdraw_v4(&ips);
        assert_eq!(msgs.len(), 2);
        let (w, a, n) = split(&msgs[0]);
        assert!(a.is_empty() && n.is_empty());
        assert_eq!(&w[..5], &[32, 10, 0, 0, 0]);
        assert!(
            announce_v4(
                &ips,
                &RouteAttrs {
                    next_hop_v4: None,
                    ..attrs()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn messages_are_split_off_a_stream_and_bad_headers_are_refused() {
        let mut stream = keepalive();
        stream.extend(notification(6, 2, &[]));
        let (m, n) = next_message(&stream).unwrap().unwrap();
        assert_eq!((m, n), (Message::Keepalive, 19));
        assert!(next_message(&stream[19..30]).unwrap().is_none());
        let mut bad = keepalive();
        bad[3] = 0;
        assert_eq!(next_message(&bad).unwrap_err().subcode, 1);
        assert_eq!(next_message(&bad[..5]).unwrap_err().subcode, 1);
        let mut long = keepalive();
        long[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(next_message(&long).unwrap_err().subcode, 2);
        let mut odd = keepalive();
        odd[18] = 9;
        assert_eq!(next_message(&odd).unwrap_err().subcode, 3);
    }

    #[test]
    fn communities_parse_standard_and_large_forms() {
        assert_eq!("65535:666".parse::<Community>(), Ok(BLACKHOLE));
        assert_eq!("65535:65281".parse::<Community>(), Ok(NO_EXPORT));
        assert_eq!(
            "4200000000:666:1".parse::<Community>(),
            Ok(Community::Large(4_200_000_000, 666, 1))
        );
        for bad in ["65536:1", "1", "a:b", "1:2:3:4", "", "1:-2"] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
        assert_eq!(BLACKHOLE.to_string(), "65535:666");
    }

    #[test]
    fn parsing_never_panics_on_arbitrary_bytes() {
        use proptest::prelude::*;
        proptest!(|(tail in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..7, len in 0u16..300)| {
            let mut m = vec![0xFF; 16];
            m.extend_from_slice(&len.to_be_bytes());
            m.push(kind);
            m.extend_from_slice(&tail);
            let _ = next_message(&m);
            let _ = next_message(&tail);
        });
    }
}
