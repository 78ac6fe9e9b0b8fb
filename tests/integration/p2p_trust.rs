//! The peer network against a hostile peer: in-process libp2p peers that forge, re-sign,
//! replay and alter signed events, by gossip and in catch-up pages, against a real node that
//! lists an address on a single author's word (`--p2p-corroboration=1`), so that any event
//! taken from them would show. Every attack asserts what reached the victim: events accepted,
//! `peer_events_rejected`, and innocent addresses listed (none). And the sensor's own address
//! never leaves it.

use std::net::UdpSocket;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, SwarmBuilder, identity, noise, tcp, yamux};
use sentrypeer::p2p::catchup::{self, Request, Response};
use sentrypeer::p2p::validate::Signer;
use sentrypeer::p2p::wire;
use serde_json::Value;

use crate::harness::*;
use crate::p2p::{
    Format, LAB, ONE_AUTHOR, RawPeer, good_event, p2p_node, probe, rows_for, rows_with_uuid,
    wait_connected,
};

/// Addresses the attacks blame: nobody ever probed the victim from them.
const INNOCENT: [&str; 3] = ["9.9.9.9", "1.1.1.1", "149.112.112.112"];

/// The node under attack: it takes one author's report as a verdict, and logs why it refuses.
fn victim() -> Node {
    p2p_node(None, None, &[LAB, ONE_AUTHOR, "-d"])
}

/// How many of `ips` the victim lists: by lookup, in its plain blocklist, or has any event of.
fn listed(v: &Node, ips: &[&str]) -> usize {
    let plain = String::from_utf8(v.get("/blocklist/ip-addresses?format=plain").body).unwrap();
    ips.iter()
        .filter(|ip| {
            v.get(&format!("/ip-addresses/{ip}")).status != 404
                || plain.lines().any(|l| l.trim() == **ip)
                || v.count(&format!(
                    "SELECT count(*) FROM honey WHERE source_ip = '{ip}'"
                )) > 0
        })
        .count()
}

/// Waits for the victim to have refused `n` events, and checks it refused no more.
fn wait_rejected(v: &Node, n: u64) {
    let ok = poll(DEFAULT_WAIT, || v.counter("peer_events_rejected") >= n);
    assert!(
        ok,
        "rejected {} of {n}\n{}",
        v.counter("peer_events_rejected"),
        v.log_text()
    );
    assert_eq!(v.counter("peer_events_rejected"), n, "{}", v.log_text());
}

/// Waits for the victim to have logged `n` refusals of a gossiped event for `reason` (the
/// line follows the count), and checks there are no more.
fn wait_refusals(v: &Node, reason: &str, n: usize) {
    let count = || {
        v.log_text()
            .lines()
            .filter(|l| l.contains("Rejected an event from a peer.") && l.contains(reason))
            .count()
    };
    assert!(poll(DEFAULT_WAIT, || count() >= n), "{}", v.log_text());
    assert_eq!(count(), n, "{reason}\n{}", v.log_text());
}

/// A real node whose genuine event the victim holds: the node, the event's UUID, and the
/// event as its author signed it (from the victim's store of signed events).
fn honest_author(v: &Node, number: &str) -> (Node, String, Vec<u8>) {
    let h = p2p_node(None, Some(v), &[LAB]);
    wait_connected(&[v, &h], 1);
    probe(&h, number, 1);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(v, number) == 1),
        "the honest event never arrived\n{}",
        v.log_text()
    );
    let (uuid, author, payload): (String, String, Vec<u8>) = v
        .db()
        .query_row(
            "SELECT h.event_uuid, s.author, s.payload FROM honey h
             JOIN sentrypeer_signed_events s ON s.event_uuid = h.event_uuid
             WHERE h.called_number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(author, peer_id(&h));
    (h, uuid, payload)
}

/// An envelope's key, signature, and the exact text of the event it signs.
fn parts(envelope: &[u8]) -> (String, String, String) {
    let v: Value = serde_json::from_slice(envelope).unwrap();
    let text = std::str::from_utf8(envelope).unwrap();
    let at = text.find("\"event\":").unwrap() + "\"event\":".len();
    (
        v["key"].as_str().unwrap().to_string(),
        v["signature"].as_str().unwrap().to_string(),
        text[at..text.len() - 1].to_string(),
    )
}

fn wrap(key: &str, signature: &str, event: &str) -> Vec<u8> {
    format!("{{\"key\":\"{key}\",\"signature\":\"{signature}\",\"event\":{event}}}").into_bytes()
}

/// The same envelope in other bytes (its keys in another order): the event and its
/// signature unchanged.
fn re_encoded(envelope: &[u8]) -> Vec<u8> {
    let (key, signature, event) = parts(envelope);
    format!("{{\"event\":{event},\"signature\":\"{signature}\",\"key\":\"{key}\"}}").into_bytes()
}

/// The signed event inside an envelope, as JSON to change.
fn event_of(envelope: &[u8]) -> Value {
    serde_json::from_str(&parts(envelope).2).unwrap()
}

/// The envelope with one field of its event changed, its key and signature kept.
fn altered(envelope: &[u8], field: &str, value: Value) -> Vec<u8> {
    let (key, signature, _) = parts(envelope);
    let mut event = event_of(envelope);
    event[field] = value;
    wrap(&key, &signature, &event.to_string())
}

fn days_ago(days: u64) -> String {
    sentrypeer::event::format_timestamp(SystemTime::now() - Duration::from_secs(days * 24 * 3600))
}

#[test]
fn an_event_under_a_made_up_or_another_nodes_id_is_refused_and_lists_no_one() {
    let v = victim();
    let target = v.p2p()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Signed by its sender, under a node id nobody's key gives.
    let forger = RawPeer::start(&rt, &target, Format::Wire);
    let (made_up, mut e) = good_event("5561001");
    e["source_ip"] = "9.9.9.9:5060".into();
    e["created_by_node_id"] = uuid::Uuid::new_v4().hyphenated().to_string().into();
    forger.publish(forger.signer.seal(e.to_string().as_bytes()));
    // Signed by its sender, under the node id of another node's key.
    let impostor = RawPeer::start(&rt, &target, Format::Wire);
    let someone = Signer::new(&identity::Keypair::generate_ed25519()).unwrap();
    let (borrowed, mut e) = good_event("5561002");
    e["source_ip"] = "1.1.1.1:5060".into();
    e["created_by_node_id"] = someone.node_id().hyphenated().to_string().into();
    impostor.publish(impostor.signer.seal(e.to_string().as_bytes()));

    wait_rejected(&v, 2);
    wait_refusals(&v, "created_by_node_id is not the node id", 2);
    assert_eq!(
        rows_with_uuid(&v, &made_up) + rows_with_uuid(&v, &borrowed),
        0
    );
    assert_eq!(v.counter("peer_events_accepted"), 0);
    assert_eq!(listed(&v, &INNOCENT), 0);

    // The same victim lists on one honest author's word: the figures above are no accident.
    let honest = RawPeer::start(&rt, &target, Format::Wire);
    let (good, mut e) = good_event("5561003");
    e["source_ip"] = "8.8.4.4:5060".into();
    honest.publish(honest.seal(&e));
    assert!(poll(DEFAULT_WAIT, || v.get("/ip-addresses/8.8.4.4").status
        == 200));
    let plain = v.get("/blocklist/ip-addresses?format=plain");
    assert_eq!(plain.status, 200);
    let plain = String::from_utf8(plain.body).unwrap();
    assert!(plain.lines().any(|l| l == "8.8.4.4"), "{plain}");
    assert_eq!(rows_with_uuid(&v, &good), 1);
    assert_eq!(v.counter("peer_events_accepted"), 1);
    assert_eq!(v.counter("peer_events_rejected"), 2);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn an_unsigned_event_in_the_old_format_is_refused_and_counted() {
    let v = victim();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = RawPeer::start(&rt, &v.p2p()[0], Format::Wire);
    let (uuid, mut e) = good_event("5561101");
    e["source_ip"] = "9.9.9.9:5060".into();
    e["created_by_node_id"] = old.signer.node_id().hyphenated().to_string().into();
    // The bare event object, as nodes shared it before events were signed.
    old.publish(e.to_string().into_bytes());
    wait_rejected(&v, 1);
    wait_refusals(&v, "not signed by its author", 1);
    assert_eq!(rows_with_uuid(&v, &uuid), 0);
    assert_eq!(v.counter("peer_events_accepted"), 0);
    assert_eq!(listed(&v, &INNOCENT), 0);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn a_real_nodes_event_re_signed_by_another_key_is_refused_whatever_node_id_it_claims() {
    let v = victim();
    let (h, uuid, genuine) = honest_author(&v, "5562001");
    let target = v.p2p()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut blamed = event_of(&genuine);
    blamed["source_ip"] = "9.9.9.9:5060".into();
    // The author's node id kept, signed with another key.
    let keeps_id = RawPeer::start(&rt, &target, Format::Wire);
    keeps_id.publish(keeps_id.signer.seal(blamed.to_string().as_bytes()));
    // Under the re-signer's own node id, blaming an innocent address...
    let own_id = RawPeer::start(&rt, &target, Format::Wire);
    own_id.publish(own_id.seal(&blamed));
    // ... or exactly as the author wrote it: the UUID is the author's.
    let as_is = RawPeer::start(&rt, &target, Format::Wire);
    as_is.publish(as_is.seal(&event_of(&genuine)));

    wait_rejected(&v, 3);
    wait_refusals(&v, "created_by_node_id is not the node id", 1);
    assert_eq!(v.counter("peer_events_accepted"), 1, "the genuine one only");
    assert_eq!(rows_with_uuid(&v, &uuid), 1);
    let author: String = v
        .db()
        .query_row(
            "SELECT received_from_peer FROM honey WHERE event_uuid = ?1",
            [&uuid],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(author, peer_id(&h));
    assert_eq!(listed(&v, &INNOCENT), 0);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn replays_of_a_week_old_or_an_already_held_event_are_never_taken_again() {
    let v = victim();
    let (_h, uuid, genuine) = honest_author(&v, "5563001");
    let target = v.p2p()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A real node's event, published again by another peer: as it is (the same message,
    // whose id is its content), and re-encoded (another message carrying the same signed
    // event). Neither is a second report. A week and a day old one last: refused, and (from
    // the same peer, in order) proof that the ones before it were judged.
    let replayer = RawPeer::start(&rt, &target, Format::Wire);
    replayer.publish(genuine.clone());
    replayer.publish(re_encoded(&genuine));
    let (old, mut e) = good_event("5563004");
    e["source_ip"] = "9.9.9.9:5060".into();
    e["event_timestamp"] = days_ago(8).into();
    replayer.publish(replayer.seal(&e));
    wait_rejected(&v, 1);
    wait_refusals(&v, "older than seven days", 1);
    assert_eq!(v.counter("peer_events_accepted"), 1, "the genuine one only");
    assert_eq!(rows_with_uuid(&v, &uuid), 1);
    assert_eq!(rows_with_uuid(&v, &old), 0);

    // Its own event, taken once, then sent again (re-encoded: the same bytes again would be
    // the same message, which gossipsub does not send twice): a duplicate, not a second
    // report. A week and a day old one last: refused, and (from the same peer, in order) proof
    // that the duplicate before it was judged.
    let writer = RawPeer::start(&rt, &target, Format::Wire);
    let (fresh, mut e) = good_event("5563002");
    e["source_ip"] = "192.0.2.77:5060".into();
    let sealed = writer.seal(&e);
    writer.publish(sealed.clone());
    assert!(poll(DEFAULT_WAIT, || rows_with_uuid(&v, &fresh) == 1));
    writer.publish(re_encoded(&sealed));
    let (stale, mut e) = good_event("5563003");
    e["source_ip"] = "9.9.9.9:5060".into();
    e["event_timestamp"] = days_ago(8).into();
    writer.publish(writer.seal(&e));

    wait_rejected(&v, 2);
    wait_refusals(&v, "older than seven days", 2);
    assert_eq!(rows_with_uuid(&v, &uuid), 1);
    assert_eq!(rows_with_uuid(&v, &fresh), 1);
    assert_eq!(rows_with_uuid(&v, &stale), 0);
    assert_eq!(
        v.counter("peer_events_accepted"),
        2,
        "the genuine and the fresh"
    );
    assert_eq!(listed(&v, &INNOCENT), 0);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn a_real_nodes_event_altered_in_any_field_fails_its_signature() {
    let v = victim();
    let (_h, uuid, genuine) = honest_author(&v, "5564001");
    let target = v.p2p()[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = sentrypeer::event::format_timestamp(SystemTime::now());
    let changes: [(&str, Value); 5] = [
        ("source_ip", "9.9.9.9:5060".into()),
        ("called_number", "5564999".into()),
        (
            "event_uuid",
            uuid::Uuid::new_v4().hyphenated().to_string().into(),
        ),
        ("event_timestamp", now.into()),
        ("sip_user_agent", "someone-else".into()),
    ];
    // One peer each (a peer that sends invalid events is soon ignored), kept until the end:
    // a peer that goes away may take what it published with it.
    let mut relays = Vec::new();
    for (field, value) in &changes {
        let relay = RawPeer::start(&rt, &target, Format::Wire);
        relay.publish(altered(&genuine, field, value.clone()));
        relays.push(relay);
    }
    wait_rejected(&v, changes.len() as u64);
    wait_refusals(&v, "signature does not match", changes.len());
    assert_eq!(rows_with_uuid(&v, &uuid), 1);
    assert_eq!(rows_for(&v, "5564999"), 0);
    assert_eq!(v.count("SELECT count(*) FROM honey"), 1);
    assert_eq!(v.counter("peer_events_accepted"), 1);
    assert_eq!(listed(&v, &INNOCENT), 0);
    drop(relays);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[derive(NetworkBehaviour)]
struct HostileBehaviour {
    gossipsub: gossipsub::Behaviour<wire::Deflate>,
    catch_up: request_response::cbor::Behaviour<Request, Response>,
}

/// An in-process peer that answers every catch-up request with the page it was given, and
/// tells the test each time it has.
struct HostileServer {
    served: std_mpsc::Receiver<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HostileServer {
    fn start(rt: &tokio::runtime::Runtime, target: &str, page: Vec<String>) -> HostileServer {
        let key = identity::Keypair::generate_ed25519();
        let target: Multiaddr = target.parse().unwrap();
        let (served_tx, served) = std_mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            let mut swarm = SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|_| HostileBehaviour {
                    gossipsub: gossipsub::Behaviour::new(
                        MessageAuthenticity::Anonymous,
                        wire::config_builder().build().unwrap(),
                    )
                    .unwrap(),
                    catch_up: request_response::cbor::Behaviour::new(
                        [(
                            StreamProtocol::new(catchup::PROTOCOL),
                            ProtocolSupport::Full,
                        )],
                        request_response::Config::default(),
                    ),
                })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            let topic = IdentTopic::new(sentrypeer::p2p::TOPIC);
            swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
            swarm.dial(target).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    event = swarm.select_next_some() => {
                        let SwarmEvent::Behaviour(HostileBehaviourEvent::CatchUp(
                            request_response::Event::Message {
                                message: request_response::Message::Request { request, channel, .. },
                                ..
                            },
                        )) = event else {
                            continue;
                        };
                        let response = match request {
                            Request::CatchUp { .. } => Response::Events {
                                events: page.clone(),
                                next: None,
                            },
                            Request::Peers => Response::Peers { peers: vec![] },
                        };
                        let is_page = matches!(response, Response::Events { .. });
                        let _ = swarm.behaviour_mut().catch_up.send_response(channel, response);
                        if is_page {
                            let _ = served_tx.send(());
                        }
                    }
                }
            }
        });
        HostileServer {
            served,
            _stop: stop,
        }
    }
}

#[test]
fn catch_up_pages_of_forged_unsigned_altered_re_signed_or_stale_events_are_refused() {
    let v = victim();
    let (_h, uuid, genuine) = honest_author(&v, "5565001");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = Signer::new(&identity::Keypair::generate_ed25519()).unwrap();
    let sign = |mut e: Value, node_id: uuid::Uuid| {
        e["created_by_node_id"] = node_id.hyphenated().to_string().into();
        String::from_utf8(server.seal(e.to_string().as_bytes())).unwrap()
    };
    let blame = |number: &str, ip: &str| {
        let (u, mut e) = good_event(number);
        e["source_ip"] = format!("{ip}:5060").into();
        (u, e)
    };
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let (forged, e) = blame("5565002", "9.9.9.9");
    let forged_event = sign(e, uuid::Uuid::new_v4());
    let (unsigned, e) = blame("5565003", "1.1.1.1");
    let unsigned_event = e.to_string();
    let (stale, mut e) = blame("5565004", "149.112.112.112");
    e["event_timestamp"] = days_ago(8).into();
    let stale_event = sign(e, server.node_id());
    let altered_event = text(altered(&genuine, "source_ip", "9.9.9.9:5060".into()));
    let mut blamed = event_of(&genuine);
    blamed["source_ip"] = "1.1.1.1:5060".into();
    let re_signed_event = sign(blamed, server.node_id());
    let page = vec![
        forged_event,
        unsigned_event,
        stale_event,
        altered_event,
        re_signed_event,
        // Already held, from its author: taken as what it is, a duplicate.
        text(genuine.clone()),
    ];
    let hostile = HostileServer::start(&rt, &v.p2p()[0], page);
    hostile
        .served
        .recv_timeout(DEFAULT_WAIT)
        .expect("the victim asked for a page");
    wait_rejected(&v, 5);
    for u in [&forged, &unsigned, &stale] {
        assert_eq!(rows_with_uuid(&v, u), 0);
    }
    assert_eq!(rows_with_uuid(&v, &uuid), 1);
    assert_eq!(v.count("SELECT count(*) FROM honey"), 1);
    assert_eq!(v.counter("peer_events_accepted"), 1, "the genuine one only");
    assert_eq!(listed(&v, &INNOCENT), 0);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Occurrences of `needle` in every stored SIP message of a node.
fn occurrences(n: &Node, needle: &str) -> usize {
    let db = n.db();
    let mut stmt = db.prepare("SELECT sip_message FROM honey").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|m| m.unwrap().matches(needle).count())
        .sum()
}

#[test]
fn the_sensors_own_address_in_a_probe_never_reaches_a_peer_by_gossip_or_catch_up() {
    let sensor = p2p_node(None, None, &[LAB]);
    let peer = p2p_node(None, Some(&sensor), &[LAB]);
    wait_connected(&[&sensor, &peer], 1);
    let at = sensor.udp[0];
    let ip = at.ip().to_string();
    assert_eq!(ip, "127.0.0.1", "listens where the probe names it");
    let probe = format!(
        "OPTIONS sip:5566001@{at} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {at};branch=z9hG4bK-own;rport\r\n\
         Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bK-scanner\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:5566001@{ip}>\r\n\
         From: <sip:scanner@127.0.0.5>;tag=1\r\n\
         Contact: <sip:scanner@[::ffff:{ip}]>\r\n\
         User-Agent: anonymity-test\r\n\
         Call-ID: own-address-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    // From another loopback address, so that the source is not the sensor's own.
    let scanner = UdpSocket::bind("127.0.0.5:0").unwrap();
    scanner.send_to(probe.as_bytes(), at).unwrap();
    assert!(poll(DEFAULT_WAIT, || rows_for(&sensor, "5566001") == 1));
    // The sensor's own record keeps the message as received.
    assert_eq!(occurrences(&sensor, &ip), 4);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&peer, "5566001") == 1),
        "{}",
        peer.log_text()
    );
    // A node that joins later gets it in a catch-up page.
    let late = p2p_node(None, Some(&sensor), &[LAB]);
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&late, "5566001") == 1),
        "{}",
        late.log_text()
    );
    let sensor_id = peer_id(&sensor);
    for n in [&peer, &late] {
        assert_eq!(occurrences(n, &ip), 0, "{}", n.count("SELECT 0"));
        assert_eq!(
            occurrences(n, "127.0.0.5"),
            2,
            "the scanner's address stays"
        );
        let (destination, author, source): (String, String, String) = n
            .db()
            .query_row(
                "SELECT destination_ip, received_from_peer, source_ip FROM honey",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(destination, format!("0.0.0.0:{}", at.port()));
        assert_eq!(author, sensor_id);
        assert_eq!(source, "127.0.0.5");
    }
}
