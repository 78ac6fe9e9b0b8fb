//! The lexical classes of RFC 3261 §25 that the rest of `sip` is built from: tokens, linear white
//! space, decimal numbers and line ends. Every helper works on borrowed bytes and never indexes.

/// `token` characters (RFC 3261 §25.1): what a method or a header name may be made of.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN.get(usize::from(b)).copied().unwrap_or(false)
}

/// [`is_token`] as a table: one load per byte in the loops that scan names.
// Indexing here runs at compile time, where going out of bounds fails the build, not a request.
#[allow(clippy::indexing_slicing)]
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0_u8;
    while c < 128 {
        table[c as usize] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    table
};

/// SP or HT, the white space that may surround separators and starts a folded line.
#[inline]
pub(crate) const fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `bytes` without SP/HT at either end.
pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    trim_end(trim_start(bytes))
}

/// `bytes` without SP/HT at the start.
pub(crate) fn trim_start(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_ws(*first) {
            break;
        }
        bytes = rest;
    }
    bytes
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
    let from_start = trim_start(s.as_bytes());
    let start = s.len() - from_start.len();
    s.get(start..start + trim_end(from_start).len())
        .unwrap_or_default()
}

/// A line without the CR of its CRLF, if it has one.
pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the first `needle` is in `haystack`.
#[inline]
pub(crate) fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    find_where(
        haystack,
        |word| zero_byte(word ^ splat(needle)),
        |b| b == needle,
    )
}

/// Where the first `a` or `b` is in `haystack`.
#[inline]
pub(crate) fn find2(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    find_where(
        haystack,
        |word| zero_byte(word ^ splat(a)) | zero_byte(word ^ splat(b)),
        |c| c == a || c == b,
    )
}

/// Searches eight bytes at a time. SIP lines are short (30 to 80 bytes), too short for a SIMD
/// search to win back its setup, so a word at a time is the fastest safe way.
#[inline]
fn find_where(
    haystack: &[u8],
    word_hits: impl Fn(u64) -> u64,
    byte_hits: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
        let hits = word_hits(word);
        if hits != 0 {
            // Little-endian: the lowest marked byte is the first match.
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| byte_hits(b)).map(|i| offset + i)
}

/// `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each zero byte of `x` set. Bytes above the first zero byte may be marked
/// wrongly (a borrow runs into them), so only the lowest mark may be relied on.
const fn zero_byte(x: u64) -> u64 {
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn find_agrees_with_a_plain_search(
            hay in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(0x80_u8), any::<u8>()], 0..100),
            a in any::<u8>(),
            b in any::<u8>(),
        ) {
            prop_assert_eq!(find(&hay, a), hay.iter().position(|&c| c == a));
            prop_assert_eq!(find2(&hay, a, b), hay.iter().position(|&c| c == a || c == b));
        }
    }

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
    fn token_table_matches_the_grammar() {
        let token: Vec<u8> = (0..=255).filter(|&b| is_token(b)).collect();
        let mut expected: Vec<u8> =
            b"!%'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_`abcdefghijklmnopqrstuvwxyz~".to_vec();
        expected.sort_unstable();
        assert_eq!(token, expected);
    }

    #[test]
    fn find_agrees_with_a_plain_search_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut hay = vec![b'a'; len];
                if let Some(b) = hay.get_mut(at) {
                    *b = b'\n';
                }
                // A byte just above the needle's value, and 0x80s, tempt the word trick.
                if let Some(b) = hay.get_mut(at + 1) {
                    *b = 0x0b;
                }
                if let Some(b) = hay.get_mut(at.wrapping_sub(1)) {
                    *b = 0x80;
                }
                let plain = hay.iter().position(|&b| b == b'\n');
                assert_eq!(find(&hay, b'\n'), plain, "{hay:?}");
                let plain2 = hay.iter().position(|&b| b == b'\n' || b == 0x0b);
                assert_eq!(find2(&hay, 0x0b, b'\n'), plain2, "{hay:?}");
            }
        }
        assert_eq!(find(b"\x01\x00\x0a", 0x0a), Some(2));
        assert_eq!(find(&[0xff; 17], 0xff), Some(0));
        assert_eq!(find(&[0x00; 17], 0x01), None);
    }

    #[test]
    fn trim_removes_only_space_and_tab() {
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b"\ra\r"), b"\ra\r");
    }
}
