//! A query's bytes → the answer's bytes, by RFC 1035, 2308 and 5782, with `hickory-proto` for
//! the wire format. Pure but for the [`Lookup`] it is handed (the store, or a table in tests):
//! every outcome is decided here, the sockets only carry bytes.
//!
//! - Not a query at all (shorter than a header, or a response): no answer, counted malformed.
//! - A header but no parseable message, or not exactly one question: FORMERR.
//! - An opcode other than QUERY: NOTIMP. EDNS newer than version 0: BADVERS.
//! - A name outside the zone, a class other than IN, a zone transfer: REFUSED.
//! - A listed name: `A 127.0.0.2`, `TXT` with last seen and count (both for ANY); other types
//!   NODATA. Not listed, or no such name: NXDOMAIN. Both negative answers carry the zone's SOA
//!   in the authority section (RFC 2308). The apex answers SOA and NS.
//! - The store failing: SERVFAIL.
//!
//! Over UDP an answer larger than the client accepts (512 bytes, or its EDNS size up to
//! [`MAX_UDP_PAYLOAD`]) is cut to the question with TC set, so the client retries over TCP.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::zone::{self, Target, Zone};
use super::{ANSWER_TTL, DnsblConfig, NEGATIVE_TTL};
use crate::actors::Kind;

/// The largest UDP answer sent, whatever a client's EDNS says: the size DNS flag day 2020
/// settled on, which no path fragments.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// A DNS header's length: shorter datagrams are not answered.
const HEADER_BYTES: usize = 12;

/// A listed actor as the answer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub last_seen_ms: i64,
    pub count: i64,
    /// When the listing ends (ms since the epoch), by the node's rule.
    pub until_ms: i64,
}

/// Where the answers come from: whether an actor is listed now, by the node's rule.
pub trait Lookup {
    fn listing(&self, kind: Kind, key: &str, now_ms: i64) -> Result<Option<Listing>, String>;
}

/// How a query was answered, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A listed name answered with data (A, TXT or ANY).
    Listed,
    /// NXDOMAIN: not listed, or no such name in the zone.
    NxDomain,
    /// NOERROR without answers (another type on a listed name, a name between), or the apex.
    NoData,
    /// Outside the zone, another class, a transfer, another opcode.
    Refused,
    /// Not DNS, or a malformed query: FORMERR, or dropped when there is no header to answer.
    Malformed,
    /// The store failed: SERVFAIL.
    Failed,
}

/// An answer to send (none for a datagram that is not a query) and how it went.
#[derive(Debug)]
pub struct Reply {
    pub bytes: Option<Vec<u8>>,
    pub outcome: Outcome,
    /// Why the store failed, for the log.
    pub error: Option<String>,
}

/// Which transport the query came on: UDP answers are bounded in size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The zone with the names its answers carry.
#[derive(Debug, Clone)]
pub struct Responder {
    zone: Zone,
    origin: Name,
    ns: Name,
    hostmaster: Name,
}

impl Responder {
    pub fn new(config: &DnsblConfig) -> Result<Responder, String> {
        let fqdn = |s: &str| Name::from_ascii(format!("{s}.")).map_err(|e| e.to_string());
        Ok(Responder {
            zone: Zone::new(&config.zone),
            origin: fqdn(&config.zone)?,
            ns: fqdn(&config.ns)?,
            hostmaster: fqdn(&format!("hostmaster.{}", config.zone))?,
        })
    }

    /// The answer to one message.
    pub fn answer(
        &self,
        query: &[u8],
        lookup: &dyn Lookup,
        now_ms: i64,
        transport: Transport,
    ) -> Reply {
        let reply = |bytes: Option<Vec<u8>>, outcome| Reply {
            bytes,
            outcome,
            error: None,
        };
        // Too short to answer, or a response (answering responses makes loops): silence.
        if query.len() < HEADER_BYTES || query[2] & 0x80 != 0 {
            return reply(None, Outcome::Malformed);
        }
        let Ok(request) = Message::from_vec(query) else {
            return reply(Some(form_error(query)), Outcome::Malformed);
        };
        let mut response = Message::new();
        let mut header = Header::response_from_request(request.header());
        header.set_message_type(MessageType::Response);
        response.set_header(header);
        response.add_queries(request.queries().iter().cloned());
        let limit = match (transport, request.extensions()) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
        };
        if let Some(edns) = request.extensions() {
            let mut ours = Edns::new();
            ours.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
            response.set_edns(ours);
            if edns.version() > 0 {
                response.set_response_code(ResponseCode::BADVERS);
                return reply(encode(&response, limit), Outcome::Malformed);
            }
        }
        if request.op_code() != OpCode::Query {
            response.set_response_code(ResponseCode::NotImp);
            return reply(encode(&response, limit), Outcome::Refused);
        }
        let [question] = request.queries() else {
            response.set_response_code(ResponseCode::FormErr);
            return reply(encode(&response, limit), Outcome::Malformed);
        };
        let qtype = question.query_type();
        let labels: Vec<&[u8]> = question.name().iter().collect();
        let target = match self.zone.target(&labels) {
            Some(t)
                if question.query_class() == DNSClass::IN
                    && !matches!(qtype, RecordType::AXFR | RecordType::IXFR) =>
            {
                t
            }
            _ => {
                response.set_response_code(ResponseCode::Refused);
                return reply(encode(&response, limit), Outcome::Refused);
            }
        };
        response.set_authoritative(true);
        let qname = question.name().clone();
        let (kind, key) = match target {
            Target::Apex => {
                let ns = || self.record(&self.origin, ANSWER_TTL, RData::NS(NS(self.ns.clone())));
                match qtype {
                    RecordType::SOA => {
                        response.add_answer(self.soa(now_ms));
                    }
                    RecordType::NS => {
                        response.add_answer(ns());
                    }
                    RecordType::ANY => {
                        response.add_answer(self.soa(now_ms));
                        response.add_answer(ns());
                    }
                    _ => {
                        response.add_name_server(self.soa(now_ms));
                    }
                }
                return reply(encode(&response, limit), Outcome::NoData);
            }
            Target::Between => {
                response.add_name_server(self.soa(now_ms));
                return reply(encode(&response, limit), Outcome::NoData);
            }
            Target::NoSuchName => return self.nxdomain(response, now_ms, limit),
            Target::Ip(IpAddr::V4(ip)) if ip == zone::TEST_NOT_LISTED => {
                return self.nxdomain(response, now_ms, limit);
            }
            Target::Ip(IpAddr::V4(ip)) if ip == zone::TEST_LISTED => {
                let text = zone::TEST_ENTRY_TEXT.to_string();
                return self.listed(response, &qname, ANSWER_TTL, text, qtype, now_ms, limit);
            }
            Target::Ip(ip) => (Kind::Ip, ip.to_string()),
            Target::Number(digits) => (Kind::Number, digits),
        };
        let found = match kind {
            Kind::Ip => lookup.listing(kind, &key, now_ms),
            // ENUM names carry no `+`: the number dialled either way is the same number.
            Kind::Number => lookup.listing(kind, &key, now_ms).and_then(|bare| {
                let plus = lookup.listing(kind, &format!("+{key}"), now_ms)?;
                Ok(merge(bare, plus))
            }),
        };
        match found {
            Ok(Some(l)) => {
                let left_s = (l.until_ms.saturating_sub(now_ms).saturating_add(999)) / 1000;
                let ttl = u32::try_from(left_s.clamp(1, i64::from(ANSWER_TTL))).unwrap_or(1);
                let text = zone::describe(kind, l.last_seen_ms, l.count);
                self.listed(response, &qname, ttl, text, qtype, now_ms, limit)
            }
            Ok(None) => self.nxdomain(response, now_ms, limit),
            Err(e) => {
                response.set_response_code(ResponseCode::ServFail);
                Reply {
                    bytes: encode(&response, limit),
                    outcome: Outcome::Failed,
                    error: Some(e),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn listed(
        &self,
        mut response: Message,
        qname: &Name,
        ttl: u32,
        text: String,
        qtype: RecordType,
        now_ms: i64,
        limit: usize,
    ) -> Reply {
        let a = || self.record(qname, ttl, RData::A(A(zone::TEST_LISTED)));
        let txt = |t: String| self.record(qname, ttl, RData::TXT(TXT::new(vec![t])));
        let outcome = match qtype {
            RecordType::A => {
                response.add_answer(a());
                Outcome::Listed
            }
            RecordType::TXT => {
                response.add_answer(txt(text));
                Outcome::Listed
            }
            RecordType::ANY => {
                response.add_answer(a());
                response.add_answer(txt(text));
                Outcome::Listed
            }
            _ => {
                response.add_name_server(self.soa(now_ms));
                Outcome::NoData
            }
        };
        Reply {
            bytes: encode(&response, limit),
            outcome,
            error: None,
        }
    }

    fn nxdomain(&self, mut response: Message, now_ms: i64, limit: usize) -> Reply {
        response.set_response_code(ResponseCode::NXDomain);
        response.add_name_server(self.soa(now_ms));
        Reply {
            bytes: encode(&response, limit),
            outcome: Outcome::NxDomain,
            error: None,
        }
    }

    fn record(&self, name: &Name, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name.clone(), ttl, data)
    }

    /// The zone's SOA: the serial is the time in seconds (the zone changes all the time and
    /// has no secondaries to tell); refresh, retry and expire are conventional; the minimum,
    /// and the record's TTL, are the negative-caching time.
    fn soa(&self, now_ms: i64) -> Record {
        let serial = u32::try_from((now_ms / 1000).rem_euclid(1 << 32)).unwrap_or(0);
        let soa = SOA::new(
            self.ns.clone(),
            self.hostmaster.clone(),
            serial,
            3600,
            600,
            86_400,
            NEGATIVE_TTL,
        );
        self.record(&self.origin, NEGATIVE_TTL, RData::SOA(soa))
    }
}

/// A number listed as dialled without `+`, with it, or both (then: the later sighting and
/// expiry, the counts added).
fn merge(a: Option<Listing>, b: Option<Listing>) -> Option<Listing> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Listing {
            last_seen_ms: a.last_seen_ms.max(b.last_seen_ms),
            count: a.count.saturating_add(b.count),
            until_ms: a.until_ms.max(b.until_ms),
        }),
        (a, b) => a.or(b),
    }
}

/// The message's bytes; over the limit, the question alone with TC set.
fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let cut = message.truncate().to_vec().ok()?;
    (cut.len() <= limit).then_some(cut)
}

/// FORMERR for a message whose header could be read but not the rest: the header alone, with
/// the query's id, opcode and RD.
fn form_error(query: &[u8]) -> Vec<u8> {
    let mut h = [0u8; HEADER_BYTES];
    h[..2].copy_from_slice(&query[..2]);
    h[2] = 0x80 | (query[2] & 0x79); // QR, the opcode and RD
    h[3] = ResponseCode::FormErr.low();
    h.to_vec()
}

/// `127.0.0.2`, the answer RFC 5782 gives a listed name; for tests and tools.
pub const LISTED_ADDRESS: Ipv4Addr = zone::TEST_LISTED;

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::collections::HashMap;

    const NOW: i64 = 1_796_032_800_000; // 2026-11-30T10:00:00Z

    #[derive(Default)]
    struct Table(HashMap<String, Listing>, bool);

    impl Lookup for Table {
        fn listing(&self, _: Kind, key: &str, now_ms: i64) -> Result<Option<Listing>, String> {
            if self.1 {
                return Err("disk on fire".into());
            }
            Ok(self.0.get(key).copied().filter(|l| l.until_ms > now_ms))
        }
    }

    fn table() -> Table {
        let l = |count| Listing {
            last_seen_ms: NOW - 5_000,
            count,
            until_ms: NOW + 3_600_000,
        };
        let mut t = Table::default();
        t.0.insert("1.2.3.4".into(), l(14));
        t.0.insert("2001:db8::7".into(), l(3));
        t.0.insert("442012345678".into(), l(2));
        t.0.insert("+442012345678".into(), l(5));
        t.0.insert("+15551234".into(), l(1));
        t.0.insert(
            "5.6.7.8".into(),
            Listing {
                until_ms: NOW + 2_500,
                ..l(1)
            },
        );
        t
    }

    fn responder() -> Responder {
        Responder::new(&DnsblConfig {
            listen: vec![],
            zone: "bl.example".into(),
            ns: "ns1.example.net".into(),
        })
        .unwrap()
    }

    fn ask_with(name: &str, qtype: RecordType, edit: impl FnOnce(&mut Message)) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        edit(&mut m);
        let r = responder().answer(&m.to_vec().unwrap(), &table(), NOW, Transport::Udp);
        let bytes = r.bytes.expect("an answer");
        assert!(bytes.len() <= 512);
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!(answer.id(), 4242);
        assert_eq!(answer.message_type(), MessageType::Response);
        assert!(answer.recursion_desired() && !answer.recursion_available());
        answer
    }

    fn ask(name: &str, qtype: RecordType) -> Message {
        ask_with(name, qtype, |_| {})
    }

    fn a_of(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn txt_of(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    fn negative(m: &Message, code: ResponseCode) {
        assert_eq!(m.response_code(), code);
        assert!(m.answers().is_empty());
        assert!(m.authoritative());
        let soa = &m.name_servers()[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name().to_ascii(), "bl.example.");
        assert_eq!(soa.ttl(), NEGATIVE_TTL);
        let RData::SOA(s) = soa.data() else { panic!() };
        assert_eq!(s.minimum(), NEGATIVE_TTL);
        assert_eq!(s.mname().to_ascii(), "ns1.example.net.");
    }

    #[test]
    fn dnsbl_a_listed_address_is_127_0_0_2_with_a_text() {
        let m = ask("4.3.2.1.bl.example.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(a_of(&m), [Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(m.answers()[0].ttl(), ANSWER_TTL);
        assert_eq!(m.answers()[0].name().to_ascii(), "4.3.2.1.bl.example.");
        let m = ask("4.3.2.1.BL.example.", RecordType::TXT);
        assert_eq!(
            txt_of(&m),
            ["SIP bad actor: last seen 2026-11-30T09:59:55Z, seen 14 times"]
        );
        let m = ask("4.3.2.1.bl.example.", RecordType::ANY);
        assert_eq!(m.answers().len(), 2);
        // Another type on a listed name: no data, with the SOA.
        negative(
            &ask("4.3.2.1.bl.example.", RecordType::AAAA),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn dnsbl_a_listing_ending_soon_is_cached_only_that_long() {
        let m = ask("8.7.6.5.bl.example.", RecordType::A);
        assert_eq!(m.answers()[0].ttl(), 3);
    }

    #[test]
    fn dnsbl_not_listed_is_nxdomain_with_the_soa() {
        negative(
            &ask("5.3.2.1.bl.example.", RecordType::A),
            ResponseCode::NXDomain,
        );
        negative(
            &ask("www.bl.example.", RecordType::A),
            ResponseCode::NXDomain,
        );
        negative(
            &ask("3.2.1.bl.example.", RecordType::A),
            ResponseCode::NoError,
        );
        negative(
            &ask("numbers.bl.example.", RecordType::A),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn dnsbl_rfc_5782_test_entries() {
        let m = ask("2.0.0.127.bl.example.", RecordType::A);
        assert_eq!(a_of(&m), [Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(
            txt_of(&ask("2.0.0.127.bl.example.", RecordType::TXT)),
            [zone::TEST_ENTRY_TEXT]
        );
        negative(
            &ask("1.0.0.127.bl.example.", RecordType::A),
            ResponseCode::NXDomain,
        );
        let mapped = zone::reversed("::ffff:127.0.0.2".parse().unwrap(), "bl.example.");
        assert_eq!(a_of(&ask(&mapped, RecordType::A)), [LISTED_ADDRESS]);
        let mapped = zone::reversed("::ffff:127.0.0.1".parse().unwrap(), "bl.example.");
        negative(&ask(&mapped, RecordType::A), ResponseCode::NXDomain);
    }

    #[test]
    fn dnsbl_ipv6_nibbles_and_numbers() {
        let name = zone::reversed("2001:db8::7".parse().unwrap(), "bl.example.");
        assert_eq!(a_of(&ask(&name, RecordType::A)), [LISTED_ADDRESS]);
        // Dialled with and without `+`: one number, counts added.
        let m = ask(
            "8.7.6.5.4.3.2.1.0.2.4.4.numbers.bl.example.",
            RecordType::TXT,
        );
        assert_eq!(
            txt_of(&m),
            ["Number dialled by SIP bad actors: last seen 2026-11-30T09:59:55Z, seen 7 times"]
        );
        // Listed only with `+`.
        let m = ask("4.3.2.1.5.5.5.1.numbers.bl.example.", RecordType::A);
        assert_eq!(a_of(&m), [LISTED_ADDRESS]);
        negative(
            &ask("9.3.2.1.5.5.5.1.numbers.bl.example.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn dnsbl_the_apex_answers_soa_and_ns() {
        let m = ask("bl.example.", RecordType::SOA);
        assert_eq!(m.answers()[0].record_type(), RecordType::SOA);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let m = ask("BL.EXAMPLE.", RecordType::NS);
        let RData::NS(ns) = m.answers()[0].data() else {
            panic!()
        };
        assert_eq!(ns.0.to_ascii(), "ns1.example.net.");
        negative(&ask("bl.example.", RecordType::A), ResponseCode::NoError);
    }

    #[test]
    fn dnsbl_outside_the_zone_other_classes_and_transfers_are_refused() {
        for (name, qtype) in [
            ("4.3.2.1.other.example.", RecordType::A),
            ("example.", RecordType::SOA),
            ("bl.example.", RecordType::AXFR),
        ] {
            let m = ask(name, qtype);
            assert_eq!(m.response_code(), ResponseCode::Refused, "{name}");
            assert!(m.answers().is_empty() && !m.authoritative());
        }
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            m.queries_mut()[0].set_query_class(DNSClass::CH);
        });
        assert_eq!(m.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn dnsbl_opcodes_question_counts_and_edns_versions() {
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            m.set_op_code(OpCode::Status);
        });
        assert_eq!(m.response_code(), ResponseCode::NotImp);
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            m.add_query(Query::query(
                Name::from_ascii("5.3.2.1.bl.example.").unwrap(),
                RecordType::A,
            ));
        });
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            m.queries_mut().clear();
        });
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        });
        assert_eq!(
            m.extensions().as_ref().unwrap().max_payload(),
            MAX_UDP_PAYLOAD
        );
        assert_eq!(a_of(&m), [LISTED_ADDRESS]);
        let m = ask_with("4.3.2.1.bl.example.", RecordType::A, |m| {
            let mut e = Edns::new();
            e.set_version(1);
            m.set_edns(e);
        });
        // 16 reads back as BADSIG, its other name.
        assert_eq!(u16::from(m.response_code()), 16);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn dnsbl_garbage_is_formerr_or_silence_and_store_errors_are_servfail() {
        let r = responder();
        let t = table();
        for short in [&b""[..], b"\x12", b"0123456789a"] {
            let out = r.answer(short, &t, NOW, Transport::Udp);
            assert!(out.bytes.is_none() && out.outcome == Outcome::Malformed);
        }
        // A response is never answered.
        let mut resp = [0u8; 12];
        resp[2] = 0x80;
        assert!(r.answer(&resp, &t, NOW, Transport::Udp).bytes.is_none());
        // A header that promises a question and has none.
        let bad = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07";
        let out = r.answer(bad, &t, NOW, Transport::Udp);
        assert_eq!(out.outcome, Outcome::Malformed);
        let m = Message::from_vec(&out.bytes.unwrap()).unwrap();
        assert_eq!(
            (m.id(), m.response_code(), m.recursion_desired()),
            (0xabcd, ResponseCode::FormErr, true)
        );

        let mut q = Message::new();
        q.add_query(Query::query(
            Name::from_ascii("4.3.2.1.bl.example.").unwrap(),
            RecordType::A,
        ));
        let failing = Table(HashMap::new(), true);
        let out = r.answer(&q.to_vec().unwrap(), &failing, NOW, Transport::Tcp);
        assert_eq!(out.outcome, Outcome::Failed);
        assert!(out.error.unwrap().contains("fire"));
        let m = Message::from_vec(&out.bytes.unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }

    #[test]
    fn dnsbl_an_answer_too_big_for_udp_is_truncated() {
        let mut m = Message::new();
        m.add_query(Query::query(
            Name::from_ascii("4.3.2.1.bl.example.").unwrap(),
            RecordType::A,
        ));
        for _ in 0..40 {
            m.add_answer(Record::from_rdata(
                Name::from_ascii("4.3.2.1.bl.example.").unwrap(),
                60,
                RData::TXT(TXT::new(vec!["x".repeat(100)])),
            ));
        }
        let cut = Message::from_vec(&encode(&m, 512).unwrap()).unwrap();
        assert!(cut.truncated() && cut.answers().is_empty());
        assert_eq!(cut.queries().len(), 1);
        assert!(encode(&m, 65_535).unwrap().len() > 512);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Any bytes: an answer or silence, never a panic; an answer is a parseable response
        /// with the query's id, within the UDP limit.
        #[test]
        fn dnsbl_any_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let r = responder();
            let out = r.answer(&bytes, &table(), NOW, Transport::Udp);
            if let Some(b) = out.bytes {
                proptest::prop_assert!(b.len() <= usize::from(MAX_UDP_PAYLOAD));
                proptest::prop_assert_eq!(&b[..2], &bytes[..2]);
                proptest::prop_assert!(b[2] & 0x80 != 0);
            }
        }

        /// Well-formed queries for names made of random labels under the zone: always a
        /// parseable answer.
        #[test]
        fn dnsbl_random_names_in_the_zone_get_an_answer(labels in proptest::collection::vec("[0-9a-fA-F]{1,3}|numbers|[a-z+-]{1,8}", 0..36), qtype in 0u16..300) {
            let name = format!("{}bl.example.", labels.iter().map(|l| format!("{l}.")).collect::<String>());
            let Ok(name) = Name::from_ascii(&name) else { return Ok(()) };
            let mut q = Message::new();
            q.add_query(Query::query(name, RecordType::from(qtype)));
            let out = responder().answer(&q.to_vec().unwrap(), &table(), NOW, Transport::Udp);
            let m = Message::from_vec(&out.bytes.unwrap()).unwrap();
            proptest::prop_assert!(m.message_type() == MessageType::Response);
        }
    }
}
