//! A database written by upstream opens and serves, `IP:PORT` source values included.

use crate::harness::*;

const UPSTREAM_SCHEMA: &str =
    "CREATE TABLE honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT, event_uuid TEXT,
  collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
  user_agent TEXT, sip_message TEXT, created_by_node_id TEXT,
  created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE INDEX source_ip_index ON honey (source_ip);
CREATE INDEX called_number_index ON honey (called_number);
CREATE INDEX event_uuid_index ON honey (event_uuid);";

#[test]
fn an_upstream_database_with_ip_port_sources_opens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = rusqlite::Connection::open(dir.path().join("sentrypeer.db")).unwrap();
        db.execute_batch(UPSTREAM_SCHEMA).unwrap();
        let rows = [
            (
                "2024-05-01 10:00:00.12345",
                "203.0.113.7:52613",
                "441234567890",
            ),
            ("2024-05-02 11:00:00.5", "203.0.113.7:5060", "441234567890"),
            ("2024-05-03 12:00:00.7", "198.51.100.20", "100"),
        ];
        for (ts, ip, n) in rows {
            db.execute(
                "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
                 VALUES (?1, 'a0f5c1e8-0000-4000-8000-000000000000', 'passive', ?2, ?3, 'UDP', 'INVITE', 'friendly-scanner', 'INVITE ...', 'b0f5c1e8-0000-4000-8000-000000000000')",
                [ts, ip, n],
            )
            .unwrap();
        }
    }
    // These events are from 2024: past the default 7-day TTL, so no verdict...
    let mut node = Node::start_with(NodeOptions {
        dir: Some(dir),
        ..Default::default()
    });
    assert_eq!(node.get("/ip-addresses/203.0.113.7").status, 404);
    assert_eq!(node.get("/numbers/441234567890").status, 404);
    assert!(node.signal("TERM").success());
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    // ...and with upstream's all-time behaviour, every one is.
    let node = Node::start_with(NodeOptions {
        dir: Some(dir),
        args: vec!["--actor-ttl".into(), "forever".into()],
        ..Default::default()
    });
    let r = node.get("/ip-addresses/203.0.113.7");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"bad_actor_found": "203.0.113.7"}))
    );
    let r = node.get("/ip-address/198.51.100.20");
    assert_eq!(r.status, 200);
    let v = node.get("/ip-addresses").json();
    assert_eq!(v["ip_addresses_total"], 2);
    assert_eq!(
        v["ip_addresses"][0]["ip_address"], "198.51.100.20",
        "newest first"
    );
    assert_eq!(v["ip_addresses"][1]["ip_address"], "203.0.113.7");
    assert_eq!(v["ip_addresses"][1]["seen_count"], "2");
    assert_eq!(v["ip_addresses"][1]["seen_last"], "2024-05-02 11:00:00.5");
    let r = node.get("/numbers/441234567890");
    assert_eq!(r.status, 200);
    let v = node.get("/numbers").json();
    assert_eq!(v["called_numbers_total"], 2);

    // New events land beside the old ones, in upstream's table.
    node.send_udp(&options("100", "new", 1));
    node.wait_rows(4);
    let v = node.get("/numbers").json();
    assert_eq!(v["called_numbers"][0]["called_number"], "100");
    assert_eq!(v["called_numbers"][0]["seen_count"], "2");
    let schema: String = node
        .db()
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'honey'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        schema
            .starts_with("CREATE TABLE honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT"),
        "{schema}"
    );
    let upstream_indexes = |db: &rusqlite::Connection| -> i64 {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN
               ('source_ip_index', 'called_number_index', 'event_uuid_index')",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        upstream_indexes(&node.db()),
        0,
        "upstream's honey indexes serve only upstream: dropped, so no insert pays for them"
    );

    // Handed back to upstream, the file takes upstream's schema statements as they are (they
    // create the indexes again), upstream's own lookups find our events, and we open it again.
    let mut node = node;
    assert!(node.signal("TERM").success());
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    {
        let db = rusqlite::Connection::open(dir.path().join("sentrypeer.db")).unwrap();
        db.execute_batch(
            &UPSTREAM_SCHEMA
                .replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
                .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"),
        )
        .unwrap();
        assert_eq!(upstream_indexes(&db), 3);
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM honey INDEXED BY called_number_index WHERE called_number = '100'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 2);
    }
    let node = Node::start_with(NodeOptions {
        dir: Some(dir),
        args: vec!["--actor-ttl".into(), "forever".into()],
        ..Default::default()
    });
    assert_eq!(node.get("/numbers/100").status, 200);
    assert_eq!(upstream_indexes(&node.db()), 0);
}

#[test]
fn deleting_events_from_honey_takes_them_out_of_the_api() {
    let node = Node::start(&[]);
    node.send_udp(&options("100", "a", 1));
    node.send_udp(&options("100", "b", 2));
    node.send_udp(&options("200", "c", 3));
    node.wait_rows(3);
    assert_eq!(node.get("/ip-addresses/127.0.0.1").status, 200);
    {
        // An operator removes a false positive by hand, as they would with upstream.
        let db = rusqlite::Connection::open(node.db_path()).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        db.execute("DELETE FROM honey WHERE called_number = '100'", [])
            .unwrap();
    }
    assert_eq!(node.get("/numbers/100").status, 404);
    assert_eq!(node.get("/numbers/200").status, 200);
    assert_eq!(
        node.get("/ip-addresses").json()["ip_addresses"][0]["seen_count"],
        "1"
    );
    {
        let db = rusqlite::Connection::open(node.db_path()).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        db.execute("DELETE FROM honey", []).unwrap();
    }
    assert_eq!(node.get("/ip-addresses/127.0.0.1").status, 404);
    assert_eq!(node.get("/numbers").json()["called_numbers_total"], 0);
}
