//! One SIP request seen by this node (or, later, reported by a peer): the record every output
//! writes. Owns the field names and formats of the upstream contract (JSON log, database).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

/// The application name written in every event, as upstream does.
pub const APP_NAME: &str = "sentrypeer";
/// This build's version, written in every event and API response.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The transport a probe arrived on, spelled as upstream writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "TLS")]
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The transport spelled as [`Transport::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "UDP" => Some(Transport::Udp),
            "TCP" => Some(Transport::Tcp),
            "TLS" => Some(Transport::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the node collected a probe: `passive` (listening only) or `responsive` (`-r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectedMethod {
    Passive,
    Responsive,
}

impl CollectedMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectedMethod::Passive => "passive",
            CollectedMethod::Responsive => "responsive",
        }
    }

    /// The method spelled as [`CollectedMethod::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passive" => Some(CollectedMethod::Passive),
            "responsive" => Some(CollectedMethod::Responsive),
            _ => None,
        }
    }
}

/// The value upstream writes when a field is absent from the SIP message.
pub const NOT_FOUND: &str = "NOT_FOUND";

/// One SIP request: who sent it, to which number, with what, and the message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// UTC, `YYYY-MM-DD HH:MM:SS.nnnnnnnnn`.
    pub timestamp: String,
    pub uuid: Uuid,
    pub node_id: Uuid,
    pub collected_method: CollectedMethod,
    pub transport: Transport,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub called_number: String,
    pub method: String,
    pub user_agent: String,
    /// The message exactly as received (non-UTF-8 bytes replaced, as JSON and SQLite TEXT need).
    pub message: String,
    /// Seen here, or received from a peer.
    pub origin: Origin,
    /// For an event from a peer: the signed form it arrived in, exactly as its author signed it
    /// (`p2p::validate`), which the database keeps so that catch-up can serve it on. `None`
    /// for this node's own events (signed when shared).
    pub signed: Option<Arc<[u8]>>,
    /// The account the request tried: its Digest credentials, or the extension a REGISTER
    /// without them asks for. This node's own events only; never shared with peers.
    pub sip_auth: Option<Box<SipAuth>>,
    /// Sent by a source the node let "register" (`--sip-accept-register-after`,
    /// `--sip-trap-passwords`) while its registration lasts. This node's own events only.
    pub registered_attacker: bool,
}

/// What a request tried to log in as. Every text is the attacker's, cut to
/// [`MAX_AUTH_FIELD_CHARS`] characters with control characters replaced ([`attacker_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipAuth {
    /// The Digest `username`, or the extension a REGISTER asks to bind.
    pub username: String,
    /// The Digest credentials, when the request carried them.
    pub digest: Option<DigestAttempt>,
}

/// One Digest answer as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestAttempt {
    /// `Authorization` or `Proxy-Authorization`.
    pub header: &'static str,
    pub realm: String,
    pub uri: String,
    pub response: String,
    /// The nonce is one this node issued to this source, and still fresh.
    pub own_nonce: bool,
    /// The response is the digest of a `--sip-trap-passwords` entry (checked for our own
    /// nonces only: for any other the password cannot be told).
    pub trap_password_matched: bool,
}

/// The most characters kept of any attacker-chosen credential text: as the syslog line keeps
/// of a user agent.
pub const MAX_AUTH_FIELD_CHARS: usize = 256;

/// Attacker text made safe to store and show: at most `max_chars` characters, each control
/// character (line breaks, NUL, escape) replaced by `?`.
pub fn attacker_text(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Captured by this node's listeners.
    Local,
    /// Received from a peer: the peer id of its author, whose signature it carries (not of
    /// the peer that relayed or served it).
    Peer(String),
}

/// The JSON log object, field for field as upstream writes it (T-Pot parses these names).
#[derive(Serialize)]
pub struct JsonEvent<'a> {
    pub app_name: &'static str,
    pub app_version: &'static str,
    pub event_timestamp: &'a str,
    pub event_uuid: String,
    pub created_by_node_id: String,
    pub collected_method: &'static str,
    pub transport_type: &'static str,
    pub source_ip: String,
    pub destination_ip: String,
    pub called_number: &'a str,
    pub sip_method: &'a str,
    pub sip_user_agent: &'a str,
    pub sip_message: &'a str,
    /// Set only for events received from a peer: the peer id of its author (its signer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_from_peer: Option<&'a str>,
    /// Set only when the request tried an account (see [`SipAuth::username`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_auth_username: Option<&'a str>,
    /// Set (to `true`) only for events from a source the node let register.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub registered_attacker: bool,
}

impl Event {
    pub fn to_json(&self) -> JsonEvent<'_> {
        JsonEvent {
            app_name: APP_NAME,
            app_version: APP_VERSION,
            event_timestamp: &self.timestamp,
            event_uuid: self.uuid.hyphenated().to_string(),
            created_by_node_id: self.node_id.hyphenated().to_string(),
            collected_method: self.collected_method.as_str(),
            transport_type: self.transport.as_str(),
            source_ip: self.source.to_string(),
            destination_ip: self.destination.to_string(),
            called_number: &self.called_number,
            sip_method: &self.method,
            sip_user_agent: &self.user_agent,
            sip_message: &self.message,
            received_from_peer: match &self.origin {
                Origin::Local => None,
                Origin::Peer(p) => Some(p),
            },
            sip_auth_username: self.sip_auth.as_deref().map(|a| a.username.as_str()),
            registered_attacker: self.registered_attacker,
        }
    }

    /// The bare source address, as the database, the API and the syslog line hold it.
    pub fn source_ip(&self) -> String {
        self.source.ip().to_canonical().to_string()
    }
}

/// Formats a time as the contract's UTC `YYYY-MM-DD HH:MM:SS.nnnnnnnnn`.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The current time in the contract's format.
pub fn now_timestamp() -> String {
    format_timestamp(SystemTime::now())
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`] (Howard
/// Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_nine_digit_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(format_timestamp(t), "2023-11-14 22:13:20.000000005");
        assert_eq!(
            format_timestamp(UNIX_EPOCH),
            "1970-01-01 00:00:00.000000000"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&format_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn source_ip_is_bare_and_canonical() {
        let mut e = sample();
        e.source = "[::ffff:192.0.2.1]:5060".parse().unwrap();
        assert_eq!(e.source_ip(), "192.0.2.1");
        assert_eq!(e.to_json().source_ip, "[::ffff:192.0.2.1]:5060");
    }

    pub(crate) fn sample() -> Event {
        Event {
            timestamp: "2026-11-23 10:00:00.000000001".into(),
            uuid: Uuid::nil(),
            node_id: Uuid::nil(),
            collected_method: CollectedMethod::Passive,
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            destination: "127.0.0.1:5060".parse().unwrap(),
            called_number: "100".into(),
            method: "OPTIONS".into(),
            user_agent: "friendly-scanner".into(),
            message: "OPTIONS sip:100@x SIP/2.0\r\n\r\n".into(),
            origin: Origin::Local,
            signed: None,
            sip_auth: None,
            registered_attacker: false,
        }
    }

    #[test]
    fn attacker_text_is_cut_and_has_no_control_characters() {
        assert_eq!(attacker_text("a\r\nb\0c\u{1b}[31m", 256), "a??b?c?[31m");
        assert_eq!(attacker_text(&"é".repeat(300), 256).chars().count(), 256);
    }

    #[test]
    fn credential_fields_appear_in_the_json_only_when_set() {
        let mut e = sample();
        let v = serde_json::to_value(e.to_json()).unwrap();
        assert!(v.get("sip_auth_username").is_none());
        assert!(v.get("registered_attacker").is_none());
        e.sip_auth = Some(Box::new(SipAuth {
            username: "100".into(),
            digest: None,
        }));
        e.registered_attacker = true;
        let v = serde_json::to_value(e.to_json()).unwrap();
        assert_eq!(v["sip_auth_username"], "100");
        assert_eq!(v["registered_attacker"], true);
    }
}
