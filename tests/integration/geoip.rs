//! `--geoip-db`: countries and autonomous systems from MaxMind-format databases. The test
//! builds its own small `.mmdb` files (the format is documented at
//! <https://maxmind.github.io/MaxMind-DB/>): a country database and an ASN database covering
//! loopback addresses.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;

use crate::harness::*;

/// A value in the database's data section.
enum Val<'a> {
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'a str, Val<'a>)>),
    Array(Vec<Val<'a>>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    // Sizes up to 28 fit the control byte; up to 284 take one more byte (size - 29).
    assert!(size < 285, "short values only");
    let (low, extra) = if size < 29 {
        (size as u8, None)
    } else {
        (29, Some((size - 29) as u8))
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        // Extended types: type 0 in the control byte, then the type less 7.
        out.push(low);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn encode(out: &mut Vec<u8>, v: &Val<'_>) {
    let uint = |out: &mut Vec<u8>, kind: u8, n: u64| {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        control(out, kind, 8 - skip);
        out.extend_from_slice(&bytes[skip..]);
    };
    match v {
        Val::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Val::U16(n) => uint(out, 5, u64::from(*n)),
        Val::U32(n) => uint(out, 6, u64::from(*n)),
        Val::U64(n) => uint(out, 9, *n),
        Val::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Val::Str(k));
                encode(out, v);
            }
        }
        Val::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

/// A record of the search tree: another node, nothing, or data at an offset.
#[derive(Clone, Copy)]
enum Rec {
    Node(usize),
    Empty,
    Data(usize),
}

/// An IPv6 database (IPv4 under `::/96`) with 24-bit records mapping each IPv4 network to a
/// record.
fn mmdb(database_type: &str, networks: &[(Ipv4Addr, u8, Val<'_>)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, len, value) in networks {
        let offset = data.len();
        encode(&mut data, value);
        let addr = u128::from(net.to_ipv6_compatible());
        let bits = 96 + usize::from(*len);
        let mut node = 0;
        for i in 0..bits {
            let bit = ((addr >> (127 - i)) & 1) as usize;
            if i + 1 == bits {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Rec::Node(n) => n,
                Rec::Empty => count,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    encode(
        &mut out,
        &Val::Map(vec![
            ("binary_format_major_version", Val::U16(2)),
            ("binary_format_minor_version", Val::U16(0)),
            ("build_epoch", Val::U64(1_800_000_000)),
            ("database_type", Val::Str(database_type)),
            ("description", Val::Map(vec![("en", Val::Str("test"))])),
            ("ip_version", Val::U16(6)),
            ("languages", Val::Array(vec![Val::Str("en")])),
            ("node_count", Val::U32(count as u32)),
            ("record_size", Val::U16(24)),
        ]),
    );
    out
}

fn country(code: &str) -> Val<'_> {
    Val::Map(vec![(
        "country",
        Val::Map(vec![("iso_code", Val::Str(code))]),
    )])
}

fn write_databases(dir: &Path) -> (String, String) {
    let countries = mmdb(
        "DBIP-Country-Lite",
        &[
            (Ipv4Addr::new(127, 0, 0, 0), 24, country("GB")),
            (Ipv4Addr::new(127, 0, 1, 0), 24, country("FR")),
        ],
    );
    let asns = mmdb(
        "DBIP-ASN-Lite (compat=GeoLite2-ASN)",
        &[(
            Ipv4Addr::new(127, 0, 0, 0),
            16,
            Val::Map(vec![
                ("autonomous_system_number", Val::U32(64500)),
                (
                    "autonomous_system_organization",
                    Val::Str("Example <b>Net</b>"),
                ),
            ]),
        )],
    );
    let c = dir.join("country.mmdb");
    let a = dir.join("asn.mmdb");
    std::fs::write(&c, countries).unwrap();
    std::fs::write(&a, asns).unwrap();
    (c.display().to_string(), a.display().to_string())
}

#[test]
fn countries_and_autonomous_systems_come_from_the_geoip_databases() {
    let dir = tempfile::tempdir().unwrap();
    let (c, a) = write_databases(dir.path());
    let node = Node::start(&["--geoip-db", &c, "--geoip-db", &a]);
    for n in 0..3 {
        node.send_udp(&options("100", "gb", n));
    }
    let from_fr = UdpSocket::bind("127.0.1.9:0").unwrap();
    from_fr
        .send_to(&options("100", "fr", 9), node.udp[0])
        .unwrap();
    node.wait_rows(4);

    let v = node.get("/countries?window=1h").json();
    assert_eq!(v["geoip"], true);
    assert_eq!(v["countries_total"], 2);
    assert_eq!(v["countries"][0]["country"], "GB");
    assert_eq!(v["countries"][0]["seen_count"], 3);
    assert_eq!(v["countries"][1]["country"], "FR");
    assert_eq!(node.get("/countries/fr").json()["seen_count"], 1);

    let n = node.get("/networks?window=1h").json();
    assert_eq!(n["geoip_asn"], true);
    assert_eq!(
        n["autonomous_systems"][0]["autonomous_system"],
        "AS64500 Example <b>Net</b>"
    );
    assert_eq!(n["autonomous_systems"][0]["seen_count"], 4);
    assert_eq!(n["networks_total"], 2);
}

#[test]
fn an_unreadable_or_foreign_geoip_database_is_exit_2_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    let (c, _) = write_databases(dir.path());
    for args in [
        vec!["--geoip-db".to_string(), junk.display().to_string()],
        vec![
            "--geoip-db".into(),
            dir.path().join("missing.mmdb").display().to_string(),
        ],
        vec![
            "--geoip-db".into(),
            c.clone(),
            "--geoip-db".into(),
            c.clone(),
        ],
    ] {
        let out = std::process::Command::new(bin())
            .args(&args)
            .args(["-f", &dir.path().join("t.db").display().to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--geoip-db"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
