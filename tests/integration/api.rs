//! The REST API answers as upstream's does, headers and shapes included.

use crate::harness::*;

fn probe(node: &Node, number: &str, agent: &str, n: u64) {
    node.send_udp(&options(number, agent, n));
}

#[test]
fn every_endpoint_answers_with_upstreams_shapes_and_headers() {
    let node = Node::start(&[]);
    probe(&node, "+441234567890", "a", 1);
    probe(&node, "100", "b", 2);
    probe(&node, "100", "c", 3);
    node.wait_rows(3);

    let r = node.get("/health-check");
    assert_eq!(r.status, 200);
    for (h, v) in [
        ("access-control-allow-origin", "*"),
        ("x-powered-by", "SentryPeer"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(r.header(h), Some(v), "{h}");
    }
    assert_eq!(
        r.header("x-sentrypeer-version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let v = r.json();
    assert_eq!(v["status"], "OK");
    assert_eq!(v["message"], "Hello from SentryPeer!");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    for spelling in ["/ip-addresses/127.0.0.1", "/ip-address/127.0.0.1"] {
        let r = node.get(spelling);
        assert_eq!(r.status, 200, "{spelling}");
        assert_eq!(
            r.json(),
            serde_json::json!({"bad_actor_found": "127.0.0.1"})
        );
    }
    let r = node.get("/ip-addresses/192.0.2.55");
    assert_eq!(
        (r.status, r.json()),
        (404, serde_json::json!({"message": "No bad actor found"}))
    );
    let r = node.get("/ip-addresses/not-an-ip");
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"error": "The request data was invalid"})
        )
    );
    assert_eq!(r.header("x-powered-by"), Some("SentryPeer"));

    let r = node.get("/numbers/100");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"phone_number_found": "100"}))
    );
    let r = node.get("/numbers/+441234567890");
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"phone_number_found": "+441234567890"})
        )
    );
    let r = node.get("/numbers/999");
    assert_eq!(
        (r.status, r.json()),
        (404, serde_json::json!({"message": "No phone number found"}))
    );

    let r = node.get("/numbers");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["called_numbers_total"], 2);
    let list = v["called_numbers"].as_array().unwrap();
    let hundred = list.iter().find(|e| e["called_number"] == "100").unwrap();
    assert_eq!(hundred["seen_count"], "2");
    assert_eq!(hundred["seen_last"].as_str().unwrap().len(), 29);

    let v = node.get("/ip-addresses").json();
    assert_eq!(v["ip_addresses_total"], 1);
    assert_eq!(v["ip_addresses"][0]["ip_address"], "127.0.0.1");
    assert_eq!(v["ip_addresses"][0]["seen_count"], "3");

    let r = node.get("/ip-addresses/%ff");
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"error": "The request data was invalid"})
        )
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = node.get("/numbers/%ff");
    assert_eq!(
        (r.status, r.header("content-type")),
        (404, Some("application/json"))
    );

    let r = node.get("/nope");
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            serde_json::json!({"error": "The requested resource could not be found."})
        )
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn other_methods_get_405_with_allow() {
    let node = Node::start(&[]);
    for path in ["/health-check", "/numbers", "/ip-addresses/127.0.0.1"] {
        let r = http(node.api[0], "POST", path);
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(r.header("x-powered-by"), Some("SentryPeer"));
    }
    assert_eq!(http(node.api[0], "DELETE", "/numbers/100").status, 405);
}

#[test]
fn lists_are_newest_first_and_stream_a_large_answer() {
    let node = Node::start(&[]);
    for i in 0..3000u64 {
        probe(&node, &format!("9{i:05}"), "x", i);
        if i % 500 == 499 {
            node.wait_rows(i as i64 + 1);
        }
    }
    node.wait_rows(3000);
    let r = node.get("/numbers");
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "a large list is streamed"
    );
    let v = r.json();
    assert_eq!(v["called_numbers_total"], 3000);
    let list = v["called_numbers"].as_array().unwrap();
    assert_eq!(list.len(), 3000);
    let stamps: Vec<&str> = list
        .iter()
        .map(|e| e["seen_last"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "newest first");
}

#[test]
fn metrics_are_prometheus_text() {
    let node = Node::start(&[]);
    probe(&node, "1", "x", 1);
    node.wait_rows(1);
    let r = node.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("sentrypeer_events_accepted_total 1"),
        "{text}"
    );
    assert!(
        text.contains("sentrypeer_output_written_total{output=\"sqlite\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sentrypeer_output_dropped_total{output=\"sqlite\"} 0"),
        "{text}"
    );
}

#[test]
fn list_readers_beyond_four_per_source_or_sixteen_in_all_get_503_while_lookups_and_shutdown_are_unaffected()
 {
    use std::io::Write;
    let mut node = Node::start(&[]);
    // 300,000 numbers: a list of about 25 MB, far more than socket buffers hold.
    let db = rusqlite::Connection::open(node.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
             INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count, first_seen_ms,
               last_seen_ms, local_last_ms, announced_until_ms, change_seq, dialled)
             SELECT printf('9%09d', i), '2026-11-23 10:00:00.000000000', 1, now, now, now,
               now + 86400000, i, 1
             FROM n, (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now)",
    )
    .unwrap();
    drop(db);
    // Sixteen clients, four from each of four sources, ask for the list and read none of it
    // (with small receive buffers, which loopback would otherwise grow to hold the whole list).
    let api = node.api[0];
    let stalled: Vec<std::net::TcpStream> = (0..16)
        .map(|i| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(16 * 1024).unwrap();
            let local: std::net::SocketAddr = format!("127.0.0.{}:0", 2 + i / 4).parse().unwrap();
            s.bind(&local.into()).unwrap();
            s.connect(&api.into()).unwrap();
            let mut s: std::net::TcpStream = s.into();
            write!(s, "GET /numbers HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Each has begun its answer (and holds its stream)...
    for s in &stalled {
        let mut head = [0u8; 12];
        let mut r: &std::net::TcpStream = s;
        std::io::Read::read_exact(&mut r, &mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    // ...so a fifth from one of those sources, and anyone else, is told to come back.
    for r in [
        http_from("127.0.0.2", api, "GET", "/numbers"),
        node.get("/ip-addresses"),
    ] {
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(
            r.json()["error"],
            "Too many lists being sent; try again shortly."
        );
    }
    // Lookups do not queue behind the lists.
    assert_eq!(node.get("/numbers/9000000042").status, 200);
    assert_eq!(node.get("/health-check").status, 200);
    // Nor does shutdown: the stalled readers are closed after the grace.
    assert!(node.signal("TERM").success(), "{}", node.log_text());
    assert!(
        node.log_text()
            .contains("Closed API connections that outlived the shutdown grace."),
        "{}",
        node.log_text()
    );
    drop(stalled);
}

/// An OPTIONS probe whose To and Request-URI carry no user part: recorded as `NOT_FOUND`.
fn probe_without_number(node: &Node, branch: u64) {
    let msg = String::from_utf8(options("x", "nobody", branch))
        .unwrap()
        .replace("sip:x@", "sip:");
    node.send_udp(msg.as_bytes());
}

fn called_values(v: &serde_json::Value) -> Vec<&str> {
    let mut values: Vec<&str> = v["called_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["called_number"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    values
}

#[test]
fn the_numbers_list_holds_dialled_numbers_only_zeros_kept_and_all_true_lists_every_called_value() {
    let node = Node::start(&[]);
    for (i, number) in ["+442012345678", "00442012345678", "admin", "100a"]
        .iter()
        .enumerate()
    {
        probe(&node, number, "x", i as u64);
    }
    probe_without_number(&node, 9);
    node.wait_rows(5);
    assert_eq!(
        node.count("SELECT count(*) FROM honey WHERE called_number = 'NOT_FOUND'"),
        1
    );

    let r = node.get("/numbers");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(called_values(&v), ["+442012345678", "00442012345678"]);
    assert_eq!(v["called_numbers_total"], 2);

    for query in ["?all=true", "?all=true&x=1"] {
        let v = node.get(&format!("/numbers{query}")).json();
        assert_eq!(
            called_values(&v),
            [
                "+442012345678",
                "00442012345678",
                "100a",
                "NOT_FOUND",
                "admin"
            ],
            "{query}"
        );
        assert_eq!(v["called_numbers_total"], 5, "{query}");
    }
    assert_eq!(
        called_values(&node.get("/numbers?all=false").json()).len(),
        2
    );
    let r = node.get("/numbers?all=maybe");
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"error": "The request data was invalid"})
        )
    );

    // Lookups as before: numbers are found with their zeros, anything else is no number.
    let r = node.get("/numbers/00442012345678");
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"phone_number_found": "00442012345678"})
        )
    );
    assert_eq!(node.get("/numbers/442012345678").status, 404);
    for not_a_number in ["admin", "100a", "NOT_FOUND"] {
        let r = node.get(&format!("/numbers/{not_a_number}"));
        assert_eq!(
            (r.status, r.json()),
            (
                404,
                serde_json::json!({"error": "The requested resource could not be found."})
            ),
            "{not_a_number}"
        );
    }
}

#[test]
fn a_probe_to_an_escaped_number_is_found_and_logged_decoded_with_its_message_as_sent() {
    let node = Node::start(&["-j"]);
    let msg = options("%2B442012345678", "x", 1);
    node.send_udp(&msg);
    node.wait_rows(1);

    let r = node.get("/numbers/+442012345678");
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"phone_number_found": "+442012345678"})
        )
    );
    assert_eq!(
        called_values(&node.get("/numbers").json()),
        ["+442012345678"]
    );

    let path = node.path("sentrypeer_json.log");
    assert!(poll(DEFAULT_WAIT, || std::fs::read_to_string(&path)
        .map(|s| s.lines().count() == 1)
        .unwrap_or(false)));
    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
    assert_eq!(v["called_number"], "+442012345678");
    let sent = v["sip_message"].as_str().unwrap();
    assert_eq!(sent.as_bytes(), &msg[..]);
    assert!(sent.contains("<sip:%2B442012345678@"), "{sent}");
    let stored: String = node
        .db()
        .query_row("SELECT called_number FROM honey", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, "+442012345678");
}
