//! The wire form of a shared event and the checks every received one must pass before anything
//! else sees it. Pure: no I/O, no logging, no libp2p, so every rule is unit-tested here.
//!
//! The wire form is the JSON log object (upstream shares exactly that over its DHT), with two
//! changes on the way out: the honeypot's own address is replaced by `0.0.0.0` (upstream writes
//! that too; only the port is kept), and a SIP message longer than [`MAX_SIP_MESSAGE_BYTES`] is
//! cut at a character boundary so that the event still fits a gossip message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use uuid::Uuid;

use crate::event::{CollectedMethod, Event, NOT_FOUND, Origin, Transport};

/// How long a bad actor stays interesting to the network: nothing older is shared or accepted.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead of our clock a peer's timestamp may be: NTP-synced hosts differ by far less,
/// and anything beyond this is a lie that would keep an event "fresh" past its expiry.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The largest encoded event accepted from a peer. Real probes are under 2 KiB; this leaves
/// room for the cut SIP message below escaped as JSON, and stays under gossip's frame limit.
pub const MAX_WIRE_EVENT_BYTES: usize = 48 * 1024;
/// The longest SIP message shared. Longer ones are cut before sending and refused on receipt.
pub const MAX_SIP_MESSAGE_BYTES: usize = 16 * 1024;
/// The longest User-Agent shared (scanners send tens of bytes).
pub const MAX_USER_AGENT_BYTES: usize = 1024;
/// The longest called number: the user part of a SIP URI; real dial strings are under 40.
pub const MAX_CALLED_NUMBER_BYTES: usize = 128;
/// The longest SIP method name (the longest standard one, SUBSCRIBE, has 9 letters).
pub const MAX_METHOD_BYTES: usize = 32;
/// The longest address text (`[v6%scope]:port`).
const MAX_ADDR_BYTES: usize = 64;
/// The longest app name/version strings carried along.
const MAX_APP_FIELD_BYTES: usize = 64;

/// Why a received event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the event is {len} bytes, more than {MAX_WIRE_EVENT_BYTES}")]
    TooLarge { len: usize },
    #[error("not an event: {0}")]
    Malformed(String),
    #[error("field {field} is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("field {field} has an invalid value")]
    BadField { field: &'static str },
    #[error("the source address {0} is not a public unicast address")]
    NotPublic(IpAddr),
    #[error("the event is older than seven days")]
    TooOld,
    #[error("the event is dated in the future")]
    InTheFuture,
    #[error("the called number is not plausible")]
    BadCalledNumber,
}

/// What a received event must satisfy beyond its shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Accept private, loopback, link-local and documentation sources (lab networks and tests).
    pub allow_private: bool,
}

/// The JSON object as it travels. Unknown keys are ignored so that later versions may add some;
/// `received_from_peer` is never read from the wire (the receiver sets it).
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    app_version: Option<String>,
    event_timestamp: String,
    event_uuid: String,
    created_by_node_id: String,
    collected_method: String,
    transport_type: String,
    source_ip: String,
    destination_ip: String,
    called_number: String,
    sip_method: String,
    sip_user_agent: String,
    sip_message: String,
}

/// Encodes a local event for peers: the JSON log object with the honeypot's address hidden and
/// the SIP message cut to [`MAX_SIP_MESSAGE_BYTES`].
pub fn encode(event: &Event) -> Vec<u8> {
    let mut json = event.to_json();
    json.received_from_peer = None;
    json.sip_message = cut(json.sip_message, MAX_SIP_MESSAGE_BYTES);
    json.destination_ip =
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), event.destination.port()).to_string();
    // Serialising plain strings into a Vec cannot fail.
    serde_json::to_vec(&json).unwrap_or_default()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Decodes and checks an event received from a peer; `origin` is recorded on it.
pub fn decode(
    bytes: &[u8],
    now: SystemTime,
    policy: Policy,
    origin: Origin,
) -> Result<Event, Invalid> {
    if bytes.len() > MAX_WIRE_EVENT_BYTES {
        return Err(Invalid::TooLarge { len: bytes.len() });
    }
    let w: WireEvent =
        serde_json::from_slice(bytes).map_err(|e| Invalid::Malformed(e.to_string()))?;
    for (field, value, max) in [
        (
            "app_name",
            w.app_name.as_deref().unwrap_or(""),
            MAX_APP_FIELD_BYTES,
        ),
        (
            "app_version",
            w.app_version.as_deref().unwrap_or(""),
            MAX_APP_FIELD_BYTES,
        ),
        ("event_timestamp", &w.event_timestamp, 29),
        ("event_uuid", &w.event_uuid, 36),
        ("created_by_node_id", &w.created_by_node_id, 36),
        ("source_ip", &w.source_ip, MAX_ADDR_BYTES),
        ("destination_ip", &w.destination_ip, MAX_ADDR_BYTES),
        ("called_number", &w.called_number, MAX_CALLED_NUMBER_BYTES),
        ("sip_method", &w.sip_method, MAX_METHOD_BYTES),
        ("sip_user_agent", &w.sip_user_agent, MAX_USER_AGENT_BYTES),
        ("sip_message", &w.sip_message, MAX_SIP_MESSAGE_BYTES),
    ] {
        if value.len() > max {
            return Err(Invalid::FieldTooLong { field, max });
        }
    }
    let when = parse_timestamp(&w.event_timestamp).ok_or(Invalid::BadField {
        field: "event_timestamp",
    })?;
    check_age(when, now)?;
    let uuid = parse_uuid(&w.event_uuid).ok_or(Invalid::BadField {
        field: "event_uuid",
    })?;
    let node_id = parse_uuid(&w.created_by_node_id).ok_or(Invalid::BadField {
        field: "created_by_node_id",
    })?;
    let collected_method = match w.collected_method.as_str() {
        "passive" => CollectedMethod::Passive,
        "responsive" => CollectedMethod::Responsive,
        _ => {
            return Err(Invalid::BadField {
                field: "collected_method",
            });
        }
    };
    let transport = match w.transport_type.as_str() {
        "UDP" => Transport::Udp,
        "TCP" => Transport::Tcp,
        "TLS" => Transport::Tls,
        _ => {
            return Err(Invalid::BadField {
                field: "transport_type",
            });
        }
    };
    let source = parse_addr(&w.source_ip).ok_or(Invalid::BadField { field: "source_ip" })?;
    check_source(source.ip(), policy)?;
    let destination = parse_addr(&w.destination_ip).ok_or(Invalid::BadField {
        field: "destination_ip",
    })?;
    if !is_plausible_called_number(&w.called_number) {
        return Err(Invalid::BadCalledNumber);
    }
    if !is_method(&w.sip_method) {
        return Err(Invalid::BadField {
            field: "sip_method",
        });
    }
    if w.sip_user_agent.is_empty() || w.sip_user_agent.chars().any(char::is_control) {
        return Err(Invalid::BadField {
            field: "sip_user_agent",
        });
    }
    if w.sip_message.is_empty() {
        return Err(Invalid::BadField {
            field: "sip_message",
        });
    }
    Ok(Event {
        timestamp: w.event_timestamp,
        uuid,
        node_id,
        collected_method,
        transport,
        source,
        destination,
        called_number: w.called_number,
        method: w.sip_method,
        user_agent: w.sip_user_agent,
        message: w.sip_message,
        origin,
    })
}

/// Whether a local event may be shared: the checks a receiver will apply, so that this node
/// never sends what its peers would reject (and score it down for).
pub fn shareable(event: &Event, now: SystemTime, policy: Policy) -> Result<(), Invalid> {
    decode(&encode(event), now, policy, Origin::Local).map(|_| ())
}

fn check_age(when: SystemTime, now: SystemTime) -> Result<(), Invalid> {
    if when > now + MAX_CLOCK_SKEW {
        return Err(Invalid::InTheFuture);
    }
    if now.duration_since(when).unwrap_or_default() > MAX_EVENT_AGE {
        return Err(Invalid::TooOld);
    }
    Ok(())
}

fn check_source(ip: IpAddr, policy: Policy) -> Result<(), Invalid> {
    let ip = ip.to_canonical();
    let ok = if policy.allow_private {
        !is_never_a_source(ip)
    } else {
        is_public_unicast(ip)
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid::NotPublic(ip))
    }
}

/// Addresses no packet can come from, even in a lab: unspecified, multicast, broadcast.
fn is_never_a_source(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Whether `ip` is a globally routable unicast address: not private, shared (CGNAT), loopback,
/// link-local, multicast, broadcast, unspecified, reserved, benchmarking or documentation.
/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry, and 6to4 ones by theirs.
pub fn is_public_unicast(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let blocked = a == 0 // "this network"
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !blocked
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Every global unicast allocation is inside 2000::/3; this alone excludes ::, ::1, ULA
    // (fc00::/7), link-local (fe80::/10), multicast (ff00::/8) and the NAT64 prefixes.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let in_prefix = |prefix: u16, mask: u16| s[0] == 0x2001 && s[1] & mask == prefix;
    let blocked = (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] & 0xfff0 == 0x3ff0) // documentation (3fff::/20)
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
        || in_prefix(0x0010, 0xfff0) // ORCHID 2001:10::/28
        || in_prefix(0x0020, 0xfff0); // ORCHIDv2 2001:20::/28
    if blocked {
        return false;
    }
    if s[0] == 0x2002 {
        // 6to4: the IPv4 address it carries decides.
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    true
}

/// `IP:PORT`, `[IPv6]:PORT` or a bare IP (the database holds bare ones; port 0 then).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
}

/// A UUID in its hyphenated form only (what every node writes).
fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::parse_str(s).ok()
}

/// A plausible called number: `NOT_FOUND` (upstream's "absent"), or the user part of a SIP URI:
/// 1 to [`MAX_CALLED_NUMBER_BYTES`] characters of RFC 3261's user alphabet, no spaces, quotes,
/// angle brackets, `@` or control characters.
pub fn is_plausible_called_number(s: &str) -> bool {
    if s == NOT_FOUND {
        return true;
    }
    !s.is_empty()
        && s.len() <= MAX_CALLED_NUMBER_BYTES
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_'
                        | b'.'
                        | b'!'
                        | b'~'
                        | b'*'
                        | b'\''
                        | b'('
                        | b')'
                        | b'%'
                        | b'&'
                        | b'='
                        | b'+'
                        | b'$'
                        | b','
                        | b';'
                        | b'?'
                        | b'/'
                        | b'#'
                )
        })
}

/// A SIP method: an RFC 3261 token of letters (methods in use are all upper-case letters).
fn is_method(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Parses the contract's UTC `YYYY-MM-DD HH:MM:SS.nnnnnnnnn`, exactly.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 29 {
        return None;
    }
    let shape_ok = b.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 => c == b'-',
        10 => c == b' ',
        13 | 16 => c == b':',
        19 => c == b'.',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> { s.get(from..to)?.parse().ok() };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, ns) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 29)?);
    if y < 1970 || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + sec;
    Some(UNIX_EPOCH + Duration::new(secs, ns as u32))
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format_timestamp;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn event() -> Event {
        let mut e = crate::event::tests::sample();
        e.timestamp = format_timestamp(now() - Duration::from_secs(60));
        e.uuid = Uuid::new_v4();
        e.node_id = Uuid::new_v4();
        e.source = "8.8.8.8:5071".parse().unwrap();
        e.destination = "192.0.2.44:5060".parse().unwrap();
        e
    }

    fn wire(e: &Event) -> serde_json::Value {
        serde_json::from_slice(&encode(e)).unwrap()
    }

    fn decode_value(v: &serde_json::Value, policy: Policy) -> Result<Event, Invalid> {
        decode(
            v.to_string().as_bytes(),
            now(),
            policy,
            Origin::Peer("p".into()),
        )
    }

    fn with(field: &str, value: serde_json::Value) -> Result<Event, Invalid> {
        let mut v = wire(&event());
        v[field] = value;
        decode_value(&v, Policy::default())
    }

    #[test]
    fn a_local_event_round_trips_with_the_honeypot_address_hidden() {
        let e = event();
        let got = decode(
            &encode(&e),
            now(),
            Policy::default(),
            Origin::Peer("p".into()),
        )
        .unwrap();
        assert_eq!(got.destination, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(got.origin, Origin::Peer("p".into()));
        let mut want = e.clone();
        want.destination = got.destination;
        want.origin = got.origin.clone();
        assert_eq!(got, want);
        let v = wire(&e);
        assert_eq!(v["source_ip"], "8.8.8.8:5071");
        assert_eq!(v["app_name"], "sentrypeer");
        assert!(v.get("received_from_peer").is_none());
    }

    #[test]
    fn a_long_sip_message_is_cut_on_a_character_boundary_before_sending() {
        let mut e = event();
        e.message = format!(
            "OPTIONS sip:x SIP/2.0\r\n{}",
            "é".repeat(MAX_SIP_MESSAGE_BYTES)
        );
        let v = wire(&e);
        let sent = v["sip_message"].as_str().unwrap();
        assert!(sent.len() <= MAX_SIP_MESSAGE_BYTES && sent.len() >= MAX_SIP_MESSAGE_BYTES - 1);
        assert!(e.message.starts_with(sent));
        assert!(shareable(&e, now(), Policy::default()).is_ok());
        assert!(encode(&e).len() <= MAX_WIRE_EVENT_BYTES);
    }

    #[test]
    fn the_worst_case_event_still_fits_the_wire_limit() {
        let mut e = event();
        // Control characters escape to six bytes each in JSON.
        e.message = "\u{1}".repeat(MAX_SIP_MESSAGE_BYTES);
        e.user_agent = "a".repeat(MAX_USER_AGENT_BYTES);
        e.called_number = "1".repeat(MAX_CALLED_NUMBER_BYTES);
        let len = encode(&e).len();
        // Such a message is refused as too large rather than cut mid-field: it is no probe.
        assert!(len > MAX_WIRE_EVENT_BYTES);
        assert_eq!(
            shareable(&e, now(), Policy::default()),
            Err(Invalid::TooLarge { len })
        );
        e.message = "x".repeat(MAX_SIP_MESSAGE_BYTES);
        assert!(shareable(&e, now(), Policy::default()).is_ok());
    }

    #[test]
    fn malformed_json_and_missing_fields_are_refused() {
        let d = |b: &[u8]| decode(b, now(), Policy::default(), Origin::Local);
        assert!(matches!(d(b"not json"), Err(Invalid::Malformed(_))));
        assert!(matches!(d(b"[]"), Err(Invalid::Malformed(_))));
        assert!(matches!(d(b""), Err(Invalid::Malformed(_))));
        let mut v = wire(&event());
        v.as_object_mut().unwrap().remove("source_ip");
        assert!(matches!(
            decode_value(&v, Policy::default()),
            Err(Invalid::Malformed(_))
        ));
        assert!(matches!(
            with("sip_method", serde_json::json!(5)),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn unknown_keys_are_ignored_and_received_from_peer_is_never_trusted() {
        let mut v = wire(&event());
        v["future_field"] = serde_json::json!({"x": 1});
        v["received_from_peer"] = serde_json::json!("someone-else");
        let got = decode_value(&v, Policy::default()).unwrap();
        assert_eq!(got.origin, Origin::Peer("p".into()));
    }

    #[test]
    fn oversized_messages_and_fields_are_refused() {
        let big = vec![b' '; MAX_WIRE_EVENT_BYTES + 1];
        assert_eq!(
            decode(&big, now(), Policy::default(), Origin::Local),
            Err(Invalid::TooLarge {
                len: MAX_WIRE_EVENT_BYTES + 1
            })
        );
        for (field, len) in [
            ("sip_message", MAX_SIP_MESSAGE_BYTES + 1),
            ("sip_user_agent", MAX_USER_AGENT_BYTES + 1),
            ("called_number", MAX_CALLED_NUMBER_BYTES + 1),
            ("sip_method", MAX_METHOD_BYTES + 1),
            ("app_version", 65),
        ] {
            let r = with(field, "A".repeat(len).into());
            assert!(
                matches!(r, Err(Invalid::FieldTooLong { field: f, .. }) if f == field),
                "{field}: {r:?}"
            );
        }
    }

    #[test]
    fn private_loopback_link_local_and_documentation_sources_are_refused() {
        for src in [
            "10.1.2.3:5060",
            "127.0.0.1:5060",
            "169.254.1.1:5060",
            "192.168.1.1:5060",
            "172.16.0.1:5060",
            "100.64.0.1:5060",
            "192.0.2.1:5060",
            "198.51.100.1:5060",
            "203.0.113.1:5060",
            "0.0.0.0:5060",
            "224.0.0.1:5060",
            "255.255.255.255:5060",
            "[::1]:5060",
            "[fe80::1]:5060",
            "[fd00::1]:5060",
            "[2001:db8::1]:5060",
            "[::ffff:10.0.0.1]:5060",
            "[ff02::1]:5060",
            "[::]:5060",
        ] {
            assert!(
                matches!(with("source_ip", src.into()), Err(Invalid::NotPublic(_))),
                "{src}"
            );
        }
    }

    #[test]
    fn allow_private_accepts_lab_sources_but_never_impossible_ones() {
        let lab = Policy {
            allow_private: true,
        };
        for src in [
            "127.0.0.1:5060",
            "10.0.0.1:1",
            "[::1]:5060",
            "192.0.2.7:5060",
        ] {
            let mut v = wire(&event());
            v["source_ip"] = src.into();
            assert!(decode_value(&v, lab).is_ok(), "{src}");
        }
        for src in ["0.0.0.0:5060", "224.0.0.1:5060", "[::]:1", "[ff02::1]:1"] {
            let mut v = wire(&event());
            v["source_ip"] = src.into();
            assert!(
                matches!(decode_value(&v, lab), Err(Invalid::NotPublic(_))),
                "{src}"
            );
        }
    }

    #[test]
    fn a_bare_source_ip_is_accepted_with_port_zero() {
        let e = with("source_ip", "8.8.4.4".into()).unwrap();
        assert_eq!(e.source, "8.8.4.4:0".parse().unwrap());
        assert!(matches!(
            with("source_ip", "8.8.4.4:99999".into()),
            Err(Invalid::BadField { .. })
        ));
        assert!(matches!(
            with("source_ip", "example.com:5060".into()),
            Err(Invalid::BadField { .. })
        ));
    }

    #[test]
    fn is_public_unicast_knows_the_special_ranges() {
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ];
        let special = [
            "0.1.2.3",
            "10.0.0.0",
            "100.64.0.0",
            "100.127.255.255",
            "127.255.0.1",
            "169.254.169.254",
            "172.31.255.255",
            "192.0.0.8",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "239.255.255.250",
            "::",
            "::1",
            "fc00::1",
            "fe80::1",
            "ff05::2",
            "64:ff9b::808:808",
            "2001:db8:1::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "::ffff:192.168.1.1",
            "2002:c0a8:0101::1",
            "100::1",
        ];
        for ip in public {
            assert!(is_public_unicast(ip.parse().unwrap()), "{ip} is public");
        }
        for ip in special {
            assert!(!is_public_unicast(ip.parse().unwrap()), "{ip} is special");
        }
    }

    #[test]
    fn events_older_than_seven_days_or_from_the_future_are_refused() {
        let at = |t: SystemTime| with("event_timestamp", format_timestamp(t).into());
        assert!(at(now()).is_ok());
        assert!(at(now() - MAX_EVENT_AGE + Duration::from_secs(1)).is_ok());
        assert_eq!(
            at(now() - MAX_EVENT_AGE - Duration::from_secs(1)).unwrap_err(),
            Invalid::TooOld
        );
        assert!(at(now() + Duration::from_secs(60)).is_ok(), "small skew");
        assert_eq!(
            at(now() + MAX_CLOCK_SKEW + Duration::from_secs(1)).unwrap_err(),
            Invalid::InTheFuture
        );
    }

    #[test]
    fn timestamps_must_have_the_contract_format() {
        for bad in [
            "2027-01-15 08:00:00",
            "2027-01-15T08:00:00.000000000",
            "2027-01-15 08:00:00.00000000",
            "2027-02-30 08:00:00.000000000",
            "2027-13-01 08:00:00.000000000",
            "2027-01-01 24:00:00.000000000",
            "１０27-01-01 08:00:00.0000000",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(parse_timestamp("2000-02-29 00:00:00.000000000"), Some(leap));
    }

    #[test]
    fn called_numbers_must_look_like_a_uri_user() {
        for ok in [
            "100",
            "+441234567890",
            "00972595",
            "NOT_FOUND",
            "admin",
            "1%23",
            "*97",
        ] {
            assert!(is_plausible_called_number(ok), "{ok}");
        }
        for bad in ["", "1 2", "a@b", "<100>", "\"100\"", "1\r\n2", "é"] {
            assert!(!is_plausible_called_number(bad), "{bad:?}");
            assert!(with("called_number", bad.into()).is_err(), "{bad:?}");
        }
    }

    /// A node shares what it records; a number decoded from an escape must still pass the
    /// peers' check, or the event would be withheld (and older peers would score us down).
    #[test]
    fn a_number_decoded_from_any_escape_is_still_plausible() {
        use crate::capture::inspect::{InspectContext, Meta, inspect};
        let meta = Meta {
            transport: Transport::Udp,
            source: "203.0.113.7:5071".parse().unwrap(),
            local: "192.0.2.1:5060".parse().unwrap(),
        };
        let cx = InspectContext {
            node_id: Uuid::nil(),
            responsive: false,
            server_header: String::new(),
        };
        for b in 0..=255_u8 {
            let msg = format!(
                "OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5071;branch=z9hG4bK1\r\n\
                 From: <sip:a@b>;tag=1\r\nTo: <sip:1%{b:02X}2@192.0.2.1>\r\nCall-ID: 1\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            let got = inspect(msg.as_bytes(), &meta, &cx).unwrap();
            let number = &got.event.called_number;
            assert!(
                *number == format!("1%{b:02X}2") || number.len() == 3,
                "%{b:02X}: {number}"
            );
            assert!(is_plausible_called_number(number), "%{b:02X}: {number}");
        }
    }

    #[test]
    fn ids_methods_and_enumerations_are_checked() {
        for (field, value) in [
            ("event_uuid", "not-a-uuid"),
            ("event_uuid", "a1a2a3a4b1b2c1c2d1d2d3d4d5d6d7d8"),
            ("created_by_node_id", ""),
            ("collected_method", "active"),
            ("transport_type", "SCTP"),
            ("sip_method", "OPT IONS"),
            ("sip_method", ""),
            ("sip_user_agent", "a\nSource IP: 1.2.3.4"),
            ("sip_message", ""),
            ("destination_ip", "nowhere"),
        ] {
            assert!(
                matches!(with(field, value.into()), Err(Invalid::BadField { .. })),
                "{field}={value:?}"
            );
        }
    }

    #[test]
    fn local_events_from_private_sources_are_not_shareable_unless_allowed() {
        let mut e = event();
        e.source = "192.168.1.20:5060".parse().unwrap();
        assert!(shareable(&e, now(), Policy::default()).is_err());
        assert!(
            shareable(
                &e,
                now(),
                Policy {
                    allow_private: true
                }
            )
            .is_ok()
        );
    }
}
