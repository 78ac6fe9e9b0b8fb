//! The header section of a SIP message as a sequence of raw header fields: one `name: value`
//! per field, folded continuation lines attached to the field they continue, LF-only and CRLF
//! line ends alike. Shared by the parser (which validates and keeps every field) and the stream
//! framer (which only wants Content-Length), so both agree on where a head ends.

use super::lex::{find, is_token, is_ws, strip_cr, trim, trim_end, trim_start};

/// One header field as it stands in the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader<'a> {
    /// The name (token characters only), without the white space some senders put before the
    /// colon.
    pub(crate) name: &'a [u8],
    /// Everything after the colon up to the end of the field's last line, CR removed. When
    /// `folded`, this still holds the inner line ends and the white space that starts each
    /// continuation line.
    pub(crate) value: &'a [u8],
    /// Whether the value continues over more than one line.
    pub(crate) folded: bool,
    /// Where `name` starts in the buffer being read.
    pub(crate) name_at: usize,
    /// Where `value` starts in the buffer being read.
    pub(crate) value_at: usize,
    /// The 1-based line of the message the field starts on.
    pub(crate) line: usize,
}

/// Why a header line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// The input ended before the empty line that closes the head.
    Truncated,
    /// A line with no colon at all.
    NoColon { line: usize },
    /// A line whose name is empty or not a token, or a continuation line with nothing to continue.
    BadName { line: usize },
}

/// Reads header fields one at a time from the start of the header section.
///
/// After an error other than `Truncated` the reader has moved past the offending line (and its
/// continuations), so a lenient caller can keep going.
pub(crate) struct HeadReader<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    /// Whether the end of `buf` ends the last line and the head instead of truncating them.
    ends_at_eof: bool,
}

impl<'a> HeadReader<'a> {
    /// A reader of `buf` starting at `pos`, which is line number `line` of the message.
    pub(crate) fn new(buf: &'a [u8], pos: usize, line: usize) -> Self {
        HeadReader {
            buf,
            pos,
            line,
            ends_at_eof: false,
        }
    }

    /// Like [`HeadReader::new`], but for a buffer known to be the whole message (a datagram): the
    /// end of `buf` ends the last line and the head, so `Truncated` is never returned.
    pub(crate) fn to_end(buf: &'a [u8], pos: usize, line: usize) -> Self {
        HeadReader {
            ends_at_eof: true,
            ..HeadReader::new(buf, pos, line)
        }
    }

    /// The offset in `buf` just past what has been read; after `Ok(None)` that is where the body
    /// starts.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next field, or `Ok(None)` after the empty line that closes the head.
    pub(crate) fn next_header(&mut self) -> Result<Option<RawHeader<'a>>, HeadError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let line_no = self.line;
        // The empty line that ends the head.
        match rest {
            [b'\n', ..] => {
                self.pos += 1;
                return Ok(None);
            }
            [b'\r', b'\n', ..] => {
                self.pos += 2;
                return Ok(None);
            }
            [] | [b'\r'] if self.ends_at_eof => {
                self.pos = self.buf.len();
                return Ok(None);
            }
            [] | [b'\r'] => return Err(HeadError::Truncated),
            _ => {}
        }
        let lf = self.line_end(rest)?;
        let line = strip_cr(rest.get(..lf).unwrap_or_default());
        let line_start = self.pos;
        self.advance(lf);

        if line.first().copied().is_some_and(is_ws) {
            // A continuation line with no field before it to continue.
            self.skip_continuations()?;
            return Err(HeadError::BadName { line: line_no });
        }
        let name_len = line
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(line.len());
        let (name, after_name) = line.split_at_checked(name_len).unwrap_or_default();
        let after_ws = trim_start(after_name);
        let Some(value) = after_ws.strip_prefix(b":") else {
            self.skip_continuations()?;
            return Err(if find(line, b':').is_some() {
                HeadError::BadName { line: line_no }
            } else {
                HeadError::NoColon { line: line_no }
            });
        };
        if name.is_empty() {
            self.skip_continuations()?;
            return Err(HeadError::BadName { line: line_no });
        }
        let value_start = line_start + (line.len() - value.len());
        let mut value_end = line_start + line.len();
        let folded = self.skip_continuations()?.inspect(|&end| value_end = end);
        Ok(Some(RawHeader {
            name,
            value: self.buf.get(value_start..value_end).unwrap_or_default(),
            folded: folded.is_some(),
            name_at: line_start,
            value_at: value_start,
            line: line_no,
        }))
    }

    /// Consumes the continuation lines (those starting with SP or HT) that follow; returns where
    /// the content of the last one ends, if there was any.
    fn skip_continuations(&mut self) -> Result<Option<usize>, HeadError> {
        let mut end = None;
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            if !rest.first().copied().is_some_and(is_ws) {
                break;
            }
            let lf = self.line_end(rest)?;
            let line = strip_cr(rest.get(..lf).unwrap_or_default());
            end = Some(self.pos + line.len());
            self.advance(lf);
        }
        Ok(end)
    }

    /// Where the line at the start of `rest` ends: its LF, or (when the end of the buffer ends
    /// lines) the end of `rest`.
    fn line_end(&self, rest: &[u8]) -> Result<usize, HeadError> {
        match find(rest, b'\n') {
            Some(lf) => Ok(lf),
            None if self.ends_at_eof => Ok(rest.len()),
            None => Err(HeadError::Truncated),
        }
    }

    /// Moves past a line whose LF (or the end of the buffer) is `lf` bytes ahead.
    fn advance(&mut self, lf: usize) {
        self.pos = (self.pos + lf + 1).min(self.buf.len());
        self.line += 1;
    }
}

/// The non-empty pieces of a raw value: one per line, each trimmed of SP/HT and CR. A value that
/// was not folded yields itself, trimmed (or nothing if it is blank).
pub(crate) fn pieces(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b'\n')
        .map(|piece| trim(strip_cr(trim_end(piece))))
        .filter(|piece| !piece.is_empty())
}

/// A folded value with each line break and the white space around it replaced by one SP
/// (RFC 3261 §7.3.1), invalid UTF-8 replaced by U+FFFD.
pub(crate) fn unfold(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for piece in pieces(raw) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(piece));
    }
    out
}

/// The value of a Content-Length field: `1*DIGIT`, possibly folded onto its own line.
pub(crate) fn content_length(raw: &[u8]) -> Option<usize> {
    let mut parts = pieces(raw);
    let digits = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    super::lex::decimal(digits).and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field read back as (name, raw value, folded, line).
    type Field = (String, String, bool, usize);

    fn read_all(head: &[u8]) -> (Vec<Result<Field, HeadError>>, usize) {
        let mut r = HeadReader::new(head, 0, 2);
        let mut out = Vec::new();
        loop {
            match r.next_header() {
                Ok(Some(h)) => out.push(Ok((
                    String::from_utf8_lossy(h.name).into_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                    h.folded,
                    h.line,
                ))),
                Ok(None) => return (out, r.pos()),
                Err(HeadError::Truncated) => {
                    out.push(Err(HeadError::Truncated));
                    return (out, r.pos());
                }
                Err(e) => out.push(Err(e)),
            }
        }
    }

    #[test]
    fn folded_lines_join_their_field_and_lf_only_ends_are_accepted() {
        let (fields, end) = read_all(b"A: 1\r\nB :\r\n  2\n\t3\nC:4\n\nbody");
        assert_eq!(
            fields,
            vec![
                Ok(("A".into(), " 1".into(), false, 2)),
                Ok(("B".into(), "\r\n  2\n\t3".into(), true, 3)),
                Ok(("C".into(), "4".into(), false, 6)),
            ]
        );
        assert_eq!(end, 23);
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_and_skipped() {
        let (fields, _) =
            read_all(b" orphan\r\nno colon\r\n x\r\nbad name: 1\r\n: empty\r\nok: 1\r\n\r\n");
        assert_eq!(
            fields,
            vec![
                Err(HeadError::BadName { line: 2 }),
                Err(HeadError::NoColon { line: 3 }),
                Err(HeadError::BadName { line: 5 }),
                Err(HeadError::BadName { line: 6 }),
                Ok(("ok".into(), " 1".into(), false, 7)),
            ]
        );
    }

    #[test]
    fn a_head_without_its_empty_line_is_truncated() {
        for head in [&b"A: 1\r\n"[..], b"A: 1\r\n\r", b"A: 1", b"A: 1\r\n x", b""] {
            let (fields, _) = read_all(head);
            assert_eq!(fields.last(), Some(&Err(HeadError::Truncated)), "{head:?}");
        }
    }

    #[test]
    fn reading_to_the_end_ends_the_last_line_and_the_head_there() {
        let read = |head: &'static [u8]| {
            let mut r = HeadReader::to_end(head, 0, 2);
            let mut names = Vec::new();
            while let Some(h) = r.next_header().unwrap() {
                names.push((
                    String::from_utf8_lossy(h.name).into_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                ));
            }
            (names, r.pos())
        };
        let one = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert_eq!(read(b""), (vec![], 0));
        assert_eq!(read(b"A: 1"), (one("A", " 1"), 4));
        assert_eq!(read(b"A: 1\r\n"), (one("A", " 1"), 6));
        assert_eq!(read(b"A: 1\r\n\r"), (one("A", " 1"), 7));
        assert_eq!(read(b"A: 1\r\n x"), (one("A", " 1\r\n x"), 8));
        assert_eq!(read(b"A: 1\r\n\r\nbody"), (one("A", " 1"), 8));
    }

    #[test]
    fn unfold_joins_lines_with_one_space() {
        assert_eq!(unfold(b"\r\n sip:a ;\r\n  tag = 1"), "sip:a ; tag = 1");
        assert_eq!(unfold(b" 0009\r\n  INVITE"), "0009 INVITE");
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b" 150"), Some(150));
        assert_eq!(content_length(b"\r\n 150 "), Some(150));
        assert_eq!(content_length(b" -999"), None);
        assert_eq!(content_length(b" 1\r\n 50"), None);
        assert_eq!(content_length(b" "), None);
        assert_eq!(content_length(b" 99999999999999999999999"), None);
    }
}
