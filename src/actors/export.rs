//! The listed actors in the formats firewalls, PBXs and threat-intelligence platforms load:
//! plain lines, CSV, JSON, `ipset restore` input, an `nft -f` script, a STIX 2.1 bundle and a MISP
//! feed event. Pure and streaming: a writer is fed one entry at a time and appends bytes to a
//! buffer the caller sends on, so a million addresses never sit in memory at once.
//!
//! Two modes: a full list (every listed actor) and changes since a cursor (additions, with their
//! current expiry, and removals), for consumers that keep their own copy.
//!
//! Over 600 lines with its tests, and one thing: seven renderings of the same entries, which
//! share the header, the time format and the streaming contract.

use std::fmt::Write as _;
use std::net::IpAddr;

use uuid::Uuid;

use super::Kind;

/// An export format, by its `format=` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Csv,
    Json,
    Ipset,
    Nft,
    Stix,
    Misp,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "plain" | "txt" => Format::Plain,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ipset" => Format::Ipset,
            "nft" => Format::Nft,
            "stix" => Format::Stix,
            "misp" => Format::Misp,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ipset => "ipset",
            Format::Nft => "nft",
            Format::Stix => "stix",
            Format::Misp => "misp",
        }
    }

    /// Whether the format can carry actors of this kind (firewall formats hold addresses only).
    pub fn supports(self, kind: Kind) -> bool {
        kind == Kind::Ip
            || matches!(
                self,
                Format::Plain | Format::Csv | Format::Json | Format::Misp
            )
    }

    /// The formats a kind can be exported in, for error messages.
    pub fn names_for(kind: Kind) -> &'static str {
        match kind {
            Kind::Ip => "plain, csv, json, ipset, nft, stix, misp",
            Kind::Number => "plain, csv, json, misp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Plain | Format::Ipset | Format::Nft => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json | Format::Stix | Format::Misp => "application/json",
        }
    }
}

/// Where an actor's listing comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    /// Seen by this node.
    pub local: bool,
    /// Reported by peers (and corroborated, or it would not be listed on their word alone).
    pub peers: bool,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match (self.local, self.peers) {
            (true, true) => "local+peers",
            (false, true) => "peers",
            _ => "local",
        }
    }
}

/// One listed actor as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The address (canonical text) or the number.
    pub key: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub count: i64,
    /// `i64::MAX`: never expires (`--actor-ttl forever`).
    pub expires_ms: i64,
    pub origin: Origin,
}

/// One line of an export: a listed actor, or (in changes mode) an actor no longer listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Listed(Actor),
    /// No longer listed: the key, and when it was first seen (a STIX revocation is a new version
    /// of the indicator, and keeps its `created`).
    Removed {
        key: String,
        first_seen_ms: i64,
    },
}

/// What every export is told up front.
#[derive(Debug, Clone)]
pub struct Header {
    pub kind: Kind,
    pub format: Format,
    /// The change sequence this export is complete up to: the `since` of the next request.
    pub cursor: u64,
    /// Set in changes mode: the cursor the request gave.
    pub since: Option<u64>,
    /// When the export was made (ms since the epoch); remaining times count from here.
    pub now_ms: i64,
    /// The node, for the identities STIX and MISP need.
    pub node_id: Uuid,
    /// ipset's set name (`NAME` for IPv4, `NAME6` for IPv6).
    pub ipset_name: String,
    /// The listing TTL in seconds (ipset's default timeout); `None` for never.
    pub ttl_secs: Option<u64>,
}

/// The ipset set name used when none is given.
pub const DEFAULT_IPSET_NAME: &str = "sentrypeer";
/// Elements an exported ipset may hold (ipset's default of 65,536 is too small for a busy node).
const IPSET_MAXELEM: u64 = 4 * 1024 * 1024;
/// The longest timeout ipset accepts, in seconds.
const IPSET_MAX_TIMEOUT_SECS: i64 = 2_147_483;
/// nft elements per `add element` statement: one statement per address makes `nft -f` parse a
/// command per line; hundreds per statement load a million addresses in seconds.
const NFT_ELEMENTS_PER_STATEMENT: usize = 512;
/// The nft table and sets, shared with the kernel-set output so both fill the same sets.
pub const NFT_TABLE: &str = "sentrypeer";
pub const NFT_SET_V4: &str = "bad_actors_v4";
pub const NFT_SET_V6: &str = "bad_actors_v6";

/// Fixed namespace for this project's deterministic STIX and MISP identifiers (a UUID v5
/// namespace must itself be a UUID; this one was generated once for the purpose).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_4d5e_9c8b_4f7a_a1e2_3b4c_5d6e_7f80);

/// A streaming export: `begin`, one `entry` per actor, `end`.
pub struct Writer {
    h: Header,
    /// Entries written so far (the separator logic of JSON formats needs it).
    written: u64,
    /// nft elements waiting for their statement, per family: (v4, v6).
    nft_pending: (Vec<String>, Vec<String>),
}

impl Writer {
    pub fn new(h: Header) -> Writer {
        Writer {
            h,
            written: 0,
            nft_pending: (Vec::new(), Vec::new()),
        }
    }

    pub fn header(&self) -> &Header {
        &self.h
    }

    fn kind_word(&self) -> &'static str {
        match self.h.kind {
            Kind::Ip => "ip_address",
            Kind::Number => "number",
        }
    }

    fn list_word(&self) -> &'static str {
        match self.h.kind {
            Kind::Ip => "ip_addresses",
            Kind::Number => "numbers",
        }
    }

    fn remaining_secs(&self, expires_ms: i64) -> Option<i64> {
        (expires_ms != i64::MAX).then(|| ((expires_ms - self.h.now_ms) / 1000).max(1))
    }

    pub fn begin(&mut self, out: &mut Vec<u8>) {
        let h = &self.h;
        let now = rfc3339(h.now_ms);
        match h.format {
            Format::Plain => {}
            Format::Csv => {
                let change = if h.since.is_some() { "change," } else { "" };
                let key = match h.kind {
                    Kind::Ip => "address",
                    Kind::Number => "number",
                };
                let _ = writeln!(
                    text(out),
                    "{change}{key},first_seen,last_seen,count,expires,origin"
                );
            }
            Format::Json => {
                let _ = write!(text(out), "{{\"cursor\":\"{}\",", h.cursor);
                match h.since {
                    Some(s) => {
                        let _ = write!(text(out), "\"since\":\"{s}\",\"changes\":[");
                    }
                    None => {
                        let _ = write!(text(out), "\"{}\":[", self.list_word());
                    }
                }
            }
            Format::Ipset => {
                let v4 = &h.ipset_name;
                let timeout = h
                    .ttl_secs
                    .map_or(0, |t| t.min(IPSET_MAX_TIMEOUT_SECS as u64));
                let _ = writeln!(
                    text(out),
                    "# sentrypeer bad actors, cursor {} (load with: ipset restore < FILE)\n\
                     create {v4} hash:ip family inet timeout {timeout} maxelem {IPSET_MAXELEM} -exist\n\
                     create {v4}6 hash:ip family inet6 timeout {timeout} maxelem {IPSET_MAXELEM} -exist",
                    h.cursor
                );
            }
            Format::Nft => {
                let _ = writeln!(
                    text(out),
                    "# sentrypeer bad actors, cursor {} (load with: nft -f FILE)\n\
                     table inet {NFT_TABLE} {{\n\
                     \tset {NFT_SET_V4} {{ type ipv4_addr; flags timeout; }}\n\
                     \tset {NFT_SET_V6} {{ type ipv6_addr; flags timeout; }}\n\
                     }}",
                    h.cursor
                );
            }
            Format::Stix => {
                let bundle = Uuid::new_v4();
                let identity = self.identity_id();
                let _ = write!(
                    text(out),
                    "{{\"type\":\"bundle\",\"id\":\"bundle--{bundle}\",\"objects\":[\
                     {{\"type\":\"identity\",\"spec_version\":\"2.1\",\"id\":\"{identity}\",\
                     \"created\":\"{now}\",\"modified\":\"{now}\",\
                     \"name\":\"sentrypeer node {}\",\"identity_class\":\"system\"}}",
                    h.node_id
                );
            }
            Format::Misp => {
                let event = misp_event_uuid(h.node_id, h.kind);
                let date = &now[..10];
                let secs = h.now_ms / 1000;
                let info = misp_info(h.kind);
                let _ = write!(
                    text(out),
                    "{{\"Event\":{{\"uuid\":\"{event}\",\"info\":\"{info}\",\"date\":\"{date}\",\
                     \"timestamp\":\"{secs}\",\"publish_timestamp\":\"{secs}\",\"published\":true,\
                     \"analysis\":\"2\",\"threat_level_id\":\"3\",\"distribution\":\"3\",\
                     \"Orgc\":{},\"Tag\":[{{\"name\":\"tlp:white\"}},{{\"name\":\"sentrypeer\"}}],\
                     \"Attribute\":[",
                    misp_orgc(h.node_id)
                );
            }
        }
    }

    pub fn entry(&mut self, out: &mut Vec<u8>, e: &Entry) {
        // An actor whose listing ended between the read and now is left out of a full list.
        if let Entry::Listed(a) = e {
            if a.expires_ms <= self.h.now_ms && self.h.since.is_none() {
                return;
            }
        }
        let first = self.written == 0;
        self.written += 1;
        let since = self.h.since.is_some();
        match (self.h.format, e) {
            (Format::Plain, Entry::Listed(a)) => {
                let sign = if since { "+" } else { "" };
                let _ = writeln!(text(out), "{sign}{}", a.key);
            }
            (Format::Plain, Entry::Removed { key: k, .. }) => {
                let _ = writeln!(text(out), "-{k}");
            }
            (Format::Csv, Entry::Listed(a)) => {
                let change = if since { "add," } else { "" };
                let expires = if a.expires_ms == i64::MAX {
                    String::new()
                } else {
                    rfc3339(a.expires_ms)
                };
                let _ = writeln!(
                    text(out),
                    "{change}{},{},{},{},{expires},{}",
                    csv_field(&a.key),
                    rfc3339(a.first_seen_ms),
                    rfc3339(a.last_seen_ms),
                    a.count,
                    a.origin.as_str()
                );
            }
            (Format::Csv, Entry::Removed { key: k, .. }) => {
                let _ = writeln!(text(out), "remove,{},,,,,", csv_field(k));
            }
            (Format::Json, e) => {
                if !first {
                    out.push(b',');
                }
                self.json_entry(out, e);
            }
            (Format::Ipset, e) => {
                let (key, add) = match e {
                    Entry::Listed(a) => (&a.key, Some(a)),
                    Entry::Removed { key: k, .. } => (k, None),
                };
                let Ok(ip) = key.parse::<IpAddr>() else {
                    return;
                };
                let set = if ip.is_ipv4() {
                    self.h.ipset_name.clone()
                } else {
                    format!("{}6", self.h.ipset_name)
                };
                match add {
                    Some(a) => {
                        let timeout = self
                            .remaining_secs(a.expires_ms)
                            .map_or(0, |s| s.min(IPSET_MAX_TIMEOUT_SECS));
                        let _ = writeln!(text(out), "add {set} {ip} timeout {timeout} -exist");
                    }
                    None => {
                        let _ = writeln!(text(out), "del {set} {ip} -exist");
                    }
                }
            }
            (Format::Nft, e) => self.nft_entry(out, e),
            (Format::Stix, Entry::Listed(a)) => self.stix_entry(out, a),
            (
                Format::Stix,
                Entry::Removed {
                    key: k,
                    first_seen_ms,
                },
            ) => {
                // STIX says an indicator ended by revoking it: a new version of the indicator
                // the full export gave, so the same `created` (and `valid_from`) and a later
                // `modified`.
                let id = self.indicator_id(k);
                let created = rfc3339(*first_seen_ms);
                let modified = rfc3339(self.h.now_ms.max(first_seen_ms + 1));
                let _ = write!(
                    text(out),
                    ",{{\"type\":\"indicator\",\"spec_version\":\"2.1\",\"id\":\"{id}\",\
                     \"created\":\"{created}\",\"modified\":\"{modified}\",\"revoked\":true,\
                     \"pattern\":{},\"pattern_type\":\"stix\",\"valid_from\":\"{created}\"}}",
                    json_str(&stix_pattern(k))
                );
            }
            (Format::Misp, Entry::Listed(a)) => {
                if !first {
                    out.push(b',');
                }
                self.misp_attribute(out, a);
            }
            // A MISP feed event is a snapshot; removals are simply absent from the next one.
            (Format::Misp, Entry::Removed { .. }) => self.written -= 1,
        }
    }

    pub fn end(&mut self, out: &mut Vec<u8>) {
        match self.h.format {
            Format::Plain | Format::Csv | Format::Ipset => {}
            Format::Json => out.extend_from_slice(b"]}\n"),
            Format::Nft => {
                self.flush_nft(out, true);
                self.flush_nft(out, false);
            }
            Format::Stix => out.extend_from_slice(b"]}\n"),
            Format::Misp => out.extend_from_slice(b"]}}\n"),
        }
    }

    fn json_entry(&self, out: &mut Vec<u8>, e: &Entry) {
        let word = self.kind_word();
        let change = |out: &mut Vec<u8>, c: &str| {
            if self.h.since.is_some() {
                let _ = write!(text(out), "\"change\":\"{c}\",");
            }
        };
        match e {
            Entry::Listed(a) => {
                out.push(b'{');
                change(out, "add");
                let expires = if a.expires_ms == i64::MAX {
                    "null".to_string()
                } else {
                    format!("\"{}\"", rfc3339(a.expires_ms))
                };
                let _ = write!(
                    text(out),
                    "\"{word}\":{},\"first_seen\":\"{}\",\"last_seen\":\"{}\",\"count\":{},\
                     \"expires\":{expires},\"origin\":\"{}\"}}",
                    json_str(&a.key),
                    rfc3339(a.first_seen_ms),
                    rfc3339(a.last_seen_ms),
                    a.count,
                    a.origin.as_str()
                );
            }
            Entry::Removed { key: k, .. } => {
                out.push(b'{');
                change(out, "remove");
                let _ = write!(text(out), "\"{word}\":{}}}", json_str(k));
            }
        }
    }

    fn nft_entry(&mut self, out: &mut Vec<u8>, e: &Entry) {
        let (key, timeout) = match e {
            Entry::Listed(a) => (&a.key, self.remaining_secs(a.expires_ms)),
            Entry::Removed { key: k, .. } => (k, None),
        };
        let Ok(ip) = key.parse::<IpAddr>() else {
            return;
        };
        match e {
            Entry::Listed(_) => {
                let element = match timeout {
                    Some(s) => format!("{ip} timeout {s}s"),
                    None => ip.to_string(),
                };
                let v4 = ip.is_ipv4();
                let pending = if v4 {
                    &mut self.nft_pending.0
                } else {
                    &mut self.nft_pending.1
                };
                pending.push(element);
                if pending.len() >= NFT_ELEMENTS_PER_STATEMENT {
                    self.flush_nft(out, v4);
                }
            }
            Entry::Removed { .. } => {
                // `delete element` fails the whole script when the kernel has already expired the
                // element; adding it first (with the shortest timeout) makes the delete certain.
                let set = if ip.is_ipv4() { NFT_SET_V4 } else { NFT_SET_V6 };
                let _ = writeln!(
                    text(out),
                    "add element inet {NFT_TABLE} {set} {{ {ip} timeout 1s }}\n\
                     delete element inet {NFT_TABLE} {set} {{ {ip} }}"
                );
            }
        }
    }

    fn flush_nft(&mut self, out: &mut Vec<u8>, v4: bool) {
        let (pending, set) = if v4 {
            (&mut self.nft_pending.0, NFT_SET_V4)
        } else {
            (&mut self.nft_pending.1, NFT_SET_V6)
        };
        if pending.is_empty() {
            return;
        }
        let _ = writeln!(
            text(out),
            "add element inet {NFT_TABLE} {set} {{ {} }}",
            pending.join(", ")
        );
        pending.clear();
    }

    fn identity_id(&self) -> String {
        format!(
            "identity--{}",
            Uuid::new_v5(&ID_NAMESPACE, self.h.node_id.as_bytes())
        )
    }

    fn indicator_id(&self, key: &str) -> String {
        let mut name = self.h.node_id.as_bytes().to_vec();
        name.extend_from_slice(key.as_bytes());
        format!("indicator--{}", Uuid::new_v5(&ID_NAMESPACE, &name))
    }

    fn stix_entry(&self, out: &mut Vec<u8>, a: &Actor) {
        let id = self.indicator_id(&a.key);
        let created = rfc3339(a.first_seen_ms);
        let modified = rfc3339(a.last_seen_ms.max(a.first_seen_ms));
        let valid_until = if a.expires_ms == i64::MAX {
            String::new()
        } else {
            format!(",\"valid_until\":\"{}\"", rfc3339(a.expires_ms))
        };
        let _ = write!(
            text(out),
            ",{{\"type\":\"indicator\",\"spec_version\":\"2.1\",\"id\":\"{id}\",\
             \"created_by_ref\":\"{}\",\"created\":\"{created}\",\"modified\":\"{modified}\",\
             \"name\":{},\"description\":{},\"indicator_types\":[\"malicious-activity\"],\
             \"pattern\":{},\"pattern_type\":\"stix\",\"valid_from\":\"{created}\"{valid_until},\
             \"labels\":[\"sip-scanner\",\"voip-fraud\"]}}",
            self.identity_id(),
            json_str(&format!("SIP honeypot probe source {}", a.key)),
            json_str(&format!(
                "Seen {} times, last {} ({}).",
                a.count,
                rfc3339(a.last_seen_ms),
                a.origin.as_str()
            )),
            json_str(&stix_pattern(&a.key)),
        );
    }

    fn misp_attribute(&self, out: &mut Vec<u8>, a: &Actor) {
        let (ty, category) = match self.h.kind {
            Kind::Ip => ("ip-src", "Network activity"),
            Kind::Number => ("phone-number", "Financial fraud"),
        };
        let mut name = misp_event_uuid(self.h.node_id, self.h.kind)
            .as_bytes()
            .to_vec();
        name.extend_from_slice(a.key.as_bytes());
        let uuid = Uuid::new_v5(&ID_NAMESPACE, &name);
        let _ = write!(
            text(out),
            "{{\"uuid\":\"{uuid}\",\"type\":\"{ty}\",\"category\":\"{category}\",\"value\":{},\
             \"to_ids\":{},\"timestamp\":\"{}\",\"distribution\":\"5\",\"comment\":{}}}",
            json_str(&a.key),
            self.h.kind == Kind::Ip,
            a.last_seen_ms / 1000,
            json_str(&format!(
                "seen {} times, first {}, last {}, listed until {} ({})",
                a.count,
                rfc3339(a.first_seen_ms),
                rfc3339(a.last_seen_ms),
                if a.expires_ms == i64::MAX {
                    "forever".to_string()
                } else {
                    rfc3339(a.expires_ms)
                },
                a.origin.as_str()
            ))
        );
    }
}

/// A STIX pattern matching one address.
fn stix_pattern(key: &str) -> String {
    let ty = if key.contains(':') {
        "ipv6-addr"
    } else {
        "ipv4-addr"
    };
    format!("[{ty}:value = '{key}']")
}

/// The MISP event a node publishes for one kind of actor: stable, so a MISP instance that
/// subscribes to the feed updates one event instead of collecting copies.
pub fn misp_event_uuid(node_id: Uuid, kind: Kind) -> Uuid {
    let mut name = node_id.as_bytes().to_vec();
    name.extend_from_slice(match kind {
        Kind::Ip => b"misp:ip-addresses",
        Kind::Number => b"misp:numbers",
    });
    Uuid::new_v5(&ID_NAMESPACE, &name)
}

pub fn misp_info(kind: Kind) -> &'static str {
    match kind {
        Kind::Ip => "SentryPeer node: SIP bad actors (source addresses)",
        Kind::Number => "SentryPeer node: numbers dialled by SIP bad actors",
    }
}

/// The organisation a node publishes as.
pub fn misp_orgc(node_id: Uuid) -> String {
    let org = Uuid::new_v5(
        &ID_NAMESPACE,
        &[node_id.as_bytes().as_slice(), b"org"].concat(),
    );
    format!("{{\"name\":\"sentrypeer-{node_id}\",\"uuid\":\"{org}\"}}")
}

/// `out` as a `fmt::Write` target.
fn text(out: &mut Vec<u8>) -> impl std::fmt::Write + '_ {
    struct W<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    W(out)
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A CSV field: quoted when it holds a comma, quote or line break (keys are addresses or
/// digits, but a database handed to us may hold anything).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as STIX, MISP and CSV readers take it.
pub fn rfc3339(ms: i64) -> String {
    let ms = ms.clamp(0, 253_402_300_799_999); // up to 9999-12-31
    let secs = ms / 1000;
    let (y, m, d) = crate::event::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_496_800_000; // 2025-11-30T10:00:00Z

    fn actor(key: &str, expires_ms: i64) -> Actor {
        Actor {
            key: key.into(),
            first_seen_ms: NOW - 60_000,
            last_seen_ms: NOW - 1_000,
            count: 3,
            expires_ms,
            origin: Origin {
                local: true,
                peers: false,
            },
        }
    }

    fn removed(key: &str) -> Entry {
        Entry::Removed {
            key: key.into(),
            first_seen_ms: NOW - 60_000,
        }
    }

    fn export(kind: Kind, format: Format, since: Option<u64>, entries: &[Entry]) -> String {
        let mut w = Writer::new(Header {
            kind,
            format,
            cursor: 42,
            since,
            now_ms: NOW,
            node_id: Uuid::nil(),
            ipset_name: DEFAULT_IPSET_NAME.into(),
            ttl_secs: Some(604_800),
        });
        let mut out = Vec::new();
        w.begin(&mut out);
        for e in entries {
            w.entry(&mut out, e);
        }
        w.end(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn listed() -> Vec<Entry> {
        vec![
            Entry::Listed(actor("203.0.113.7", NOW + 3_600_000)),
            Entry::Listed(actor("2001:db8::7", i64::MAX)),
            Entry::Listed(actor("198.51.100.1", NOW - 1)),
        ]
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(NOW + 5), "2025-11-30T10:00:00.005Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn plain_is_one_listed_address_a_line_and_expired_ones_are_left_out() {
        assert_eq!(
            export(Kind::Ip, Format::Plain, None, &listed()),
            "203.0.113.7\n2001:db8::7\n"
        );
        assert_eq!(
            export(
                Kind::Ip,
                Format::Plain,
                Some(7),
                &[
                    Entry::Listed(actor("203.0.113.7", NOW + 1000)),
                    removed("192.0.2.1")
                ]
            ),
            "+203.0.113.7\n-192.0.2.1\n"
        );
    }

    #[test]
    fn csv_has_a_header_and_empty_expiry_for_never() {
        assert_eq!(
            export(Kind::Ip, Format::Csv, None, &listed()),
            "address,first_seen,last_seen,count,expires,origin\n\
             203.0.113.7,2025-11-30T09:59:00.000Z,2025-11-30T09:59:59.000Z,3,2025-11-30T11:00:00.000Z,local\n\
             2001:db8::7,2025-11-30T09:59:00.000Z,2025-11-30T09:59:59.000Z,3,,local\n"
        );
    }

    #[test]
    fn json_carries_the_cursor_and_changes_mode_marks_each_entry() {
        let v: serde_json::Value = serde_json::from_str(&export(
            Kind::Number,
            Format::Json,
            None,
            &[Entry::Listed(actor("+442012345678", NOW + 1000))],
        ))
        .unwrap();
        assert_eq!(v["cursor"], "42");
        assert_eq!(v["numbers"][0]["number"], "+442012345678");
        assert_eq!(v["numbers"][0]["count"], 3);
        let v: serde_json::Value = serde_json::from_str(&export(
            Kind::Ip,
            Format::Json,
            Some(40),
            &[
                Entry::Listed(actor("203.0.113.7", NOW + 1000)),
                removed("192.0.2.1"),
            ],
        ))
        .unwrap();
        assert_eq!(v["since"], "40");
        assert_eq!(v["changes"][0]["change"], "add");
        assert_eq!(v["changes"][1]["change"], "remove");
        assert_eq!(v["changes"][1]["ip_address"], "192.0.2.1");
    }

    #[test]
    fn ipset_creates_both_families_with_timeouts_and_adds_the_remaining_seconds() {
        let got = export(Kind::Ip, Format::Ipset, None, &listed());
        let lines: Vec<&str> = got.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "create sentrypeer hash:ip family inet timeout 604800 maxelem 4194304 -exist",
                "create sentrypeer6 hash:ip family inet6 timeout 604800 maxelem 4194304 -exist",
                "add sentrypeer 203.0.113.7 timeout 3600 -exist",
                "add sentrypeer6 2001:db8::7 timeout 0 -exist",
            ]
        );
        let got = export(Kind::Ip, Format::Ipset, Some(1), &[removed("2001:db8::9")]);
        assert!(
            got.ends_with("del sentrypeer6 2001:db8::9 -exist\n"),
            "{got}"
        );
    }

    #[test]
    fn nft_declares_the_table_and_batches_elements_per_family() {
        let got = export(Kind::Ip, Format::Nft, None, &listed());
        assert!(got.contains(
            "table inet sentrypeer {\n\tset bad_actors_v4 { type ipv4_addr; flags timeout; }"
        ));
        assert!(
            got.contains(
                "add element inet sentrypeer bad_actors_v4 { 203.0.113.7 timeout 3600s }\n"
            )
        );
        assert!(got.contains("add element inet sentrypeer bad_actors_v6 { 2001:db8::7 }\n"));
        let many: Vec<Entry> = (0..600)
            .map(|i| Entry::Listed(actor(&format!("192.0.2.{}", i % 250), NOW + 10_000)))
            .collect();
        let got = export(Kind::Ip, Format::Nft, None, &many);
        assert_eq!(got.matches("add element").count(), 2);
        let got = export(Kind::Ip, Format::Nft, Some(3), &[removed("192.0.2.1")]);
        assert!(got.contains(
            "add element inet sentrypeer bad_actors_v4 { 192.0.2.1 timeout 1s }\n\
             delete element inet sentrypeer bad_actors_v4 { 192.0.2.1 }\n"
        ));
    }

    #[test]
    fn stix_is_a_bundle_of_an_identity_and_one_indicator_per_address() {
        let v: serde_json::Value =
            serde_json::from_str(&export(Kind::Ip, Format::Stix, None, &listed())).unwrap();
        assert_eq!(v["type"], "bundle");
        let objects = v["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[0]["type"], "identity");
        assert_eq!(objects[1]["pattern"], "[ipv4-addr:value = '203.0.113.7']");
        assert_eq!(objects[1]["valid_until"], "2025-11-30T11:00:00.000Z");
        assert_eq!(objects[2]["pattern"], "[ipv6-addr:value = '2001:db8::7']");
        assert!(objects[2].get("valid_until").is_none());
        assert_eq!(objects[1]["created_by_ref"], objects[0]["id"]);
    }

    #[test]
    fn a_removal_in_stix_is_a_revoked_version_of_the_same_indicator() {
        let full: serde_json::Value = serde_json::from_str(&export(
            Kind::Ip,
            Format::Stix,
            None,
            &[Entry::Listed(actor("192.0.2.1", NOW + 1000))],
        ))
        .unwrap();
        let since: serde_json::Value = serde_json::from_str(&export(
            Kind::Ip,
            Format::Stix,
            Some(3),
            &[removed("192.0.2.1")],
        ))
        .unwrap();
        let (was, now) = (&full["objects"][1], &since["objects"][1]);
        assert_eq!(now["revoked"], true);
        for same in ["id", "created", "valid_from", "pattern"] {
            assert_eq!(now[same], was[same], "{same}");
        }
        assert_eq!(now["modified"], "2025-11-30T10:00:00.000Z");
        assert!(now["modified"].as_str() > was["modified"].as_str());
    }

    #[test]
    fn misp_is_one_feed_event_with_an_attribute_per_actor() {
        let v: serde_json::Value =
            serde_json::from_str(&export(Kind::Ip, Format::Misp, None, &listed())).unwrap();
        let attrs = v["Event"]["Attribute"].as_array().unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0]["type"], "ip-src");
        assert_eq!(attrs[0]["value"], "203.0.113.7");
        assert_eq!(
            v["Event"]["uuid"],
            misp_event_uuid(Uuid::nil(), Kind::Ip).to_string()
        );
        assert!(Format::Misp.supports(Kind::Number));
        assert!(!Format::Nft.supports(Kind::Number));
    }
}
