//! The peer network bounded against a hostile peer: a host cycling through fresh identities
//! while flooding catch-up requests (and answering the node's own with made-up events, signed
//! under each identity's key) meets
//! the connection limits, the shared grace budget and the catch-up budgets, and the node's
//! memory, database and honest peers' propagation stay within bounds. And standing survives a
//! restart. Every wait is a poll with a deadline.

use std::time::{Duration, Instant, SystemTime};

use sentrypeer::p2p::catchup::MAX_PAGE_EVENTS;
use sentrypeer::p2p::standing::{
    CATCH_UP_NEW_PEERS_LIMITS, CATCH_UP_SERVED_LIMITS, GRACE_ADMISSIONS_BURST,
};
use serde_json::Value;

use crate::harness::*;
use crate::sybil::{self, Flood};

/// Accept loopback sources: the honest peer's probe comes from 127.0.0.1.
const LAB: &str = "--p2p-allow-private";
/// Catch-up requests each hostile identity sends at once.
const FLOOD_REQUESTS: u64 = 10;
/// The resident memory the node under attack must stay under.
const MAX_RSS_KIB: u64 = 100 * 1024;

fn p2p_node(dir: Option<tempfile::TempDir>, bootstrap: &[&Node], extra: &[&str]) -> Node {
    p2p_node_from(dir, bootstrap, &[&[LAB], extra].concat())
}

fn view_of(n: &Node, id: &str) -> Option<Value> {
    let r = n.get("/peers");
    assert_eq!(r.status, 200);
    r.json()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == id)
        .cloned()
}

fn rows_for(n: &Node, number: &str) -> i64 {
    n.count(&format!(
        "SELECT count(*) FROM honey WHERE called_number = '{number}'"
    ))
}

/// The peak resident memory of a process, in KiB (Linux).
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A database as a node that has been running a while leaves it: `n` recent events.
fn seed(dir: &tempfile::TempDir, n: usize) {
    let conn = rusqlite::Connection::open(dir.path().join("sentrypeer.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE honey (honey_id INTEGER PRIMARY KEY, event_timestamp TEXT, event_uuid TEXT,
          collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
          user_agent TEXT, sip_message TEXT, created_by_node_id TEXT,
          created_at DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let node = uuid::Uuid::new_v4().hyphenated().to_string();
    for i in 0..n {
        tx.execute(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
              called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
             VALUES (?1, ?2, 'passive', ?3, ?4, 'UDP', 'OPTIONS', 'friendly-scanner',
              'OPTIONS sip:100@198.51.100.10 SIP/2.0', ?5)",
            rusqlite::params![
                sentrypeer::event::format_timestamp(
                    SystemTime::now() - Duration::from_secs(3600 + i as u64)
                ),
                uuid::Uuid::new_v4().hyphenated().to_string(),
                format!("203.0.113.{}", i % 250),
                format!("555{i:06}"),
                node,
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn two_hundred_fresh_identities_flooding_catch_up_stay_within_the_limits_and_budgets() {
    const SEEDED: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    seed(&dir, SEEDED);
    let victim = p2p_node(Some(dir), &[], &[]);
    let honest = p2p_node(None, &[&victim], &[]);
    let honest_id = peer_id(&honest);
    assert!(
        poll(DEFAULT_WAIT, || view_of(&victim, &honest_id)
            .is_some_and(|v| v["in_mesh"] == true)),
        "the honest peer never joined:\n{}",
        victim.log_text()
    );
    // The honest peer catches up on the seeded events first (it is new: in grace).
    assert!(
        poll(DEFAULT_WAIT, || honest.count("SELECT count(*) FROM honey")
            == SEEDED as i64),
        "{}",
        honest.log_text()
    );
    let before = victim.count("SELECT count(*) FROM honey");

    // First identities paced under the per-address limit, so that every one connects and
    // meets the grace and catch-up budgets; then a burst, which meets the connection limits.
    let paced = Flood {
        identities: 200,
        concurrency: 6,
        requests: FLOOD_REQUESTS as usize,
        hold: Duration::from_millis(300),
        retries: 100,
        timeout: Duration::from_secs(30),
    };
    let burst = Flood {
        identities: 60,
        concurrency: 30,
        requests: 1,
        hold: Duration::from_secs(1),
        retries: 0,
        timeout: Duration::from_secs(30),
    };
    let target: libp2p::Multiaddr = victim.p2p()[0].parse().unwrap();
    let attack = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tallies = rt.block_on(async {
            let paced = sybil::run(target.clone(), paced).await;
            let burst = sybil::run(target, burst).await;
            (paced, burst)
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        tallies
    });

    // In the middle of it, the honest peer's probe still reaches the victim.
    assert!(
        poll(DEFAULT_WAIT, || victim.counter("peer_grace_refused") > 0),
        "no identity refused grace:\n{}",
        victim.log_text()
    );
    honest.send_udp(&options("5559001", "p2p-bounds", 1));
    let sent = Instant::now();
    assert!(
        poll(DEFAULT_WAIT, || rows_for(&victim, "5559001") == 1),
        "the honest event did not arrive during the flood:\n{}",
        victim.log_text()
    );
    let propagation = sent.elapsed();

    let (tally, burst) = attack.join().unwrap();
    let counters = victim.health()["counters"].clone();
    let count = |k: &str| counters[k].as_u64().unwrap();
    let rss = vm_hwm_kib(victim.pid());
    let after = victim.count("SELECT count(*) FROM honey");
    eprintln!(
        "paced: {tally:?}\nburst: {burst:?}\nrefused connections {}, grace refused {}, requests refused {}, \
         events served {}, catch-up limited {}, rows {before} -> {after}, VmHWM {rss} KiB, \
         honest propagation {propagation:?}",
        count("peer_connections_refused"),
        count("peer_grace_refused"),
        count("peer_requests_refused"),
        count("peer_catch_up_events_served"),
        count("peer_catch_up_limited"),
    );

    assert_eq!(tally.identities + burst.identities, 260);
    assert_eq!(tally.connected + tally.dial_failed, 200, "{tally:?}");
    assert_eq!(burst.connected + burst.dial_failed, 60, "{burst:?}");
    // Connection limits: 8 per address, the honest peer holding one; every refusal counted.
    assert!(burst.dial_failed > 0, "{burst:?}");
    assert!(burst.connected < 8, "{burst:?}");
    assert!(
        count("peer_connections_refused") >= tally.dials_failed + burst.dials_failed,
        "{counters}"
    );
    // Grace is shared: the honest peer took one admission; the burst is all identities get
    // (the refill during the test is a fraction of one), and the rest start as listeners.
    let grace_burst = GRACE_ADMISSIONS_BURST as usize;
    let served = tally.served_identities + burst.served_identities;
    let connected = tally.connected + burst.connected;
    assert!(served < grace_burst, "{tally:?}");
    assert!(
        count("peer_grace_refused") >= connected.saturating_sub(grace_burst - 1) as u64,
        "{counters}"
    );
    // Catch-up served within budgets: listeners were refused every request, and what was
    // served fits the served identities' hourly budgets.
    let unserved = (tally.connected - tally.served_identities) as u64;
    assert!(
        tally.refusals_received >= unserved * FLOOD_REQUESTS,
        "{tally:?}"
    );
    assert!(count("peer_requests_refused") >= tally.refusals_received);
    let received = tally.events_received + burst.events_received;
    assert!(received as f64 <= served as f64 * CATCH_UP_SERVED_LIMITS.events_per_hour);
    assert!(tally.pages_received <= tally.served_identities as u64 * FLOOD_REQUESTS);
    assert!(count("peer_catch_up_events_served") >= received);
    // The database grows by what new peers may bring together in an hour (plus one page and
    // the honest probe), however many identities ask.
    let bound = CATCH_UP_NEW_PEERS_LIMITS.events_per_hour as i64 + MAX_PAGE_EVENTS as i64 + 1;
    assert!(after - before <= bound, "grew by {}", after - before);
    // The hostile events are signed by their identities: what the budgets let in is taken,
    // none refused as invalid.
    let hostile = victim.count("SELECT count(*) FROM honey WHERE source_ip LIKE '8.8.%'");
    assert!(
        hostile > 0,
        "no hostile event was taken:\n{}",
        victim.log_text()
    );
    assert_eq!(
        after - before,
        hostile + 1,
        "the hostile events and the honest probe"
    );
    assert_eq!(count("peer_events_rejected"), 0, "{counters}");
    // Memory.
    assert!(rss < MAX_RSS_KIB, "VmHWM {rss} KiB");

    // What is saved: a row for each identity that was given grace, and for the honest peer.
    let mut victim = victim;
    assert!(victim.signal("TERM").success());
    let rows = victim.count("SELECT count(*) FROM sentrypeer_peer_standing");
    assert!(
        rows >= 1 && rows as usize <= grace_burst,
        "{rows} standing rows"
    );
    assert_eq!(
        victim.count(&format!(
            "SELECT count(*) FROM sentrypeer_peer_standing WHERE peer_id = '{honest_id}' AND events_authored = 1"
        )),
        1
    );
}

#[test]
fn standing_survives_a_restart_and_a_restart_gives_no_one_a_second_grace_period() {
    let grace = ["--p2p-grace", "3"];
    let mut a = p2p_node(None, &[], &grace);
    let b = p2p_node(None, &[&a], &grace);
    let l = p2p_node(None, &[&a], &grace);
    let (b_id, l_id) = (peer_id(&b), peer_id(&l));
    assert!(
        poll(DEFAULT_WAIT, || view_of(&a, &b_id).is_some()
            && view_of(&a, &l_id).is_some()),
        "{}",
        a.log_text()
    );
    // b writes an event; l never does and is a listener once its grace is over.
    b.send_udp(&options("5559101", "p2p-bounds", 1));
    assert!(poll(DEFAULT_WAIT, || rows_for(&a, "5559101") == 1));
    assert!(
        poll(DEFAULT_WAIT, || view_of(&a, &l_id)
            .is_some_and(|v| v["standing"] == "listener")),
        "{}",
        a.log_text()
    );
    let b_on_a = view_of(&a, &b_id).unwrap();
    assert_eq!(b_on_a["standing"], "contributor", "{b_on_a}");

    // a restarts (on a new port, so it dials them).
    assert!(a.signal("TERM").success());
    let saved = a.count("SELECT count(*) FROM sentrypeer_peer_standing");
    assert_eq!(saved, 2, "b and l were both given grace");
    let dir = std::mem::replace(&mut a.dir, tempfile::tempdir().unwrap());
    let a = p2p_node(Some(dir), &[&b, &l], &grace);
    let ok = poll(DEFAULT_WAIT, || {
        view_of(&a, &b_id).is_some() && view_of(&a, &l_id).is_some()
    });
    assert!(ok, "{}", a.log_text());
    let l_on_a = view_of(&a, &l_id).unwrap();
    assert_eq!(l_on_a["standing"], "listener", "no second grace: {l_on_a}");
    assert!(l_on_a["seconds_known"].as_u64().unwrap() >= 3, "{l_on_a}");
    let b_on_a = view_of(&a, &b_id).unwrap();
    assert_eq!(b_on_a["standing"], "contributor", "{b_on_a}");
    assert_eq!(b_on_a["events_authored"], 1, "{b_on_a}");
}
