//! The peer-to-peer network on loopback: real nodes (the binary), plus in-process libp2p peers
//! that publish crafted messages. Every wait is a poll with a deadline.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::{Multiaddr, SwarmBuilder, identity, noise, tcp, yamux};
use sentrypeer::p2p::validate::Signer;
use sentrypeer::p2p::wire;
use serde_json::{Value, json};

use crate::harness::*;

/// Accept loopback sources: every probe in these tests comes from 127.0.0.1.
pub(crate) const LAB: &str = "--p2p-allow-private";
/// One peer's report lists an actor: for tests of propagation, where only one node saw it (the
/// default asks for two authors; `a_single_peers_report_is_kept_but_is_no_verdict` checks that).
pub(crate) const ONE_AUTHOR: &str = "--p2p-corroboration=1";

pub(crate) fn p2p_node(
    dir: Option<tempfile::TempDir>,
    bootstrap: Option<&Node>,
    extra: &[&str],
) -> Node {
    p2p_node_from(dir, bootstrap.as_slice(), extra)
}

pub(crate) fn peers(n: &Node) -> Value {
    let r = n.get("/peers");
    assert_eq!(r.status, 200);
    r.json()
}

/// This node's view of one of its connected peers.
pub(crate) fn view_of(n: &Node, id: &str) -> Option<Value> {
    peers(n)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == id)
        .cloned()
}

pub(crate) fn rows_for(n: &Node, number: &str) -> i64 {
    n.count(&format!(
        "SELECT count(*) FROM honey WHERE called_number = '{number}'"
    ))
}

pub(crate) fn rows_with_uuid(n: &Node, uuid: &str) -> i64 {
    n.count(&format!(
        "SELECT count(*) FROM honey WHERE event_uuid = '{uuid}'"
    ))
}

pub(crate) fn wait_connected(nodes: &[&Node], at_least: usize) {
    for n in nodes {
        let ok = poll(DEFAULT_WAIT, || {
            peers(n)["peers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in_mesh"] == true)
                .count()
                >= at_least
        });
        assert!(ok, "not meshed: {}\n{}", peers(n), n.log_text());
    }
}

pub(crate) fn probe(n: &Node, number: &str, branch: u64) {
    n.send_udp(&options(number, "p2p-test", branch));
    assert!(
        poll(DEFAULT_WAIT, || rows_for(n, number) == 1),
        "probe {number} not recorded locally\n{}",
        n.log_text()
    );
}

#[test]
fn a_probe_on_one_of_five_nodes_reaches_every_other_database_and_api_within_two_seconds() {
    let hub = p2p_node(None, None, &[LAB, ONE_AUTHOR]);
    let leaves: Vec<Node> = (0..4)
        .map(|_| p2p_node(None, Some(&hub), &[LAB, ONE_AUTHOR]))
        .collect();
    let mut all: Vec<&Node> = vec![&hub];
    all.extend(leaves.iter());
    let hub_ok = poll(DEFAULT_WAIT, || {
        let v = peers(&hub);
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in_mesh"] == true)
            .count()
            == 4
    });
    assert!(hub_ok, "hub not meshed with all: {}", peers(&hub));
    wait_connected(&all, 1);

    let origin = &leaves[2];
    let origin_id = peer_id(origin);
    let ids: Vec<String> = all.iter().map(|n| peer_id(n)).collect();
    origin.send_udp(&options("5550001", "p2p-test", 1));
    let sent = Instant::now();
    let others: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.pid() != origin.pid())
        .collect();
    let ok = poll(Duration::from_secs(10), || {
        others.iter().all(|n| rows_for(n, "5550001") == 1)
    });
    let elapsed = sent.elapsed();
    assert!(
        ok,
        "not everywhere: {:?}",
        others
            .iter()
            .map(|n| rows_for(n, "5550001"))
            .collect::<Vec<_>>()
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "took {elapsed:?} to reach every node"
    );
    for n in &others {
        let r = n.get("/numbers/5550001");
        assert_eq!(
            (r.status, r.json()),
            (200, json!({"phone_number_found": "5550001"}))
        );
        let from: Option<String> = n
            .db()
            .query_row(
                "SELECT received_from_peer FROM honey WHERE called_number = '5550001'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Its author, whether gossip or a catch-up with a peer met meanwhile brought it.
        assert!(
            from.as_ref().is_some_and(|f| ids.contains(f)),
            "received from a node"
        );
        assert_eq!(from.as_deref(), Some(origin_id.as_str()), "its author");
    }
    let from_hub: Option<String> = hub
        .db()
        .query_row(
            "SELECT received_from_peer FROM honey WHERE called_number = '5550001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        from_hub.as_deref(),
        Some(origin_id.as_str()),
        "signed by its author"
    );
    let local: Option<String> = origin
        .db()
        .query_row(
            "SELECT received_from_peer FROM honey WHERE called_number = '5550001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(local, None);
    assert_eq!(hub.counter("peer_events_accepted"), 1);
    // Nothing comes back to its origin as a second row.
    assert_eq!(rows_for(origin, "5550001"), 1);
}

/// A database as a node that was running an hour ago left it: events an hour old, and one
/// past the seven-day horizon.
fn seed_db(dir: &tempfile::TempDir) -> (Vec<String>, String) {
    let conn = rusqlite::Connection::open(dir.path().join("sentrypeer.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT, event_uuid TEXT,
          collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
          user_agent TEXT, sip_message TEXT, created_by_node_id TEXT,
          created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));",
    )
    .unwrap();
    let insert = |ago: Duration, number: &str| -> String {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        conn.execute(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
              called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
             VALUES (?1, ?2, 'passive', '203.0.113.50', ?3, 'UDP', 'OPTIONS', 'friendly-scanner',
              'OPTIONS sip:100@198.51.100.10 SIP/2.0', ?4)",
            rusqlite::params![
                sentrypeer::event::format_timestamp(SystemTime::now() - ago),
                uuid,
                number,
                uuid::Uuid::new_v4().hyphenated().to_string()
            ],
        )
        .unwrap();
        uuid
    };
    let hour = Duration::from_secs(3600);
    let recent = vec![
        insert(hour + Duration::from_secs(30), "5552001"),
        insert(hour + Duration::from_secs(20), "5552002"),
        insert(hour, "5552003"),
    ];
    let expired = insert(Duration::from_secs(8 * 24 * 3600), "5552009");
    (recent, expired)
}

#[test]
fn a_node_that_joins_an_hour_late_catches_up_on_the_last_seven_days_only() {
    let dir = tempfile::tempdir().unwrap();
    let (recent, expired) = seed_db(&dir);
    let old = p2p_node(Some(dir), None, &[LAB]);
    let late = p2p_node(None, Some(&old), &[LAB, ONE_AUTHOR]);
    let ok = poll(DEFAULT_WAIT, || {
        recent.iter().all(|u| rows_with_uuid(&late, u) == 1)
    });
    assert!(ok, "no catch-up:\n{}", late.log_text());
    assert_eq!(
        rows_with_uuid(&late, &expired),
        0,
        "nothing past seven days"
    );
    assert_eq!(late.count("SELECT count(*) FROM honey"), 3);
    let old_id = peer_id(&old);
    let from: String = late
        .db()
        .query_row("SELECT DISTINCT received_from_peer FROM honey", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        from, old_id,
        "caught-up events name their author, which signed them as it served them"
    );
    let r = late.get("/numbers/5552002");
    assert_eq!(r.status, 200);
    // The one that served them sees them as received by the late node's catch-up.
    let v = view_of(&old, &peer_id(&late)).unwrap();
    assert!(v["events_sent"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn a_restarted_node_keeps_its_identity_and_catches_up_on_what_it_missed() {
    let a = p2p_node(None, None, &[LAB]);
    let mut b = p2p_node(None, Some(&a), &[LAB]);
    wait_connected(&[&a, &b], 1);
    let b_id = peer_id(&b);
    probe(&a, "5553001", 1);
    assert!(poll(DEFAULT_WAIT, || rows_for(&b, "5553001") == 1));

    assert!(b.signal("TERM").success());
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let key = dir.path().join("sentrypeer.db.p2p-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Recorded while b is down.
    probe(&a, "5553002", 2);
    probe(&a, "5553003", 3);

    let b = p2p_node(Some(dir), Some(&a), &[LAB]);
    assert_eq!(peer_id(&b), b_id, "the identity survives a restart");
    let ok = poll(DEFAULT_WAIT, || {
        rows_for(&b, "5553002") == 1 && rows_for(&b, "5553003") == 1
    });
    assert!(ok, "missed events not caught up:\n{}", b.log_text());
    assert_eq!(rows_for(&b, "5553001"), 1, "no duplicate of what it had");
    assert!(b.log_text().contains(&b_id));
}

#[test]
fn a_listener_stops_receiving_after_its_grace_period_while_contributors_keep_receiving() {
    // Long enough for both contributors to publish while they are still new to each other.
    let grace = ["--p2p-grace", "15"];
    let a = p2p_node(None, None, &[LAB, grace[0], grace[1]]);
    let b = p2p_node(None, Some(&a), &[LAB, grace[0], grace[1]]);
    let l = p2p_node(None, Some(&a), &[LAB, grace[0], grace[1]]);
    wait_connected(&[&a, &b, &l], 1);
    let (a_id, b_id, l_id) = (peer_id(&a), peer_id(&b), peer_id(&l));

    // a and b share while they are new to each other; the listener only receives.
    probe(&b, "5554001", 1);
    assert!(poll(DEFAULT_WAIT, || rows_for(&a, "5554001") == 1));
    probe(&a, "5554002", 2);
    assert!(poll(DEFAULT_WAIT, || rows_for(&b, "5554002") == 1));
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&l, "5554002") == 1),
        "served during grace"
    );

    // Past its grace, the listener is scored out of a's and b's mesh.
    for (judge, name) in [(&a, "a"), (&b, "b")] {
        let ok = poll(DEFAULT_WAIT, || {
            view_of(judge, &l_id).is_some_and(|v| {
                v["standing"] == "listener"
                    && v["in_mesh"] == false
                    && v["score"].as_f64().is_some_and(|s| s < -50.0)
            })
        });
        assert!(
            ok,
            "{name} still serves the listener: {}\n{}",
            peers(judge),
            judge.log_text()
        );
    }
    let a_on_b = view_of(&b, &a_id).unwrap();
    assert_eq!(a_on_b["standing"], "contributor", "{a_on_b}");
    assert_eq!(a_on_b["events_authored"], 1, "{a_on_b}");
    let b_on_a = view_of(&a, &b_id).unwrap();
    assert_eq!(b_on_a["standing"], "contributor", "{b_on_a}");
    assert_eq!(b_on_a["events_authored"], 1, "{b_on_a}");
    for judge in [&a, &b] {
        let v = view_of(judge, &l_id).unwrap();
        assert_eq!(v["events_authored"], 0, "whatever it relayed: {v}");
    }

    probe(&a, "5554003", 3);
    probe(&b, "5554004", 4);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&b, "5554003") == 1),
        "contributor b"
    );
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&a, "5554004") == 1),
        "contributor a"
    );
    // Gossip would reach it within a heartbeat or two; give it several.
    let leaked = poll(Duration::from_secs(4), || {
        rows_for(&l, "5554003") + rows_for(&l, "5554004") > 0
    });
    assert!(!leaked, "the listener still receives");

    // Nor is it served catch-up when it comes back.
    let mut l = l;
    assert!(l.signal("TERM").success());
    let dir = std::mem::replace(&mut l.dir, tempfile::tempdir().unwrap());
    let l = p2p_node(Some(dir), Some(&a), &[LAB, grace[0], grace[1]]);
    let refused = poll(DEFAULT_WAIT, || {
        l.log_text().contains("A peer refused catch-up.")
    });
    assert!(refused, "{}", l.log_text());
    assert_eq!(rows_for(&l, "5554003") + rows_for(&l, "5554004"), 0);
}

/// How a test peer's gossip messages are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The nodes' wire format (`sentrypeer::p2p::wire`).
    Wire,
    /// Anonymous, but the data as it is (not compressed).
    Uncompressed,
    /// The format before: gossipsub's own signature, publisher and sequence number, the data
    /// as it is.
    Signed,
}

/// A test peer's gossip data: compressed as the nodes' wire format says, or as it is.
enum Transform {
    Wire(wire::Deflate),
    Plain(gossipsub::IdentityTransform),
}

impl gossipsub::DataTransform for Transform {
    fn inbound_transform(
        &self,
        raw: gossipsub::RawMessage,
    ) -> Result<gossipsub::Message, std::io::Error> {
        match self {
            Transform::Wire(t) => t.inbound_transform(raw),
            Transform::Plain(t) => t.inbound_transform(raw),
        }
    }

    fn outbound_transform(
        &self,
        topic: &gossipsub::TopicHash,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, std::io::Error> {
        match self {
            Transform::Wire(t) => t.outbound_transform(topic, data),
            Transform::Plain(t) => t.outbound_transform(topic, data),
        }
    }
}

/// An in-process libp2p peer that publishes whatever bytes it is given on the topic, in the
/// nodes' wire format or another ([`Format`]).
pub(crate) struct RawPeer {
    pub(crate) peer_id: String,
    /// Its key, as the author of events.
    pub(crate) signer: Signer,
    publish: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    published: std_mpsc::Receiver<()>,
}

impl RawPeer {
    pub(crate) fn start(rt: &tokio::runtime::Runtime, target: &str, format: Format) -> RawPeer {
        let key = identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let signer = Signer::new(&key).unwrap();
        let (auth, mut config) = if format == Format::Signed {
            let mut config = gossipsub::ConfigBuilder::default();
            config.validation_mode(ValidationMode::Strict);
            (MessageAuthenticity::Signed(key.clone()), config)
        } else {
            (MessageAuthenticity::Anonymous, wire::config_builder())
        };
        let target: Multiaddr = target.parse().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let (done_tx, done_rx) = std_mpsc::channel();
        rt.spawn(async move {
            let config = config.max_transmit_size(256 * 1024).build().unwrap();
            let mut swarm = SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|_| {
                    let transform = match format {
                        Format::Wire => Transform::Wire(wire::Deflate),
                        Format::Uncompressed | Format::Signed => {
                            Transform::Plain(gossipsub::IdentityTransform)
                        }
                    };
                    gossipsub::Behaviour::<Transform>::new_with_transform(auth, config, transform)
                        .unwrap()
                })
                .unwrap()
                .build();
            let topic = IdentTopic::new(sentrypeer::p2p::TOPIC);
            swarm.behaviour_mut().subscribe(&topic).unwrap();
            swarm.dial(target).unwrap();
            let mut queue: std::collections::VecDeque<Vec<u8>> = Default::default();
            let mut retry = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    data = rx.recv() => match data {
                        Some(d) => queue.push_back(d),
                        None => break,
                    },
                    _ = swarm.select_next_some() => {}
                    _ = retry.tick() => {
                        while let Some(d) = queue.front() {
                            match swarm.behaviour_mut().publish(topic.clone(), d.clone()) {
                                // A message this peer already has (the same bytes, so the same
                                // id: it may have been gossiped to it) is one the network has.
                                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {
                                    queue.pop_front();
                                    let _ = done_tx.send(());
                                }
                                // Not yet connected and subscribed: try again shortly.
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            drop(swarm);
        });
        RawPeer {
            peer_id: peer_id.to_string(),
            signer,
            publish: tx,
            published: done_rx,
        }
    }

    /// `event` as this peer writes it: under its node id, signed with its key.
    pub(crate) fn seal(&self, event: &Value) -> Vec<u8> {
        let mut event = event.clone();
        event["created_by_node_id"] = self.signer.node_id().hyphenated().to_string().into();
        self.signer.seal(event.to_string().as_bytes())
    }

    pub(crate) fn publish(&self, data: Vec<u8>) {
        self.publish.send(data).unwrap();
        self.published
            .recv_timeout(DEFAULT_WAIT)
            .expect("published to the node");
    }
}

/// A well-formed event as a node would publish it, with a public source (its node id is its
/// author's: see [`RawPeer::seal`]).
pub(crate) fn good_event(number: &str) -> (String, Value) {
    let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
    let v = json!({
        "app_name": "sentrypeer",
        "app_version": "test",
        "event_timestamp": sentrypeer::event::format_timestamp(SystemTime::now()),
        "event_uuid": uuid,
        "created_by_node_id": uuid::Uuid::new_v4().hyphenated().to_string(),
        "collected_method": "passive",
        "transport_type": "UDP",
        "source_ip": "8.8.8.8:5060",
        "destination_ip": "0.0.0.0:5060",
        "called_number": number,
        "sip_method": "OPTIONS",
        "sip_user_agent": "friendly-scanner",
        "sip_message": "OPTIONS sip:100@198.51.100.10 SIP/2.0\r\n\r\n",
    });
    (uuid, v)
}

#[test]
fn forged_malformed_oversized_private_and_future_events_are_rejected_and_never_spread() {
    // No --p2p-allow-private: these nodes apply the internet's rules.
    let v = p2p_node(None, None, &[]);
    let w = p2p_node(None, Some(&v), &[]);
    wait_connected(&[&v, &w], 1);
    let target = v.p2p()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut bad: Vec<(String, &str, RawPeer)> = Vec::new();
    let (u, _) = good_event("5555001");
    let malformed = RawPeer::start(&rt, &target, Format::Wire);
    malformed.publish(b"{\"event_uuid\": \"not json".to_vec());
    bad.push((u, "malformed", malformed));

    let (u, mut e) = good_event("5555002");
    e["sip_message"] = "A".repeat(20 * 1024).into();
    let oversized = RawPeer::start(&rt, &target, Format::Wire);
    oversized.publish(oversized.seal(&e));
    bad.push((u, "oversized", oversized));

    let (u, mut e) = good_event("5555003");
    e["source_ip"] = "192.168.1.20:5060".into();
    let private = RawPeer::start(&rt, &target, Format::Wire);
    private.publish(private.seal(&e));
    bad.push((u, "private", private));

    let (u, mut e) = good_event("5555004");
    e["event_timestamp"] =
        sentrypeer::event::format_timestamp(SystemTime::now() + Duration::from_secs(24 * 3600))
            .into();
    let future = RawPeer::start(&rt, &target, Format::Wire);
    future.publish(future.seal(&e));
    bad.push((u, "future", future));

    let (u, e) = good_event("5555005");
    let signed = RawPeer::start(&rt, &target, Format::Signed);
    signed.publish(signed.seal(&e));
    bad.push((u, "the format before", signed));

    let (u, e) = good_event("5555006");
    let uncompressed = RawPeer::start(&rt, &target, Format::Uncompressed);
    uncompressed.publish(uncompressed.seal(&e));
    bad.push((u, "uncompressed", uncompressed));

    // Our validation rejected the four in our wire format; gossipsub itself dropped the two in
    // another (a message with a publisher and gossipsub's signature, data not compressed).
    let ok = poll(DEFAULT_WAIT, || v.counter("peer_events_rejected") >= 4);
    assert!(
        ok,
        "rejected: {}\n{}",
        v.counter("peer_events_rejected"),
        v.log_text()
    );
    for (_, what, peer) in &bad {
        let ok = poll(DEFAULT_WAIT, || {
            view_of(&v, &peer.peer_id).is_some_and(|p| p["score"].as_f64().is_some_and(|s| s < 0.0))
        });
        assert!(ok, "{what}: the sender's score did not fall: {}", peers(&v));
    }

    // An honest peer's event goes through v to w; whatever v had accepted before it would
    // have reached w first.
    let honest = RawPeer::start(&rt, &target, Format::Wire);
    let (good_uuid, e) = good_event("5555010");
    honest.publish(honest.seal(&e));
    assert!(
        poll(DEFAULT_WAIT, || rows_with_uuid(&w, &good_uuid) == 1),
        "the honest event did not spread:\n{}\n{}",
        v.log_text(),
        w.log_text()
    );
    assert_eq!(rows_with_uuid(&v, &good_uuid), 1);
    for (uuid, what, _) in &bad {
        assert_eq!(rows_with_uuid(&v, uuid), 0, "{what} reached v");
        assert_eq!(rows_with_uuid(&w, uuid), 0, "{what} reached w");
    }
    assert_eq!(v.count("SELECT count(*) FROM honey"), 1);
    assert_eq!(v.counter("peer_events_accepted"), 1);
    assert_eq!(v.counter("peer_events_rejected"), 4);
    drop(bad);
    drop(honest);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn p2p_without_peers_says_so_and_keeps_listening_and_peers_is_empty_without_p() {
    let n = p2p_node(None, None, &[]);
    assert!(
        n.log_text().contains("nothing to connect to"),
        "{}",
        n.log_text()
    );
    let v = peers(&n);
    assert_eq!(v["peer_to_peer"], true);
    assert_eq!(v["peers_total"], 0);
    assert_eq!(v["peer_id"], peer_id(&n));
    assert!(n.p2p()[0].starts_with("/ip4/127.0.0.1/tcp/"));

    let plain = Node::start(&[]);
    let v = peers(&plain);
    assert_eq!(v["peer_to_peer"], false);
    assert!(plain.health().get("peer_id").is_none());
}

#[test]
fn a_bad_p2p_setting_is_a_startup_error_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["-p", "--p2p-listen", "/ip4/nonsense", "-R", "-f"])
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--p2p-listen"), "{err}");
    let out = std::process::Command::new(bin())
        .args(["-p", "--p2p-grace", "soon", "-R"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--p2p-grace"));
}

/// `-b HOST:PORT` reaches a peer by name (looked up when dialled) and by address.
#[test]
fn bootstrap_by_host_name_and_by_address_and_port_connects() {
    let a = p2p_node(None, None, &[]);
    let port = a.p2p()[0]
        .strip_prefix("/ip4/127.0.0.1/tcp/")
        .unwrap_or_else(|| panic!("{:?}", a.p2p()))
        .to_string();
    let by_name = p2p_node(None, None, &["-b", &format!("localhost:{port}")]);
    let by_addr = p2p_node(None, None, &["-b", &format!("127.0.0.1:{port}")]);
    let a_id = peer_id(&a);
    for n in [&by_name, &by_addr] {
        assert!(
            poll(DEFAULT_WAIT, || view_of(n, &a_id).is_some()),
            "not connected: {}\n{}",
            peers(n),
            n.log_text()
        );
    }
    assert!(poll(DEFAULT_WAIT, || peers(&a)["peers_total"] == 2));
}

/// Upstream's `-b HOST` form: a bare name or address is dialled on port 4222, QUIC and TCP.
/// (Only where: nothing is required to listen on the fixed port.)
#[test]
fn a_bare_bootstrap_host_is_dialled_on_port_4222_over_quic_and_tcp() {
    for (given, ip) in [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1")] {
        let n = p2p_node(None, None, &["-d", "-b", given]);
        for want in [
            format!("/ip4/{ip}/udp/4222/quic-v1"),
            format!("/ip4/{ip}/tcp/4222"),
        ] {
            assert!(
                poll(DEFAULT_WAIT, || n
                    .log_text()
                    .lines()
                    .any(|l| l.contains("Dialling a bootstrap peer.")
                        && l.contains(&format!("addr={want}")))),
                "-b {given}: {want} not dialled:\n{}",
                n.log_text()
            );
        }
    }
}

#[test]
fn a_single_peers_report_is_kept_but_is_no_verdict_until_a_second_author_confirms_it() {
    // Default corroboration: two distinct authors.
    let a = p2p_node(None, None, &[LAB]);
    let b = p2p_node(None, Some(&a), &[LAB]);
    let listener = p2p_node(None, Some(&a), &[LAB]);
    wait_connected(&[&a, &b, &listener], 1);
    probe(&a, "5557001", 1);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&listener, "5557001") == 1),
        "the report never arrived\n{}",
        listener.log_text()
    );
    // Stored and shown as received, but a claim: no verdict, on either key.
    assert_eq!(listener.get("/numbers/5557001").status, 404);
    assert_eq!(listener.get("/ip-addresses/127.0.0.1").status, 404);
    let blocklist = listener.get("/blocklist/numbers?format=plain");
    assert_eq!(String::from_utf8(blocklist.body).unwrap(), "");
    // A second node sees the same number from the same address: two authors, a verdict.
    b.send_udp(&options("5557001", "p2p-test", 2));
    assert!(poll(DEFAULT_WAIT, || b.count(
        "SELECT count(*) FROM honey WHERE called_number = '5557001' AND received_from_peer IS NULL"
    ) == 1));
    assert!(
        poll(DEFAULT_WAIT, || listener.get("/numbers/5557001").status
            == 200),
        "two authors should list it\n{}",
        listener.log_text()
    );
    assert_eq!(listener.get("/ip-addresses/127.0.0.1").status, 200);
    let blocklist = listener.get("/blocklist/numbers?format=csv");
    let text = String::from_utf8(blocklist.body).unwrap();
    assert!(text.contains("\n5557001,"), "{text}");
    assert!(text.trim_end().ends_with(",peers"), "{text}");
}

#[test]
fn a_peers_event_never_writes_a_syslog_line_so_fail2ban_acts_only_on_what_this_node_saw() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log.sock");
    let daemon = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let origin = p2p_node(None, None, &[LAB]);
    let listener = p2p_node(
        None,
        Some(&origin),
        &[LAB, "-s", "--syslog-socket", socket_path.to_str().unwrap()],
    );
    wait_connected(&[&origin, &listener], 1);
    probe(&origin, "5558001", 1);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&listener, "5558001") == 1),
        "the peer's event never arrived\n{}",
        listener.log_text()
    );
    // Now something the listener sees itself: its line is the first and only one.
    listener.send_udp(&options("5558002", "p2p-test", 2));
    let mut lines = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let got = poll(DEFAULT_WAIT, || {
        if let Ok(n) = daemon.recv(&mut buf) {
            lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        !lines.is_empty()
    });
    assert!(got, "no syslog line for the local probe");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let syslog = &listener.health()["outputs"]["syslog"];
    assert_eq!(
        (&syslog["written"], &syslog["dropped"]),
        (&json!(1), &json!(0))
    );
}
