//! APIBAN's clients against a node, written from APIBAN's public documentation: the v1 forms
//! with the key in the path and the v2 forms with a bearer key, each pulling the whole list
//! incrementally in 250-address batches and checking addresses.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::*;

/// Lists `n` addresses in 198.18.0.0/15 as if this node had just seen them, the change
/// sequence counting from `from + 1`.
fn seed(node: &Node, from: u32, n: u32) -> BTreeSet<String> {
    let db = rusqlite::Connection::open(node.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let now: i64 = db
        .query_row(
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut out = BTreeSet::new();
    let tx = db.unchecked_transaction().unwrap();
    for i in from + 1..=from + n {
        let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        tx.execute(
            "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count, first_seen_ms,
               last_seen_ms, local_last_ms, announced_until_ms, change_seq)
             VALUES (?1, '2026-11-30 10:00:00.000000000', 1, ?2, ?2, ?2, ?2 + 86400000, ?3)",
            rusqlite::params![ip, now, i],
        )
        .unwrap();
        out.insert(ip);
    }
    tx.execute(
        "UPDATE sentrypeer_actor_state SET change_seq = ?1",
        [from + n],
    )
    .unwrap();
    tx.commit().unwrap();
    out
}

/// APIBAN's v1 client loop: `banned/{ID}` from `100` until "no new bans"; returns what it
/// collected, the ID to ask with next time, and the batch sizes.
fn v1_pull(node: &Node, key: &str, start: &str) -> (BTreeSet<String>, String, Vec<usize>) {
    let mut id = start.to_string();
    let mut got = BTreeSet::new();
    let mut batches = Vec::new();
    loop {
        let r = node.get(&format!("/api/{key}/banned/{id}"));
        let v = r.json();
        if r.status == 400 {
            assert_eq!(v, json!({"ipaddress": ["no new bans"], "ID": "none"}));
            return (got, id, batches);
        }
        assert_eq!(r.status, 200, "{v}");
        let ips = v["ipaddress"].as_array().unwrap();
        batches.push(ips.len());
        got.extend(ips.iter().map(|i| i.as_str().unwrap().to_string()));
        let next = v["ID"].as_str().unwrap().to_string();
        // The shell client stops unless the ID is all digits.
        assert!(next.bytes().all(|b| b.is_ascii_digit()), "{next}");
        assert!(next.parse::<u64>().unwrap() > id.parse::<u64>().unwrap());
        id = next;
    }
}

fn v2(node: &Node, path: &str, key: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let r = http_request(
        node.api[0],
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    (r.status, r.json())
}

#[test]
fn the_v1_client_pulls_a_thousand_addresses_in_250_batches_and_then_only_new_ones() {
    let node = Node::start(&[]);
    let listed = seed(&node, 0, 1000);
    let (got, last, batches) = v1_pull(&node, "anykey", "100");
    assert_eq!(got, listed);
    assert_eq!(batches, [250, 250, 250, 250]);
    // Up to date: the remembered ID gives no new bans.
    let (nothing, same, _) = v1_pull(&node, "anykey", &last);
    assert!(nothing.is_empty());
    assert_eq!(same, last);
    // Newly listed addresses, and only those, on the next pull.
    let more = seed(&node, 1000, 300);
    let (got, _, batches) = v1_pull(&node, "anykey", &last);
    assert_eq!(got, more);
    assert_eq!(batches, [250, 50]);
    // No ID at all means from the start, as 100 does.
    let r = node.get("/api/anykey/banned");
    assert_eq!(r.json()["ipaddress"].as_array().unwrap().len(), 250);
    // The plain /banned form is the same list.
    let r = node.get("/banned/100");
    assert_eq!(r.json()["ipaddress"].as_array().unwrap().len(), 250);
}

#[test]
fn the_v2_client_gets_until_the_id_is_none_and_checks_addresses() {
    let node = Node::start(&[]);
    let listed = seed(&node, 0, 600);
    let mut id = "100".to_string();
    let mut got = BTreeSet::new();
    loop {
        let (status, v) = v2(&node, "/api/get", "k", json!({"set": "sip", "id": id}));
        if v["ID"] == "none" {
            assert_eq!(
                (status, v),
                (400, json!({"ipaddress": ["no new bans"], "ID": "none"}))
            );
            break;
        }
        assert_eq!(status, 200);
        got.extend(
            v["ipaddress"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string()),
        );
        id = v["ID"].as_str().unwrap().to_string();
    }
    assert_eq!(got, listed);
    let one = listed.iter().next().unwrap();
    let (status, v) = v2(
        &node,
        "/api/check",
        "k",
        json!({"set": "sip", "ipaddress": one}),
    );
    assert_eq!(status, 200);
    assert_eq!(v["ipaddress"], json!([one]));
    assert!(v["ID"].as_str().unwrap().parse::<u64>().unwrap() > 100);
    let (status, v) = v2(
        &node,
        "/api/check",
        "k",
        json!({"set": "sip", "ipaddress": "192.0.2.200"}),
    );
    assert_eq!(
        (status, v),
        (400, json!({"ipaddress": ["not blocked"], "ID": "none"}))
    );
    let (status, v) = v2(&node, "/api/get", "k", json!({"set": "ssh", "id": "100"}));
    assert_eq!(
        (status, v),
        (400, json!({"ipaddress": ["unknown set"], "ID": "none"}))
    );
    // The v1 check form answers the same.
    let r = node.get(&format!("/api/k/check/{one}"));
    assert_eq!(
        (r.status, r.json()["ipaddress"].clone()),
        (200, json!([one]))
    );
    let r = node.get("/api/k/check/192.0.2.200");
    assert_eq!(r.status, 400);
}

#[test]
fn with_apiban_keys_only_those_keys_open_the_api() {
    let node = Node::start(&["--apiban-key", "s3cret", "--apiban-key", "other"]);
    seed(&node, 0, 10);
    let unauthorized = json!({"ipaddress": ["unauthorized"], "ID": "unauthorized"});
    let r = node.get("/api/wrong/banned/100");
    assert_eq!((r.status, r.json()), (403, unauthorized.clone()));
    let r = node.get("/api/s3cret/banned/100");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ipaddress"].as_array().unwrap().len(), 10);
    let (status, v) = v2(
        &node,
        "/api/get",
        "nope",
        json!({"set": "sip", "id": "100"}),
    );
    assert_eq!((status, v), (403, unauthorized));
    let (status, _) = v2(
        &node,
        "/api/get",
        "other",
        json!({"set": "sip", "id": "100"}),
    );
    assert_eq!(status, 200);
    assert!(!node.log_text().contains("s3cret"), "a key reached the log");
}
