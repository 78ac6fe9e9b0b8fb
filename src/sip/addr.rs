//! Addresses: the `name-addr` / `addr-spec` of To, From and Contact (RFC 3261 §20.10), and the
//! user part of a `sip:`, `sips:` or `tel:` URI, which is the number an attacker dialled.

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
}
