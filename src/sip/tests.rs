//! The parser against real traffic and the RFC 4475 torture tests, read from `tests/data`
//! (copied into the repository, sources in its README), plus property tests that no input makes it panic.

use std::borrow::Cow;
use std::path::PathBuf;

use proptest::prelude::*;

use super::frame::{Frame, Framer};
use super::*;

fn testdata(path: &str) -> Vec<u8> {
    let file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(path);
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn realworld(name: &str) -> Vec<u8> {
    testdata(&format!("realworld/{name}"))
}

fn torture(name: &str) -> Vec<u8> {
    testdata(&format!("rfc4475/{name}"))
}

/// What a torture test must come to: a request with this method and called number, or this
/// error.
type Expected = Result<(&'static str, Option<&'static str>), ParseError>;

/// Our verdict on every request in RFC 4475, by file.
fn expected_request(file: &str) -> Expected {
    use ParseError as E;
    Ok(match file {
        // §3.1.1 valid messages.
        "wsinv.dat" => ("INVITE", Some("vivekg")),
        "intmeth.dat" => (
            "!interesting-Method0123456789_*+`.%indeed'~",
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/"),
        ),
        // To `sip:%75se%72@example.com`: escapes of plain letters decode.
        "esc01.dat" => ("INVITE", Some("user")),
        // To `sip:null-%00-null@example.com`: an escaped NUL is kept as sent, never a NUL.
        "escnull.dat" => ("REGISTER", Some("null-%00-null")),
        "esc02.dat" => ("RE%47IST%45R", Some("resource")),
        "lwsdisp.dat" => ("OPTIONS", Some("user")),
        "longreq.dat" => ("INVITE", Some("user")),
        "dblreq.dat" => ("REGISTER", Some("j.user")),
        "semiuri.dat" => ("OPTIONS", Some("j_user")),
        "transports.dat" => ("OPTIONS", Some("user")),
        "mpart01.dat" => ("MESSAGE", Some("kumiko")),
        // §3.2 and §3.3: syntactically valid, for the application to refuse.
        "badbranch.dat" => ("OPTIONS", Some("user")),
        "unkscm.dat" => ("OPTIONS", Some("user")),
        "novelsc.dat" => ("OPTIONS", Some("user")),
        "unksm2.dat" => ("REGISTER", None),
        "bext01.dat" => ("OPTIONS", Some("j_user")),
        "invut.dat" => ("INVITE", Some("j.user")),
        "regaut01.dat" => ("REGISTER", Some("j.user")),
        "zeromf.dat" => ("OPTIONS", Some("user")),
        "cparam01.dat" => ("REGISTER", Some("watson")),
        "cparam02.dat" => ("REGISTER", Some("watson")),
        "regescrt.dat" => ("REGISTER", Some("user")),
        "sdp01.dat" => ("INVITE", Some("j_user")),
        "inv2543.dat" => ("INVITE", Some("+16505552222")),
        // §3.1.2 invalid, but the RFC lets a liberal receiver accept: we do (see `parse`).
        "escruri.dat" => ("INVITE", Some("user")),
        "baddate.dat" => ("INVITE", Some("user")),
        "regbadct.dat" => ("REGISTER", Some("user")),
        "badaspec.dat" => ("OPTIONS", Some("t.watson")),
        "baddn.dat" => ("OPTIONS", Some("t.watson")),
        // Invalid: rejected.
        "badinv01.dat" => return Err(E::BadVia),
        "clerr.dat" => return Err(E::ContentLengthMismatch),
        "ncl.dat" => return Err(E::BadContentLength),
        "scalar02.dat" => return Err(E::BadCSeq),
        "quotbal.dat" => return Err(E::BadAddress("To")),
        "ltgtruri.dat" | "lwsruri.dat" | "lwsstart.dat" | "trws.dat" => {
            return Err(E::BadRequestLine);
        }
        "badvers.dat" => return Err(E::UnsupportedVersion),
        "mismatch01.dat" | "mismatch02.dat" => return Err(E::CSeqMismatch),
        "insuf.dat" => return Err(E::MissingHeader("From")),
        "multi01.dat" => return Err(E::MultipleValues("Call-ID")),
        "mcl01.dat" => return Err(E::MultipleValues("Content-Length")),
        other => panic!("no verdict pinned for {other}: add one"),
    })
}

/// Every row of RFC 4475's index: requests as pinned above, responses recognised as responses.
#[test]
fn every_rfc_4475_torture_message_gets_its_pinned_verdict() {
    let index = String::from_utf8(testdata("rfc4475/INDEX.tsv")).unwrap();
    let mut checked = 0;
    for row in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = row.split('\t').collect();
        let [file, _section, kind, class, bytes, ..] = cols.as_slice() else {
            panic!("short row {row}");
        };
        let msg = torture(file);
        assert_eq!(msg.len().to_string(), *bytes, "{file} length");
        let got = parse(&msg);
        match *kind {
            "resp" => assert_eq!(got.map(|r| r.method), Err(ParseError::Response), "{file}"),
            "req" => {
                let expected = expected_request(file);
                let liberal = row.contains("liberal");
                match *class {
                    "valid-must-parse" => assert!(expected.is_ok(), "{file} must parse"),
                    "invalid-must-reject" => {
                        assert!(expected.is_err() || liberal, "{file} must be rejected")
                    }
                    other => panic!("unknown class {other}"),
                }
                let got = got
                    .as_ref()
                    .map(|r| (r.method, r.called_number().map(Cow::into_owned)))
                    .map_err(|e| *e);
                let expected = expected.map(|(m, n)| (m, n.map(str::to_owned)));
                assert_eq!(got, expected, "{file}");
            }
            other => panic!("unknown type {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 49);
}

/// What [`parse_lenient`] makes of each RFC 4475 request [`parse`] rejects: the method, called
/// number and body length it is recorded with, or the error that keeps it out.
fn expected_lenient(file: &str) -> Result<(&'static str, Option<&'static str>, usize), ParseError> {
    use ParseError as E;
    Ok(match file {
        // Only the semantics are wrong: recorded.
        "badinv01.dat" => ("INVITE", Some("j.user"), 152), // Via `;;,;,,`
        "clerr.dat" => ("INVITE", Some("j.user"), 154), // Content-Length 9999: the rest is the body
        "ncl.dat" => ("INVITE", Some("j.user"), 152),   // Content-Length -999: likewise
        "scalar02.dat" => ("REGISTER", Some("user"), 0), // CSeq and Max-Forwards overflow
        // To has an unclosed quote, so the number comes from the Request-URI.
        "quotbal.dat" => ("INVITE", Some("user"), 152),
        "mismatch01.dat" => ("OPTIONS", Some("j.user"), 0), // CSeq says INVITE
        "mismatch02.dat" => ("NEWMETHOD", Some("j.user"), 138), // likewise
        "insuf.dat" => ("INVITE", Some("user"), 152), // no From, To, Call-ID: number from the URI
        "multi01.dat" => ("INVITE", Some("user"), 154), // two of each: the first To counts
        "mcl01.dat" => ("OPTIONS", Some("user"), 67), // two Content-Lengths: the rest is the body
        // The request line itself is broken: not recognisably a SIP/2.0 request, still rejected.
        "ltgtruri.dat" | "lwsruri.dat" | "lwsstart.dat" | "trws.dat" => {
            return Err(E::BadRequestLine);
        }
        "badvers.dat" => return Err(E::UnsupportedVersion),
        other => panic!("no lenient verdict pinned for {other}: add one"),
    })
}

/// Every RFC 4475 request: what `parse` accepts comes out of `parse_lenient` identical; what it
/// rejects gets the pinned lenient verdict; responses stay responses.
#[test]
fn lenient_parse_records_torture_requests_whose_request_line_is_sound() {
    let index = String::from_utf8(testdata("rfc4475/INDEX.tsv")).unwrap();
    let mut recorded = Vec::new();
    for row in index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = row.split('\t').collect();
        let [file, _section, kind, ..] = cols.as_slice() else {
            panic!("short row {row}");
        };
        let msg = torture(file);
        let lenient = parse_lenient(&msg);
        if *kind == "resp" {
            assert_eq!(lenient.unwrap_err(), ParseError::Response, "{file}");
            continue;
        }
        match parse(&msg) {
            Ok(strict) => assert_same_request(&strict, &lenient.unwrap(), file),
            Err(_) => {
                let got = lenient
                    .as_ref()
                    .map(|r| {
                        assert_eq!(
                            r.len,
                            msg.len(),
                            "{file}: the whole datagram is the message"
                        );
                        recorded.push(*file);
                        (
                            r.method,
                            r.called_number().map(Cow::into_owned),
                            r.body.len(),
                        )
                    })
                    .map_err(|e| *e);
                let expected =
                    expected_lenient(file).map(|(m, n, body)| (m, n.map(str::to_owned), body));
                assert_eq!(got, expected, "{file}");
            }
        }
    }
    assert_eq!(
        recorded,
        [
            "badinv01.dat",
            "clerr.dat",
            "ncl.dat",
            "scalar02.dat",
            "quotbal.dat",
            "mismatch01.dat",
            "mismatch02.dat",
            "insuf.dat",
            "multi01.dat",
            "mcl01.dat",
        ]
    );
}

fn assert_same_request(strict: &Request<'_>, lenient: &Request<'_>, what: &str) {
    assert_eq!(
        (strict.method, strict.uri, strict.version),
        (lenient.method, lenient.uri, lenient.version),
        "{what}"
    );
    assert_eq!(strict.headers, lenient.headers, "{what}");
    assert_eq!(
        (strict.body, strict.len),
        (lenient.body, lenient.len),
        "{what}"
    );
}

#[test]
fn a_request_line_alone_is_a_request_to_the_lenient_parser() {
    for msg in [
        &b"OPTIONS sip:101@198.51.100.1 SIP/2.0\r\n\r\n"[..],
        b"OPTIONS sip:101@198.51.100.1 SIP/2.0\r\n",
        b"OPTIONS sip:101@198.51.100.1 SIP/2.0",
        b"\r\nOPTIONS sip:101@198.51.100.1 SIP/2.0\n\n",
    ] {
        assert_eq!(
            parse(msg).unwrap_err().kind(),
            Rejected::Malformed,
            "{msg:?}"
        );
        let req = parse_lenient(msg).unwrap();
        assert_eq!(
            (req.method, req.called_number().as_deref(), req.user_agent()),
            ("OPTIONS", Some("101"), None),
            "{msg:?}"
        );
        assert!(req.headers.is_empty() && req.body.is_empty(), "{msg:?}");
        assert_eq!(req.len, msg.len(), "{msg:?}");
    }
}

#[test]
fn lenient_parse_skips_what_the_strict_parser_rejects_in_the_head() {
    let without = |line: &str| {
        String::from_utf8(options_with("", "hi"))
            .unwrap()
            .replace(line, "")
            .into_bytes()
    };
    let via = "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport\r\n";
    for (msg, strict) in [
        (without(via), ParseError::MissingHeader("Via")),
        (
            without("Call-ID: 1234\r\n"),
            ParseError::MissingHeader("Call-ID"),
        ),
        (
            options_with("no colon here\r\n", "hi"),
            ParseError::HeaderWithoutColon { line: 9 },
        ),
        (
            options_with("bad name: x\r\n \tfolded on\r\n", "hi"),
            ParseError::BadHeaderName { line: 9 },
        ),
        (
            options_with(&"X-A: 1\r\n".repeat(MAX_HEADERS), "hi"),
            ParseError::TooManyHeaders,
        ),
    ] {
        assert_eq!(parse(&msg).unwrap_err(), strict);
        let req = parse_lenient(&msg).unwrap_or_else(|e| panic!("{strict}: {e}"));
        assert_eq!(
            (
                req.method,
                req.called_number().as_deref(),
                req.user_agent(),
                req.body
            ),
            ("OPTIONS", Some("100"), Some("friendly-scanner"), &b"hi"[..]),
            "{strict}"
        );
        assert!(req.headers.len() <= MAX_HEADERS);
        assert!(req.headers.iter().all(|h| h.name != "bad name"));
    }
    // A head cut short of its empty line: the datagram's end ends it.
    let full = options_with("", "");
    let cut = full.get(..full.len() - 4).unwrap();
    assert_eq!(parse(cut).unwrap_err(), ParseError::Truncated);
    let req = parse_lenient(cut).unwrap();
    assert_eq!(req.header("Content-Length"), Some("0"));
    assert_eq!(req.len, cut.len());
}

#[test]
fn lenient_parse_takes_the_rest_as_body_when_content_length_is_unusable() {
    let body = "v=0\r\n";
    let with_length = |cl: &str| {
        String::from_utf8(options_with("", body))
            .unwrap()
            .replace(&format!("Content-Length: {}", body.len()), cl)
            .into_bytes()
    };
    for (cl, body_len) in [
        ("Content-Length: 9999", body.len()),
        ("Content-Length: -1", body.len()),
        ("Content-Length: 99999999999999999999999", body.len()),
        ("Content-Length: 2\r\nl: 2", body.len()),
        ("l: 2", 2),
        ("X-No-Length: 1", body.len()),
    ] {
        let msg = with_length(cl);
        let req = parse_lenient(&msg).unwrap();
        assert_eq!(req.body.len(), body_len, "{cl}");
        assert_eq!(req.len, msg.len() - body.len() + body_len, "{cl}");
    }
}

#[test]
fn lenient_parse_still_rejects_what_is_not_a_sip_request() {
    let mut huge = b"OPTIONS sip:a SIP/2.0\r\n\r\n".to_vec();
    huge.resize(MAX_MESSAGE_BYTES + 1, b'x');
    for (msg, err) in [
        (&b""[..], ParseError::Empty),
        (b"\r\n\r\n", ParseError::Empty),
        (b"SIP/2.0 200 OK\r\n\r\n", ParseError::Response),
        (&torture("bigcode.dat"), ParseError::Response),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ParseError::NotSip),
        (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], ParseError::NotSip),
        (&[0; 100], ParseError::NotSip),
        (b"OPTIONS \0 SIP/2.0\r\n\r\n", ParseError::BadRequestLine),
        (
            b"OPTIONS sip:a SIP/2.0 \r\n\r\n",
            ParseError::BadRequestLine,
        ),
        (
            b"OPTIONS sip:a SIP/3.0\r\n\r\n",
            ParseError::UnsupportedVersion,
        ),
        (&huge, ParseError::TooLarge),
    ] {
        assert_eq!(parse_lenient(msg).unwrap_err(), err, "{msg:?}");
        assert_eq!(parse(msg).unwrap_err(), err, "{msg:?}");
    }
}

#[test]
fn rejections_are_counted_as_response_junk_or_malformed() {
    assert_eq!(
        parse(&torture("bigcode.dat")).unwrap_err().kind(),
        Rejected::Response
    );
    assert_eq!(
        parse(&torture("insuf.dat")).unwrap_err().kind(),
        Rejected::Malformed
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err(),
        ParseError::NotSip
    );
    assert_eq!(ParseError::NotSip.kind(), Rejected::NotSip);
    assert_eq!(ParseError::Empty.kind(), Rejected::NotSip);
    assert_eq!(parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b"\r\n\r\n").unwrap_err(), ParseError::Empty);
    // A TLS ClientHello sent to the UDP port.
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap_err(),
        ParseError::NotSip
    );
    assert_eq!(parse(&[0; 100]).unwrap_err(), ParseError::NotSip);
}

#[test]
fn wsinv_unfolds_and_finds_compact_and_mixed_case_headers() {
    let msg = torture("wsinv.dat");
    let req = parse(&msg).unwrap();
    assert_eq!(req.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(req.version, "SIP/2.0");
    assert_eq!(
        req.header("to"),
        Some("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    );
    assert_eq!(req.header("CSeq"), Some("0009 INVITE"));
    assert_eq!(req.header("max-forwards"), Some("0068"));
    assert_eq!(req.header("Subject"), Some(""));
    assert_eq!(
        req.header("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        req.headers_named("Via").collect::<Vec<_>>(),
        vec![
            "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        ]
    );
    assert_eq!(req.header("Contact"), req.header("m"));
    assert!(req.to_has_tag());
    assert_eq!(req.body.len(), 150);
    assert_eq!(req.len, msg.len());
    let folded = req.headers.iter().find(|h| h.name == "TO").unwrap();
    assert!(matches!(folded.value, Cow::Owned(_)));
    let plain = req.headers.iter().find(|h| h.name == "Call-ID").unwrap();
    assert!(matches!(
        plain.value,
        Cow::Borrowed("wsinv.ndaksdj@192.0.2.1")
    ));
}

#[test]
fn dblreq_takes_the_first_message_and_ignores_the_trailing_octets() {
    let msg = torture("dblreq.dat");
    let req = parse(&msg).unwrap();
    let first_end = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(req.len, first_end);
    assert_eq!(req.len, 300);
    assert!(req.body.is_empty());
    let rest = msg.get(req.len..).unwrap();
    let second = parse(rest).unwrap();
    assert_eq!(
        (second.method, second.called_number().as_deref()),
        ("INVITE", Some("joe"))
    );
    assert_eq!(second.body.len(), 150);
    assert_eq!(second.len, 445);
}

#[test]
fn intmeth_keeps_control_characters_and_utf8_in_values() {
    let msg = torture("intmeth.dat");
    let req = parse(&msg).unwrap();
    assert_eq!(
        req.header("To"),
        Some(
            "\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>"
        )
    );
    assert_eq!(
        req.header("extensionHeader-!.%*+_`'~"),
        Some("\u{FEFF}\u{5927}\u{505C}\u{96FB}")
    );
}

#[test]
fn longreq_keeps_all_34_vias_in_order() {
    let msg = torture("longreq.dat");
    let req = parse(&msg).unwrap();
    let vias: Vec<&str> = req.headers_named("v").collect();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias.first(), Some(&"SIP/2.0/TCP sip33.example.com"));
    assert_eq!(vias.get(32), Some(&"SIP/2.0/TCP sip1.example.com"));
    assert_eq!(req.headers.len(), 43);
    assert_eq!(req.len, 3515);
}

#[test]
fn mpart01_body_is_exactly_content_length_of_binary() {
    let msg = torture("mpart01.dat");
    let req = parse(&msg).unwrap();
    assert_eq!(req.body.len(), 553);
    assert_eq!(req.user_agent(), Some("SIPimp.org/0.2.5 (curses)"));
    assert_eq!(req.len, msg.len());
    assert!(req.body.starts_with(b"--7a9cbec02ceef655\r\n"));
}

/// The captures in `tests/data/realworld`, with the values its README gives.
const REALWORLD: [(&str, &str, &str, &str, usize); 3] = [
    (
        "pplsip_invite_ochi.sip",
        "INVITE",
        "14500972598112101",
        "pplsip",
        211,
    ),
    ("voip_register_ochi.sip", "REGISTER", "100", "VOIP", 0),
    (
        "sipcli_invite_hepop.sip",
        "INVITE",
        "900442037690000",
        "sipcli/v1.8",
        283,
    ),
];

#[test]
fn real_world_probes_yield_their_called_number_and_user_agent() {
    for (file, method, number, agent, body) in REALWORLD {
        let msg = realworld(file);
        let req = parse(&msg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(req.method, method, "{file}");
        assert_eq!(req.called_number().as_deref(), Some(number), "{file}");
        assert_eq!(req.user_agent(), Some(agent), "{file}");
        assert_eq!(req.body.len(), body, "{file}");
        assert_eq!(req.len, msg.len(), "{file}");
        assert!(
            req.headers
                .iter()
                .all(|h| matches!(h.value, Cow::Borrowed(_))),
            "{file}: nothing to rewrite, so nothing allocated per header"
        );
    }
    let msg = realworld("pplsip_invite_ochi.sip");
    let req = parse(&msg).unwrap();
    assert_eq!(req.uri, "sip:14500972598112101@1.2.3.4");
    assert_eq!(
        req.header("Call-ID"),
        Some("1492163839-465544234-336545636")
    );
    assert_eq!(req.header("i"), Some("1492163839-465544234-336545636"));
    assert_eq!(req.headers.len(), 10);
    assert_eq!(req.body.get(..5), Some(&b"v=0\r\n"[..]));
}

/// Each real probe rewritten by `f` in its head only (the body keeps its Content-Length).
fn with_head_rewritten(file: &str, f: impl Fn(&str) -> String) -> Vec<u8> {
    let msg = realworld(file);
    let split = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (head, body) = msg.split_at(split);
    let mut out = f(std::str::from_utf8(head).unwrap()).into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn lf_only_line_ends_parse_the_same() {
    for (file, method, number, agent, body) in REALWORLD {
        let msg = with_head_rewritten(file, |h| h.replace("\r\n", "\n"));
        let req = parse(&msg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (
                req.method,
                req.called_number().as_deref(),
                req.user_agent(),
                req.body.len()
            ),
            (method, Some(number), Some(agent), body)
        );
    }
}

#[test]
fn folded_headers_parse_the_same_and_are_unfolded() {
    for (file, method, number, agent, _) in REALWORLD {
        let msg = with_head_rewritten(file, |h| {
            h.replace("To: ", "To:\r\n   ")
                .replace("User-Agent: ", "User-Agent:\r\n\t")
                .replace("CSeq: 1 ", "CSeq: 1\r\n ")
        });
        let req = parse(&msg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (req.method, req.called_number().as_deref(), req.user_agent()),
            (method, Some(number), Some(agent))
        );
        assert_eq!(req.header("CSeq"), Some(format!("1 {method}").as_str()));
    }
}

#[test]
fn compact_header_names_parse_the_same() {
    for (file, method, number, agent, body) in REALWORLD {
        let msg = with_head_rewritten(file, |h| {
            h.replace("\nVia:", "\nv:")
                .replace("\nFrom:", "\nf:")
                .replace("\nTo:", "\nt:")
                .replace("\nCall-ID:", "\ni:")
                .replace("\nContact:", "\nm:")
                .replace("\nContent-Type:", "\nc:")
                .replace("\nContent-Length:", "\nl:")
        });
        let req = parse(&msg).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            req.headers
                .iter()
                .all(|h| h.name != "Via" && h.name != "To")
        );
        assert_eq!(
            (
                req.method,
                req.called_number().as_deref(),
                req.user_agent(),
                req.body.len()
            ),
            (method, Some(number), Some(agent), body)
        );
        assert!(req.header("Via").is_some() && req.header("CALL-ID").is_some());
    }
}

#[test]
fn every_prefix_of_a_real_message_is_rejected_without_panicking() {
    for (file, ..) in REALWORLD {
        let msg = realworld(file);
        for cut in 0..msg.len() {
            let prefix = msg.get(..cut).unwrap();
            assert!(parse(prefix).is_err(), "{file} cut at {cut}");
        }
        let head_end = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            parse(msg.get(..head_end - 1).unwrap()).unwrap_err(),
            ParseError::Truncated
        );
        if head_end < msg.len() {
            assert_eq!(
                parse(msg.get(..head_end).unwrap()).unwrap_err(),
                ParseError::ContentLengthMismatch
            );
        }
    }
}

const OPTIONS: &str = "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport\r\n\
    From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6636\r\n\
    To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
    Call-ID: 1234\r\n\
    CSeq: 1 OPTIONS\r\n\
    Max-Forwards: 70\r\n\
    User-Agent: friendly-scanner\r\n";

fn options_with(extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{OPTIONS}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_datagram_of_64_kib_parses_and_one_byte_more_is_too_large() {
    let head_len = options_with("", "").len();
    // The Content-Length digits grow from 1 to 5 characters.
    let body = "x".repeat(MAX_MESSAGE_BYTES - head_len - 4);
    let msg = options_with("", &body);
    assert_eq!(msg.len(), MAX_MESSAGE_BYTES);
    let req = parse(&msg).unwrap();
    assert_eq!((req.len, req.body.len()), (MAX_MESSAGE_BYTES, body.len()));

    let mut longer = msg.clone();
    longer.push(b'x');
    assert_eq!(parse(&longer).unwrap_err(), ParseError::TooLarge);
}

#[test]
fn nul_bytes_are_kept_in_values_and_rejected_in_the_request_line() {
    let req_bytes = options_with("X-Nul: a\0b\r\n", "\0\0");
    let req = parse(&req_bytes).unwrap();
    assert_eq!(req.header("X-Nul"), Some("a\0b"));
    assert_eq!(req.body, b"\0\0");
    let mut bad = req_bytes.clone();
    if let Some(b) = bad.get_mut(3) {
        *b = 0;
    }
    assert_eq!(parse(&bad).unwrap_err(), ParseError::BadRequestLine);
}

#[test]
fn invalid_utf8_is_replaced_in_values_and_rejected_in_the_request_line() {
    let mut msg = OPTIONS
        .replace("friendly-scanner", "scan\u{1}ner")
        .into_bytes();
    let at = msg.windows(2).position(|w| w == b"\x01n").unwrap();
    if let Some(b) = msg.get_mut(at) {
        *b = 0xff;
    }
    msg.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let req = parse(&msg).unwrap();
    assert_eq!(req.user_agent(), Some("scan\u{FFFD}ner"));
    let ua = req.headers.iter().find(|h| h.name == "User-Agent").unwrap();
    assert!(matches!(ua.value, Cow::Owned(_)));

    let mut bad_uri = msg.clone();
    if let Some(b) = bad_uri.get_mut(12) {
        *b = 0xff;
    }
    assert_eq!(parse(&bad_uri).unwrap_err(), ParseError::BadRequestLine);
}

#[test]
fn header_count_is_bounded() {
    // OPTIONS carries 7 headers and Content-Length one more.
    let fill = |n: usize| "X-A: 1\r\n".repeat(n);
    let at_limit = options_with(&fill(MAX_HEADERS - 8), "");
    assert_eq!(parse(&at_limit).unwrap().headers.len(), MAX_HEADERS);
    let over = options_with(&fill(MAX_HEADERS - 7), "");
    assert_eq!(parse(&over).unwrap_err(), ParseError::TooManyHeaders);
}

#[test]
fn leading_crlfs_are_skipped_and_counted_in_len() {
    let mut msg = b"\r\n\r\n\n".to_vec();
    msg.extend_from_slice(&options_with("", ""));
    let req = parse(&msg).unwrap();
    assert_eq!(req.method, "OPTIONS");
    assert_eq!(req.len, msg.len());
}

#[test]
fn request_line_errors() {
    let line = |l: &str| {
        let msg = String::from_utf8(options_with("", "")).unwrap();
        let rest = msg.split_once("\r\n").unwrap().1;
        parse(format!("{l}\r\n{rest}").as_bytes()).map(|r| r.method.to_owned())
    };
    assert_eq!(line("OPTIONS sip:a@b SIP/2.0"), Ok("OPTIONS".to_owned()));
    assert_eq!(line("OPTIONS sip:a@b sip/2.0"), Ok("OPTIONS".to_owned()));
    assert_eq!(
        line("OPTIONS sip:a@b SIP/3.10"),
        Err(ParseError::UnsupportedVersion)
    );
    assert_eq!(
        line("OPTIONS sip:a@b SIP/2"),
        Err(ParseError::BadRequestLine)
    );
    assert_eq!(line("OPTIONS SIP/2.0"), Err(ParseError::BadRequestLine));
    assert_eq!(line("OPTIONS  SIP/2.0"), Err(ParseError::BadRequestLine));
    assert_eq!(
        line("OPT(IONS sip:a SIP/2.0"),
        Err(ParseError::BadRequestLine)
    );
    assert_eq!(
        line("OPTIONS sip:a\tb SIP/2.0"),
        Err(ParseError::BadRequestLine)
    );
    assert_eq!(
        line(" OPTIONS sip:a SIP/2.0"),
        Err(ParseError::BadRequestLine)
    );
    assert_eq!(line("SIP/2.0 200 OK"), Err(ParseError::Response));
    assert_eq!(line("HELLO"), Err(ParseError::NotSip));
    assert_eq!(
        parse(b"OPTIONS sip:a SIP/2.0").unwrap_err(),
        ParseError::Truncated
    );
}

#[test]
fn header_errors_carry_their_line() {
    let msg = options_with("no colon here\r\n", "");
    assert_eq!(
        parse(&msg).unwrap_err(),
        ParseError::HeaderWithoutColon { line: 9 }
    );
    let msg = options_with("bad name: x\r\n", "");
    assert_eq!(
        parse(&msg).unwrap_err(),
        ParseError::BadHeaderName { line: 9 }
    );
    let orphan = b"OPTIONS sip:a SIP/2.0\r\n folded\r\n\r\n";
    assert_eq!(
        parse(orphan).unwrap_err(),
        ParseError::BadHeaderName { line: 2 }
    );
}

#[test]
fn scalar_limits() {
    let with = |from: &str, to: &str| {
        let msg = String::from_utf8(options_with("", ""))
            .unwrap()
            .replace(from, to);
        parse(msg.as_bytes()).map(|_| ())
    };
    assert_eq!(with("CSeq: 1 ", "CSeq: 4294967295 "), Ok(()));
    assert_eq!(
        with("CSeq: 1 ", "CSeq: 4294967296 "),
        Err(ParseError::BadCSeq)
    );
    assert_eq!(with("CSeq: 1 ", "CSeq: -1 "), Err(ParseError::BadCSeq));
    assert_eq!(with("CSeq: 1 OPTIONS", "CSeq: 1"), Err(ParseError::BadCSeq));
    assert_eq!(
        with("CSeq: 1 OPTIONS", "CSeq: 1 OPTIONS x"),
        Err(ParseError::BadCSeq)
    );
    assert_eq!(
        with("CSeq: 1 OPTIONS", "CSeq: 1 options"),
        Err(ParseError::CSeqMismatch)
    );
    assert_eq!(with("Max-Forwards: 70", "Max-Forwards: 255"), Ok(()));
    assert_eq!(
        with("Max-Forwards: 70", "Max-Forwards: 256"),
        Err(ParseError::BadMaxForwards)
    );
    assert_eq!(
        with("Max-Forwards: 70", "Max-Forwards: x"),
        Err(ParseError::BadMaxForwards)
    );
    assert_eq!(
        with("Call-ID: 1234", "Call-ID: "),
        Err(ParseError::MissingHeader("Call-ID"))
    );
    assert_eq!(
        with("Call-ID: 1234", "i: 1\r\nCall-ID: 2"),
        Err(ParseError::MultipleValues("Call-ID"))
    );
    assert_eq!(with("From: \"sipvicious\"", "From: \"\""), Ok(()));
    assert_eq!(
        with("From: \"sipvicious\"", "From: \"sipvicious"),
        Err(ParseError::BadAddress("From"))
    );
    assert_eq!(
        with("Via: ", "Via: SIP/2.0/UDP a;;\r\nVia: "),
        Err(ParseError::BadVia)
    );
    assert_eq!(
        with(
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport\r\n",
            ""
        ),
        Err(ParseError::MissingHeader("Via"))
    );
}

#[test]
fn called_number_falls_back_to_the_request_uri_and_handles_tel() {
    let msg = |uri: &str, to: &str| {
        String::from_utf8(options_with("", ""))
            .unwrap()
            .replace("sip:100@192.0.2.1", uri)
            .replace("To: \"sipvicious\"<sip:100@1.1.1.1>", &format!("To: {to}"))
            .into_bytes()
    };
    let number = |uri, to| parse(&msg(uri, to)).map(|r| r.called_number().map(Cow::into_owned));
    assert_eq!(number("sip:+4420@h", "<sip:h>"), Ok(Some("+4420".into())));
    assert_eq!(
        number("sip:h", "<tel:+4420;phone-context=x>"),
        Ok(Some("+4420".into()))
    );
    assert_eq!(number("sip:h", "sip:h"), Ok(None));
    assert_eq!(number("sip:1:secret@h", "<sips:h>"), Ok(Some("1".into())));
    assert_eq!(
        number("sip:h", "<sip:00972;user=phone@h>;tag=1"),
        Ok(Some("00972".into()))
    );
}

#[test]
fn called_number_is_percent_decoded_from_the_to_uri_and_the_request_uri() {
    let msg = |uri: &str, to: &str| {
        String::from_utf8(options_with("", ""))
            .unwrap()
            .replace("sip:100@192.0.2.1", uri)
            .replace("To: \"sipvicious\"<sip:100@1.1.1.1>", &format!("To: {to}"))
            .into_bytes()
    };
    let number = |uri, to| parse(&msg(uri, to)).map(|r| r.called_number().map(Cow::into_owned));
    assert_eq!(
        number("sip:h", "<sip:%2B442012345678@h>"),
        Ok(Some("+442012345678".into()))
    );
    assert_eq!(number("sip:%2b4420@h", "<sip:h>"), Ok(Some("+4420".into())));
    assert_eq!(
        number("sip:h", "<tel:%2B4420;phone-context=x>"),
        Ok(Some("+4420".into()))
    );
    assert_eq!(
        number("sip:h", "<sip:%2A97%23;user=phone@h>"),
        Ok(Some("*97#".into()))
    );
    // Malformed escapes stay as sent.
    assert_eq!(number("sip:h", "<sip:%2B44%4@h>"), Ok(Some("+44%4".into())));
    // The message itself is untouched: the To header still holds the escape.
    let sent = msg("sip:h", "<sip:%2B4420@h>");
    let req = parse(&sent).unwrap();
    assert_eq!(req.header("To"), Some("<sip:%2B4420@h>"));
}

/// RFC 4475 esc01.dat without its To header: the number comes from the Request-URI
/// `sip:sips%3Auser%40example.com@example.net`, whose `:` and `@` must stay escaped in a user
/// part, so they are kept as sent.
#[test]
fn esc01s_request_uri_user_keeps_the_escapes_a_user_part_needs() {
    let msg = String::from_utf8(torture("esc01.dat"))
        .unwrap()
        .replace("To: sip:%75se%72@example.com\r\n", "")
        .into_bytes();
    assert_eq!(parse(&msg).unwrap_err(), ParseError::MissingHeader("To"));
    let req = parse_lenient(&msg).unwrap();
    assert_eq!(
        req.called_number().as_deref(),
        Some("sips%3Auser%40example.com")
    );
}

#[test]
fn user_agent_is_none_when_empty_or_absent() {
    let empty = String::from_utf8(options_with("", ""))
        .unwrap()
        .replace("friendly-scanner", "");
    assert_eq!(parse(empty.as_bytes()).unwrap().user_agent(), None);
    let wsinv = torture("wsinv.dat");
    let torture_req = parse(&wsinv).unwrap();
    assert_eq!(torture_req.user_agent(), None);
}

#[test]
fn compact_names_match_long_names_both_ways() {
    let msg = options_with("k: timer\r\no: presence\r\n", "");
    let req = parse(&msg).unwrap();
    assert_eq!(req.header("Supported"), Some("timer"));
    assert_eq!(req.header("EVENT"), Some("presence"));
    assert_eq!(req.header("l"), Some("0"));
    assert_eq!(req.header("x-unknown"), None);
    assert!(same_header_name("v", "VIA"));
    assert!(!same_header_name("v", "Via2"));
}

/// One real message with `edits` applied: each overwrites, inserts or deletes a byte.
fn mutate(mut msg: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        if msg.is_empty() {
            break;
        }
        let at = at % msg.len();
        match op % 3 {
            0 => {
                if let Some(b) = msg.get_mut(at) {
                    *b = byte;
                }
            }
            1 => msg.insert(at, byte),
            _ => {
                msg.remove(at);
            }
        }
    }
    msg
}

fn sample(i: usize) -> Vec<u8> {
    match i % 5 {
        0 => realworld("pplsip_invite_ochi.sip"),
        1 => realworld("voip_register_ochi.sip"),
        2 => realworld("sipcli_invite_hepop.sip"),
        3 => torture("wsinv.dat"),
        _ => options_with("", "hello"),
    }
}

fn exercise(req: &Request<'_>) {
    let _ = (
        req.called_number().as_deref(),
        req.user_agent(),
        req.to_has_tag(),
    );
    let cx = reply::ReplyContext {
        received: "192.0.2.9".parse().unwrap(),
        rport: 5060,
        local: "192.0.2.1:5060".parse().unwrap(),
        transport: "UDP",
        to_tag: "t",
        server: "s",
        persona: crate::sip::persona::Persona::Kamailio,
        register: reply::RegisterAnswer::Accept { expires: 60 },
        rings: true,
    };
    let _ = reply::respond(req, &cx);
    let _ = reply::bye(req, &cx, "b", 1);
    let _ = (req.to_user(), req.to_host(), req.requested_expires());
    let _ = crate::sip::auth::credentials(req).map(|c| c.is_digest_of("p", req.method));
}

/// `parse_lenient` on `msg`: never longer than its input; identical to `parse` where that
/// accepts; and failing only where `parse` fails the same way.
fn check_lenient_agrees(msg: &[u8]) -> Result<(), TestCaseError> {
    match (parse(msg), parse_lenient(msg)) {
        (Ok(strict), Ok(lenient)) => assert_same_request(&strict, &lenient, "strict"),
        (Err(_), Ok(lenient)) => {
            prop_assert!(lenient.len <= msg.len());
            prop_assert!(lenient.headers.len() <= MAX_HEADERS);
            exercise(&lenient);
        }
        (strict, Err(e)) => prop_assert_eq!(strict.map(|_| ()), Err(e)),
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(req) = parse(&bytes) {
            prop_assert!(req.len <= bytes.len());
            exercise(&req);
        }
    }

    #[test]
    fn lenient_parse_never_panics_and_agrees_with_parse(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_lenient_agrees(&bytes)?;
    }

    #[test]
    fn lenient_parse_agrees_with_parse_on_mutated_real_messages(
        i in 0..5_usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b' '), Just(b':'), Just(b';'), Just(b'"'), Just(b'<'),
            Just(b'>'), Just(b','), Just(b'\0'), Just(0xff), any::<u8>(),
        ]), 1..8),
    ) {
        check_lenient_agrees(&mutate(sample(i), &edits))?;
    }

    #[test]
    fn parse_never_panics_on_mutated_real_messages(
        i in 0..5_usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b' '), Just(b':'), Just(b';'), Just(b'"'), Just(b'<'),
            Just(b'>'), Just(b','), Just(b'\0'), Just(0xff), any::<u8>(),
        ]), 1..8),
    ) {
        let msg = mutate(sample(i), &edits);
        if let Ok(req) = parse(&msg) {
            prop_assert!(req.len <= msg.len());
            exercise(&req);
        }
    }

    #[test]
    fn framing_a_stream_yields_exactly_its_messages(
        items in proptest::collection::vec(0..7_usize, 1..12),
        cuts in proptest::collection::vec(1..200_usize, 1..40),
    ) {
        // Items 0-4 are messages, 5 and 6 keep-alives.
        let mut stream = Vec::new();
        let mut messages = Vec::new();
        let mut keep_alive_bytes = 0;
        for &item in &items {
            match item {
                5 => { stream.extend_from_slice(b"\r\n\r\n"); keep_alive_bytes += 4; }
                6 => { stream.extend_from_slice(b"\r\n"); keep_alive_bytes += 2; }
                i => { let m = sample(i); stream.extend_from_slice(&m); messages.push(m); }
            }
        }
        let mut framer = Framer::default();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut got_keep_alive = 0;
        let mut rest = stream.as_slice();
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&1)).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            buf.extend_from_slice(piece);
            loop {
                match framer.next(&buf) {
                    Ok(Frame::Incomplete) => break,
                    Ok(Frame::KeepAlive(n)) => { got_keep_alive += n; buf.drain(..n); }
                    Ok(Frame::Message(n)) => { got.push(buf.drain(..n).collect::<Vec<u8>>()); }
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, messages);
        prop_assert_eq!(got_keep_alive, keep_alive_bytes);
    }

    #[test]
    fn decoding_a_called_number_never_panics_nor_adds_control_or_non_ascii_characters(
        chars in proptest::collection::vec(prop_oneof![
            Just('%'), Just('2'), Just('B'), Just('b'), Just('0'), Just('0'), Just('7'), Just('F'),
            Just('C'), Just('3'), Just('z'), Just('@'), Just('\0'), Just('é'), any::<char>(),
        ], 0..40),
    ) {
        let user: String = chars.into_iter().collect();
        let got = addr::unescape_user(&user);
        prop_assert!(got.len() <= user.len());
        if !user.contains('%') {
            prop_assert!(matches!(got, Cow::Borrowed(_)));
        }
        let unusual = |s: &str| -> Vec<char> {
            s.chars().filter(|c| c.is_control() || !c.is_ascii()).collect()
        };
        prop_assert_eq!(unusual(&got), unusual(&user));
        prop_assert_eq!(got.matches(['@', ':', ' ', '"', '<', '>']).count(),
            user.matches(['@', ':', ' ', '"', '<', '>']).count());
    }

    #[test]
    fn framer_never_panics_on_arbitrary_chunks(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
    ) {
        let mut framer = Framer::default();
        let mut buf = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match framer.next(&buf) {
                    Ok(Frame::Incomplete) | Err(_) => break,
                    Ok(Frame::KeepAlive(n) | Frame::Message(n)) => {
                        prop_assert!(n > 0 && n <= buf.len());
                        let _ = parse(buf.get(..n).unwrap_or_default());
                        buf.drain(..n);
                    }
                }
            }
        }
    }
}
