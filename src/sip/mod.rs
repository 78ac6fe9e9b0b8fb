//! SIP as bytes on the wire: parse one request ([`parse`]), frame a TCP/TLS stream into messages
//! ([`frame`]) and build the responses a responsive honeypot sends ([`reply`]).
//!
//! Pure and synchronous: no I/O, no logging, no async runtime, and nothing from the rest of the
//! crate, so it could become a crate of its own. Every byte is hostile: nothing here panics,
//! indexes, allocates without a bound or loops more than linearly in the input.
//!
//! Strictness follows RFC 4475 (the SIP torture tests): each message that RFC calls valid parses;
//! each request it calls invalid is rejected, except where it lets a liberal receiver accept
//! (see [`parse`]). Tolerated everywhere: header names in any case and in compact form, folded
//! lines, LF-only line ends, CRLFs before the request line.
//!
//! A honeypot must also record requests no RFC would accept, or a scanner could hide by leaving
//! out Via: [`parse_lenient`] takes any message whose request line is a SIP/2.0 request line,
//! for recording without answering.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

mod addr;
pub mod auth;
pub mod frame;
mod head;
mod lex;
pub mod persona;
pub mod reply;
mod via;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use head::{HeadError, HeadReader, RawHeader};
use lex::{find, is_token, starts_with_ci, strip_cr};

/// The largest SIP message we accept over any transport: 64 KiB less one, so that every UDP
/// datagram fits (at most 65,507 bytes over IPv4, 65,527 over IPv6) and a TCP/TLS peer gets no
/// more. RFC 3261 §18.1.1 expects far smaller messages; anything longer is an attack on our
/// memory rather than a call.
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// The most header fields a request may carry. An ordinary request has 10 to 20 and RFC 4475's
/// longest torture test 43; beyond 128 we would spend memory on a message no phone sends.
pub const MAX_HEADERS: usize = 128;

// Which headers are Vias is kept as a bit per header in a u128.
const _: () = assert!(MAX_HEADERS <= 128);

/// How many header slots to reserve up front: enough for the probes we see (sipvicious, sipcli,
/// pplsip send 8 to 13), so parsing one costs a single allocation.
const USUAL_HEADERS: usize = 16;

/// One SIP request, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The method, token characters only, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The Request-URI as sent.
    pub uri: &'a str,
    /// The SIP version as sent: `SIP/2.0` in any case.
    pub version: &'a str,
    /// Every header field in order (at most [`MAX_HEADERS`]).
    pub headers: Vec<Header<'a>>,
    /// Exactly Content-Length bytes, or everything after the head if there is no Content-Length
    /// (or, from [`parse_lenient`], no usable one).
    pub body: &'a [u8],
    /// How many bytes of the input this message occupies, from the start of the input (including
    /// skipped leading CRLFs) to the end of the body. Trailing octets after it are ignored
    /// (RFC 4475 §3.1.1.8).
    pub len: usize,
}

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name as sent (`Via`, `v`, `VIA`), without white space before the colon.
    pub name: &'a str,
    /// The value without surrounding white space. `Cow::Owned` only when it had to be rewritten:
    /// folded lines joined by one space, or invalid UTF-8 replaced by U+FFFD.
    pub value: Cow<'a, str>,
}

/// Why bytes are not a SIP request we accept.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CR and LF (an empty datagram or a keep-alive).
    #[error("empty message")]
    Empty,
    /// A SIP response (its first line starts with `SIP/`).
    #[error("a SIP response, not a request")]
    Response,
    /// The first line is not a SIP request line at all (no ` SIP/` in it).
    #[error("not SIP")]
    NotSip,
    /// The request line is not `Method SP Request-URI SP SIP/2.0`.
    #[error("malformed request line")]
    BadRequestLine,
    /// A well-formed request line for a SIP version other than 2.0.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A header line without a colon.
    #[error("header line {line} has no colon")]
    HeaderWithoutColon {
        /// The 1-based line of the message (the request line is line 1).
        line: usize,
    },
    /// A header name that is empty or not a token, or a continuation line with nothing before it.
    #[error("header line {line} has a malformed name")]
    BadHeaderName {
        /// The 1-based line of the message (the request line is line 1).
        line: usize,
    },
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// A Content-Length that is not a decimal number that fits in memory.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// A Content-Length larger than the bytes after the head.
    #[error("Content-Length larger than the body")]
    ContentLengthMismatch,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is absent, or Call-ID is empty.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that may appear once (Call-ID, To, From, CSeq, Max-Forwards, Content-Length)
    /// appears more often.
    #[error("more than one {0} header")]
    MultipleValues(&'static str),
    /// A CSeq that is not `number method` with a number that fits 32 bits.
    #[error("malformed CSeq")]
    BadCSeq,
    /// The CSeq method differs from the request method.
    #[error("CSeq method differs from the request method")]
    CSeqMismatch,
    /// A Max-Forwards that is not a number from 0 to 255.
    #[error("malformed Max-Forwards")]
    BadMaxForwards,
    /// A Via value that is not a list of well-formed `via-parm`s.
    #[error("malformed Via")]
    BadVia,
    /// A To or From that is not a `name-addr` or `addr-spec` (say, an unclosed quote).
    #[error("malformed {0} address")]
    BadAddress(&'static str),
    /// The input ends before the empty line that closes the head.
    #[error("truncated message")]
    Truncated,
    /// Longer than [`MAX_MESSAGE_BYTES`].
    #[error("message longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
}

/// How a caller counts a rejected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// A SIP response: a scanner answering us, or a reflection.
    Response,
    /// Not SIP at all, or empty (a keep-alive).
    NotSip,
    /// Meant as a SIP request, but malformed.
    Malformed,
}

impl ParseError {
    /// Which of the three counters this rejection belongs to.
    #[must_use]
    pub fn kind(&self) -> Rejected {
        match self {
            ParseError::Response => Rejected::Response,
            ParseError::NotSip | ParseError::Empty => Rejected::NotSip,
            _ => Rejected::Malformed,
        }
    }
}

/// Parses the SIP request at the start of `bytes` (a datagram, or one message framed by
/// [`frame::Framer`]).
///
/// Requires a request line `Method SP Request-URI SP SIP/2.0` whose URI has no white space or
/// angle brackets; Via, From, To, Call-ID and CSeq (a 32-bit number and the request's method);
/// at most one Call-ID, To, From, CSeq, Max-Forwards (0 to 255) and Content-Length; well-formed
/// Via values and To/From addresses; a Content-Length no larger than what follows the head.
///
/// Accepted although RFC 4475 calls them invalid, as it allows a liberal receiver to: headers
/// escaped into the Request-URI (§3.1.2.11), a Date not in GMT (§3.1.2.12), a Contact URI with
/// `?` outside angle brackets (§3.1.2.13), white space inside To/From angle brackets
/// (§3.1.2.14) and unquoted display names with non-token characters (§3.1.2.15). A honeypot
/// wants to record such probes, and none of them changes what we extract.
///
/// A request this rejects as [`Rejected::Malformed`] may still be one by its request line: see
/// [`parse_lenient`].
pub fn parse(bytes: &[u8]) -> Result<Request<'_>, ParseError> {
    let Head {
        method,
        uri,
        version,
        headers,
        seen,
        body_start,
    } = read_head(bytes, Strictness::Strict)?;
    let after_head = bytes.get(body_start..).unwrap_or_default();

    seen.check_counts()?;
    let value = |slot: Slot| {
        slot.first
            .and_then(|i| headers.get(i))
            .map(|h| h.value.as_ref())
    };
    let body = match value(seen.content_length) {
        None => after_head,
        Some(cl) => {
            let n = lex::decimal(cl.as_bytes())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(ParseError::BadContentLength)?;
            after_head
                .get(..n)
                .ok_or(ParseError::ContentLengthMismatch)?
        }
    };
    if seen.via == 0 {
        return Err(ParseError::MissingHeader("Via"));
    }
    let from = value(seen.from).ok_or(ParseError::MissingHeader("From"))?;
    let to = value(seen.to).ok_or(ParseError::MissingHeader("To"))?;
    let call_id = value(seen.call_id).ok_or(ParseError::MissingHeader("Call-ID"))?;
    let cseq = value(seen.cseq).ok_or(ParseError::MissingHeader("CSeq"))?;
    if call_id.is_empty() {
        return Err(ParseError::MissingHeader("Call-ID"));
    }
    check_cseq(cseq, method)?;
    if let Some(mf) = value(seen.max_forwards) {
        lex::decimal(mf.as_bytes())
            .filter(|&n| n <= 255)
            .ok_or(ParseError::BadMaxForwards)?;
    }
    addr::name_addr(from).ok_or(ParseError::BadAddress("From"))?;
    addr::name_addr(to).ok_or(ParseError::BadAddress("To"))?;
    let vias = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| seen.is_via(*i))
        .map(|(_, h)| h);
    for via in vias {
        if !via::is_valid(&via.value) {
            return Err(ParseError::BadVia);
        }
    }

    Ok(Request {
        method,
        uri,
        version,
        headers,
        len: body_start + body.len(),
        body,
    })
}

/// Parses `bytes` as a SIP request by its request line alone, for recording a probe that
/// [`parse`] rejects as malformed but that is still plainly a SIP request: one without Via,
/// From, To, Call-ID or CSeq, with a CSeq for another method, duplicated single-valued headers,
/// a Max-Forwards out of range, a Content-Length larger than what follows, and so on. Such a
/// request must not be answered (no conformant answer exists), but it is an event: otherwise
/// leaving out Via would hide a scanner from the honeypot.
///
/// `bytes` must be the whole message (a datagram, or one message framed by
/// [`frame::Framer`]). Still rejected exactly as by [`parse`]: empty input, input longer than
/// [`MAX_MESSAGE_BYTES`], a response, non-SIP, and a request line that is malformed or not
/// `SIP/2.0`. Everything after the request line is taken as it comes: lines that are not
/// `name: value` fields are skipped, fields beyond [`MAX_HEADERS`] are dropped, the end of
/// `bytes` ends a head that has no empty line, and the body is Content-Length bytes when there
/// is exactly one well-formed Content-Length that fits, else everything after the head.
///
/// A request [`parse`] accepts comes out of this identical.
pub fn parse_lenient(bytes: &[u8]) -> Result<Request<'_>, ParseError> {
    let Head {
        method,
        uri,
        version,
        headers,
        seen,
        body_start,
    } = read_head(bytes, Strictness::Lenient)?;
    let after_head = bytes.get(body_start..).unwrap_or_default();
    let body = Some(seen.content_length)
        .filter(|slot| slot.count == 1)
        .and_then(|slot| slot.first)
        .and_then(|i| headers.get(i))
        .and_then(|cl| lex::decimal(cl.value.as_bytes()))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| after_head.get(..n))
        .unwrap_or(after_head);
    Ok(Request {
        method,
        uri,
        version,
        headers,
        len: body_start + body.len(),
        body,
    })
}

/// How much of what [`parse`] rejects in a head [`read_head`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// A header line that is not a field, more than [`MAX_HEADERS`] fields or a head without its
    /// empty line is an error.
    Strict,
    /// Such lines are skipped, surplus fields dropped, and the input's end ends the head.
    Lenient,
}

/// A request line and the header fields after it, before anything they say is checked.
#[derive(Debug)]
struct Head<'a> {
    method: &'a str,
    uri: &'a str,
    version: &'a str,
    headers: Vec<Header<'a>>,
    seen: Seen,
    /// Where the body starts in the input: just past the head's empty line.
    body_start: usize,
}

/// Reads the request line and the header section, in one pass over the head.
fn read_head(bytes: &[u8], strictness: Strictness) -> Result<Head<'_>, ParseError> {
    let lenient = strictness == Strictness::Lenient;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge);
    }
    let skipped = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let msg = bytes.get(skipped..).unwrap_or_default();

    let (first_line, head_start) = match find(msg, b'\n') {
        Some(lf) => (strip_cr(msg.get(..lf).unwrap_or_default()), Some(lf + 1)),
        None => (msg, None),
    };
    let (method, uri, version) = request_line(first_line)?;
    let head_start = match head_start {
        Some(at) => skipped + at,
        None if lenient => bytes.len(),
        None => return Err(ParseError::Truncated),
    };

    let text = utf8_prefix(bytes);
    let mut reader = if lenient {
        HeadReader::to_end(bytes, head_start, 2)
    } else {
        HeadReader::new(bytes, head_start, 2)
    };
    let mut headers = Vec::with_capacity(USUAL_HEADERS);
    let mut seen = Seen::default();
    loop {
        let raw = match reader.next_header() {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            // The reader has moved past the bad line (it never reports Truncated when reading
            // to the end, but stopping there would be right if it did).
            Err(HeadError::Truncated) if lenient => break,
            Err(_) if lenient => continue,
            Err(HeadError::Truncated) => return Err(ParseError::Truncated),
            Err(HeadError::NoColon { line }) => {
                return Err(ParseError::HeaderWithoutColon { line });
            }
            Err(HeadError::BadName { line }) => return Err(ParseError::BadHeaderName { line }),
        };
        if headers.len() == MAX_HEADERS {
            if lenient {
                continue;
            }
            return Err(ParseError::TooManyHeaders);
        }
        let Some(field) = header(raw, text) else {
            if lenient {
                continue;
            }
            return Err(ParseError::BadHeaderName { line: raw.line });
        };
        seen.note(classify(raw.name), headers.len());
        headers.push(field);
    }
    Ok(Head {
        method,
        uri,
        version,
        headers,
        seen,
        body_start: reader.pos(),
    })
}

/// Splits and checks the request line, or says what the first line is instead.
fn request_line(line: &[u8]) -> Result<(&str, &str, &str), ParseError> {
    if starts_with_ci(line, b"SIP/") {
        return Err(ParseError::Response);
    }
    let Some(sp) = find(line, b' ') else {
        return Err(ParseError::NotSip);
    };
    let (method, rest) = line.split_at_checked(sp).unwrap_or_default();
    let rest = rest.get(1..).unwrap_or_default();
    let last_sp = rest.iter().rposition(|&b| b == b' ');
    let (uri, version) = match last_sp {
        Some(i) => (
            rest.get(..i).unwrap_or_default(),
            rest.get(i + 1..).unwrap_or_default(),
        ),
        None => (&b""[..], rest),
    };
    if !starts_with_ci(version, b"SIP/") {
        // Maybe trailing white space after a real version; otherwise this is not SIP.
        let sip_anywhere = line.windows(5).any(|w| w.eq_ignore_ascii_case(b" SIP/"));
        return Err(if sip_anywhere {
            ParseError::BadRequestLine
        } else {
            ParseError::NotSip
        });
    }
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        let number = version.get(4..).unwrap_or_default();
        let well_formed = number
            .split(|&b| b == b'.')
            .map(|part| !part.is_empty() && part.iter().all(u8::is_ascii_digit))
            .eq([true, true]);
        return Err(if well_formed {
            ParseError::UnsupportedVersion
        } else {
            ParseError::BadRequestLine
        });
    }
    if method.is_empty() || !method.iter().copied().all(is_token) {
        return Err(ParseError::BadRequestLine);
    }
    let uri_ok = !uri.is_empty()
        && uri
            .iter()
            .all(|&b| b > b' ' && b != 0x7f && b != b'<' && b != b'>');
    if !uri_ok {
        return Err(ParseError::BadRequestLine);
    }
    let text = |b| std::str::from_utf8(b).map_err(|_| ParseError::BadRequestLine);
    Ok((text(method)?, text(uri)?, text(version)?))
}

/// The longest prefix of `bytes` that is valid UTF-8: every name and value inside it is borrowed
/// from it without checking UTF-8 again (one pass over the message instead of one per header).
fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => bytes
            .get(..e.valid_up_to())
            .and_then(|valid| std::str::from_utf8(valid).ok())
            .unwrap_or_default(),
    }
}

/// The header with its value trimmed and, where needed, unfolded or made valid UTF-8. `text` is
/// the valid UTF-8 prefix of the buffer the header was read from. `None` if the name is not
/// UTF-8, which a token always is.
fn header<'a>(raw: RawHeader<'a>, text: &'a str) -> Option<Header<'a>> {
    let name = match text.get(raw.name_at..raw.name_at + raw.name.len()) {
        Some(name) => name,
        None => std::str::from_utf8(raw.name).ok()?,
    };
    let value = if raw.folded {
        Cow::Owned(head::unfold(raw.value))
    } else {
        let from_start = lex::trim_start(raw.value);
        let value = lex::trim_end(from_start);
        let start = raw.value_at + (raw.value.len() - from_start.len());
        match text.get(start..start + value.len()) {
            Some(value) => Cow::Borrowed(value),
            None => String::from_utf8_lossy(value),
        }
    };
    Some(Header { name, value })
}

/// `number LWS method`, the number fitting 32 bits, the method the request's own.
fn check_cseq(cseq: &str, method: &str) -> Result<(), ParseError> {
    let space = lex::find2(cseq.as_bytes(), b' ', b'\t').ok_or(ParseError::BadCSeq)?;
    let (number, cseq_method) = cseq.split_at_checked(space).ok_or(ParseError::BadCSeq)?;
    let cseq_method = lex::trim_str(cseq_method);
    lex::decimal(number.as_bytes())
        .filter(|&n| u32::try_from(n).is_ok())
        .ok_or(ParseError::BadCSeq)?;
    if cseq_method.is_empty() || !cseq_method.bytes().all(is_token) {
        return Err(ParseError::BadCSeq);
    }
    if cseq_method != method {
        return Err(ParseError::CSeqMismatch);
    }
    Ok(())
}

/// The headers the parser itself looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Via,
    CallId,
    To,
    From,
    CSeq,
    MaxForwards,
    ContentLength,
    Other,
}

/// Classifies a header name, long or compact, in any case.
fn classify(name: &[u8]) -> Class {
    let is = |long: &[u8]| name.eq_ignore_ascii_case(long);
    // By length first: most names are looked at once and compared at most twice.
    match name.len() {
        1 => match name.first().map(u8::to_ascii_lowercase) {
            Some(b'v') => Class::Via,
            Some(b'i') => Class::CallId,
            Some(b't') => Class::To,
            Some(b'f') => Class::From,
            Some(b'l') => Class::ContentLength,
            _ => Class::Other,
        },
        2 if is(b"To") => Class::To,
        3 if is(b"Via") => Class::Via,
        4 if is(b"From") => Class::From,
        4 if is(b"CSeq") => Class::CSeq,
        7 if is(b"Call-ID") => Class::CallId,
        12 if is(b"Max-Forwards") => Class::MaxForwards,
        14 if is(b"Content-Length") => Class::ContentLength,
        _ => Class::Other,
    }
}

/// Where a single-valued header was first seen and how often.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    first: Option<usize>,
    count: u8,
}

impl Slot {
    fn note(&mut self, index: usize) {
        self.first.get_or_insert(index);
        self.count = self.count.saturating_add(1);
    }
}

/// What the parser has seen of the headers it checks, gathered in the one pass over the head.
#[derive(Debug, Default)]
struct Seen {
    /// Bit `i` set when header `i` is a Via ([`MAX_HEADERS`] bits at most).
    via: u128,
    call_id: Slot,
    to: Slot,
    from: Slot,
    cseq: Slot,
    max_forwards: Slot,
    content_length: Slot,
}

impl Seen {
    fn note(&mut self, class: Class, index: usize) {
        match class {
            Class::Via => self.via |= 1_u128.checked_shl(index_u32(index)).unwrap_or(0),
            Class::CallId => self.call_id.note(index),
            Class::To => self.to.note(index),
            Class::From => self.from.note(index),
            Class::CSeq => self.cseq.note(index),
            Class::MaxForwards => self.max_forwards.note(index),
            Class::ContentLength => self.content_length.note(index),
            Class::Other => {}
        }
    }

    fn is_via(&self, index: usize) -> bool {
        self.via.checked_shr(index_u32(index)).unwrap_or(0) & 1 == 1
    }

    fn check_counts(&self) -> Result<(), ParseError> {
        let singles = [
            (self.call_id, "Call-ID"),
            (self.to, "To"),
            (self.from, "From"),
            (self.cseq, "CSeq"),
            (self.max_forwards, "Max-Forwards"),
            (self.content_length, "Content-Length"),
        ];
        match singles.iter().find(|(slot, _)| slot.count > 1) {
            Some((_, name)) => Err(ParseError::MultipleValues(name)),
            None => Ok(()),
        }
    }
}

/// A header index as a shift amount; past [`MAX_HEADERS`] it shifts everything out.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// The long name of a compact header name (RFC 3261 §7.3.3 and the extensions that added more),
/// in any case.
fn long_name(compact: u8) -> Option<&'static str> {
    Some(match compact.to_ascii_lowercase() {
        b'a' => "Accept-Contact",      // RFC 3841
        b'b' => "Referred-By",         // RFC 3892
        b'c' => "Content-Type",        // RFC 3261
        b'd' => "Request-Disposition", // RFC 3841
        b'e' => "Content-Encoding",    // RFC 3261
        b'f' => "From",                // RFC 3261
        b'i' => "Call-ID",             // RFC 3261
        b'j' => "Reject-Contact",      // RFC 3841
        b'k' => "Supported",           // RFC 3261
        b'l' => "Content-Length",      // RFC 3261
        b'm' => "Contact",             // RFC 3261
        b'n' => "Identity-Info",       // RFC 4474
        b'o' => "Event",               // RFC 6665
        b'r' => "Refer-To",            // RFC 3515
        b's' => "Subject",             // RFC 3261
        b't' => "To",                  // RFC 3261
        b'u' => "Allow-Events",        // RFC 6665
        b'v' => "Via",                 // RFC 3261
        b'x' => "Session-Expires",     // RFC 4028
        b'y' => "Identity",            // RFC 8224
        _ => return None,
    })
}

/// A header name in its long form, if it is a known compact one.
fn canonical(name: &str) -> &str {
    match name.as_bytes() {
        [c] => long_name(*c).unwrap_or(name),
        _ => name,
    }
}

/// Whether two header names mean the same header: ignoring case, compact equal to long.
#[must_use]
pub fn same_header_name(a: &str, b: &str) -> bool {
    canonical(a).eq_ignore_ascii_case(canonical(b))
}

impl Request<'_> {
    /// The first value of the header `name` (long or compact, any case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| same_header_name(h.name, name))
            .map(|h| h.value.as_ref())
    }

    /// Every value of the header `name` (long or compact, any case), in order. A header sent as
    /// several fields (as Via often is) yields each field's value; a comma-separated list in one
    /// field stays one value.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> {
        self.headers
            .iter()
            .filter(move |h| same_header_name(h.name, name))
            .map(|h| h.value.as_ref())
    }

    /// The number the request is aimed at: the user part of the To URI (`sip:`, `sips:` or
    /// `tel:`), else of the Request-URI; `None` if neither has one. URI parameters and a password
    /// are cut off, a leading `+` is kept, and %-escapes of plain characters are decoded
    /// (`%2B4420` is `+4420`); escapes of control bytes, bytes past ASCII and characters a user
    /// part must escape are kept as sent (see [`addr::unescape_user`]). Borrowed unless an
    /// escape was decoded.
    #[must_use]
    pub fn called_number(&self) -> Option<Cow<'_, str>> {
        self.header("To")
            .and_then(addr::name_addr)
            .and_then(|to| addr::uri_user(to.uri))
            .or_else(|| addr::uri_user(self.uri))
            .map(addr::unescape_user)
    }

    /// The user part of the Request-URI, %-decoded as [`Request::called_number`] decodes it:
    /// the number a PBX asks a redirect server about.
    #[must_use]
    pub fn request_uri_user(&self) -> Option<Cow<'_, str>> {
        addr::uri_user(self.uri).map(addr::unescape_user)
    }

    /// The address the topmost Via says the request came from: its `received` parameter, else
    /// its sent-by host; `None` if neither is an IP address.
    #[must_use]
    pub fn top_via_address(&self) -> Option<std::net::IpAddr> {
        let value = self.headers_named("Via").next()?;
        let mut received = None;
        let (parm, _) = via::first(value, &mut |(name, v)| {
            if name.eq_ignore_ascii_case("received") {
                received = v.and_then(|v| v.trim().parse().ok());
            }
        })?;
        received.or_else(|| {
            parm.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
    }

    /// The User-Agent value; `None` if absent or empty.
    #[must_use]
    pub fn user_agent(&self) -> Option<&str> {
        self.header("User-Agent").filter(|ua| !ua.is_empty())
    }

    /// The user part of the To URI, %-decoded as [`Request::called_number`] decodes it: the
    /// account a REGISTER asks to bind (an extension, when a scanner walks them).
    #[must_use]
    pub fn to_user(&self) -> Option<Cow<'_, str>> {
        self.header("To")
            .and_then(addr::name_addr)
            .and_then(|to| addr::uri_user(to.uri))
            .map(addr::unescape_user)
    }

    /// The host of the To URI (`sip:user@host:port;params` → `host`), if it is a plain host
    /// name or address of at most 255 characters: what a scanner put there, usually the address
    /// it probes.
    #[must_use]
    pub fn to_host(&self) -> Option<&str> {
        let uri = self.header("To").and_then(addr::name_addr)?.uri;
        let (_, rest) = uri.split_once(':')?;
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = if let Some(v6) = rest.strip_prefix('[') {
            v6.split(']').next()?
        } else {
            rest.split([':', ';', '?']).next()?
        };
        let plain = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        plain.then_some(host)
    }

    /// How long a REGISTER asks to be bound for, in seconds: the `Expires` header, else the
    /// first Contact's `expires` parameter; `None` if neither is a number.
    #[must_use]
    pub fn requested_expires(&self) -> Option<u32> {
        let parse = |v: &str| {
            let v = v.trim();
            (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        if let Some(e) = self.header("Expires").and_then(parse) {
            return Some(e);
        }
        let contact = self.header("Contact")?;
        let params = addr::name_addr(contact)?.params;
        params.split(';').find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| parse(value))
                .flatten()
        })
    }

    /// Whether the To header already carries a `tag` (the request is inside a dialog).
    #[must_use]
    pub fn to_has_tag(&self) -> bool {
        self.header("To")
            .and_then(addr::name_addr)
            .is_some_and(|to| addr::has_tag(to.params))
    }
}
