//! The lexical classes of RFC 3261 §25 that the rest of `sip` is built from: tokens, linear white
//! space, decimal numbers and line ends. Every helper works on borrowed bytes and never indexes.

/// `token` characters (RFC 3261 §25.1): what a method or a header name may be made of.
pub(crate) const fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// SP or HT, the white space that may surround separators and starts a folded line.
pub(crate) const fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `bytes` without SP/HT at either end.
pub(crate) fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_ws(*first) {
            break;
        }
        bytes = rest;
    }
    trim_end(bytes)
}

/// `bytes` without SP/HT at the end.
pub(crate) fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., last] = bytes {
        if !is_ws(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// `s` without SP/HT at either end (unlike `str::trim`, which also eats Unicode spaces).
pub(crate) fn trim_str(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A line without the CR of its CRLF, if it has one.
pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the first `needle` is in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// `1*DIGIT` as a number; `None` for anything else (a sign, a space, no digits) or an overflow.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0_u64, |n, &b| {
        let d = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Whether `s` starts with `prefix`, ignoring ASCII case.
pub(crate) fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_accepts_only_digits_and_rejects_overflow() {
        assert_eq!(decimal(b"0068"), Some(68));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b"+5"), None);
        assert_eq!(decimal(b"-999"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"1 2"), None);
    }

    #[test]
    fn trim_removes_only_space_and_tab() {
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b"\ra\r"), b"\ra\r");
    }
}
