//! Probes over UDP, TCP and TLS are recorded with the contract's fields, everywhere.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

#[test]
fn a_captured_invite_over_udp_is_recorded_byte_for_byte_with_its_number_and_agent() {
    let node = Node::start(&["-j"]);
    let msg = testdata("realworld/pplsip_invite_ochi.sip");
    let sender = node.send_udp(&msg);
    node.wait_rows(1);
    let db = node.db();
    let row: (String, String, String, String, String, String, Vec<u8>, String) = db
        .query_row(
            "SELECT source_ip, method, called_number, user_agent, transport_type, collected_method, CAST(sip_message AS BLOB), created_by_node_id FROM honey",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .unwrap();
    assert_eq!(row.0, "127.0.0.1");
    assert_eq!(row.1, "INVITE");
    assert_eq!(row.2, "14500972598112101");
    assert_eq!(row.3, "pplsip");
    assert_eq!(row.4, "UDP");
    assert_eq!(row.5, "passive");
    assert_eq!(row.6, msg, "the message is stored exactly as received");
    assert_eq!(row.7, node.health()["node_id"].as_str().unwrap());

    // The JSON log line, as T-Pot reads it.
    let path = node.path("sentrypeer_json.log");
    assert!(poll(DEFAULT_WAIT, || std::fs::read_to_string(&path)
        .map(|s| s.lines().count() == 1)
        .unwrap_or(false)));
    let line = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let local_port = sender.local_addr().unwrap().port();
    assert_eq!(v["source_ip"], format!("127.0.0.1:{local_port}"));
    assert_eq!(v["destination_ip"], node.udp[0].to_string());
    assert_eq!(v["sip_method"], "INVITE");
    assert_eq!(v["sip_user_agent"], "pplsip");
    assert_eq!(v["called_number"], "14500972598112101");
    assert_eq!(v["transport_type"], "UDP");
    assert_eq!(v["app_name"], "sentrypeer");
    assert_eq!(v["sip_message"].as_str().unwrap().as_bytes(), &msg[..]);
    let ts = v["event_timestamp"].as_str().unwrap();
    // yyyy-MM-dd HH:mm:ss.SSSSSSSSS
    assert_eq!(ts.len(), 29, "{ts}");
    assert!(
        ts.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == ' ',
            13 | 16 => c == ':',
            19 => c == '.',
            _ => c.is_ascii_digit(),
        }),
        "{ts}"
    );
    uuid_v4(v["event_uuid"].as_str().unwrap());
}

fn uuid_v4(s: &str) {
    assert_eq!(s.len(), 36, "{s}");
    assert_eq!(s.as_bytes()[14], b'4', "{s}");
}

#[test]
fn a_tcp_connection_carries_several_messages_split_anywhere_and_keepalives() {
    let node = Node::start(&[]);
    let a = testdata("realworld/voip_register_ochi.sip");
    let b = testdata("realworld/sipcli_invite_hepop.sip");
    let mut stream_bytes = b"\r\n\r\n".to_vec();
    stream_bytes.extend_from_slice(&a);
    stream_bytes.extend_from_slice(b"\r\n\r\n");
    stream_bytes.extend_from_slice(&b);
    let mut s = TcpStream::connect(node.tcp[0]).unwrap();
    for chunk in stream_bytes.chunks(37) {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
    }
    node.wait_rows(2);
    let db = node.db();
    let mut stmt = db
        .prepare(
            "SELECT method, called_number, user_agent, transport_type FROM honey ORDER BY honey_id",
        )
        .unwrap();
    let rows: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows[0],
        ("REGISTER".into(), "100".into(), "VOIP".into(), "TCP".into())
    );
    assert_eq!(
        rows[1],
        (
            "INVITE".into(),
            "900442037690000".into(),
            "sipcli/v1.8".into(),
            "TCP".into()
        )
    );
}

#[test]
fn tls_probes_are_recorded_with_a_generated_certificate() {
    let node = Node::start(&[]);
    let cert_pem =
        std::fs::read(node.path("cert.pem")).expect("cert.pem generated in the working directory");
    assert!(node.path("key.pem").exists());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(node.tls[0]).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&options("2001", "tls-scanner", 7)).unwrap();
    tls.flush().unwrap();
    node.wait_rows(1);
    let (t, ua): (String, String) = node
        .db()
        .query_row("SELECT transport_type, user_agent FROM honey", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((t.as_str(), ua.as_str()), ("TLS", "tls-scanner"));
}

#[test]
fn responsive_mode_answers_an_options_probe_in_its_transaction() {
    let node = Node::start(&["-r", "--server-header", "FPBX-test"]);
    let s = node.send_udp(&options("100", "friendly-scanner", 42));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    let port = s.local_addr().unwrap().port();
    assert!(reply.contains("branch=z9hG4bK-42"), "{reply}");
    assert!(reply.contains(&format!("rport={port}")), "{reply}");
    assert!(reply.contains("Call-ID: 42-call"), "{reply}");
    assert!(reply.contains("CSeq: 1 OPTIONS"), "{reply}");
    assert!(reply.contains("Server: FPBX-test"), "{reply}");
    assert!(
        reply
            .lines()
            .any(|l| l.starts_with("To:") && l.contains(";tag=")),
        "{reply}"
    );
    node.wait_rows(1);
    let m: String = node
        .db()
        .query_row("SELECT collected_method FROM honey", [], |r| r.get(0))
        .unwrap();
    assert_eq!(m, "responsive");
}

#[test]
fn passive_mode_never_answers() {
    let node = Node::start(&[]);
    let s = node.send_udp(&options("100", "friendly-scanner", 1));
    node.wait_rows(1);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(s.recv(&mut buf).is_err(), "a passive node sent something");
}

#[test]
fn the_node_id_survives_a_restart() {
    let mut node = Node::start(&[]);
    let id = node.health()["node_id"].as_str().unwrap().to_string();
    assert!(node.signal("TERM").success());
    let again = Node::start_with(NodeOptions {
        dir: Some(std::mem::replace(
            &mut node.dir,
            tempfile::tempdir().unwrap(),
        )),
        ..Default::default()
    });
    assert_eq!(again.health()["node_id"].as_str().unwrap(), id);
}

#[test]
fn verbose_mode_prints_one_line_per_event() {
    let node = Node::start(&["-v"]);
    node.send_udp(&options("3333", "line-agent", 5));
    assert!(
        poll(DEFAULT_WAIT, || node.log_text().contains("stdout:")
            && node.log_text().contains("line-agent")),
        "{}",
        node.log_text()
    );
}

#[test]
fn on_a_wildcard_address_the_destination_is_the_real_local_address() {
    let node = Node::start_with(NodeOptions {
        args: [
            "--udp-listen",
            "0.0.0.0:0",
            "--udp-listen",
            "[::]:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "-N",
            "--api-listen",
            "127.0.0.1:0",
            "-f",
            "sentrypeer.db",
            "-j",
        ]
        .map(String::from)
        .to_vec(),
        loopback_defaults: false,
        ..Default::default()
    });
    let v4_port = node.udp.iter().find(|a| a.is_ipv4()).unwrap().port();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(&options("100", "v4", 1), ("127.0.0.1", v4_port))
        .unwrap();
    let mut expected = vec![format!("127.0.0.1:{v4_port}")];
    // IPv6 too, where the host has it.
    if let Some(v6) = node.udp.iter().find(|a| a.is_ipv6()) {
        if let Ok(s6) = std::net::UdpSocket::bind("[::1]:0") {
            s6.send_to(&options("101", "v6", 2), ("::1", v6.port()))
                .unwrap();
            expected.push(format!("[::1]:{}", v6.port()));
        }
    }
    let path = node.path("sentrypeer_json.log");
    assert!(poll(DEFAULT_WAIT, || std::fs::read_to_string(&path)
        .map(|t| t.lines().count() == expected.len())
        .unwrap_or(false)));
    let mut got: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["destination_ip"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    if expected.len() == 2 {
        // The JSON log and the database are separate outputs: the row may land a moment later.
        node.wait_rows(2);
        let ip: String = node
            .db()
            .query_row(
                "SELECT source_ip FROM honey WHERE called_number = '101'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ip, "::1");
    }
}
