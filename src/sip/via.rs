//! The Via header (RFC 3261 §20.42): checking that each `via-parm` is well formed, and taking the
//! topmost one apart so a response can echo it with `received` and `rport` (RFC 3581).

use super::lex::{is_token, is_ws};

/// The parts of one `via-parm`: `SIP / 2.0 / UDP host:port;params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaParm<'a> {
    pub(crate) protocol: &'a str,
    pub(crate) version: &'a str,
    pub(crate) transport: &'a str,
    /// The sent-by host; an IPv6 reference keeps its brackets.
    pub(crate) host: &'a str,
    pub(crate) port: Option<&'a str>,
}

/// A Via parameter: its name and, if it has one, its value.
pub(crate) type Param<'a> = (&'a str, Option<&'a str>);

/// Whether a Via header value is a comma-separated list of well-formed `via-parm`s: no empty
/// elements, no empty parameters (`;;`), no trailing garbage (RFC 4475 §3.1.2.1).
pub(crate) fn is_valid(value: &str) -> bool {
    let mut c = Cursor { s: value, pos: 0 };
    loop {
        if via_parm(&mut c, &mut |_| {}).is_none() {
            return false;
        }
        c.skip_ws();
        if c.at_end() {
            return true;
        }
        if !c.eat(b',') {
            return false;
        }
    }
}

/// The first `via-parm` of a Via value, calling `on_param` for each of its parameters in order,
/// and the text of the remaining elements after its comma (trimmed, empty if none).
pub(crate) fn first<'a>(
    value: &'a str,
    on_param: &mut dyn FnMut(Param<'a>),
) -> Option<(ViaParm<'a>, &'a str)> {
    let mut c = Cursor { s: value, pos: 0 };
    let parm = via_parm(&mut c, on_param)?;
    c.skip_ws();
    let rest = if c.eat(b',') { c.rest() } else { "" };
    Some((parm, super::lex::trim_str(rest)))
}

fn via_parm<'a>(c: &mut Cursor<'a>, on_param: &mut dyn FnMut(Param<'a>)) -> Option<ViaParm<'a>> {
    c.skip_ws();
    let protocol = c.token()?;
    c.separator(b'/')?;
    let version = c.token()?;
    c.separator(b'/')?;
    let transport = c.token()?;
    // sent-protocol LWS sent-by: the white space is required.
    if !c.peek().is_some_and(is_ws) {
        return None;
    }
    c.skip_ws();
    let host = if c.peek() == Some(b'[') {
        let start = c.pos;
        c.take_while(|b| b != b']' && !is_ws(b) && b != b';' && b != b',');
        if !c.eat(b']') {
            return None;
        }
        c.s.get(start..c.pos)?
    } else {
        c.take_while(is_token)
    };
    if host.is_empty() {
        return None;
    }
    c.skip_ws();
    let port = if c.eat(b':') {
        c.skip_ws();
        let port = c.take_while(|b| b.is_ascii_digit());
        if port.is_empty() || port.len() > 5 {
            return None;
        }
        Some(port)
    } else {
        None
    };
    loop {
        c.skip_ws();
        if !c.eat(b';') {
            break;
        }
        c.skip_ws();
        let name = c.token()?;
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            Some(c.param_value()?)
        } else {
            None
        };
        on_param((name, value));
    }
    Some(ViaParm {
        protocol,
        version,
        transport,
        host,
        port,
    })
}

/// A read position in a Via value. Every stop is at an ASCII byte or the end, so each slice it
/// hands out falls on character boundaries.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let rest = self.s.as_bytes().get(start..).unwrap_or_default();
        self.pos = start + rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn token(&mut self) -> Option<&'a str> {
        let token = self.take_while(is_token);
        (!token.is_empty()).then_some(token)
    }

    /// `SWS sep SWS`
    fn separator(&mut self, sep: u8) -> Option<()> {
        self.skip_ws();
        self.eat(sep).then_some(())?;
        self.skip_ws();
        Some(())
    }

    /// A `gen-value`: a token, a host (IPv4, IPv6 with or without brackets) or a quoted string.
    fn param_value(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if self.eat(b'"') {
            let mut escaped = false;
            loop {
                let b = self.peek()?;
                self.pos += 1;
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => break,
                    _ => {}
                }
            }
            return self.s.get(start..self.pos);
        }
        let value = self.take_while(|b| is_token(b) || matches!(b, b':' | b'[' | b']'));
        (!value.is_empty()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_rfc_4475_calls_valid() {
        for v in [
            "SIP/2.0/UDP 192.0.2.2;branch=390skdjuw",
            "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
            "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            "SIP/2.0/UDP iftgw.example.com",
            "SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport",
            "SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::2;x=\"q;,\"",
            "SIP/2.0/UDP host : 5060;branch=z9hG4bK1",
        ] {
            assert!(is_valid(v), "{v}");
        }
    }

    #[test]
    fn rejects_empty_elements_and_parameters() {
        for v in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP h;branch=1,",
            "SIP/2.0/UDP h;branch=",
            "SIP/2.0/UDPh",
            "SIP/2.0 h",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h;x=\"open",
            "SIP/2.0/UDP h junk",
            "",
        ] {
            assert!(!is_valid(v), "{v}");
        }
    }

    #[test]
    fn first_hands_out_parts_params_and_the_rest() {
        let mut params = Vec::new();
        let (parm, rest) = first(
            "SIP/2.0/UDP 192.168.99.99:5071;branch=z9hG4bK-8;rport , SIP/2.0/TCP b",
            &mut |p| params.push(p),
        )
        .unwrap();
        assert_eq!(
            parm,
            ViaParm {
                protocol: "SIP",
                version: "2.0",
                transport: "UDP",
                host: "192.168.99.99",
                port: Some("5071"),
            }
        );
        assert_eq!(params, vec![("branch", Some("z9hG4bK-8")), ("rport", None)]);
        assert_eq!(rest, "SIP/2.0/TCP b");
    }
}
