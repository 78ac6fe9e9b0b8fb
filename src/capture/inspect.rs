//! Bytes + where they came from → an event and the replies to send. Pure apart from the clock
//! and random ids: no I/O, no logging.
//!
//! Every SIP request is an event, including one the strict parser rejects as malformed but whose
//! request line is sound (no Via, a CSeq for another method, ...): it is recorded, so leaving out
//! a header cannot hide a scanner, but never answered, since no conformant answer exists.

use std::net::SocketAddr;

use uuid::Uuid;

use crate::event::{CollectedMethod, Event, NOT_FOUND, Origin, Transport, now_timestamp};
use crate::sip::{self, Rejected, reply::ReplyContext};

/// Settings `inspect` needs.
#[derive(Debug, Clone)]
pub struct InspectContext {
    pub node_id: Uuid,
    pub responsive: bool,
    pub server_header: String,
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
    let replies = if cx.responsive && !malformed {
        let to_tag = Uuid::new_v4().simple().to_string();
        let rcx = ReplyContext {
            received: source.ip(),
            rport: source.port(),
            local,
            transport: meta.transport.as_str(),
            to_tag: to_tag.get(..16).unwrap_or(&to_tag),
            server: &cx.server_header,
        };
        sip::reply::respond(&req, &rcx)
    } else {
        Vec::new()
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
    };
    Ok(Inspected {
        event,
        replies,
        malformed,
    })
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
}
