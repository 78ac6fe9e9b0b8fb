//! What a responsive honeypot answers, built to look like a common PBX and to follow RFC 3261
//! §8.2.6 and RFC 3581 closely enough that scanners and test tools (sipvicious, sipsak, sipp) match
//! each response to their transaction and carry on: OPTIONS is answered, REGISTER challenged,
//! INVITE accepted with an SDP answer, in-dialog requests confirmed.
//!
//! Builds bytes only; sending them is the caller's business.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::lex::decimal;
use super::persona::Persona;
use super::via::{self, ViaParm};
use super::{Request, addr};

/// Where a request came from and what to put in the responses we make up.
#[derive(Debug, Clone)]
pub struct ReplyContext<'a> {
    /// The source address of the request.
    pub received: IpAddr,
    /// The source port of the request.
    pub rport: u16,
    /// Where the request arrived (for Contact and SDP).
    pub local: SocketAddr,
    /// `UDP`, `TCP` or `TLS` (for Contact's `;transport=`).
    pub transport: &'a str,
    /// The To tag for this transaction; a random one from the caller.
    pub to_tag: &'a str,
    /// The product string, e.g. `FPBX-16.0.33(18.20.0)`, sent in the persona's header.
    pub server: &'a str,
    /// Which product the replies look like.
    pub persona: Persona,
    /// How to answer a REGISTER; the caller decides (see [`RegisterAnswer`]).
    pub register: RegisterAnswer<'a>,
    /// Answer an INVITE as a callee who picks up: `100`, `180`, then `200` (otherwise `100` and
    /// `200`).
    pub rings: bool,
}

/// The answer to a REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAnswer<'a> {
    /// `401` with this `WWW-Authenticate` value.
    Challenge(&'a str),
    /// `403`: the credentials are refused.
    Forbidden,
    /// `404`: no such account (a PBX that tells unknown users from known ones).
    NotFound,
    /// `200` with each Contact bound for this many seconds (`Expires`).
    Accept { expires: u32 },
}

/// The methods we claim to support, in the Allow header of 200 (OPTIONS, INVITE) and 405.
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, NOTIFY";

/// The digest realm of our REGISTER challenge: Asterisk's default, as FreePBX sends it.
pub const REALM: &str = "asterisk";

/// The responses to send for `req`, in order; none for ACK.
#[must_use]
pub fn respond(req: &Request<'_>, cx: &ReplyContext<'_>) -> Vec<Vec<u8>> {
    if req.method == "ACK" {
        return Vec::new();
    }
    let persona = cx.persona;
    let reason = |status| persona.reason(status);
    let hops_exhausted = req
        .header("Max-Forwards")
        .and_then(|mf| decimal(mf.as_bytes()))
        == Some(0);
    if hops_exhausted && req.method != "OPTIONS" {
        return vec![response(req, 483, reason(483), cx)];
    }
    let allow = persona.allow().unwrap_or(ALLOW);
    match req.method {
        "OPTIONS" => vec![build(
            req,
            200,
            persona.options_reason(),
            cx,
            &persona.options_headers(),
            None,
        )],
        "REGISTER" => match cx.register {
            RegisterAnswer::Challenge(challenge) => vec![build(
                req,
                401,
                reason(401),
                cx,
                &[("WWW-Authenticate", challenge)],
                None,
            )],
            RegisterAnswer::Forbidden => vec![response(req, 403, reason(403), cx)],
            RegisterAnswer::NotFound => vec![response(req, 404, reason(404), cx)],
            RegisterAnswer::Accept { expires } => {
                let expires_text = expires.to_string();
                let contacts: Vec<String> = req
                    .headers_named("Contact")
                    .filter(|c| c.trim() != "*")
                    .map(|c| {
                        if c.to_ascii_lowercase().contains("expires=") {
                            c.to_string()
                        } else {
                            format!("{c};expires={expires}")
                        }
                    })
                    .collect();
                let mut extra: Vec<(&str, &str)> =
                    contacts.iter().map(|c| ("Contact", c.as_str())).collect();
                extra.push(("Expires", &expires_text));
                vec![build(req, 200, reason(200), cx, &extra, None)]
            }
        },
        "INVITE" => {
            let contact = contact(cx);
            let sdp = sdp_answer(
                req.header("Call-ID").unwrap_or_default(),
                cx.local,
                persona.sdp_session(),
            );
            let mut answer: Vec<(&str, &str)> = vec![("Contact", &contact)];
            answer.extend(persona.allow().map(|a| ("Allow", a)));
            answer.extend(persona.supported().map(|s| ("Supported", s)));
            let mut out = vec![response(req, 100, reason(100), cx)];
            if cx.rings {
                out.push(build(
                    req,
                    180,
                    reason(180),
                    cx,
                    &[("Contact", &contact)],
                    None,
                ));
            }
            out.push(build(
                req,
                200,
                reason(200),
                cx,
                &answer,
                Some(("application/sdp", sdp.as_bytes())),
            ));
            out
        }
        "BYE" | "CANCEL" | "INFO" | "UPDATE" | "PRACK" | "MESSAGE" | "NOTIFY" => {
            vec![response(req, 200, reason(200), cx)]
        }
        _ => vec![build(req, 405, reason(405), cx, &[("Allow", allow)], None)],
    }
}

/// The BYE with which we, the callee, hang up the call `invite` opened and our 200 (with To tag
/// `cx.to_tag`) accepted: RFC 3261 §12.2.1.1, sent to the caller's Contact URI (or its From URI)
/// along the Record-Route set, with From and To swapped. `branch` makes the Via branch unique
/// and `cseq` is our first request's sequence number in the dialog. `None` without a From.
#[must_use]
pub fn bye(
    invite: &Request<'_>,
    cx: &ReplyContext<'_>,
    branch: &str,
    cseq: u32,
) -> Option<Vec<u8>> {
    let from = invite.header("From")?;
    let target = invite
        .header("Contact")
        .and_then(addr::name_addr)
        .map(|c| c.uri)
        .filter(|uri| {
            let lower = uri.get(..4).unwrap_or_default().to_ascii_lowercase();
            (lower == "sip:" || lower == "sips") && !uri.contains(char::is_whitespace)
        })
        .or_else(|| addr::name_addr(from).map(|f| f.uri))?;
    let mut out = String::with_capacity(512);
    out.push_str("BYE ");
    push_value(&mut out, target);
    out.push_str(" SIP/2.0\r\n");
    let via = format!(
        "SIP/2.0/{} {};branch=z9hG4bK{branch};rport",
        cx.transport,
        plain(cx.local)
    );
    push_header(&mut out, "Via", &via);
    push_header(&mut out, "Max-Forwards", "70");
    for route in invite.headers_named("Record-Route") {
        push_header(&mut out, "Route", route);
    }
    if let Some(to) = invite.header("To") {
        if invite.to_has_tag() {
            push_header(&mut out, "From", to);
        } else {
            push_header(&mut out, "From", &format!("{to};tag={}", cx.to_tag));
        }
    }
    push_header(&mut out, "To", from);
    if let Some(call_id) = invite.header("Call-ID") {
        push_header(&mut out, "Call-ID", call_id);
    }
    push_header(&mut out, "CSeq", &format!("{cseq} BYE"));
    push_header(&mut out, "User-Agent", cx.server);
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// A response with no body and no headers beyond the ones every response carries: Via (all,
/// the top one with `received` and `rport`), From, To (with our tag), Call-ID, CSeq, Server and
/// Content-Length.
#[must_use]
pub fn response(req: &Request<'_>, status: u16, reason: &str, cx: &ReplyContext<'_>) -> Vec<u8> {
    build(req, status, reason, cx, &[], None)
}

/// [`response`] with extra header fields after the common ones (a `Contact` for a redirect, a
/// `Reason`).
#[must_use]
pub fn response_with(
    req: &Request<'_>,
    status: u16,
    reason: &str,
    cx: &ReplyContext<'_>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    build(req, status, reason, cx, extra, None)
}

fn build(
    req: &Request<'_>,
    status: u16,
    reason: &str,
    cx: &ReplyContext<'_>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {status} ");
    push_value(&mut out, reason);
    out.push_str("\r\n");

    for (i, value) in req.headers_named("Via").enumerate() {
        if i == 0 {
            push_header(&mut out, "Via", &top_via(value, cx));
        } else {
            push_header(&mut out, "Via", value);
        }
    }
    // A dialog-creating 2xx carries the Record-Route set back (RFC 3261 §12.1.1).
    if req.method == "INVITE" && (200..300).contains(&status) {
        for value in req.headers_named("Record-Route") {
            push_header(&mut out, "Record-Route", value);
        }
    }
    if let Some(from) = req.header("From") {
        push_header(&mut out, "From", from);
    }
    if let Some(to) = req.header("To") {
        if req.to_has_tag() {
            push_header(&mut out, "To", to);
        } else {
            push_header(&mut out, "To", &format!("{to};tag={}", cx.to_tag));
        }
    }
    for name in ["Call-ID", "CSeq"] {
        if let Some(value) = req.header(name) {
            push_header(&mut out, name, value);
        }
    }
    let agent_last = cx.persona.agent_last();
    if !agent_last {
        push_header(&mut out, cx.persona.agent_header(), cx.server);
    }
    for (name, value) in extra {
        push_header(&mut out, name, value);
    }
    let body = match body {
        Some((content_type, body)) => {
            push_header(&mut out, "Content-Type", content_type);
            body
        }
        None => &[],
    };
    if agent_last {
        push_header(&mut out, cx.persona.agent_header(), cx.server);
    }
    let pad = if cx.persona.pjsip_content_length() {
        "  "
    } else {
        " "
    };
    let _ = write!(out, "Content-Length:{pad}{}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    push_value(out, value);
    out.push_str("\r\n");
}

/// Copies a value, turning any CR or LF into a space so that nothing from the request can start
/// a header line of its own in our response.
fn push_value(out: &mut String, value: &str) {
    out.extend(value.chars().map(|c| match c {
        '\r' | '\n' => ' ',
        c => c,
    }));
}

/// The topmost Via value with `received` (RFC 3261 §18.2.1) and `rport` (RFC 3581 §4) filled in.
/// A value we cannot take apart is echoed as it came.
fn top_via(value: &str, cx: &ReplyContext<'_>) -> String {
    let mut params = Vec::new();
    let Some((parm, rest)) = via::first(value, &mut |p| params.push(p)) else {
        return value.to_owned();
    };
    let wants_rport = params
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("rport") && value.is_none());
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the peer knows itself as a.b.c.d.
    let source = cx.received.to_canonical();
    // RFC 3581 asks for `received` whenever `rport` is asked for, even if it repeats sent-by.
    let add_received = wants_rport || !host_is(&parm, source);
    let received = source.to_string();
    let rport = cx.rport.to_string();

    let ViaParm {
        protocol,
        version,
        transport,
        host,
        port,
    } = parm;
    let mut out = format!("{protocol}/{version}/{transport} {host}");
    if let Some(port) = port {
        let _ = write!(out, ":{port}");
    }
    let mut received_written = false;
    for (name, value) in params {
        let value = if name.eq_ignore_ascii_case("rport") && value.is_none() {
            Some(rport.as_str())
        } else if name.eq_ignore_ascii_case("received") && add_received {
            received_written = true;
            Some(received.as_str())
        } else {
            value
        };
        out.push(';');
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    if add_received && !received_written {
        let _ = write!(out, ";received={received}");
    }
    if !rest.is_empty() {
        out.push_str(", ");
        out.push_str(rest);
    }
    out
}

/// Whether the Via sent-by host is the address the request came from.
fn host_is(parm: &ViaParm<'_>, source: IpAddr) -> bool {
    let host = parm.host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| ip == source)
}

/// Our Contact: `<sip:s@local;transport=udp>`.
fn contact(cx: &ReplyContext<'_>) -> String {
    format!(
        "<sip:s@{};transport={}>",
        plain(cx.local),
        cx.transport.to_ascii_lowercase()
    )
}

/// The local address with an IPv4-mapped IPv6 address shown as the IPv4 address it is.
fn plain(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// A minimal SDP answer (RFC 3264): audio on an even port, PCMU and PCMA, at our address. The
/// port and session id come from the Call-ID so a retransmitted INVITE gets the same answer.
fn sdp_answer(call_id: &str, local: SocketAddr, session_name: &str) -> String {
    let local = plain(local);
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let h = fnv1a(call_id.as_bytes(), FNV_OFFSET);
    // Asterisk's default RTP range is 10000-20000; RTP takes the even port.
    let port = 10_000 + 2 * (h % 5_000);
    let session = h >> 33;
    format!(
        "v=0\r\n\
         o=- {session} {session} IN {family} {ip}\r\n\
         s={session_name}\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    )
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn cx() -> ReplyContext<'static> {
        ReplyContext {
            received: "203.0.113.5".parse().unwrap(),
            rport: 40_000,
            local: "192.0.2.1:5060".parse().unwrap(),
            transport: "UDP",
            to_tag: "as1234",
            server: "FPBX-16.0.33(18.20.0)",
            persona: Persona::Default,
            register: RegisterAnswer::Challenge(
                "Digest realm=\"asterisk\", nonce=\"0123456789abcdef0123456789abcdef\", algorithm=MD5",
            ),
            rings: false,
        }
    }

    fn request(method: &str, extra: &str, via: &str) -> Vec<u8> {
        format!(
            "{method} sip:100@192.0.2.1 SIP/2.0\r\n\
             Via: {via}\r\n\
             From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6636\r\n\
             To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
             Call-ID: 1234\r\n\
             CSeq: 1 {method}\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The responses `respond` gives to `msg`, as text.
    fn answers(msg: &[u8], cx: &ReplyContext<'_>) -> Vec<String> {
        let req = parse(msg).unwrap();
        respond(&req, cx)
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    /// The values of header `name` in a response we built.
    fn values<'r>(response: &'r str, name: &str) -> Vec<&'r str> {
        let head = response.split("\r\n\r\n").next().unwrap();
        head.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether Content-Length matches the body that follows the head.
    fn content_length_is_right(response: &str) -> bool {
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        values(response, "Content-Length") == [body.len().to_string()]
    }

    #[test]
    fn options_from_sipvicious_gets_200_byte_for_byte() {
        let via = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport";
        let mut cx = cx();
        cx.received = "198.51.100.7".parse().unwrap();
        cx.rport = 5060;
        let got = answers(&request("OPTIONS", "", via), &cx);
        let expected = "SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport=5060;received=198.51.100.7\r\n\
            From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6636\r\n\
            To: \"sipvicious\"<sip:100@1.1.1.1>;tag=as1234\r\n\
            Call-ID: 1234\r\n\
            CSeq: 1 OPTIONS\r\n\
            Server: FPBX-16.0.33(18.20.0)\r\n\
            Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, NOTIFY\r\n\
            Accept: application/sdp\r\n\
            Supported: replaces, timer\r\n\
            Content-Length: 0\r\n\r\n";
        assert_eq!(got, vec![expected]);
    }

    #[test]
    fn top_via_gets_received_when_sent_by_differs_and_rport_when_asked() {
        let msg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/realworld/sipcli_invite_hepop.sip"
        ))
        .unwrap();
        let got = answers(&msg, &cx());
        for response in &got {
            assert_eq!(
                values(response, "Via"),
                [
                    "SIP/2.0/UDP 192.168.99.99:5071;branch=z9hG4bK-897b2a55c16140a97dab4273ac879fb0;rport=40000;received=203.0.113.5"
                ]
            );
        }
    }

    #[test]
    fn top_via_is_left_alone_when_sent_by_is_the_source_and_no_rport() {
        let mut cx = cx();
        cx.received = "198.51.100.7".parse().unwrap();
        let via = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1";
        let got = answers(&request("BYE", "", via), &cx);
        assert_eq!(values(&got.concat(), "Via"), [via]);
        // An IPv4 peer seen through a dual-stack socket is still itself.
        cx.received = "::ffff:198.51.100.7".parse().unwrap();
        let via = "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1";
        let got = answers(&request("BYE", "", via), &cx);
        assert_eq!(values(&got.concat(), "Via"), [via]);
        // An IPv6 sent-by in brackets is compared as an address.
        cx.received = "2001:db8::7".parse().unwrap();
        let via = "SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-1";
        let got = answers(&request("BYE", "", via), &cx);
        assert_eq!(values(&got.concat(), "Via"), [via]);
    }

    #[test]
    fn existing_received_and_rport_values_are_not_duplicated() {
        let via = "SIP/2.0/UDP host.example.com;received=10.0.0.1;rport=1;branch=z9hG4bK-1";
        let got = answers(&request("BYE", "", via), &cx());
        assert_eq!(
            values(&got.concat(), "Via"),
            ["SIP/2.0/UDP host.example.com;received=203.0.113.5;rport=1;branch=z9hG4bK-1"]
        );
    }

    #[test]
    fn every_via_is_copied_in_order_and_only_the_top_one_changes() {
        let msg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/rfc4475/longreq.dat"
        ))
        .unwrap();
        let req = parse(&msg).unwrap();
        let response = String::from_utf8(response(&req, 486, "Busy Here", &cx())).unwrap();
        let vias = values(&response, "Via");
        let sent: Vec<&str> = req.headers_named("Via").collect();
        assert_eq!(vias.len(), 34);
        assert_eq!(
            vias.first(),
            Some(&"SIP/2.0/TCP sip33.example.com;received=203.0.113.5")
        );
        assert_eq!(vias.get(1..), sent.get(1..));
        assert!(response.starts_with("SIP/2.0 486 Busy Here\r\n"));
        assert!(content_length_is_right(&response));
    }

    #[test]
    fn a_via_list_in_one_field_keeps_its_other_elements() {
        let via = "SIP/2.0/UDP a.example.com;rport , SIP/2.0/TCP b.example.com";
        let got = answers(&request("BYE", "", via), &cx());
        assert_eq!(
            values(&got.concat(), "Via"),
            [
                "SIP/2.0/UDP a.example.com;rport=40000;received=203.0.113.5, SIP/2.0/TCP b.example.com"
            ]
        );
    }

    #[test]
    fn to_tag_is_added_once_and_kept_when_present() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let got = answers(&request("OPTIONS", "", via), &cx());
        assert_eq!(
            values(&got.concat(), "To"),
            ["\"sipvicious\"<sip:100@1.1.1.1>;tag=as1234"]
        );
        let in_dialog = String::from_utf8(request("BYE", "", via))
            .unwrap()
            .replace("1.1.1.1>\r\nCall", "1.1.1.1>;tag=theirs\r\nCall");
        let got = answers(in_dialog.as_bytes(), &cx());
        assert_eq!(
            values(&got.concat(), "To"),
            ["\"sipvicious\"<sip:100@1.1.1.1>;tag=theirs"]
        );
    }

    #[test]
    fn call_id_and_cseq_are_echoed() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let msg = String::from_utf8(request("INFO", "", via))
            .unwrap()
            .replace("CSeq: 1 INFO", "cseq:  0042\r\n  INFO")
            .replace("Call-ID: 1234", "i: abc@def");
        let got = answers(msg.as_bytes(), &cx());
        let response = got.concat();
        assert!(response.starts_with("SIP/2.0 200 OK\r\n"));
        assert_eq!(values(&response, "CSeq"), ["0042 INFO"]);
        assert_eq!(values(&response, "Call-ID"), ["abc@def"]);
    }

    #[test]
    fn ack_gets_nothing() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        assert!(answers(&request("ACK", "", via), &cx()).is_empty());
        assert!(answers(&request("ACK", "Max-Forwards: 0\r\n", via), &cx()).is_empty());
    }

    #[test]
    fn invite_gets_trying_then_ok_with_contact_and_sdp() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let extra = "Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n";
        let got = answers(&request("INVITE", extra, via), &cx());
        let [trying, ok] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"));
        assert!(values(trying, "Record-Route").is_empty());
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        assert_eq!(values(ok, "Record-Route"), ["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(
            values(ok, "Contact"),
            ["<sip:s@192.0.2.1:5060;transport=udp>"]
        );
        assert_eq!(values(ok, "Content-Type"), ["application/sdp"]);
        assert!(content_length_is_right(ok) && content_length_is_right(trying));
        let sdp = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(sdp.starts_with("v=0\r\no=- "));
        assert!(sdp.contains("\r\nc=IN IP4 192.0.2.1\r\n"));
        let port: u16 = sdp
            .split("m=audio ")
            .nth(1)
            .and_then(|m| m.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        assert_eq!(port % 2, 0);
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"));
        // The same INVITE again gets the same answer.
        assert_eq!(answers(&request("INVITE", extra, via), &cx()), got);
    }

    #[test]
    fn ipv6_local_addresses_make_an_ip6_sdp_and_a_bracketed_contact() {
        let via = "SIP/2.0/TCP [2001:db8::7];branch=z9hG4bK-1";
        let mut cx = cx();
        cx.local = "[2001:db8::1]:5060".parse().unwrap();
        cx.transport = "TCP";
        let got = answers(&request("INVITE", "", via), &cx);
        let ok = got.get(1).unwrap();
        assert_eq!(
            values(ok, "Contact"),
            ["<sip:s@[2001:db8::1]:5060;transport=tcp>"]
        );
        assert!(ok.contains("\r\nc=IN IP6 2001:db8::1\r\n"));
        cx.local = "[::ffff:192.0.2.1]:5060".parse().unwrap();
        let got = answers(&request("INVITE", "", via), &cx);
        assert!(got.concat().contains("\r\nc=IN IP4 192.0.2.1\r\n"));
    }

    #[test]
    fn register_is_challenged_forbidden_or_accepted_as_the_caller_decides() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let got = answers(&request("REGISTER", "", via), &cx());
        let challenge = got.concat();
        assert!(challenge.starts_with("SIP/2.0 401 Unauthorized\r\n"));
        assert_eq!(
            values(&challenge, "WWW-Authenticate"),
            [
                "Digest realm=\"asterisk\", nonce=\"0123456789abcdef0123456789abcdef\", algorithm=MD5"
            ]
        );

        let authorized = "Authorization: Digest username=\"100\", response=\"x\"\r\n";
        let mut cx = cx();
        cx.register = RegisterAnswer::Forbidden;
        let got = answers(&request("REGISTER", authorized, via), &cx);
        assert!(got.concat().starts_with("SIP/2.0 403 Forbidden\r\n"));

        cx.register = RegisterAnswer::Accept { expires: 120 };
        let contact = "Contact: <sip:100@198.51.100.7:5060>\r\n";
        let got = answers(
            &request("REGISTER", &format!("{authorized}{contact}"), via),
            &cx,
        );
        let ok = got.concat();
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
        assert_eq!(values(&ok, "Expires"), ["120"]);
        assert_eq!(
            values(&ok, "Contact"),
            ["<sip:100@198.51.100.7:5060>;expires=120"]
        );
        assert!(
            values(&ok, "To")
                .iter()
                .all(|to| to.ends_with(";tag=as1234"))
        );
    }

    #[test]
    fn a_ringing_callee_sends_trying_ringing_then_ok_and_hangs_up_in_the_dialog() {
        let via = "SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-1;rport";
        let extra = "Contact: <sip:attacker@198.51.100.7:5070>\r\nRecord-Route: <sip:p1;lr>\r\n";
        let mut cx = cx();
        cx.rings = true;
        let msg = request("INVITE", extra, via);
        let got = answers(&msg, &cx);
        let [trying, ringing, ok] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(trying.starts_with("SIP/2.0 100 Trying\r\n"));
        assert!(ringing.starts_with("SIP/2.0 180 Ringing\r\n"));
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        for r in &got {
            assert_eq!(
                values(r, "To"),
                ["\"sipvicious\"<sip:100@1.1.1.1>;tag=as1234"]
            );
        }
        let req = parse(&msg).unwrap();
        let bye = String::from_utf8(bye(&req, &cx, "abc", 7).unwrap()).unwrap();
        assert!(
            bye.starts_with("BYE sip:attacker@198.51.100.7:5070 SIP/2.0\r\n"),
            "{bye}"
        );
        assert_eq!(
            values(&bye, "Via"),
            ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport"]
        );
        assert_eq!(values(&bye, "Route"), ["<sip:p1;lr>"]);
        assert_eq!(
            values(&bye, "From"),
            ["\"sipvicious\"<sip:100@1.1.1.1>;tag=as1234"]
        );
        assert_eq!(
            values(&bye, "To"),
            ["\"sipvicious\"<sip:100@1.1.1.1>;tag=6636"]
        );
        assert_eq!(values(&bye, "Call-ID"), ["1234"]);
        assert_eq!(values(&bye, "CSeq"), ["7 BYE"]);
        assert!(bye.ends_with("Content-Length: 0\r\n\r\n"));
        // Without a Contact the BYE goes to the From URI.
        let req_bytes = request("INVITE", "", via);
        let req = parse(&req_bytes).unwrap();
        let bye = String::from_utf8(super::bye(&req, &cx, "abc", 7).unwrap()).unwrap();
        assert!(bye.starts_with("BYE sip:100@1.1.1.1 SIP/2.0\r\n"));
    }

    #[test]
    fn personas_change_the_product_header_lists_and_phrases() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let mut cx = cx();
        cx.persona = Persona::Kamailio;
        cx.server = Persona::Kamailio.agent().unwrap();
        let got = answers(&request("OPTIONS", "", via), &cx).concat();
        assert!(got.starts_with("SIP/2.0 200 Keepalive\r\n"), "{got}");
        assert!(got.ends_with(
            "CSeq: 1 OPTIONS\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
        ));
        let got = answers(&request("INVITE", "", via), &cx);
        assert!(
            got.first()
                .unwrap()
                .starts_with("SIP/2.0 100 trying -- your call is important to us\r\n")
        );

        cx.persona = Persona::Yealink;
        cx.server = Persona::Yealink.agent().unwrap();
        let got = answers(&request("OPTIONS", "", via), &cx).concat();
        assert_eq!(values(&got, "User-Agent"), ["Yealink SIP-T46S 66.86.0.15"]);
        assert!(values(&got, "Server").is_empty());

        cx.persona = Persona::Asterisk;
        cx.server = Persona::Asterisk.agent().unwrap();
        let got = answers(&request("OPTIONS", "", via), &cx).concat();
        assert!(got.ends_with("Server: Asterisk PBX 18.20.2\r\nContent-Length:  0\r\n\r\n"));
        assert_eq!(values(&got, "Allow"), [Persona::Asterisk.allow().unwrap()]);
    }

    #[test]
    fn methods_we_do_not_serve_get_405_with_allow() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        for method in ["SUBSCRIBE", "PUBLISH", "REFER", "NEWMETHOD"] {
            let got = answers(&request(method, "", via), &cx()).concat();
            assert!(
                got.starts_with("SIP/2.0 405 Method Not Allowed\r\n"),
                "{method}"
            );
            assert_eq!(values(&got, "Allow"), [ALLOW]);
        }
        for method in [
            "BYE", "CANCEL", "INFO", "UPDATE", "PRACK", "MESSAGE", "NOTIFY",
        ] {
            let got = answers(&request(method, "", via), &cx()).concat();
            assert!(got.starts_with("SIP/2.0 200 OK\r\n"), "{method}");
        }
    }

    #[test]
    fn max_forwards_zero_is_too_many_hops_except_for_options() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let got = answers(&request("INVITE", "Max-Forwards: 0\r\n", via), &cx());
        assert_eq!(got.len(), 1);
        assert!(got.concat().starts_with("SIP/2.0 483 Too Many Hops\r\n"));
        let got = answers(&request("OPTIONS", "Max-Forwards: 00\r\n", via), &cx());
        assert!(got.concat().starts_with("SIP/2.0 200 OK\r\n"));
    }

    #[test]
    fn nothing_from_the_request_can_start_a_header_line() {
        let via = "SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK-1";
        let msg = String::from_utf8(request("BYE", "", via))
            .unwrap()
            .replace("tag=6636", "tag=6636\rX-Injected: 1");
        let req = parse(msg.as_bytes()).unwrap();
        let response = String::from_utf8(response(&req, 200, "OK\r\nX-Evil: 1", &cx())).unwrap();
        assert!(!response.contains("\rX-"));
        assert!(!response.contains("\nX-"));
        assert!(response.starts_with("SIP/2.0 200 OK  X-Evil: 1\r\n"));
    }
}
