//! What a responsive honeypot answers, built to look like a common PBX and to follow RFC 3261
//! §8.2.6 and RFC 3581 closely enough that scanners and test tools (sipvicious, sipsak, sipp) match
//! each response to their transaction and carry on: OPTIONS is answered, REGISTER challenged,
//! INVITE accepted with an SDP answer, in-dialog requests confirmed.
//!
//! Builds bytes only; sending them is the caller's business.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::Request;
use super::lex::decimal;
use super::via::{self, ViaParm};

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
    /// The Server header value, e.g. `FPBX-16.0.33(18.20.0)`.
    pub server: &'a str,
}

/// The methods we claim to support, in the Allow header of 200 (OPTIONS, INVITE) and 405.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, NOTIFY";

/// The digest realm of our REGISTER challenge: Asterisk's default, as FreePBX sends it.
pub const REALM: &str = "asterisk";

/// The responses to send for `req`, in order; none for ACK.
pub fn respond(req: &Request<'_>, cx: &ReplyContext<'_>) -> Vec<Vec<u8>> {
    if req.method == "ACK" {
        return Vec::new();
    }
    let hops_exhausted = req
        .header("Max-Forwards")
        .and_then(|mf| decimal(mf.as_bytes()))
        == Some(0);
    if hops_exhausted && req.method != "OPTIONS" {
        return vec![response(req, 483, "Too Many Hops", cx)];
    }
    match req.method {
        "OPTIONS" => vec![build(
            req,
            200,
            "OK",
            cx,
            &[
                ("Allow", ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", "replaces, timer"),
            ],
            None,
        )],
        "REGISTER" if req.header("Authorization").is_some() => {
            vec![response(req, 403, "Forbidden", cx)]
        }
        "REGISTER" => {
            let nonce = nonce(req.header("Call-ID").unwrap_or_default());
            let challenge = format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5");
            vec![build(
                req,
                401,
                "Unauthorized",
                cx,
                &[("WWW-Authenticate", &challenge)],
                None,
            )]
        }
        "INVITE" => {
            let contact = contact(cx);
            let sdp = sdp_answer(req.header("Call-ID").unwrap_or_default(), cx.local);
            vec![
                response(req, 100, "Trying", cx),
                build(
                    req,
                    200,
                    "OK",
                    cx,
                    &[
                        ("Contact", &contact),
                        ("Allow", ALLOW),
                        ("Supported", "replaces, timer"),
                    ],
                    Some(("application/sdp", sdp.as_bytes())),
                ),
            ]
        }
        "BYE" | "CANCEL" | "INFO" | "UPDATE" | "PRACK" | "MESSAGE" | "NOTIFY" => {
            vec![response(req, 200, "OK", cx)]
        }
        _ => vec![build(
            req,
            405,
            "Method Not Allowed",
            cx,
            &[("Allow", ALLOW)],
            None,
        )],
    }
}

/// A response with no body and no headers beyond the ones every response carries: Via (all,
/// the top one with `received` and `rport`), From, To (with our tag), Call-ID, CSeq, Server and
/// Content-Length.
pub fn response(req: &Request<'_>, status: u16, reason: &str, cx: &ReplyContext<'_>) -> Vec<u8> {
    build(req, status, reason, cx, &[], None)
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
    push_header(&mut out, "Server", cx.server);
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
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
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
    // RFC 3581 asks for `received` whenever `rport` is asked for, even if it repeats sent-by.
    let add_received = wants_rport || !host_is(&parm, cx.received);
    let received = cx.received.to_string();
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
fn sdp_answer(call_id: &str, local: SocketAddr) -> String {
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
         s=Asterisk\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    )
}

/// A 128-bit hex nonce derived from the Call-ID: the same REGISTER retransmitted gets the same
/// challenge, and no state is kept. It protects nothing; no credentials are ever accepted.
fn nonce(call_id: &str) -> String {
    let a = fnv1a(call_id.as_bytes(), FNV_OFFSET);
    let b = fnv1a(call_id.as_bytes(), a);
    format!("{a:016x}{b:016x}")
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
