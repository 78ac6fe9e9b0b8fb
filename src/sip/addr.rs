//! Addresses: the `name-addr` / `addr-spec` of To, From and Contact (RFC 3261 §20.10), and the
//! user part of a `sip:`, `sips:` or `tel:` URI, which is the number an attacker dialled, with
//! its %-escapes decoded ([`unescape_user`]).

use std::borrow::Cow;

use super::lex::{find, find2, trim_str};

/// A To/From value split into its URI and the header parameters after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameAddr<'a> {
    /// The URI, without the angle brackets and the white space inside them.
    pub(crate) uri: &'a str,
    /// What follows the URI: `;tag=...` and other header parameters, untrimmed.
    pub(crate) params: &'a str,
}

/// Splits `"Display" <uri>;params`, `Display <uri>;params` or `uri;params`.
///
/// `None` when a quoted display name is never closed, a `<` has no `>`, a quoted display name is
/// not followed by `<uri>`, or the URI is empty. Display names with non-token characters and white
/// space inside the brackets are tolerated (RFC 4475 §3.1.2.14 and §3.1.2.15 allow that).
pub(crate) fn name_addr(value: &str) -> Option<NameAddr<'_>> {
    let bytes = value.as_bytes();
    let mut open = None;
    let mut saw_quote = false;
    let mut at = 0;
    // Jump from one `"` or `<` to the next; only quoted strings are walked byte by byte.
    while let Some(hit) = bytes.get(at..).and_then(|rest| find2(rest, b'"', b'<')) {
        let hit = at + hit;
        if bytes.get(hit) == Some(&b'<') {
            open = Some(hit);
            break;
        }
        saw_quote = true;
        at = hit + 1 + closing_quote(bytes.get(hit + 1..)?)? + 1;
    }
    let (uri, params) = match open {
        Some(lt) => {
            let inner = value.get(lt + 1..)?;
            let gt = find(inner.as_bytes(), b'>')?;
            (inner.get(..gt)?, inner.get(gt + 1..)?)
        }
        None if saw_quote => return None,
        None => value.split_at_checked(find(bytes, b';').unwrap_or(value.len()))?,
    };
    let uri = trim_str(uri);
    (!uri.is_empty()).then_some(NameAddr { uri, params })
}

/// Where the `"` closing a quoted string is, given what follows its opening `"`; a backslash
/// escapes the byte after it.
fn closing_quote(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let hit = at + find2(rest.get(at..)?, b'"', b'\\')?;
        if rest.get(hit) == Some(&b'"') {
            return Some(hit);
        }
        at = hit + 2;
    }
}

/// Whether header parameters (`;tag=abc;x`) include a `tag`.
pub(crate) fn has_tag(params: &str) -> bool {
    params.split(';').skip(1).any(|param| {
        let name = param.split('=').next().unwrap_or_default();
        trim_str(name).eq_ignore_ascii_case("tag")
    })
}

/// The user part of a `sip:`/`sips:` URI (without password and user parameters) or the number
/// of a `tel:` URI (without parameters); `None` for other schemes or when there is none. Escapes
/// are kept as sent.
pub(crate) fn uri_user(uri: &str) -> Option<&str> {
    let colon = find(uri.as_bytes(), b':')?;
    let scheme = uri.get(..colon)?;
    let rest = uri.get(colon + 1..)?;
    let end = if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        // `user` may contain ';' and '?', never an unescaped '@'; `password` never ';'.
        let at = find(rest.as_bytes(), b'@')?;
        let userinfo = rest.as_bytes().get(..at)?;
        find2(userinfo, b':', b';').unwrap_or(at)
    } else if scheme.eq_ignore_ascii_case("tel") {
        find2(rest.as_bytes(), b';', b'?').unwrap_or(rest.len())
    } else {
        return None;
    };
    rest.get(..end).filter(|user| !user.is_empty())
}

/// What an escape in a user part decodes to: the characters RFC 3261 §25.1 lets a user part carry
/// unescaped (`unreserved` and `user-unreserved`), and `#` of dial strings (`*97#`).
///
/// Every other escape is kept as sent: a control character (`%00` of RFC 4475's escnull.dat, a
/// line break) would be a dangerous value; a byte of 0x80 or above may be half a character or
/// not UTF-8 at all; and a space, `"`, `<`, `>`, `@`, `:` or `%` would turn the number into
/// something no user part looks like, which the peers refuse to carry. So a decoded user is
/// still a user part as RFC 3261 writes one, only in its plainest spelling.
fn decodes_to(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            // mark
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            // user-unreserved
            | b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/'
            // dial strings
            | b'#'
        )
}

/// The byte a `%HH` escape stands for, given what follows the `%`; `None` if the two bytes are
/// not both hexadecimal digits (a malformed escape, kept as sent).
fn escaped_byte(after_percent: &[u8]) -> Option<u8> {
    let [hi, lo, ..] = after_percent else {
        return None;
    };
    let digit = |b: u8| char::from(b).to_digit(16);
    // Two hexadecimal digits make at most 0xFF.
    u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()
}

/// A user part with its `%HH` escapes decoded where they stand for a plain character
/// (see [`decodes_to`]); a malformed escape (`%4`, `%ZZ`) and any other escape are kept as sent.
/// Borrows when there is no `%`, which is nearly always.
pub(crate) fn unescape_user(user: &str) -> Cow<'_, str> {
    let Some(first) = find(user.as_bytes(), b'%') else {
        return Cow::Borrowed(user);
    };
    let bytes = user.as_bytes();
    let mut out = Vec::with_capacity(user.len());
    out.extend_from_slice(bytes.get(..first).unwrap_or_default());
    let mut at = first;
    while let Some(rest) = bytes.get(at..).filter(|rest| !rest.is_empty()) {
        let Some(pct) = find(rest, b'%') else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..pct).unwrap_or_default());
        match rest.get(pct + 1..).and_then(escaped_byte) {
            Some(b) if decodes_to(b) => {
                out.push(b);
                at += pct + 3;
            }
            _ => {
                out.push(b'%');
                at += pct + 1;
            }
        }
    }
    // Only ASCII escapes were replaced by ASCII bytes, so `out` is as valid UTF-8 as `user`.
    String::from_utf8(out).map_or(Cow::Borrowed(user), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(value: &str) -> Option<(&str, &str)> {
        name_addr(value).map(|n| (n.uri, n.params))
    }

    #[test]
    fn name_addr_forms() {
        assert_eq!(na("<sip:a@b>"), Some(("sip:a@b", "")));
        assert_eq!(na("\"A <x>\" <sip:a@b>;tag=1"), Some(("sip:a@b", ";tag=1")));
        assert_eq!(na("900<sip:900@p.com>"), Some(("sip:900@p.com", "")));
        assert_eq!(na("sip:a@b ;  tag = 1"), Some(("sip:a@b", ";  tag = 1")));
        assert_eq!(na("\"J \\\\\\\"\" <sip:j@e>"), Some(("sip:j@e", "")));
        assert_eq!(na("\"W, T\" < sip:t@e >"), Some(("sip:t@e", "")));
        assert_eq!(na("W, T <sip:t@e>"), Some(("sip:t@e", "")));
        assert_eq!(na("isbn:2983792873"), Some(("isbn:2983792873", "")));
    }

    #[test]
    fn name_addr_rejects_unbalanced_quotes_and_brackets() {
        assert_eq!(na("\"Mr. J. User <sip:j.user@example.com>"), None);
        assert_eq!(na("<sip:a@b"), None);
        assert_eq!(na("\"A\" sip:a@b"), None);
        assert_eq!(na("<>"), None);
        assert_eq!(na(""), None);
        assert_eq!(na("\"\\"), None);
    }

    #[test]
    fn tag_detection() {
        assert!(has_tag(";tag=1"));
        assert!(has_tag(" ;   TAG    = 1918181833n"));
        assert!(!has_tag(";tagx=1;x=tag"));
        assert!(!has_tag(""));
    }

    #[test]
    fn uri_user_cuts_password_and_params_and_keeps_plus_and_escapes() {
        assert_eq!(
            uri_user("sip:14500163172166221:5060@1.2.3.4"),
            Some("14500163172166221")
        );
        assert_eq!(
            uri_user("sip:user;par=u%40example.net@example.com"),
            Some("user")
        );
        assert_eq!(uri_user("SIPS:+441@h"), Some("+441"));
        assert_eq!(
            uri_user("tel:+16505552222;phone-context=x"),
            Some("+16505552222")
        );
        assert_eq!(uri_user("sip:%75se%72@example.com"), Some("%75se%72"));
        assert_eq!(uri_user("sip:example.com"), None);
        assert_eq!(uri_user("sip:@example.com"), None);
        assert_eq!(uri_user("sip::pw@example.com"), None);
        assert_eq!(uri_user("http://www.example.com"), None);
        assert_eq!(uri_user("nocolon"), None);
    }

    #[test]
    fn escapes_of_plain_characters_decode_in_either_case() {
        assert_eq!(unescape_user("%2B442012345678"), "+442012345678");
        assert_eq!(unescape_user("%2b44"), "+44");
        assert_eq!(unescape_user("%75se%72"), "user");
        assert_eq!(unescape_user("%2A97%23"), "*97#");
        assert_eq!(unescape_user("a%26b%3Dc%3B%3F%2F%24%2C"), "a&b=c;?/$,");
        assert_eq!(unescape_user("%2D%5F%2E%21%7E%27%28%29"), "-_.!~'()");
    }

    #[test]
    fn malformed_escapes_are_kept_as_sent() {
        for kept in [
            "%4", "%", "1%", "%ZZ", "%G1", "%1G", "100%4", "%%", "%-1", "%+1",
        ] {
            assert_eq!(unescape_user(kept), kept, "{kept}");
        }
        // A malformed escape does not hide a good one after it.
        assert_eq!(unescape_user("%%2B1"), "%+1");
        assert_eq!(unescape_user("%4%2B"), "%4+");
    }

    #[test]
    fn escapes_of_control_bytes_and_non_ascii_bytes_are_kept_as_sent() {
        // RFC 4475 escnull.dat: a NUL must never reach the database or a log.
        assert_eq!(unescape_user("null-%00-null"), "null-%00-null");
        assert_eq!(unescape_user("%00%00"), "%00%00");
        for kept in ["%0D%0A", "%09", "%1B", "%7F"] {
            assert_eq!(unescape_user(kept), kept, "{kept}");
        }
        // UTF-8 or not, a byte of 0x80 and above stays escaped: no half characters.
        for kept in ["%C3%A9", "%C3", "%FF", "%80", "%E2%80%AE"] {
            assert_eq!(unescape_user(kept), kept, "{kept}");
        }
    }

    #[test]
    fn escapes_that_would_stop_it_looking_like_a_user_part_are_kept() {
        // RFC 4475 esc01.dat's Request-URI user.
        assert_eq!(
            unescape_user("sips%3Auser%40example.com"),
            "sips%3Auser%40example.com"
        );
        for kept in ["I%20have%20spaces", "%22", "%3C100%3E", "%25", "%2541"] {
            assert_eq!(unescape_user(kept), kept, "{kept}");
        }
    }

    #[test]
    fn a_user_without_escapes_is_borrowed_not_copied() {
        for user in ["900442037690000", "+4420", "admin", "é", ""] {
            assert!(matches!(unescape_user(user), Cow::Borrowed(u) if u == user));
        }
    }

    #[test]
    fn every_single_escape_decodes_to_a_plain_character_or_stays() {
        for b in 0..=255_u8 {
            for escape in [format!("%{b:02X}"), format!("%{b:02x}")] {
                let got = unescape_user(&escape);
                if decodes_to(b) {
                    assert_eq!(got, char::from(b).to_string(), "{escape}");
                    assert!(b.is_ascii_graphic(), "{escape}");
                } else {
                    assert_eq!(got, escape, "{escape}");
                }
            }
        }
    }
}
