//! Which product a responsive honeypot pretends to be: the header that names it (`Server`, or
//! `User-Agent` for a phone), its digest realm and nonce format, its `Allow` / `Supported` lists
//! and its reason phrases, taken from the products' own replies:
//!
//! - `asterisk`, `freepbx`: Asterisk 18's PJSIP stack (`res_pjsip`): `Server: Asterisk PBX
//!   18.20.2` (FreePBX 16 sets its own user agent, `FPBX-16.0.40.7(18.20.2)`), realm `asterisk`,
//!   a `timestamp/hash` nonce with an `opaque`, `algorithm=md5,qop="auth"`, and PJSIP's
//!   `Content-Length:  0` (two spaces).
//! - `kamailio`: replies captured from Kamailio 5.6.3 with the `auth` module's `auth_challenge`
//!   and the default configuration's `sl_send_reply("200", "Keepalive")` for OPTIONS: realm the
//!   domain the request was sent to, a 32-character base64 nonce, `qop="auth"`, `Server` last,
//!   and the transaction module's `100 trying -- your call is important to us`.
//! - `cisco`: a Cisco IOS voice gateway (CUBE): `Server: Cisco-SIPGateway/IOS-15.5.3.S`, its
//!   `Allow`, `Allow-Events: telephone-event` and `Supported` lists.
//! - `yealink`: a Yealink SIP-T46S desk phone, which names itself in `User-Agent` in its
//!   responses too (`Yealink SIP-T46S 66.86.0.15`).
//!
//! [`Persona::Default`] is the node's original answer (a FreePBX `Server` header, which the
//! operator may change, realm `asterisk`, a 32-digit hex nonce) and stays byte for byte what it
//! was. Pure: the caller supplies the time and the keyed hash a nonce is made of.

use std::fmt::Write as _;

/// A product to look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persona {
    #[default]
    Default,
    Asterisk,
    FreePbx,
    Kamailio,
    Cisco,
    Yealink,
}

/// The names `--sip-persona` takes, in the order the help lists them.
pub const PERSONA_NAMES: [&str; 5] = ["asterisk", "freepbx", "kamailio", "cisco", "yealink"];

/// How a product writes its nonces; every form carries the time it was made (seconds since the
/// epoch, as 32 bits) and bytes of a keyed hash, so that a nonce can be checked without state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStyle {
    /// 32 lower-case hex digits: the time (8) and 12 bytes of the hash (24).
    Hex32,
    /// 32 upper-case hex digits, laid out as [`NonceStyle::Hex32`].
    Hex32Upper,
    /// PJSIP's `<decimal time>/<32 hex digits>`, with an `opaque` of 16 more hex digits.
    Pjsip,
    /// 32 characters of base64: the time (4 bytes) and 20 bytes of the hash.
    Base64,
}

/// Bytes of the keyed hash a nonce needs at most.
pub const NONCE_HASH_BYTES: usize = 24;

impl Persona {
    /// The persona `--sip-persona` names.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "asterisk" => Persona::Asterisk,
            "freepbx" => Persona::FreePbx,
            "kamailio" => Persona::Kamailio,
            "cisco" => Persona::Cisco,
            "yealink" => Persona::Yealink,
            _ => return None,
        })
    }

    /// The product string it sends; `None` for the default, whose string is configured.
    #[must_use]
    pub fn agent(self) -> Option<&'static str> {
        match self {
            Persona::Default => None,
            Persona::Asterisk => Some("Asterisk PBX 18.20.2"),
            Persona::FreePbx => Some("FPBX-16.0.40.7(18.20.2)"),
            Persona::Kamailio => Some("kamailio (5.6.3 (x86_64/linux))"),
            Persona::Cisco => Some("Cisco-SIPGateway/IOS-15.5.3.S"),
            Persona::Yealink => Some("Yealink SIP-T46S 66.86.0.15"),
        }
    }

    /// The header that carries the product string in responses.
    #[must_use]
    pub fn agent_header(self) -> &'static str {
        match self {
            Persona::Yealink => "User-Agent",
            _ => "Server",
        }
    }

    /// Whether the product string comes after the other headers, just before Content-Length.
    #[must_use]
    pub fn agent_last(self) -> bool {
        matches!(
            self,
            Persona::Kamailio | Persona::Asterisk | Persona::FreePbx
        )
    }

    /// Whether Content-Length is written PJSIP's way, `Content-Length:  0`.
    #[must_use]
    pub fn pjsip_content_length(self) -> bool {
        matches!(self, Persona::Asterisk | Persona::FreePbx)
    }

    /// The methods listed in `Allow`; `None` where the product sends no Allow.
    #[must_use]
    pub fn allow(self) -> Option<&'static str> {
        Some(match self {
            Persona::Default => {
                "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, NOTIFY"
            }
            Persona::Asterisk | Persona::FreePbx => {
                "OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER"
            }
            Persona::Kamailio => return None,
            Persona::Cisco => {
                "INVITE, OPTIONS, BYE, CANCEL, ACK, PRACK, UPDATE, REFER, SUBSCRIBE, NOTIFY, INFO, REGISTER"
            }
            Persona::Yealink => {
                "INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE"
            }
        })
    }

    /// The extensions listed in `Supported`.
    #[must_use]
    pub fn supported(self) -> Option<&'static str> {
        Some(match self {
            Persona::Default => "replaces, timer",
            Persona::Asterisk | Persona::FreePbx => "100rel, timer, replaces, norefersub",
            Persona::Kamailio => return None,
            Persona::Cisco => "timer,resource-priority,replaces,sdp-anat",
            Persona::Yealink => "replaces,timer,100rel",
        })
    }

    /// The header fields of a 200 answer to OPTIONS, in the product's order.
    #[must_use]
    pub fn options_headers(self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        match self {
            Persona::Kamailio => {}
            Persona::Asterisk | Persona::FreePbx => {
                out.push((
                    "Accept",
                    "application/sdp, application/dialog-info+xml, application/simple-message-summary, application/pidf+xml, application/xpidf+xml, application/cpim-pidf+xml, message/sipfrag;version=2.0",
                ));
                out.extend(self.allow().map(|a| ("Allow", a)));
                out.extend(self.supported().map(|s| ("Supported", s)));
                out.push(("Accept-Encoding", "text/plain"));
                out.push(("Accept-Language", "en"));
            }
            Persona::Cisco => {
                out.extend(self.allow().map(|a| ("Allow", a)));
                out.push(("Allow-Events", "telephone-event"));
                out.push(("Accept", "application/sdp"));
                out.extend(self.supported().map(|s| ("Supported", s)));
            }
            Persona::Yealink => {
                out.extend(self.allow().map(|a| ("Allow", a)));
                out.push(("Allow-Events", "talk,hold,conference,refer,check-sync"));
                out.push(("Accept", "application/sdp"));
                out.extend(self.supported().map(|s| ("Supported", s)));
            }
            Persona::Default => {
                out.extend(self.allow().map(|a| ("Allow", a)));
                out.push(("Accept", "application/sdp"));
                out.extend(self.supported().map(|s| ("Supported", s)));
            }
        }
        out
    }

    /// The reason phrase for `status`.
    #[must_use]
    pub fn reason(self, status: u16) -> &'static str {
        match (self, status) {
            (Persona::Kamailio, 100) => "trying -- your call is important to us",
            (Persona::Kamailio, 200) => "OK",
            (_, 100) => "Trying",
            (_, 180) => "Ringing",
            (_, 200) => "OK",
            (_, 401) => "Unauthorized",
            (_, 403) => "Forbidden",
            (_, 404) => "Not Found",
            (_, 405) => "Method Not Allowed",
            (_, 483) => "Too Many Hops",
            _ => "Unknown",
        }
    }

    /// The reason phrase of the 200 answer to OPTIONS.
    #[must_use]
    pub fn options_reason(self) -> &'static str {
        match self {
            Persona::Kamailio => "Keepalive",
            _ => "OK",
        }
    }

    /// The SDP session name (`s=`) of a call answer.
    #[must_use]
    pub fn sdp_session(self) -> &'static str {
        match self {
            Persona::Cisco => "SIP Call",
            Persona::Yealink => "SDP data",
            Persona::Kamailio | Persona::Default | Persona::Asterisk | Persona::FreePbx => {
                "Asterisk"
            }
        }
    }

    /// The digest realm; `domain` is the host the request was addressed to (Kamailio's default
    /// configuration challenges with the From domain, which a scanner sets to the address it
    /// probes), already checked to be a plain host name or address.
    #[must_use]
    pub fn realm(self, domain: &str) -> String {
        match self {
            Persona::Kamailio => domain.to_string(),
            Persona::Cisco => "cisco".to_string(),
            Persona::Yealink => "yealink".to_string(),
            Persona::Default | Persona::Asterisk | Persona::FreePbx => "asterisk".to_string(),
        }
    }

    /// How this product writes nonces.
    #[must_use]
    pub fn nonce_style(self) -> NonceStyle {
        match self {
            Persona::Default | Persona::Yealink => NonceStyle::Hex32,
            Persona::Cisco => NonceStyle::Hex32Upper,
            Persona::Asterisk | Persona::FreePbx => NonceStyle::Pjsip,
            Persona::Kamailio => NonceStyle::Base64,
        }
    }

    /// The `WWW-Authenticate` value of a challenge.
    #[must_use]
    pub fn challenge(self, realm: &str, nonce: &Nonce) -> String {
        match (self, &nonce.opaque) {
            (Persona::Asterisk | Persona::FreePbx, Some(opaque)) => format!(
                "Digest realm=\"{realm}\",nonce=\"{}\",opaque=\"{opaque}\",algorithm=md5,qop=\"auth\"",
                nonce.value
            ),
            (Persona::Kamailio, _) => format!(
                "Digest realm=\"{realm}\", nonce=\"{}\", qop=\"auth\"",
                nonce.value
            ),
            (Persona::Cisco, _) => format!(
                "Digest realm=\"{realm}\",nonce=\"{}\",algorithm=MD5",
                nonce.value
            ),
            _ => format!(
                "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5",
                nonce.value
            ),
        }
    }
}

/// A nonce as sent, with PJSIP's `opaque` beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce {
    pub value: String,
    pub opaque: Option<String>,
}

impl NonceStyle {
    /// The nonce for time `secs` and keyed hash `hash`.
    #[must_use]
    pub fn encode(self, secs: u32, hash: &[u8; NONCE_HASH_BYTES]) -> Nonce {
        let hex = |bytes: &[u8], upper: bool| {
            let mut s = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                let _ = if upper {
                    write!(s, "{b:02X}")
                } else {
                    write!(s, "{b:02x}")
                };
            }
            s
        };
        let (head, _) = hash.split_at(12);
        match self {
            NonceStyle::Hex32 | NonceStyle::Hex32Upper => {
                let upper = self == NonceStyle::Hex32Upper;
                let mut value = if upper {
                    format!("{secs:08X}")
                } else {
                    format!("{secs:08x}")
                };
                value.push_str(&hex(head, upper));
                Nonce {
                    value,
                    opaque: None,
                }
            }
            NonceStyle::Pjsip => {
                let (mid, opaque) = hash.split_at(16);
                Nonce {
                    value: format!("{secs}/{}", hex(mid, false)),
                    opaque: Some(hex(opaque, false)),
                }
            }
            NonceStyle::Base64 => {
                let mut bytes = Vec::with_capacity(24);
                bytes.extend_from_slice(&secs.to_be_bytes());
                bytes.extend(hash.iter().take(20));
                Nonce {
                    value: base64(&bytes),
                    opaque: None,
                }
            }
        }
    }

    /// The time a nonce of this style says it was made; `None` if it is not of this style.
    #[must_use]
    pub fn time_of(self, nonce: &str) -> Option<u32> {
        match self {
            NonceStyle::Hex32 | NonceStyle::Hex32Upper => {
                if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                u32::from_str_radix(nonce.get(..8)?, 16).ok()
            }
            NonceStyle::Pjsip => {
                let (secs, _) = nonce.split_once('/')?;
                if secs.is_empty() || secs.len() > 10 || !secs.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                secs.parse().ok()
            }
            NonceStyle::Base64 => {
                let first = nonce.get(..8)?;
                let bytes = unbase64(first)?;
                Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
            }
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 of whole 3-byte groups (a nonce is always 24 bytes).
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() / 3 * 4);
    for chunk in bytes.chunks_exact(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
        for shift in [18, 12, 6, 0] {
            let i = (n >> shift) as usize & 63;
            out.push(char::from(BASE64.get(i).copied().unwrap_or(b'A')));
        }
    }
    out
}

/// The bytes of unpadded base64 in whole 4-character groups; `None` for anything else.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks_exact(4) {
        let mut n = 0u32;
        for &c in chunk {
            let v = BASE64.iter().position(|&b| b == c)?;
            n = (n << 6) | v as u32;
        }
        out.extend_from_slice(n.to_be_bytes().get(1..)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_gives_back_its_time_and_rejects_the_others() {
        let hash: [u8; NONCE_HASH_BYTES] = std::array::from_fn(|i| i as u8 * 7);
        let secs = 1_764_500_000;
        for style in [
            NonceStyle::Hex32,
            NonceStyle::Hex32Upper,
            NonceStyle::Pjsip,
            NonceStyle::Base64,
        ] {
            let nonce = style.encode(secs, &hash);
            assert_eq!(style.time_of(&nonce.value), Some(secs), "{style:?}");
            assert_eq!(style.time_of("not a nonce"), None, "{style:?}");
        }
        let n = NonceStyle::Hex32.encode(secs, &hash).value;
        assert_eq!(n.len(), 32);
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let n = NonceStyle::Base64.encode(secs, &hash).value;
        assert_eq!(n.len(), 32);
        let p = NonceStyle::Pjsip.encode(secs, &hash);
        assert!(p.value.starts_with("1764500000/"));
        assert_eq!(p.value.len(), 11 + 32);
        assert_eq!(p.opaque.map(|o| o.len()), Some(16));
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(unbase64("TWFu"), Some(b"Man".to_vec()));
        assert_eq!(unbase64("TW!u"), None);
    }

    #[test]
    fn names_parse_and_the_default_sends_no_product_of_its_own() {
        for name in PERSONA_NAMES {
            let p = Persona::parse(name).unwrap();
            assert!(p.agent().is_some(), "{name}");
        }
        assert_eq!(Persona::parse("Kamailio"), Some(Persona::Kamailio));
        assert_eq!(Persona::parse("opensips"), None);
        assert_eq!(Persona::Default.agent(), None);
    }
}
