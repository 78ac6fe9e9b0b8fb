//! The fraud-check agent: a SIP redirect server a PBX or SBC asks about each call it is about to
//! place or accept, in the convention SBCs already speak. `603 Decline` when the dialled number
//! or the caller's address is a listed bad actor (or `302 Moved Temporarily` to a configured
//! divert target: an IVR, the honeypot itself), `404 Not Found` ("no objection, carry on")
//! otherwise and for anything it cannot judge; OPTIONS gets `200` (SBCs ping their redirect
//! servers). A `Reason` header says why.
//!
//! The verdict is the bad-actor set's (`actors::Rules` through `store::actors`): this module
//! re-derives nothing. Its traffic is never recorded as attacks and has counters of its own. It
//! answers only `--agent-allow` sources (loopback by default), so it cannot be used from outside
//! as an oracle of who is listed.
//!
//! `judge` is pure (a request and a lookup in, a response out); `serve` is the sockets.

mod serve;

pub use serve::{Agent, serve_tcp, serve_udp_blocking};

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::actors::{AllowList, Cidr, Kind, is_dialled_number};
use crate::settings::ConfigError;
use crate::sip::Request;

/// The header a PBX puts the caller's address in, by default.
pub const DEFAULT_SOURCE_HEADER: &str = "X-Source-IP";
/// The Server header of the agent's answers.
const SERVER: &str = "sentrypeer-agent";

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `--agent-listen` addresses (UDP and TCP on each).
    pub listen: Vec<SocketAddr>,
    /// `--agent-allow`: who may ask (default loopback).
    pub allow: Vec<Cidr>,
    /// `--agent-source-header`: where the PBX puts the caller's address.
    pub source_header: String,
    /// `--agent-divert`: redirect bad calls here (302) instead of declining them (603).
    pub divert: Option<String>,
}

/// The raw settings.
#[derive(Debug, Default, Clone)]
pub struct RawAgentConfig {
    pub listen: Vec<String>,
    pub allow: Vec<String>,
    pub source_header: Option<String>,
    pub divert: Option<String>,
}

/// The longest divert URI accepted (it is echoed in every diverted answer).
const MAX_DIVERT_BYTES: usize = 256;

impl AgentConfig {
    /// The agent's settings, or `None` when no `--agent-listen` is given.
    pub fn resolve(raw: RawAgentConfig) -> Result<Option<AgentConfig>, ConfigError> {
        if raw.listen.is_empty() {
            return Ok(None);
        }
        let listen = raw
            .listen
            .iter()
            .map(|a| {
                a.trim().parse().map_err(|_| {
                    ConfigError::new(
                        "--agent-listen",
                        a,
                        "expected IP:PORT, such as 127.0.0.1:5070",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = if raw.allow.is_empty() {
            vec![
                Cidr::parse("127.0.0.0/8").map_err(|e| ConfigError::new("--agent-allow", "", e))?,
                Cidr::parse("::1").map_err(|e| ConfigError::new("--agent-allow", "", e))?,
            ]
        } else {
            raw.allow
                .iter()
                .map(|a| Cidr::parse(a).map_err(|e| ConfigError::new("--agent-allow", a, e)))
                .collect::<Result<_, _>>()?
        };
        let source_header = raw
            .source_header
            .unwrap_or_else(|| DEFAULT_SOURCE_HEADER.to_string());
        if source_header.is_empty()
            || !source_header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::new(
                "--agent-source-header",
                &source_header,
                "expected a header name (letters, digits, -)",
            ));
        }
        if let Some(d) = &raw.divert {
            let ok = (d.starts_with("sip:") || d.starts_with("sips:") || d.starts_with("tel:"))
                && d.len() <= MAX_DIVERT_BYTES
                && !d.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || c == '<' || c == '>'
                });
            if !ok {
                return Err(ConfigError::new(
                    "--agent-divert",
                    d,
                    "expected a SIP URI such as sip:ivr@192.0.2.10",
                ));
            }
        }
        Ok(Some(AgentConfig {
            listen,
            allow,
            source_header,
            divert: raw.divert,
        }))
    }

    pub fn allow_list(&self) -> AllowList {
        AllowList::new(self.allow.iter().copied())
    }
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `200 OK` to an OPTIONS ping.
    Alive,
    /// `603 Decline`, with why.
    Decline(String),
    /// `302 Moved Temporarily` to the divert target, with why.
    Divert(String),
    /// `404 Not Found`: no objection.
    Proceed,
    /// Nothing (ACK).
    Silent,
}

/// Judges one request. `listed` answers whether an address or number is a bad actor now.
pub fn judge(
    req: &Request<'_>,
    source_header: &str,
    divert: bool,
    listed: &mut dyn FnMut(Kind, &str) -> bool,
) -> Verdict {
    match req.method {
        "OPTIONS" => return Verdict::Alive,
        "ACK" => return Verdict::Silent,
        "INVITE" => {}
        _ => return Verdict::Proceed,
    }
    let bad = |why: String| {
        if divert {
            Verdict::Divert(why)
        } else {
            Verdict::Decline(why)
        }
    };
    if let Some(number) = req.request_uri_user().filter(|n| is_dialled_number(n)) {
        if listed(Kind::Number, &number) {
            return bad(format!("bad number {number}"));
        }
    }
    let caller = req
        .header(source_header)
        .and_then(|v| {
            v.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        })
        .or_else(|| req.top_via_address());
    if let Some(ip) = caller.map(|ip| ip.to_canonical()) {
        if listed(Kind::Ip, &ip.to_string()) {
            return bad(format!("bad actor {ip}"));
        }
    }
    Verdict::Proceed
}

/// The response bytes for a verdict (none for `Silent`).
pub fn answer(
    req: &Request<'_>,
    verdict: &Verdict,
    from: SocketAddr,
    local: SocketAddr,
    transport: &str,
    divert: Option<&str>,
) -> Option<Vec<u8>> {
    use crate::sip::reply::{ReplyContext, response, response_with};
    let tag = format!("{:08x}", rand_tag());
    let cx = ReplyContext {
        received: from.ip(),
        rport: from.port(),
        local,
        transport,
        to_tag: &tag,
        server: SERVER,
        persona: crate::sip::persona::Persona::Default,
        register: crate::sip::reply::RegisterAnswer::Forbidden,
        rings: false,
    };
    Some(match verdict {
        Verdict::Silent => return None,
        Verdict::Alive => response(req, 200, "OK", &cx),
        Verdict::Proceed => response(req, 404, "Not Found", &cx),
        Verdict::Decline(why) => {
            response_with(req, 603, "Decline", &cx, &[("Reason", &reason(603, why))])
        }
        Verdict::Divert(why) => {
            let contact = format!("<{}>", divert.unwrap_or("sip:invalid"));
            response_with(
                req,
                302,
                "Moved Temporarily",
                &cx,
                &[("Contact", &contact), ("Reason", &reason(302, why))],
            )
        }
    })
}

/// `SIP;cause=603;text="bad actor 203.0.113.7"`: the text holds only an address or digits, so
/// nothing from the request can break out of the quotes.
fn reason(cause: u16, why: &str) -> String {
    let text: Cow<'_, str> = if why.contains(['"', '\\']) {
        why.replace(['"', '\\'], "").into()
    } else {
        why.into()
    };
    format!("SIP;cause={cause};text=\"{text}\"")
}

/// A To tag: unique enough within a transaction's lifetime, without a random generator.
fn rand_tag() -> u32 {
    static NEXT: AtomicU64 = AtomicU64::new(0x5eed);
    let n = NEXT.fetch_add(0x9e37_79b9, Ordering::Relaxed);
    (n ^ (n >> 17)) as u32
}

/// The agent's own counters (never mixed with the honeypot's).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub checks: AtomicU64,
    pub declined: AtomicU64,
    pub diverted: AtomicU64,
    pub proceeded: AtomicU64,
    pub options: AtomicU64,
    /// Requests from sources outside `--agent-allow`, dropped unanswered.
    pub refused: AtomicU64,
    /// Requests it could not parse, dropped unanswered.
    pub malformed: AtomicU64,
}

impl AgentStats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("agent_checks", get(&self.checks)),
            ("agent_declined", get(&self.declined)),
            ("agent_diverted", get(&self.diverted)),
            ("agent_proceeded", get(&self.proceeded)),
            ("agent_options", get(&self.options)),
            ("agent_refused", get(&self.refused)),
            ("agent_malformed", get(&self.malformed)),
        ]
    }

    fn count(&self, v: &Verdict) {
        let c = match v {
            Verdict::Alive => &self.options,
            Verdict::Decline(_) => &self.declined,
            Verdict::Divert(_) => &self.diverted,
            Verdict::Proceed => &self.proceeded,
            Verdict::Silent => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if !matches!(v, Verdict::Alive) {
            self.checks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(uri_user: &str, extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:{uri_user}@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;received=203.0.113.9\r\n\
             From: <sip:caller@198.51.100.7>;tag=a\r\nTo: <sip:{uri_user}@192.0.2.1>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn verdict(msg: &[u8], bad: &[&str], divert: bool) -> Verdict {
        let req = crate::sip::parse(msg).unwrap();
        judge(&req, DEFAULT_SOURCE_HEADER, divert, &mut |_, k| {
            bad.contains(&k)
        })
    }

    #[test]
    fn a_listed_number_or_caller_is_declined_and_anything_else_proceeds() {
        assert_eq!(
            verdict(&invite("%2B442012345678", ""), &["+442012345678"], false),
            Verdict::Decline("bad number +442012345678".into())
        );
        // The caller from the PBX's header, else the top Via's received.
        assert_eq!(
            verdict(
                &invite("100", "X-Source-IP: 198.51.100.66\r\n"),
                &["198.51.100.66"],
                false
            ),
            Verdict::Decline("bad actor 198.51.100.66".into())
        );
        assert_eq!(
            verdict(&invite("100", ""), &["203.0.113.9"], false),
            Verdict::Decline("bad actor 203.0.113.9".into())
        );
        assert_eq!(
            verdict(&invite("100", ""), &["203.0.113.9"], true),
            Verdict::Divert("bad actor 203.0.113.9".into())
        );
        assert_eq!(verdict(&invite("100", ""), &[], false), Verdict::Proceed);
        // A user name is no number: judged by the caller only.
        assert_eq!(
            verdict(&invite("admin", ""), &["admin"], false),
            Verdict::Proceed
        );
    }

    #[test]
    fn options_is_alive_ack_is_silent_and_other_methods_proceed() {
        let msg = b"OPTIONS sip:agent@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-2\r\nFrom: <sip:s@192.0.2.9>;tag=b\r\nTo: <sip:agent@192.0.2.1>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(verdict(msg, &[], false), Verdict::Alive);
        let ack = String::from_utf8_lossy(msg).replace("OPTIONS", "ACK");
        assert_eq!(verdict(ack.as_bytes(), &[], false), Verdict::Silent);
    }

    #[test]
    fn answers_carry_the_reason_and_the_divert_contact() {
        let msg = invite("100", "");
        let req = crate::sip::parse(&msg).unwrap();
        let from: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let r = answer(
            &req,
            &Verdict::Decline("bad actor 203.0.113.9".into()),
            from,
            local,
            "UDP",
            None,
        )
        .unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("SIP/2.0 603 Decline\r\n"), "{text}");
        assert!(text.contains("\r\nReason: SIP;cause=603;text=\"bad actor 203.0.113.9\"\r\n"));
        let r = answer(
            &req,
            &Verdict::Divert("bad number 100".into()),
            from,
            local,
            "UDP",
            Some("sip:ivr@192.0.2.10"),
        )
        .unwrap();
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("SIP/2.0 302 Moved Temporarily\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContact: <sip:ivr@192.0.2.10>\r\n"));
        let r = answer(&req, &Verdict::Proceed, from, local, "UDP", None).unwrap();
        assert!(r.starts_with(b"SIP/2.0 404 Not Found\r\n"));
    }

    #[test]
    fn settings_are_checked() {
        let ok = AgentConfig::resolve(RawAgentConfig {
            listen: vec!["127.0.0.1:0".into()],
            divert: Some("sip:ivr@192.0.2.10".into()),
            ..RawAgentConfig::default()
        })
        .unwrap()
        .unwrap();
        assert!(ok.allow_list().contains("127.0.0.5".parse().unwrap()));
        assert!(!ok.allow_list().contains("192.0.2.5".parse().unwrap()));
        for (raw, option) in [
            (
                RawAgentConfig {
                    listen: vec!["nope".into()],
                    ..Default::default()
                },
                "--agent-listen",
            ),
            (
                RawAgentConfig {
                    listen: vec!["127.0.0.1:0".into()],
                    divert: Some("http://x".into()),
                    ..Default::default()
                },
                "--agent-divert",
            ),
            (
                RawAgentConfig {
                    listen: vec!["127.0.0.1:0".into()],
                    allow: vec!["x".into()],
                    ..Default::default()
                },
                "--agent-allow",
            ),
            (
                RawAgentConfig {
                    listen: vec!["127.0.0.1:0".into()],
                    source_header: Some("X Bad".into()),
                    ..Default::default()
                },
                "--agent-source-header",
            ),
        ] {
            assert_eq!(AgentConfig::resolve(raw).unwrap_err().option, option);
        }
        assert_eq!(
            AgentConfig::resolve(RawAgentConfig::default()).unwrap(),
            None
        );
    }
}
