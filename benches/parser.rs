//! How fast `sip::parse` takes apart the probes a honeypot sees most: the three real-world
//! captures and a sipvicious-style OPTIONS. The target is a million messages a second on one
//! core, so that parsing is never what limits a node under a flood.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sentrypeer::sip::{self, frame::Framer};

const PPLSIP_INVITE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/realworld/pplsip_invite_ochi.sip"
));
const VOIP_REGISTER: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/realworld/voip_register_ochi.sip"
));
const SIPCLI_INVITE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/realworld/sipcli_invite_hepop.sip"
));
/// What `svmap` from sipvicious sends to find SIP servers.
const SIPVICIOUS_OPTIONS: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-2887472469;rport\r\n\
Max-Forwards: 70\r\n\
To: \"sipvicious\"<sip:100@1.1.1.1>\r\n\
From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6434396633623535313363340131363936343238353637\r\n\
User-Agent: friendly-scanner\r\n\
Call-ID: 1052281371898591813212291\r\n\
Contact: <sip:100@198.51.100.7:5060>\r\n\
CSeq: 1 OPTIONS\r\n\
Accept: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in [
        ("pplsip_invite", PPLSIP_INVITE),
        ("voip_register", VOIP_REGISTER),
        ("sipcli_invite", SIPCLI_INVITE),
        ("sipvicious_options", SIPVICIOUS_OPTIONS),
    ] {
        assert!(sip::parse(msg).is_ok(), "{name} must parse");
        group.bench_function(name, |b| {
            b.iter(|| {
                if let Ok(req) = sip::parse(black_box(msg)) {
                    // What a capture records of every probe.
                    black_box((req.called_number(), req.user_agent()));
                }
            })
        });
    }
    group.finish();
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sipcli_invite", |b| {
        b.iter(|| Framer::default().next(black_box(SIPCLI_INVITE)))
    });
    group.finish();
}

criterion_group!(benches, parse, frame);
criterion_main!(benches);
