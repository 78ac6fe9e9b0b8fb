//! HTTP Digest credentials in SIP (RFC 3261 §22, RFC 2617 and RFC 7616 with MD5): the
//! `Authorization` / `Proxy-Authorization` a client answers a challenge with, taken apart, and
//! the response a given password would give, so that a guess can be compared with a password we
//! expect attackers to try.
//!
//! Pure: parameters are borrowed from the request; nothing is bounded here beyond the message
//! itself, so callers cut what they keep.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

use super::Request;

/// Which header carried the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader {
    Authorization,
    ProxyAuthorization,
}

impl AuthHeader {
    /// The header's name, as RFC 3261 spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AuthHeader::Authorization => "Authorization",
            AuthHeader::ProxyAuthorization => "Proxy-Authorization",
        }
    }
}

/// The parameters of one Digest credential. Every field is as sent, with the quotes of a quoted
/// string removed (escapes left in place); absent parameters are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub header: AuthHeader,
    /// The scheme before the parameters: `Digest` for every client we know of.
    pub scheme: &'a str,
    pub username: Option<&'a str>,
    pub realm: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub response: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub nc: Option<&'a str>,
    pub cnonce: Option<&'a str>,
}

/// The credentials of `req`: its first `Authorization`, else its first `Proxy-Authorization`.
#[must_use]
pub fn credentials<'r>(req: &'r Request<'_>) -> Option<Credentials<'r>> {
    if let Some(value) = req.header("Authorization") {
        return Some(parse(AuthHeader::Authorization, value));
    }
    req.header("Proxy-Authorization")
        .map(|value| parse(AuthHeader::ProxyAuthorization, value))
}

/// Takes a credentials value apart: `Digest name=value, name="quoted, value", ...`. Unknown
/// parameters are skipped; a parameter given twice keeps its first value; an unterminated
/// quoted string runs to the end of the value.
#[must_use]
pub fn parse(header: AuthHeader, value: &str) -> Credentials<'_> {
    let value = value.trim_start();
    let (scheme, mut rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    };
    let mut c = Credentials {
        header,
        scheme,
        username: None,
        realm: None,
        nonce: None,
        uri: None,
        response: None,
        algorithm: None,
        qop: None,
        nc: None,
        cnonce: None,
    };
    loop {
        rest = rest.trim_start_matches(|ch: char| ch == ',' || ch.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let name_end = rest
            .find(|ch: char| ch == '=' || ch == ',' || ch.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_end);
        let after = after.trim_start();
        let Some(after) = after.strip_prefix('=') else {
            // A parameter without a value: skip it.
            rest = after;
            continue;
        };
        let after = after.trim_start();
        let (param, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = closing_quote(quoted);
            let param = quoted.get(..end).unwrap_or(quoted);
            (param, quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after
                .find(|ch: char| ch == ',' || ch.is_ascii_whitespace())
                .unwrap_or(after.len());
            after.split_at(end)
        };
        rest = next;
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut c.username,
            "realm" => &mut c.realm,
            "nonce" => &mut c.nonce,
            "uri" => &mut c.uri,
            "response" => &mut c.response,
            "algorithm" => &mut c.algorithm,
            "qop" => &mut c.qop,
            "nc" => &mut c.nc,
            "cnonce" => &mut c.cnonce,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(param);
        }
    }
    c
}

/// Where the `"` closing a quoted string is in `quoted` (what follows the opening quote); a
/// backslash escapes the character after it. The length of `quoted` when it is never closed.
fn closing_quote(quoted: &str) -> usize {
    let mut escaped = false;
    for (at, ch) in quoted.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return at,
            _ => {}
        }
    }
    quoted.len()
}

/// A quoted-string's content with its backslash escapes taken out (`a\"b` is `a"b`).
#[must_use]
pub fn unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for ch in value.chars() {
        if ch == '\\' && !escaped {
            escaped = true;
        } else {
            out.push(ch);
            escaped = false;
        }
    }
    out
}

impl Credentials<'_> {
    /// Whether these credentials are the MD5 digest of `password` for a request with `method`
    /// (see [`Credentials::matching_password`]).
    #[must_use]
    pub fn is_digest_of(&self, password: &str, method: &str) -> bool {
        self.matching_password(std::slice::from_ref(&password), method)
            .is_some()
    }

    /// The first of `passwords` whose MD5 digest these credentials are, for a request with
    /// `method` (RFC 2617 §3.2.2: `qop=auth` or no qop; `MD5` or no algorithm; and sipvicious'
    /// RFC 2069 answer labelled `qop=auth`). Anything else (`auth-int`, `MD5-sess`, SHA-256, a
    /// missing parameter) matches none. Two MD5s per password, one for them all.
    #[must_use]
    pub fn matching_password<'p, P: AsRef<str>>(
        &self,
        passwords: &'p [P],
        method: &str,
    ) -> Option<&'p P> {
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.response,
        ) else {
            return None;
        };
        if !self.scheme.eq_ignore_ascii_case("Digest")
            || self
                .algorithm
                .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
        {
            return None;
        }
        let qop = match self.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => match (self.nc, self.cnonce) {
                (Some(nc), Some(cnonce)) => Some((nc, cnonce)),
                // sipvicious writes `qop=auth` without nc and cnonce, having computed the
                // RFC 2069 form: the password is still told.
                (None, None) => None,
                _ => return None,
            },
            Some(_) => return None,
        };
        let (username, realm) = (unquote(username), unquote(realm));
        let ha2 = md5_hex(&[method, ":", uri]);
        passwords.iter().find(|password| {
            let ha1 = md5_hex(&[&username, ":", &realm, ":", password.as_ref()]);
            let expected = response_from(&ha1, nonce, qop, &ha2);
            expected.eq_ignore_ascii_case(response)
        })
    }
}

fn response_from(ha1: &str, nonce: &str, qop: Option<(&str, &str)>, ha2: &str) -> String {
    match qop {
        Some((nc, cnonce)) => md5_hex(&[ha1, ":", nonce, ":", nc, ":", cnonce, ":auth:", ha2]),
        None => md5_hex(&[ha1, ":", nonce, ":", ha2]),
    }
}

/// The Digest `response` (RFC 2617 §3.2.2.1) for MD5, in lower-case hex: `qop` is `None` for
/// the RFC 2069 form, or `(nc, cnonce)` for `qop=auth`.
#[must_use]
pub fn digest_response(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha1 = md5_hex(&[username, ":", realm, ":", password]);
    let ha2 = md5_hex(&[method, ":", uri]);
    response_from(&ha1, nonce, qop, &ha2)
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    let mut out = String::with_capacity(32);
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_response_is_reproduced() {
        // RFC 2617 §3.5.
        let got = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(got, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn sipvicious_credentials_are_taken_apart_and_checked() {
        // svcrack's form: unquoted algorithm, no qop.
        let nonce = "1a2b3c4d5e6f";
        let response = digest_response(
            "100",
            "asterisk",
            "secret",
            "REGISTER",
            "sip:127.0.0.1",
            nonce,
            None,
        );
        let value = format!(
            "Digest username=\"100\",realm=\"asterisk\",nonce=\"{nonce}\",uri=\"sip:127.0.0.1\",response=\"{response}\",algorithm=MD5"
        );
        let c = parse(AuthHeader::Authorization, &value);
        assert_eq!(c.scheme, "Digest");
        assert_eq!(c.username, Some("100"));
        assert_eq!(c.realm, Some("asterisk"));
        assert_eq!(c.uri, Some("sip:127.0.0.1"));
        assert_eq!(c.response, Some(response.as_str()));
        assert!(c.is_digest_of("secret", "REGISTER"));
        assert!(!c.is_digest_of("secret1", "REGISTER"));
        assert!(!c.is_digest_of("secret", "INVITE"));
        // sipvicious 0.3 labels that same answer qop=auth, without nc and cnonce.
        let labelled = value.replace(",algorithm=MD5", ",algorithm=MD5,qop=auth");
        assert!(parse(AuthHeader::Authorization, &labelled).is_digest_of("secret", "REGISTER"));
    }

    #[test]
    fn qop_auth_needs_nc_and_cnonce() {
        let response = digest_response(
            "bob",
            "r",
            "pw",
            "REGISTER",
            "sip:x",
            "n",
            Some(("00000001", "abc")),
        );
        let value = format!(
            "Digest username=\"bob\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"{response}\", qop=auth, nc=00000001, cnonce=\"abc\""
        );
        let c = parse(AuthHeader::ProxyAuthorization, &value);
        assert!(c.is_digest_of("pw", "REGISTER"));
        let without_cnonce = value.replace(", cnonce=\"abc\"", "");
        assert!(!parse(AuthHeader::Authorization, &without_cnonce).is_digest_of("pw", "REGISTER"));
        let sha = format!("{value}, algorithm=SHA-256");
        assert!(!parse(AuthHeader::Authorization, &sha).is_digest_of("pw", "REGISTER"));
    }

    #[test]
    fn hostile_values_never_panic_and_keep_what_they_can() {
        for value in [
            "",
            "Digest",
            "Digest ,,,",
            "Digest username",
            "Digest username=",
            "Digest username=\"unterminated",
            "Digest username=\"a\\\"b\", realm=x",
            "Digest =x, username==y",
            "Dígest usérname=\"ü\"",
        ] {
            let _ = parse(AuthHeader::Authorization, value).is_digest_of("x", "REGISTER");
        }
        let c = parse(AuthHeader::Authorization, "Digest username=\"unterminated");
        assert_eq!(c.username, Some("unterminated"));
        let c = parse(
            AuthHeader::Authorization,
            "Digest username=\"a\\\"b\", realm=x",
        );
        assert_eq!(c.username, Some("a\\\"b"));
        assert_eq!(unquote(c.username.unwrap()), "a\"b");
        assert_eq!(c.realm, Some("x"));
        let c = parse(
            AuthHeader::Authorization,
            "Digest username=first, username=second",
        );
        assert_eq!(c.username, Some("first"));
    }
}
