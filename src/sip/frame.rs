//! Framing a SIP stream (TCP, TLS) into messages: CRLF keep-alives between messages
//! (RFC 5626 §3.5.1) are handed back to be dropped, and a message ends Content-Length bytes after
//! the empty line that closes its head (RFC 3261 §18.3). The framer keeps its place in a partial
//! head, so bytes arriving one at a time cost linear time, not quadratic.
//!
//! It only finds boundaries: whether a message is a valid request is [`super::parse`]'s business.

use super::MAX_MESSAGE_BYTES;
use super::head::{self, HeadError, HeadReader};
use super::lex::find;

/// What the start of the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// This many bytes of CR/LF keep-alive: drop them (a `\r\n\r\n` ping may be answered with a
    /// `\r\n` pong).
    KeepAlive(usize),
    /// A whole message of this many bytes: hand it to [`super::parse`], then drop it.
    Message(usize),
    /// Not enough bytes yet: read more and call again with the grown buffer.
    Incomplete,
}

/// Why the stream cannot be framed any further; the connection should be closed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The head, or the head and its body, would exceed [`MAX_MESSAGE_BYTES`].
    #[error("SIP message longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// A Content-Length that is not a decimal number, or two that disagree: where the message ends
    /// cannot be known.
    #[error("malformed or conflicting Content-Length")]
    BadContentLength,
}

/// Finds message boundaries in a stream buffer.
///
/// The caller owns the buffer: after each read it calls [`Framer::next`] with everything not yet
/// consumed; after `KeepAlive(n)` or `Message(n)` it drops the first `n` bytes (the framer has
/// reset itself by then) and calls again until `Incomplete`. Without Content-Length a message has
/// no body: RFC 3261 requires the header on streams, but we are liberal.
#[derive(Debug, Default)]
pub struct Framer {
    /// The head has begun: keep-alive bytes no longer count as such.
    in_message: bool,
    /// Where to resume looking for the end of the head.
    scanned: usize,
    /// The message's whole length, once its head is complete.
    total: Option<usize>,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Framer::default()
    }

    /// What the start of `buf` holds; see [`Frame`].
    pub fn next(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        if let Some(total) = self.total {
            return Ok(self.complete_if(buf, total));
        }
        if !self.in_message {
            let keep_alive = buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(buf.len());
            if keep_alive > 0 {
                return Ok(Frame::KeepAlive(keep_alive));
            }
            if buf.is_empty() {
                return Ok(Frame::Incomplete);
            }
            self.in_message = true;
            self.scanned = 0;
        }
        if self.scanned > buf.len() {
            // The caller handed us a different buffer; start over rather than trust old state.
            self.scanned = 0;
        }
        // The head, empty line included, may not exceed the limit: look no further than that.
        let window = buf.get(..MAX_MESSAGE_BYTES).unwrap_or(buf);
        match head_end(window, self.scanned) {
            Scan::Found(head_len) => {
                let head = buf.get(..head_len).unwrap_or_default();
                let body_len = content_length(head)?;
                let total = head_len
                    .checked_add(body_len)
                    .filter(|&t| t <= MAX_MESSAGE_BYTES)
                    .ok_or(FrameError::TooLarge)?;
                self.total = Some(total);
                Ok(self.complete_if(buf, total))
            }
            Scan::NotYet(resume) => {
                if window.len() == MAX_MESSAGE_BYTES {
                    return Err(FrameError::TooLarge);
                }
                self.scanned = resume;
                Ok(Frame::Incomplete)
            }
        }
    }

    fn complete_if(&mut self, buf: &[u8], total: usize) -> Frame {
        if buf.len() >= total {
            *self = Framer::default();
            Frame::Message(total)
        } else {
            Frame::Incomplete
        }
    }
}

enum Scan {
    /// The head, up to and including its empty line, is this long.
    Found(usize),
    /// No end yet; resume looking here.
    NotYet(usize),
}

/// Looks for the empty line ending a head (`LF CRLF` or `LF LF`) from `from` on.
fn head_end(buf: &[u8], from: usize) -> Scan {
    let mut at = from;
    loop {
        let Some(lf) = buf.get(at..).and_then(|rest| find(rest, b'\n')) else {
            return Scan::NotYet(buf.len());
        };
        let lf = at + lf;
        match buf.get(lf + 1..).unwrap_or_default() {
            [b'\n', ..] => return Scan::Found(lf + 2),
            [b'\r', b'\n', ..] => return Scan::Found(lf + 3),
            // Cannot tell yet whether this LF ends the head: look at it again next time.
            [] | [b'\r'] => return Scan::NotYet(lf),
            _ => at = lf + 1,
        }
    }
}

/// The Content-Length of a complete head (long or compact name, possibly folded), 0 if absent.
/// Lines that are not header fields are skipped: [`super::parse`] reports them.
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let Some(first_lf) = find(head, b'\n') else {
        return Ok(0);
    };
    let mut reader = HeadReader::new(head, first_lf + 1, 2);
    let mut found: Option<usize> = None;
    loop {
        match reader.next_header() {
            Ok(Some(h)) if is_content_length(h.name) => {
                let n = head::content_length(h.value).ok_or(FrameError::BadContentLength)?;
                if found.is_some_and(|m| m != n) {
                    return Err(FrameError::BadContentLength);
                }
                found = Some(n);
            }
            Ok(Some(_)) | Err(HeadError::NoColon { .. } | HeadError::BadName { .. }) => {}
            Ok(None) | Err(HeadError::Truncated) => return Ok(found.unwrap_or(0)),
        }
    }
}

fn is_content_length(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"l") || name.eq_ignore_ascii_case(b"Content-Length")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a framer in chunks of `chunk` bytes like a socket would, and returns
    /// the frames it finds.
    fn frames(stream: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
        let mut framer = Framer::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match framer.next(&buf)? {
                    Frame::Incomplete => break,
                    f @ (Frame::KeepAlive(n) | Frame::Message(n)) => {
                        out.push(f);
                        buf.drain(..n);
                    }
                }
            }
        }
        Ok(out)
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:100@h SIP/2.0\r\nl: 5\r\n\r\nhello";
    const BYE: &[u8] = b"BYE sip:h SIP/2.0\nCall-ID: x\n\n";

    #[test]
    fn keep_alives_and_messages_in_one_read() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(BYE);
        assert_eq!(
            frames(&stream, usize::MAX).unwrap(),
            vec![
                Frame::KeepAlive(4),
                Frame::Message(OPTIONS.len()),
                Frame::KeepAlive(2),
                Frame::Message(BYE.len()),
            ]
        );
    }

    #[test]
    fn byte_at_a_time_finds_the_same_messages() {
        let mut stream = OPTIONS.to_vec();
        stream.extend_from_slice(BYE);
        assert_eq!(
            frames(&stream, 1).unwrap(),
            vec![Frame::Message(OPTIONS.len()), Frame::Message(BYE.len())]
        );
    }

    #[test]
    fn folded_and_long_content_length() {
        let msg = b"MESSAGE sip:a SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabc";
        assert_eq!(frames(msg, 7).unwrap(), vec![Frame::Message(msg.len())]);
    }

    #[test]
    fn no_content_length_means_no_body() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n";
        let mut with_more = msg.to_vec();
        with_more.extend_from_slice(b"OPTIONS");
        assert_eq!(
            Framer::new().next(&with_more),
            Ok(Frame::Message(msg.len()))
        );
    }

    #[test]
    fn a_partial_message_is_incomplete() {
        let mut framer = Framer::new();
        assert_eq!(framer.next(b""), Ok(Frame::Incomplete));
        let partial = OPTIONS.get(..OPTIONS.len() - 1).unwrap();
        assert_eq!(framer.next(partial), Ok(Frame::Incomplete));
        assert_eq!(framer.next(OPTIONS), Ok(Frame::Message(OPTIONS.len())));
    }

    #[test]
    fn bad_or_conflicting_content_length_is_an_error() {
        for msg in [
            &b"INVITE sip:a SIP/2.0\r\nContent-Length: -999\r\n\r\n"[..],
            b"INVITE sip:a SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert_eq!(Framer::new().next(msg), Err(FrameError::BadContentLength));
        }
        let same_twice = b"INVITE sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            Framer::new().next(same_twice),
            Ok(Frame::Message(same_twice.len()))
        );
    }

    #[test]
    fn oversized_heads_and_bodies_are_too_large() {
        let body_too_long = b"INVITE sip:a SIP/2.0\r\nl: 65535\r\n\r\n";
        assert_eq!(Framer::new().next(body_too_long), Err(FrameError::TooLarge));

        let mut endless_head = b"INVITE sip:a SIP/2.0\r\n".to_vec();
        endless_head.resize(MAX_MESSAGE_BYTES, b'a');
        let mut framer = Framer::new();
        assert_eq!(
            framer.next(endless_head.get(..1000).unwrap()),
            Ok(Frame::Incomplete)
        );
        assert_eq!(framer.next(&endless_head), Err(FrameError::TooLarge));

        // A head that ends exactly at the limit is still a message.
        let mut exact = b"INVITE sip:a SIP/2.0\r\nX: ".to_vec();
        exact.resize(MAX_MESSAGE_BYTES - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            Framer::new().next(&exact),
            Ok(Frame::Message(MAX_MESSAGE_BYTES))
        );
    }

    #[test]
    fn a_clerr_style_content_length_waits_for_the_body() {
        let msg = b"INVITE sip:a SIP/2.0\r\nContent-Length: 9999\r\n\r\nv=0\r\n";
        assert_eq!(Framer::new().next(msg), Ok(Frame::Incomplete));
    }
}
