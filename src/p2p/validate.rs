//! The signed wire form of a shared event, and the checks every received one must pass before
//! anything else sees it. No I/O, no logging, no network: every rule is unit-tested here.
//!
//! # The signed form
//!
//! A shared event travels, in a gossip message or as one entry of a catch-up page, as a JSON
//! object, its *envelope*:
//!
//! ```text
//! {"key":"<the author's ed25519 public key, 32 bytes, base64>","signature":"<64 bytes, base64>","event":{…}}
//! ```
//!
//! `event` is the JSON log object (upstream's field names; upstream shares exactly that). The
//! signature is ed25519, by the author's libp2p identity key, over [`SIGNING_CONTEXT`] followed
//! by the exact bytes of `event` as they stand in the envelope. Those bytes are carried as they
//! are and never serialised again: a receiver verifies the bytes it received, then parses them,
//! and a node that keeps or serves a peer's event keeps the envelope it verified
//! ([`Event::signed`]). Key order and unknown keys around `event` do not matter; any change
//! inside it breaks the signature.
//!
//! The author's `created_by_node_id` is the UUID v5 of its public key ([`node_id_of`]), so the
//! key, the signature and the node id name one author: re-signing another node's event with a
//! different key either keeps that node's id (and fails the check) or changes it (and is then
//! the re-signer's own claim, under another id, which a node holding the original refuses: an
//! event UUID belongs to its first author, see `arrivals`). A receiver records the author as
//! the peer id of the key (`Origin::Peer`), never the peer that relayed or served the event.
//! An event without an envelope (the format before signatures) is refused as
//! [`Invalid::Unsigned`].
//!
//! Where signatures live: a peer's envelope is kept by the database writer
//! (`sentrypeer_signed_events`, seven days) and served as it is in catch-up pages; this node's
//! own events are signed when they are published (`gossip`) and again, identically for the same
//! bytes, when a catch-up page holding them is read (`catchup`), so nothing is stored for them.
//!
//! # What leaves the node
//!
//! Before an event is signed the node's own addresses are hidden ([`hide_addresses`]): every
//! address in [`OwnAddresses`] (where it listens, and every address a probe was sent to) and the
//! event's own destination become `0.0.0.0` (IPv4) or `::` (IPv6) wherever they stand in the
//! SIP message, and `destination_ip` is always `0.0.0.0` with the port kept (upstream writes
//! that too; a receiver refuses anything else). A replacement is never longer than what it
//! replaces, and the message is cut to [`MAX_SIP_MESSAGE_BYTES`] after the replacement, at a
//! character boundary: naming the node's address in a probe can neither grow an event past
//! its bounds nor leave part of the address at the cut, and what is signed is what is sent.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libp2p::PeerId;
use libp2p::identity::{self, ed25519};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::event::{CollectedMethod, Event, NOT_FOUND, Origin, Transport};

/// How long a bad actor stays interesting to the network: nothing older is shared or accepted.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead of our clock a peer's timestamp may be: NTP-synced hosts differ by far less,
/// and anything beyond this is a lie that would keep an event "fresh" past its expiry.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The largest signed event (envelope included) accepted from a peer. Real probes are under
/// 2 KiB; this leaves room for the cut SIP message below escaped as JSON, and stays under
/// gossip's frame limit.
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
/// Addresses remembered as this node's own at most (a host has a handful; a node answering on
/// a whole routed prefix still hides each event's own destination beyond this).
pub const MAX_OWN_ADDRESSES: usize = 1024;

/// What the signature covers before the event's bytes: it names what is signed, so that no
/// signature made with the same key for another purpose (gossipsub, Noise, identify) can pass
/// for an event's, or the other way round.
pub const SIGNING_CONTEXT: &[u8] = b"sentrypeer/event/1\n";
/// The namespace of node ids derived from keys ([`node_id_of`]).
const NODE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_53a4_9b0f_4d27_8e55_2f7a_c3d9_1b60);
const ENVELOPE_KEY: &str = "{\"key\":\"";
const ENVELOPE_SIGNATURE: &str = "\",\"signature\":\"";
const ENVELOPE_EVENT: &str = "\",\"event\":";
/// Base64 of a 32-byte key and of a 64-byte signature.
const KEY_BASE64_BYTES: usize = 44;
const SIGNATURE_BASE64_BYTES: usize = 88;
/// What the envelope adds to the event it carries, in bytes.
pub const ENVELOPE_BYTES: usize = ENVELOPE_KEY.len()
    + KEY_BASE64_BYTES
    + ENVELOPE_SIGNATURE.len()
    + SIGNATURE_BASE64_BYTES
    + ENVELOPE_EVENT.len()
    + 1;

/// Why a received event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the event is {len} bytes, more than {MAX_WIRE_EVENT_BYTES}")]
    TooLarge { len: usize },
    #[error("not an event: {0}")]
    Malformed(String),
    #[error("the event is not signed by its author")]
    Unsigned,
    #[error("the author's key is not an ed25519 public key")]
    BadKey,
    #[error("the signature does not match the event and the author's key")]
    BadSignature,
    #[error("created_by_node_id is not the node id of the key that signed the event")]
    NotItsAuthor,
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

/// The node id of the author whose key this is: the UUID v5 of the key's 32 bytes.
pub fn node_id_of(key: &ed25519::PublicKey) -> Uuid {
    Uuid::new_v5(&NODE_ID_NAMESPACE, &key.to_bytes())
}

/// This node's signing identity: its libp2p key (ed25519), and the peer id and node id it
/// signs as.
#[derive(Clone)]
pub struct Signer {
    key: ed25519::Keypair,
    key_base64: String,
    peer_id: PeerId,
    node_id: Uuid,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("peer_id", &self.peer_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer for a libp2p identity; `None` unless it is an ed25519 key.
    pub fn new(key: &identity::Keypair) -> Option<Signer> {
        let key = key.clone().try_into_ed25519().ok()?;
        let public = key.public();
        Some(Signer {
            key_base64: BASE64.encode(public.to_bytes()),
            node_id: node_id_of(&public),
            peer_id: identity::PublicKey::from(public).to_peer_id(),
            key,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node id this signer's events must carry.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// The envelope carrying `event` (the JSON object's bytes, as [`encode`] makes them),
    /// signed. Deterministic: the same bytes always give the same envelope.
    pub fn seal(&self, event: &[u8]) -> Vec<u8> {
        let signature = self.key.sign(&signed_message(event));
        envelope(&self.key_base64, &BASE64.encode(signature), event)
    }
}

/// What a signature covers: the context, then the event's bytes.
fn signed_message(event: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + event.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(event);
    m
}

fn envelope(key: &str, signature: &str, event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_BYTES + event.len());
    for part in [
        ENVELOPE_KEY.as_bytes(),
        key.as_bytes(),
        ENVELOPE_SIGNATURE.as_bytes(),
        signature.as_bytes(),
        ENVELOPE_EVENT.as_bytes(),
        event,
        b"}",
    ] {
        out.extend_from_slice(part);
    }
    out
}

/// This node's own addresses, hidden in every event it shares: where it listens (SIP and peer
/// to peer) and every address a probe was sent to. Learnt as the node runs, never forgotten,
/// at most [`MAX_OWN_ADDRESSES`]; read without waiting by the output and catch-up readers.
#[derive(Debug, Default)]
pub struct OwnAddresses {
    set: RwLock<Arc<HashSet<IpAddr>>>,
}

impl OwnAddresses {
    /// Notes an address of this node's (the unspecified address is none); true if new.
    pub fn note(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || self.contains(ip) {
            return false;
        }
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        if set.len() >= MAX_OWN_ADDRESSES || set.contains(&ip) {
            return false;
        }
        let mut next = HashSet::clone(&set);
        next.insert(ip);
        *set = Arc::new(next);
        true
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.snapshot().contains(&ip.to_canonical())
    }

    /// The addresses known now (canonical forms).
    pub fn snapshot(&self) -> Arc<HashSet<IpAddr>> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The signed part of a local event as it leaves the node: the JSON log object, with
/// `created_by_node_id` the author's `node_id`, the node's addresses (`own`, and the event's
/// destination) hidden, and the SIP message cut to [`MAX_SIP_MESSAGE_BYTES`] after that.
pub fn encode(event: &Event, node_id: Uuid, own: &HashSet<IpAddr>) -> Vec<u8> {
    let destination = event.destination.ip().to_canonical();
    let hidden = hide_addresses(&event.message, |ip| {
        !ip.is_unspecified() && (ip == destination || own.contains(&ip))
    });
    let mut json = event.to_json();
    json.received_from_peer = None;
    // What an attacker tried to log in as, and what the node let it do, stay here.
    json.sip_auth_username = None;
    json.registered_attacker = false;
    json.created_by_node_id = node_id.hyphenated().to_string();
    json.sip_message = cut(&hidden, MAX_SIP_MESSAGE_BYTES);
    json.destination_ip =
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), event.destination.port()).to_string();
    // Serialising plain strings into a Vec cannot fail.
    serde_json::to_vec(&json).unwrap_or_default()
}

/// Replaces every address `is_own` accepts (given in canonical form) wherever it stands in
/// `text` as an address: dotted IPv4 (leading zeros too), IPv6 in any notation (IPv4-mapped
/// included, with or without a trailing `:port`), by `0.0.0.0` or `::`. Never longer than
/// `text`: the shortest IPv4 text is as long as `0.0.0.0`, and every IPv6 text but `::` itself
/// (the unspecified address, nobody's) is longer than `::`.
pub fn hide_addresses(text: &str, is_own: impl Fn(IpAddr) -> bool) -> Cow<'_, str> {
    let is_own = |ip: IpAddr| is_own(ip.to_canonical());
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !is_address_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_address_byte(bytes[i]) {
            i += 1;
        }
        // Address bytes are ASCII, so these offsets are character boundaries.
        for (from, to, placeholder) in own_addresses_in(&text[start..i], &is_own) {
            out.push_str(&text[copied..start + from]);
            out.push_str(placeholder);
            copied = start + to;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Bytes an address can be written with.
fn is_address_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Where this node's addresses stand in a run of address bytes: (from, to, placeholder),
/// in order, not overlapping.
fn own_addresses_in(
    run: &str,
    is_own: &impl Fn(IpAddr) -> bool,
) -> Vec<(usize, usize, &'static str)> {
    if run.contains(':') {
        let whole = run.trim_end_matches('.');
        let without_port = whole.rfind(':').map(|p| &whole[..p]);
        for candidate in std::iter::once(whole).chain(without_port) {
            if let Ok(v6) = candidate.parse::<Ipv6Addr>() {
                if is_own(IpAddr::V6(v6)) {
                    return vec![(0, candidate.len(), "::")];
                }
            }
        }
    }
    let b = run.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        // The dot-separated groups of this stretch, by offset in `run`.
        let mut groups = Vec::new();
        let mut from = start;
        for part in run[start..i].split('.') {
            groups.push((from, from + part.len()));
            from += part.len() + 1;
        }
        let mut g = 0;
        while g + 4 <= groups.len() {
            let quad = dotted_quad(run, &groups[g..g + 4]);
            if quad.is_some_and(|ip| is_own(IpAddr::V4(ip))) {
                found.push((groups[g].0, groups[g + 3].1, "0.0.0.0"));
                g += 4;
            } else {
                g += 1;
            }
        }
    }
    found
}

/// Four groups of one to three digits, each at most 255, as an IPv4 address.
fn dotted_quad(run: &str, groups: &[(usize, usize)]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    for (o, &(from, to)) in octets.iter_mut().zip(groups) {
        let digits = run.get(from..to)?;
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        *o = digits.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
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

/// The envelope as it travels. Unknown keys are ignored so that later versions may add some.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
}

/// Decodes and checks a signed event received from a peer (see the module's documentation):
/// its shape and fields, that its node id is its key's, and its signature. The event returned
/// names its author (`Origin::Peer`, the key's peer id) and keeps the envelope
/// (`Event::signed`, re-encoded around the exact event bytes that were verified).
pub fn decode(bytes: &[u8], now: SystemTime, policy: Policy) -> Result<Event, Invalid> {
    if bytes.len() > MAX_WIRE_EVENT_BYTES {
        return Err(Invalid::TooLarge { len: bytes.len() });
    }
    // An object, not the array form serde would also take for a struct.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Invalid::Malformed("not a JSON object".into()));
    }
    let envelope_in: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| Invalid::Malformed(e.to_string()))?;
    let (Some(key), Some(signature), Some(event)) =
        (envelope_in.key, envelope_in.signature, envelope_in.event)
    else {
        return Err(Invalid::Unsigned);
    };
    let key = BASE64
        .decode(key.as_bytes())
        .ok()
        .and_then(|k| ed25519::PublicKey::try_from_bytes(&k).ok())
        .ok_or(Invalid::BadKey)?;
    let signature = BASE64
        .decode(signature.as_bytes())
        .map_err(|_| Invalid::BadSignature)?;
    let raw = event.get().as_bytes();
    // The cheap checks first: a flood of junk costs no signature verification.
    let mut e = parse_event(raw, now, policy)?;
    if e.node_id != node_id_of(&key) {
        return Err(Invalid::NotItsAuthor);
    }
    if !key.verify(&signed_message(raw), &signature) {
        return Err(Invalid::BadSignature);
    }
    let signed = envelope(
        &BASE64.encode(key.to_bytes()),
        &BASE64.encode(&signature),
        raw,
    );
    e.origin = Origin::Peer(identity::PublicKey::from(key).to_peer_id().to_string());
    e.signed = Some(signed.into());
    Ok(e)
}

/// Whether a local event may be shared: the checks a receiver will apply (the signature
/// aside, which this node makes), so that it never sends what its peers would reject (and
/// score it down for).
pub fn shareable(
    event: &Event,
    now: SystemTime,
    policy: Policy,
    own: &HashSet<IpAddr>,
) -> Result<(), Invalid> {
    check_outgoing(&encode(event, Uuid::nil(), own), now, policy)
}

/// A local event as it is shared: encoded ([`encode`]), checked as a receiver will check it,
/// and signed.
pub fn sign_local(
    event: &Event,
    signer: &Signer,
    own: &HashSet<IpAddr>,
    now: SystemTime,
    policy: Policy,
) -> Result<Vec<u8>, Invalid> {
    let bytes = encode(event, signer.node_id(), own);
    check_outgoing(&bytes, now, policy)?;
    Ok(signer.seal(&bytes))
}

fn check_outgoing(bytes: &[u8], now: SystemTime, policy: Policy) -> Result<(), Invalid> {
    let len = bytes.len() + ENVELOPE_BYTES;
    if len > MAX_WIRE_EVENT_BYTES {
        return Err(Invalid::TooLarge { len });
    }
    parse_event(bytes, now, policy).map(|_| ())
}

/// The JSON log object inside the envelope. Unknown keys are ignored so that later versions
/// may add some; `received_from_peer` is never read from the wire (the receiver sets it).
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

/// Decodes and checks an event that arrives without a signature (a value under OpenDHT's
/// `bad_actors` key, upstream's format: the bare JSON log object): the same bounds and checks
/// as a signed event's, except that the sensor's address may stand in `destination_ip` (upstream
/// writes it): it is replaced by the placeholder, the port kept, and never stored. The event
/// returned is `Origin::Local` and unsigned; the caller names where it came from.
pub fn decode_unsigned(bytes: &[u8], now: SystemTime, policy: Policy) -> Result<Event, Invalid> {
    if bytes.len() > MAX_WIRE_EVENT_BYTES {
        return Err(Invalid::TooLarge { len: bytes.len() });
    }
    parse_event_with(bytes, now, policy, Destination::Any)
}

/// What `destination_ip` may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// Only the placeholder `0.0.0.0:port` (signed events: the author hid its address).
    Placeholder,
    /// Any address, replaced by the placeholder with its port.
    Any,
}

/// Parses and checks the event object itself: every field, the source, the age, and that the
/// sensor's address is hidden. The event returned is `Origin::Local`, unsigned.
fn parse_event(bytes: &[u8], now: SystemTime, policy: Policy) -> Result<Event, Invalid> {
    parse_event_with(bytes, now, policy, Destination::Placeholder)
}

fn parse_event_with(
    bytes: &[u8],
    now: SystemTime,
    policy: Policy,
    destination_rule: Destination,
) -> Result<Event, Invalid> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Invalid::Malformed("the event is not a JSON object".into()));
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
    let collected_method =
        CollectedMethod::parse(&w.collected_method).ok_or(Invalid::BadField {
            field: "collected_method",
        })?;
    let transport = Transport::parse(&w.transport_type).ok_or(Invalid::BadField {
        field: "transport_type",
    })?;
    let source = parse_addr(&w.source_ip).ok_or(Invalid::BadField { field: "source_ip" })?;
    check_source(source.ip(), policy)?;
    // The sensor's address never travels: only the placeholder, with the port.
    let destination = parse_addr(&w.destination_ip)
        .filter(|d| {
            destination_rule == Destination::Any || d.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        })
        .map(|d| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), d.port()))
        .ok_or(Invalid::BadField {
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
        origin: Origin::Local,
        signed: None,
        sip_auth: None,
        registered_attacker: false,
    })
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
pub(super) fn parse_addr(s: &str) -> Option<SocketAddr> {
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
    let days = crate::event::days_from_civil(y as i64, mo as u32, d as u32);
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

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;
    use crate::event::format_timestamp;

    /// The author of most events below.
    static SIGNER: LazyLock<Signer> = LazyLock::new(new_signer);

    fn new_signer() -> Signer {
        Signer::new(&identity::Keypair::generate_ed25519()).unwrap()
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn none() -> HashSet<IpAddr> {
        HashSet::new()
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

    /// The event object as `SIGNER` shares it.
    fn wire(e: &Event) -> serde_json::Value {
        serde_json::from_slice(&encode(e, SIGNER.node_id(), &none())).unwrap()
    }

    /// `v`, signed by `SIGNER` as it stands, and checked.
    fn decode_value(v: &serde_json::Value, policy: Policy) -> Result<Event, Invalid> {
        decode(&SIGNER.seal(v.to_string().as_bytes()), now(), policy)
    }

    fn with(field: &str, value: serde_json::Value) -> Result<Event, Invalid> {
        let mut v = wire(&event());
        v[field] = value;
        decode_value(&v, Policy::default())
    }

    /// The envelope's three parts, as text.
    fn parts(envelope: &[u8]) -> (String, String, String) {
        let v: serde_json::Value = serde_json::from_slice(envelope).unwrap();
        let event = std::str::from_utf8(envelope).unwrap();
        let at = event.find("\"event\":").unwrap() + "\"event\":".len();
        (
            v["key"].as_str().unwrap().to_string(),
            v["signature"].as_str().unwrap().to_string(),
            event[at..event.len() - 1].to_string(),
        )
    }

    fn rewrap(key: &str, signature: &str, event: &str) -> Vec<u8> {
        format!("{{\"key\":\"{key}\",\"signature\":\"{signature}\",\"event\":{event}}}")
            .into_bytes()
    }

    #[test]
    fn what_an_attacker_tried_and_its_registration_stay_on_this_node() {
        let mut e = event();
        e.sip_auth = Some(Box::new(crate::event::SipAuth {
            username: "100".into(),
            digest: None,
        }));
        e.registered_attacker = true;
        let v = wire(&e);
        assert!(v.get("sip_auth_username").is_none(), "{v}");
        assert!(v.get("registered_attacker").is_none(), "{v}");
    }

    #[test]
    fn a_local_event_round_trips_signed_by_its_author_with_the_sensor_address_hidden() {
        let e = event();
        let bytes = encode(&e, SIGNER.node_id(), &none());
        let sealed = SIGNER.seal(&bytes);
        assert_eq!(sealed.len(), bytes.len() + ENVELOPE_BYTES);
        assert_eq!(SIGNER.seal(&bytes), sealed, "deterministic");
        let got = decode(&sealed, now(), Policy::default()).unwrap();
        assert_eq!(got.destination, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(got.origin, Origin::Peer(SIGNER.peer_id().to_string()));
        assert_eq!(got.node_id, SIGNER.node_id());
        assert_eq!(got.signed.as_deref(), Some(sealed.as_slice()));
        let mut want = e.clone();
        want.destination = got.destination;
        want.node_id = SIGNER.node_id();
        want.origin = got.origin.clone();
        want.signed = got.signed.clone();
        assert_eq!(got, want);
        let v = wire(&e);
        assert_eq!(v["source_ip"], "8.8.8.8:5071");
        assert_eq!(v["app_name"], "sentrypeer");
        assert!(v.get("received_from_peer").is_none());
    }

    #[test]
    fn the_signature_covers_every_byte_of_the_event_as_it_travels() {
        let sealed = SIGNER.seal(&encode(&event(), SIGNER.node_id(), &none()));
        let (key, signature, original) = parts(&sealed);
        assert!(
            decode(
                &rewrap(&key, &signature, &original),
                now(),
                Policy::default()
            )
            .is_ok()
        );
        let v: serde_json::Value = serde_json::from_str(&original).unwrap();
        // Changes a receiver would otherwise take: the signature alone refuses them.
        for (field, value) in [
            ("source_ip", "8.8.4.4:5071"),
            ("called_number", "999"),
            ("sip_message", "INVITE sip:999@0.0.0.0 SIP/2.0\r\n\r\n"),
            ("sip_user_agent", "innocent"),
            ("sip_method", "INVITE"),
            ("event_uuid", "00000000-0000-4000-8000-000000000001"),
            ("collected_method", "responsive"),
            ("transport_type", "TCP"),
            ("destination_ip", "0.0.0.0:5061"),
            ("app_version", "0.0.1"),
            (
                "event_timestamp",
                &format_timestamp(now() - Duration::from_secs(61)),
            ),
        ] {
            let mut altered = v.clone();
            altered[field] = value.into();
            let text = serde_json::to_string(&altered).unwrap();
            assert_eq!(
                decode(&rewrap(&key, &signature, &text), now(), Policy::default()),
                Err(Invalid::BadSignature),
                "{field}"
            );
        }
        // The bytes are verified as they are, never re-serialised: a space is a change too.
        let spaced = original.replacen(':', ": ", 1);
        assert_eq!(
            decode(&rewrap(&key, &signature, &spaced), now(), Policy::default()),
            Err(Invalid::BadSignature)
        );
        // The envelope around them may be written in any order, with keys added.
        let reordered = format!(
            "{{ \"later\": [1], \"event\": {original}, \"signature\": \"{signature}\", \"key\": \"{key}\" }}"
        );
        let got = decode(reordered.as_bytes(), now(), Policy::default()).unwrap();
        assert_eq!(
            got.signed.as_deref(),
            Some(sealed.as_slice()),
            "kept as signed"
        );
    }

    #[test]
    fn a_node_id_not_derived_from_the_signing_key_is_refused() {
        // A made-up node id, signed by its writer.
        let mut v = wire(&event());
        v["created_by_node_id"] = Uuid::new_v4().hyphenated().to_string().into();
        assert_eq!(
            decode_value(&v, Policy::default()),
            Err(Invalid::NotItsAuthor)
        );
        // Another node's event re-signed with a second key, node id kept.
        let other = new_signer();
        let theirs = encode(&event(), SIGNER.node_id(), &none());
        assert_eq!(
            decode(&other.seal(&theirs), now(), Policy::default()),
            Err(Invalid::NotItsAuthor)
        );
        // Or its key swapped in for the author's, signature kept.
        let (_, signature, original) = parts(&SIGNER.seal(&theirs));
        let (other_key, _, _) = parts(&other.seal(&theirs));
        assert_eq!(
            decode(
                &rewrap(&other_key, &signature, &original),
                now(),
                Policy::default()
            ),
            Err(Invalid::NotItsAuthor)
        );
        // Node ids are the keys': distinct, and stable.
        assert_ne!(other.node_id(), SIGNER.node_id());
        let key = identity::Keypair::generate_ed25519();
        assert_eq!(
            Signer::new(&key).unwrap().node_id(),
            Signer::new(&key).unwrap().node_id()
        );
    }

    #[test]
    fn unsigned_old_format_and_badly_signed_events_are_refused() {
        let bytes = encode(&event(), SIGNER.node_id(), &none());
        // The format before signatures: the bare event object.
        assert_eq!(
            decode(&bytes, now(), Policy::default()),
            Err(Invalid::Unsigned)
        );
        let (key, signature, original) = parts(&SIGNER.seal(&bytes));
        let no_signature = format!("{{\"key\":\"{key}\",\"event\":{original}}}");
        assert_eq!(
            decode(no_signature.as_bytes(), now(), Policy::default()),
            Err(Invalid::Unsigned)
        );
        let null_event =
            format!("{{\"key\":\"{key}\",\"signature\":\"{signature}\",\"event\":null}}");
        assert_eq!(
            decode(null_event.as_bytes(), now(), Policy::default()),
            Err(Invalid::Unsigned)
        );
        for bad_key in ["", "AAAA", "not base64!", &BASE64.encode([0u8; 31])] {
            assert_eq!(
                decode(
                    &rewrap(bad_key, &signature, &original),
                    now(),
                    Policy::default()
                ),
                Err(Invalid::BadKey),
                "{bad_key}"
            );
        }
        for bad_signature in [
            String::new(),
            "%%".to_string(),
            BASE64.encode([0u8; 64]),
            signature[..signature.len() - 4].to_string(),
        ] {
            assert_eq!(
                decode(
                    &rewrap(&key, &bad_signature, &original),
                    now(),
                    Policy::default()
                ),
                Err(Invalid::BadSignature),
                "{bad_signature}"
            );
        }
        // The same key's signature over the bare bytes (another protocol's) is not an event's.
        let ed = identity::Keypair::generate_ed25519();
        let s = Signer::new(&ed).unwrap();
        let theirs = encode(&event(), s.node_id(), &none());
        let (key, _, original) = parts(&s.seal(&theirs));
        let bare = BASE64.encode(ed.sign(&theirs).unwrap());
        assert_eq!(
            decode(&rewrap(&key, &bare, &original), now(), Policy::default()),
            Err(Invalid::BadSignature)
        );
        let duplicate = format!(
            "{{\"key\":\"{key}\",\"signature\":\"{signature}\",\"event\":{original},\"event\":{original}}}"
        );
        assert!(matches!(
            decode(duplicate.as_bytes(), now(), Policy::default()),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn a_destination_other_than_the_placeholder_is_refused() {
        for shown in ["192.0.2.44:5060", "[2001:db8::1]:5060", "[::]:5060"] {
            assert_eq!(
                with("destination_ip", shown.into()),
                Err(Invalid::BadField {
                    field: "destination_ip"
                }),
                "{shown}"
            );
        }
        assert!(with("destination_ip", "0.0.0.0".into()).is_ok());
    }

    #[test]
    fn the_sensor_addresses_are_hidden_wherever_the_message_names_them() {
        let own: HashSet<IpAddr> = ["198.51.100.7", "2001:db8::7", "127.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let is_own = |ip: IpAddr| own.contains(&ip);
        for (text, want) in [
            (
                "INVITE sip:100@198.51.100.7 SIP/2.0",
                "INVITE sip:100@0.0.0.0 SIP/2.0",
            ),
            (
                "To: <sip:100@198.51.100.7:5060>",
                "To: <sip:100@0.0.0.0:5060>",
            ),
            (
                "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1",
                "Via: SIP/2.0/UDP 0.0.0.0:5060;branch=z9hG4bK1",
            ),
            ("sip:a@198.051.100.007.", "sip:a@0.0.0.0."),
            ("x=198.51.100.7,198.51.100.7", "x=0.0.0.0,0.0.0.0"),
            ("sip:100@[2001:db8::7]:5060", "sip:100@[::]:5060"),
            ("sip:100@[2001:DB8:0:0:0:0:0:7]", "sip:100@[::]"),
            ("sip:100@2001:db8::7:5060", "sip:100@:::5060"),
            ("c=IN IP6 ::ffff:127.0.0.1", "c=IN IP6 ::"),
            ("c=IN IP4 127.0.0.1\r\n", "c=IN IP4 0.0.0.0\r\n"),
            ("1.198.51.100.7.1", "1.0.0.0.0.1"),
            // Not ours: other addresses, longer numbers, versions.
            ("sip:100@198.51.100.70", "sip:100@198.51.100.70"),
            ("sip:100@198.51.100.77", "sip:100@198.51.100.77"),
            ("sip:100@11.198.51.100", "sip:100@11.198.51.100"),
            ("SIP/2.0 200 OK 2001:db8::70", "SIP/2.0 200 OK 2001:db8::70"),
            ("tag=é198.51.100.7é", "tag=é0.0.0.0é"),
        ] {
            let got = hide_addresses(text, is_own);
            assert_eq!(got, want, "{text}");
            assert!(got.len() <= text.len(), "{text}");
        }
        assert!(matches!(
            hide_addresses("OPTIONS sip:100@192.0.2.1", is_own),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hiding_never_lengthens_a_message() {
        use proptest::prelude::*;
        let own: HashSet<IpAddr> = ["1.2.3.4", "::1", "fe80::1", "255.255.255.254"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        proptest!(|(text in "[0-9a-fA-F:.\\[\\]@ ]{0,80}")| {
            let got = hide_addresses(&text, |ip| own.contains(&ip));
            prop_assert!(got.len() <= text.len());
        });
    }

    #[test]
    fn encoding_hides_the_destination_and_known_addresses_then_cuts_the_message() {
        let mut e = event();
        e.destination = "198.51.100.7:5060".parse().unwrap();
        e.message = "OPTIONS sip:100@198.51.100.7 SIP/2.0\r\n\
                     Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1\r\n\
                     Contact: <sip:100@[2001:db8::9]>\r\nTo: <sip:100@198.51.100.7>\r\n\r\n"
            .into();
        let own: HashSet<IpAddr> = ["2001:db8::9".parse().unwrap()].into();
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&e, SIGNER.node_id(), &own)).unwrap();
        let sent = v["sip_message"].as_str().unwrap();
        assert!(
            !sent.contains("198.51.100.7") && !sent.contains("2001:db8::9"),
            "{sent}"
        );
        assert!(
            sent.starts_with("OPTIONS sip:100@0.0.0.0 SIP/2.0\r\n"),
            "{sent}"
        );
        assert_eq!(v["destination_ip"], "0.0.0.0:5060");

        // A message stuffed with the sensor's address: hidden first, then cut, so the cut
        // cannot leave part of it, and what is signed still fits.
        e.message = format!(
            "OPTIONS sip:1 SIP/2.0\r\n{}",
            "198.51.100.7 ".repeat(MAX_SIP_MESSAGE_BYTES / 8)
        );
        assert!(e.message.len() > MAX_SIP_MESSAGE_BYTES);
        let bytes = encode(&e, SIGNER.node_id(), &none());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let sent = v["sip_message"].as_str().unwrap();
        assert!(sent.len() <= MAX_SIP_MESSAGE_BYTES);
        assert!(
            !sent.contains("198.") && !sent.ends_with("0.0.0"),
            "cut after hiding"
        );
        assert!(shareable(&e, now(), Policy::default(), &none()).is_ok());
        let got = decode(&SIGNER.seal(&bytes), now(), Policy::default()).unwrap();
        assert_eq!(got.message, sent);
    }

    #[test]
    fn own_addresses_are_canonical_bounded_and_never_the_unspecified_one() {
        let own = OwnAddresses::default();
        assert!(own.note("::ffff:192.0.2.1".parse().unwrap()));
        assert!(own.contains("192.0.2.1".parse().unwrap()));
        assert!(!own.note("192.0.2.1".parse().unwrap()), "already known");
        assert!(!own.note("0.0.0.0".parse().unwrap()));
        assert!(!own.note("::".parse().unwrap()));
        for i in 0..MAX_OWN_ADDRESSES as u32 * 2 {
            own.note(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(own.snapshot().len(), MAX_OWN_ADDRESSES);
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
        assert!(shareable(&e, now(), Policy::default(), &none()).is_ok());
        assert!(SIGNER.seal(&encode(&e, SIGNER.node_id(), &none())).len() <= MAX_WIRE_EVENT_BYTES);
    }

    #[test]
    fn the_worst_case_event_still_fits_the_wire_limit() {
        let mut e = event();
        // Control characters escape to six bytes each in JSON.
        e.message = "\u{1}".repeat(MAX_SIP_MESSAGE_BYTES);
        e.user_agent = "a".repeat(MAX_USER_AGENT_BYTES);
        e.called_number = "1".repeat(MAX_CALLED_NUMBER_BYTES);
        let len = encode(&e, Uuid::nil(), &none()).len() + ENVELOPE_BYTES;
        // Such a message is refused as too large rather than cut mid-field: it is no probe.
        assert!(len > MAX_WIRE_EVENT_BYTES);
        assert_eq!(
            shareable(&e, now(), Policy::default(), &none()),
            Err(Invalid::TooLarge { len })
        );
        e.message = "x".repeat(MAX_SIP_MESSAGE_BYTES);
        assert!(shareable(&e, now(), Policy::default(), &none()).is_ok());
        let sealed = SIGNER.seal(&encode(&e, SIGNER.node_id(), &none()));
        assert!(sealed.len() <= MAX_WIRE_EVENT_BYTES);
        assert!(decode(&sealed, now(), Policy::default()).is_ok());
    }

    #[test]
    fn malformed_json_and_missing_fields_are_refused() {
        let d = |b: &[u8]| decode(b, now(), Policy::default());
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
        assert!(matches!(
            decode_value(&serde_json::json!("an event"), Policy::default()),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn unknown_keys_are_ignored_and_received_from_peer_is_never_trusted() {
        let mut v = wire(&event());
        v["future_field"] = serde_json::json!({"x": 1});
        v["received_from_peer"] = serde_json::json!("someone-else");
        let got = decode_value(&v, Policy::default()).unwrap();
        assert_eq!(got.origin, Origin::Peer(SIGNER.peer_id().to_string()));
    }

    #[test]
    fn oversized_messages_and_fields_are_refused() {
        let big = vec![b' '; MAX_WIRE_EVENT_BYTES + 1];
        assert_eq!(
            decode(&big, now(), Policy::default()),
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
            trap: std::sync::Arc::new(crate::capture::trap::Trap::new(Default::default())),
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
        assert!(shareable(&e, now(), Policy::default(), &none()).is_err());
        assert!(
            shareable(
                &e,
                now(),
                Policy {
                    allow_private: true
                },
                &none()
            )
            .is_ok()
        );
    }
}
