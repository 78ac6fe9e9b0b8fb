//! Bytes + where they came from → an event and the replies to send. Pure apart from the clock
//! and random ids: no I/O, no logging.
//!
//! Every SIP request is an event, including one the strict parser rejects as malformed but whose
//! request line is sound (no Via, a CSeq for another method, ...): it is recorded, so leaving out
//! a header cannot hide a scanner, but never answered, since no conformant answer exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::trap::{Decision, Trap};
use crate::event::{
    CollectedMethod, DigestAttempt, Event, MAX_AUTH_FIELD_CHARS, NOT_FOUND, Origin, SipAuth,
    Transport, attacker_text, now_timestamp,
};
use crate::sip::auth::{self, Credentials};
use crate::sip::reply::{RegisterAnswer, ReplyContext};
use crate::sip::{self, Rejected};

/// Settings `inspect` needs.
#[derive(Debug, Clone)]
pub struct InspectContext {
    pub node_id: Uuid,
    pub responsive: bool,
    /// The product string of replies: `--server-header`, else the persona's.
    pub server_header: String,
    /// Nonces, trap passwords, registrations and the persona.
    pub trap: Arc<Trap>,
}

/// Where a message came from and arrived.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub transport: Transport,
    pub source: SocketAddr,
    pub local: SocketAddr,
}

#[derive(Debug)]
pub struct Inspected {
    pub event: Event,
    pub replies: Vec<Vec<u8>>,
    /// Only [`sip::parse_lenient`] accepted the request (the strict parser called it malformed):
    /// recorded, and `replies` is empty even in responsive mode.
    pub malformed: bool,
    /// A BYE to send a little later, hanging up the call `replies` answered (an INVITE from a
    /// registered source).
    pub hangup: Option<Vec<u8>>,
}

/// Turns one message into an event (and, in responsive mode, replies), or says why not.
pub fn inspect(bytes: &[u8], meta: &Meta, cx: &InspectContext) -> Result<Inspected, Rejected> {
    let (req, malformed) = match sip::parse(bytes) {
        Ok(req) => (req, false),
        Err(e) => match e.kind() {
            Rejected::Malformed => (sip::parse_lenient(bytes).map_err(|_| e.kind())?, true),
            kind => return Err(kind),
        },
    };
    let source = SocketAddr::new(meta.source.ip().to_canonical(), meta.source.port());
    let local = SocketAddr::new(meta.local.ip().to_canonical(), meta.local.port());
    let message = bytes.get(..req.len).unwrap_or(bytes);
    let now = Instant::now();
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let trap = &cx.trap;
    let creds = auth::credentials(&req);
    let checked = creds
        .as_ref()
        .map(|c| trap.check(c, req.method, source.ip(), now_secs));
    let answering = cx.responsive && !malformed;
    let was_registered = answering && trap.is_registered(source.ip(), now);
    let mut registered = was_registered;
    let mut replies = Vec::new();
    let mut hangup = None;
    if answering {
        let persona = trap.persona();
        let domain = req
            .to_host()
            .map_or_else(|| local.ip().to_string(), str::to_string);
        let challenge =
            persona.challenge(&persona.realm(&domain), &trap.nonce(source.ip(), now_secs));
        let register = match checked {
            _ if req.method != "REGISTER" => RegisterAnswer::Forbidden,
            // With fake success on, the node tells accounts that look like extensions from
            // ones that do not, as a PBX without `alwaysauthreject` does, so that an extension
            // scanner finds "existing" accounts to crack instead of giving up.
            None if trap.config().accepts()
                && !req.to_user().is_some_and(|u| looks_like_an_account(&u)) =>
            {
                RegisterAnswer::NotFound
            }
            None => RegisterAnswer::Challenge(&challenge),
            Some(checked) => {
                match trap.register(source.ip(), checked, req.requested_expires(), now) {
                    Decision::Accept(expires) => {
                        registered = was_registered || expires > 0;
                        RegisterAnswer::Accept { expires }
                    }
                    Decision::Refuse => RegisterAnswer::Forbidden,
                }
            }
        };
        let tag = Uuid::new_v4().simple().to_string();
        let rcx = ReplyContext {
            received: source.ip(),
            rport: source.port(),
            local,
            transport: meta.transport.as_str(),
            to_tag: tag.get(..16).unwrap_or(&tag),
            server: &cx.server_header,
            persona,
            register,
            rings: was_registered && req.method == "INVITE",
        };
        replies = sip::reply::respond(&req, &rcx);
        if rcx.rings && !replies.is_empty() {
            let branch = tag.get(16..).unwrap_or_default();
            let cseq = u32::from(now_secs as u16) + 1;
            hangup = sip::reply::bye(&req, &rcx, branch, cseq);
        }
    }
    let sip_auth = match (&creds, checked) {
        (Some(c), Some(checked)) => Some(Box::new(digest_attempt(c, checked))),
        _ if req.method == "REGISTER" => req.to_user().filter(|u| !u.is_empty()).map(|u| {
            Box::new(SipAuth {
                username: attacker_text(&u, MAX_AUTH_FIELD_CHARS),
                digest: None,
            })
        }),
        _ => None,
    };
    let event = Event {
        timestamp: now_timestamp(),
        uuid: Uuid::new_v4(),
        node_id: cx.node_id,
        collected_method: if cx.responsive {
            CollectedMethod::Responsive
        } else {
            CollectedMethod::Passive
        },
        transport: meta.transport,
        source,
        destination: local,
        called_number: req
            .called_number()
            .map_or_else(|| NOT_FOUND.to_string(), std::borrow::Cow::into_owned),
        method: req.method.to_string(),
        user_agent: req.user_agent().unwrap_or(NOT_FOUND).to_string(),
        message: String::from_utf8_lossy(message).into_owned(),
        origin: Origin::Local,
        signed: None,
        sip_auth,
        registered_attacker: registered,
    };
    Ok(Inspected {
        event,
        replies,
        malformed,
        hangup,
    })
}

/// The most digits of an extension: longer all-digit users are numbers, not accounts
/// (sipvicious' svwar first tries a random 32-bit one to learn what "no such user" looks like).
const MAX_EXTENSION_DIGITS: usize = 6;

/// Whether a REGISTER's user is one a PBX could have: a name, or an extension of at most
/// [`MAX_EXTENSION_DIGITS`] digits.
fn looks_like_an_account(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && (!user.bytes().all(|b| b.is_ascii_digit()) || user.len() <= MAX_EXTENSION_DIGITS)
}

/// The record of one Digest answer, every text bounded and cleaned.
fn digest_attempt(c: &Credentials<'_>, checked: super::trap::Checked) -> SipAuth {
    let text =
        |v: Option<&str>| attacker_text(&auth::unquote(v.unwrap_or("")), MAX_AUTH_FIELD_CHARS);
    let username = c
        .username
        .map(|u| text(Some(u)))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| NOT_FOUND.to_string());
    SipAuth {
        username,
        digest: Some(DigestAttempt {
            header: c.header.as_str(),
            realm: text(c.realm),
            uri: text(c.uri),
            response: text(c.response),
            own_nonce: checked.own_nonce,
            trap_password_matched: checked.trap_password_matched,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            transport: Transport::Udp,
            source: "203.0.113.7:5071".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    fn cx(responsive: bool) -> InspectContext {
        InspectContext {
            node_id: Uuid::nil(),
            responsive,
            server_header: "PBX".into(),
            trap: Arc::new(Trap::new(super::super::trap::TrapConfig::default())),
        }
    }

    fn realworld(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/realworld/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_captured_toll_fraud_invite_becomes_an_event_with_its_number_and_agent() {
        let bytes = realworld("sipcli_invite_hepop.sip");
        let got = inspect(&bytes, &meta(), &cx(false)).unwrap();
        assert_eq!(got.event.called_number, "900442037690000");
        assert_eq!(got.event.user_agent, "sipcli/v1.8");
        assert_eq!(got.event.method, "INVITE");
        assert_eq!(got.event.message.as_bytes(), &bytes[..]);
        assert_eq!(got.event.collected_method, CollectedMethod::Passive);
        assert!(got.replies.is_empty());
        assert!(!got.malformed);
    }

    #[test]
    fn responsive_mode_answers_and_says_so() {
        let bytes = realworld("voip_register_ochi.sip");
        let got = inspect(&bytes, &meta(), &cx(true)).unwrap();
        assert_eq!(got.event.called_number, "100");
        assert_eq!(got.event.user_agent, "VOIP");
        assert_eq!(got.event.collected_method, CollectedMethod::Responsive);
        assert!(!got.replies.is_empty());
        assert!(!got.malformed);
    }

    #[test]
    fn responses_and_junk_are_rejected_not_recorded() {
        let resp =
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            inspect(resp, &meta(), &cx(true)).unwrap_err(),
            Rejected::Response
        );
        assert_eq!(
            inspect(b"\x00\x01\xff junk", &meta(), &cx(true)).unwrap_err(),
            Rejected::NotSip
        );
    }

    #[test]
    fn a_missing_user_agent_is_not_found() {
        let msg = b"OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5071;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let got = inspect(msg, &meta(), &cx(false)).unwrap();
        assert_eq!(got.event.user_agent, NOT_FOUND);
        assert_eq!(got.event.called_number, "100");
    }

    fn torture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/rfc4475/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_request_line_alone_is_recorded_but_not_answered() {
        let msg = b"OPTIONS sip:101@198.51.100.1 SIP/2.0\r\n\r\n";
        let got = inspect(msg, &meta(), &cx(true)).unwrap();
        assert!(got.malformed);
        assert!(got.replies.is_empty());
        assert_eq!(got.event.method, "OPTIONS");
        assert_eq!(got.event.called_number, "101");
        assert_eq!(got.event.user_agent, NOT_FOUND);
        assert_eq!(got.event.message.as_bytes(), &msg[..]);
        assert_eq!(got.event.collected_method, CollectedMethod::Responsive);
    }

    #[test]
    fn torture_requests_missing_or_contradicting_headers_are_recorded_unanswered() {
        for (file, method, number) in [
            ("insuf.dat", "INVITE", "user"),
            ("mismatch01.dat", "OPTIONS", "j.user"),
            ("mismatch02.dat", "NEWMETHOD", "j.user"),
            ("multi01.dat", "INVITE", "user"),
            ("mcl01.dat", "OPTIONS", "user"),
            ("clerr.dat", "INVITE", "j.user"),
            ("ncl.dat", "INVITE", "j.user"),
            ("scalar02.dat", "REGISTER", "user"),
            ("badinv01.dat", "INVITE", "j.user"),
            ("quotbal.dat", "INVITE", "user"),
        ] {
            let bytes = torture(file);
            let got = inspect(&bytes, &meta(), &cx(true)).unwrap();
            assert!(got.malformed, "{file}");
            assert!(got.replies.is_empty(), "{file}");
            assert_eq!(
                (got.event.method.as_str(), got.event.called_number.as_str()),
                (method, number),
                "{file}"
            );
            assert_eq!(got.event.message.as_bytes(), &bytes[..], "{file}");
        }
    }

    #[test]
    fn a_probe_without_via_keeps_its_number_and_agent() {
        let msg = b"INVITE sip:900442037690000@198.51.100.1 SIP/2.0\r\nTo: <sip:900442037690000@198.51.100.1>\r\nFrom: <sip:1000@203.0.113.7>;tag=1\r\nCall-ID: 7\r\nCSeq: 1 INVITE\r\nUser-Agent: sipcli/v1.8\r\nContent-Length: 0\r\n\r\n";
        let got = inspect(msg, &meta(), &cx(true)).unwrap();
        assert!(got.malformed && got.replies.is_empty());
        assert_eq!(got.event.called_number, "900442037690000");
        assert_eq!(got.event.user_agent, "sipcli/v1.8");
        assert_eq!(got.event.method, "INVITE");
    }

    #[test]
    fn an_escaped_called_number_is_recorded_decoded_and_the_message_as_sent() {
        let msg = b"INVITE sip:%2B442012345678@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5071;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:%2B442012345678@198.51.100.1>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let got = inspect(msg, &meta(), &cx(false)).unwrap();
        assert_eq!(got.event.called_number, "+442012345678");
        assert_eq!(got.event.message.as_bytes(), &msg[..]);
        let json = serde_json::to_value(got.event.to_json()).unwrap();
        assert_eq!(json["called_number"], "+442012345678");
    }

    #[test]
    fn rfc_4475_escapes_come_to_a_decoded_user_or_stay_as_sent() {
        // esc01.dat: To `sip:%75se%72@example.com`.
        let got = inspect(&torture("esc01.dat"), &meta(), &cx(false)).unwrap();
        assert_eq!(got.event.called_number, "user");
        // escnull.dat: To `sip:null-%00-null@example.com`; no NUL is ever recorded.
        let got = inspect(&torture("escnull.dat"), &meta(), &cx(false)).unwrap();
        assert_eq!(got.event.called_number, "null-%00-null");
    }

    #[test]
    fn a_broken_request_line_is_still_rejected_as_malformed() {
        for file in [
            "badvers.dat",
            "ltgtruri.dat",
            "lwsruri.dat",
            "lwsstart.dat",
            "trws.dat",
        ] {
            assert_eq!(
                inspect(&torture(file), &meta(), &cx(true)).unwrap_err(),
                Rejected::Malformed,
                "{file}"
            );
        }
    }

    fn trapping(accept_after: Option<u32>, passwords: &[&str]) -> InspectContext {
        InspectContext {
            node_id: Uuid::nil(),
            responsive: true,
            server_header: "PBX".into(),
            trap: Arc::new(Trap::new(super::super::trap::TrapConfig {
                persona: crate::sip::persona::Persona::Default,
                accept_after,
                trap_passwords: passwords.iter().map(|p| p.to_string()).collect(),
            })),
        }
    }

    fn register(call_id: &str, auth: &str) -> Vec<u8> {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5071;branch=z9hG4bK{call_id}\r\n\
             From: \"100\" <sip:100@127.0.0.1>;tag=1\r\nTo: \"100\" <sip:100@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@203.0.113.7:5071>\r\n\
             {auth}Expires: 120\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The nonce of a 401 challenge.
    fn nonce_of(reply: &[u8]) -> String {
        let text = String::from_utf8_lossy(reply);
        let at = text.find("nonce=\"").unwrap() + 7;
        text[at..].split('"').next().unwrap().to_string()
    }

    fn answer(nonce: &str, password: &str) -> String {
        let response = crate::sip::auth::digest_response(
            "100",
            "asterisk",
            password,
            "REGISTER",
            "sip:127.0.0.1",
            nonce,
            None,
        );
        format!(
            "Authorization: Digest username=\"100\",realm=\"asterisk\",nonce=\"{nonce}\",uri=\"sip:127.0.0.1\",response=\"{response}\",algorithm=MD5\r\n"
        )
    }

    #[test]
    fn a_register_without_credentials_records_its_extension_as_the_username() {
        let got = inspect(&register("a", ""), &meta(), &trapping(None, &[])).unwrap();
        let auth = got.event.sip_auth.unwrap();
        assert_eq!(auth.username, "100");
        assert!(auth.digest.is_none());
        assert!(String::from_utf8_lossy(&got.replies[0]).starts_with("SIP/2.0 401 Unauthorized"));
        // OPTIONS carries no username.
        let got = inspect(&realworld("sipcli_invite_hepop.sip"), &meta(), &cx(false)).unwrap();
        assert!(got.event.sip_auth.is_none());
    }

    #[test]
    fn credentials_are_recorded_bounded_and_cleaned() {
        let long = "x".repeat(5000);
        let auth = format!(
            "Proxy-Authorization: Digest username=\"ev\\\"il\x1b[0m\", realm=\"{long}\", nonce=\"n\", uri=\"sip:a\", response=\"r\"\r\n"
        );
        let got = inspect(&register("b", &auth), &meta(), &trapping(None, &[])).unwrap();
        let a = got.event.sip_auth.unwrap();
        assert_eq!(a.username, "ev\"il?[0m");
        let d = a.digest.unwrap();
        assert_eq!(d.header, "Proxy-Authorization");
        assert_eq!(d.realm.chars().count(), MAX_AUTH_FIELD_CHARS);
        assert_eq!((d.uri.as_str(), d.response.as_str()), ("sip:a", "r"));
        assert!(!d.own_nonce && !d.trap_password_matched);
        assert!(String::from_utf8_lossy(&got.replies[0]).starts_with("SIP/2.0 403 Forbidden"));
    }

    #[test]
    fn a_guesser_registers_after_n_failures_and_its_call_is_answered_then_hung_up() {
        let cx = trapping(Some(2), &[]);
        let mut accepted = None;
        for attempt in 0..3 {
            let challenge = inspect(&register(&format!("c{attempt}"), ""), &meta(), &cx).unwrap();
            let nonce = nonce_of(&challenge.replies[0]);
            let got = inspect(
                &register(&format!("c{attempt}"), &answer(&nonce, "guess")),
                &meta(),
                &cx,
            )
            .unwrap();
            let d = got
                .event
                .sip_auth
                .as_ref()
                .unwrap()
                .digest
                .as_ref()
                .unwrap();
            assert!(d.own_nonce && !d.trap_password_matched);
            let reply = String::from_utf8_lossy(&got.replies[0]).into_owned();
            if attempt < 2 {
                assert!(reply.starts_with("SIP/2.0 403 Forbidden"), "{reply}");
                assert!(!got.event.registered_attacker);
            } else {
                accepted = Some((reply, got.event));
            }
        }
        let (reply, event) = accepted.unwrap();
        assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
        assert!(reply.contains("\r\nExpires: 120\r\n"));
        assert!(event.registered_attacker);

        let got = inspect(&realworld("sipcli_invite_hepop.sip"), &meta(), &cx).unwrap();
        assert!(got.event.registered_attacker);
        assert_eq!(got.event.called_number, "900442037690000");
        let statuses: Vec<String> = got
            .replies
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            statuses,
            [
                "SIP/2.0 100 Trying",
                "SIP/2.0 180 Ringing",
                "SIP/2.0 200 OK"
            ]
        );
        let bye = String::from_utf8(got.hangup.unwrap()).unwrap();
        assert!(bye.starts_with("BYE sip:"), "{bye}");
        // Another source is not registered.
        let mut other = meta();
        other.source = "198.51.100.9:5060".parse().unwrap();
        let got = inspect(&realworld("sipcli_invite_hepop.sip"), &other, &cx).unwrap();
        assert!(!got.event.registered_attacker && got.hangup.is_none());
        assert_eq!(got.replies.len(), 2);
    }

    #[test]
    fn with_fake_success_unknown_looking_accounts_are_not_found_and_extensions_challenged() {
        let cx = trapping(Some(3), &[]);
        let not_found = register("f", "").replace_user("3411003929");
        let got = inspect(&not_found, &meta(), &cx).unwrap();
        assert!(String::from_utf8_lossy(&got.replies[0]).starts_with("SIP/2.0 404 Not Found\r\n"));
        assert_eq!(got.event.sip_auth.unwrap().username, "3411003929");
        for user in ["100", "admin", "123456"] {
            let got = inspect(&register("g", "").replace_user(user), &meta(), &cx).unwrap();
            let reply = String::from_utf8_lossy(&got.replies[0]).into_owned();
            assert!(
                reply.starts_with("SIP/2.0 401 Unauthorized\r\n"),
                "{user}: {reply}"
            );
        }
        // Without fake success every account is challenged alike.
        let got = inspect(&not_found, &meta(), &trapping(None, &[])).unwrap();
        assert!(String::from_utf8_lossy(&got.replies[0]).starts_with("SIP/2.0 401 "));
    }

    trait ReplaceUser {
        fn replace_user(&self, user: &str) -> Vec<u8>;
    }

    impl ReplaceUser for Vec<u8> {
        fn replace_user(&self, user: &str) -> Vec<u8> {
            String::from_utf8_lossy(self)
                .replace("100@", &format!("{user}@"))
                .replace("\"100\"", &format!("\"{user}\""))
                .into_bytes()
        }
    }

    #[test]
    fn a_trap_password_registers_at_once_and_is_marked() {
        let cx = trapping(None, &["1234"]);
        let challenge = inspect(&register("d", ""), &meta(), &cx).unwrap();
        let nonce = nonce_of(&challenge.replies[0]);
        let got = inspect(&register("d", &answer(&nonce, "1234")), &meta(), &cx).unwrap();
        let d = got.event.sip_auth.as_ref().unwrap().digest.clone().unwrap();
        assert!(d.own_nonce && d.trap_password_matched);
        assert!(String::from_utf8_lossy(&got.replies[0]).starts_with("SIP/2.0 200 OK"));
        // Without responsive mode nothing is answered and nobody registers, but the attempt
        // is still recorded.
        let mut passive = trapping(None, &["1234"]);
        passive.responsive = false;
        let got = inspect(&register("e", &answer(&nonce, "1234")), &meta(), &passive).unwrap();
        assert!(got.replies.is_empty() && !got.event.registered_attacker);
        assert_eq!(got.event.sip_auth.unwrap().username, "100");
    }
}
