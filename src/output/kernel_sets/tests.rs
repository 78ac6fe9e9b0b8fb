//! The shared core through the real store and writer, with a backend that records what it is
//! asked to do.
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::actors::{AllowList, Cidr, Ttl};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Load(Vec<Element>),
    Apply(Changes),
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    fail: Arc<AtomicBool>,
}

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn outcome(&self, call: Call) -> Result<(), String> {
        self.calls.lock().unwrap().push(call);
        if self.fail.load(Ordering::Relaxed) {
            Err("refused".into())
        } else {
            Ok(())
        }
    }
}

impl Backend for Recorder {
    fn load(&mut self, elements: &[Element]) -> Result<(), String> {
        let mut elements = elements.to_vec();
        elements.sort_by_key(|e| e.ip);
        self.outcome(Call::Load(elements))
    }
    fn apply(&mut self, changes: &Changes) -> Result<(), String> {
        self.outcome(Call::Apply(changes.clone()))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    writer: crate::store::Writer,
    rules: Arc<Rules>,
    set: KernelSet<Recorder>,
    backend: Recorder,
    hangups: Vec<Box<dyn Fn() + Send + Sync>>,
}

const TTL_SECS: u64 = 3600;

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let opened = crate::store::open(&path).unwrap();
    let mut writer = opened.writer;
    let rules = Arc::new(Rules::new(
        Ttl::For(Duration::from_secs(TTL_SECS)),
        1,
        Default::default(),
        AllowList::new([Cidr::parse("203.0.113.0/24").unwrap()]),
    ));
    writer.set_rules(rules.clone()).unwrap();
    while writer.reevaluating() {
        writer.maintain(crate::actors::now_ms()).unwrap();
    }
    let backend = Recorder::default();
    let mut cx = BuildContext {
        node_id: opened.node_id,
        db_file: &path,
        counters: Default::default(),
        writer: None,
        webhook_stats: None,
        on_hangup: Vec::new(),
        rules: rules.clone(),
        bgp_stats: None,
        shutdown: Default::default(),
        kernel_sets: Vec::new(),
        live: None,
    };
    let stats = Arc::new(KernelSetStats::new("test"));
    let set = KernelSet::new(backend.clone(), &mut cx, stats);
    assert_eq!(cx.kernel_sets.len(), 1);
    let hangups = std::mem::take(&mut cx.on_hangup);
    Setup {
        _dir: dir,
        writer,
        rules,
        set,
        backend,
        hangups,
    }
}

fn event(source: &str, origin: Origin) -> Arc<Event> {
    let mut e = crate::event::tests::sample();
    e.source = std::net::SocketAddr::new(source.parse().unwrap(), 5060);
    e.destination = "198.51.100.250:5060".parse().unwrap();
    e.timestamp = crate::event::now_timestamp();
    e.uuid = uuid::Uuid::new_v4();
    e.origin = origin;
    Arc::new(e)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The addresses of a load or an apply's additions, and a check that their timeouts are
/// about the TTL.
fn added(call: &Call) -> Vec<IpAddr> {
    let elements: Vec<Element> = match call {
        Call::Load(e) => e.clone(),
        Call::Apply(c) => c.add.iter().chain(c.replace.iter()).copied().collect(),
    };
    for e in &elements {
        let ms = e.timeout_ms.unwrap();
        assert!(
            ms > (TTL_SECS - 60) * 1000 && ms <= TTL_SECS * 1000 + 1000,
            "{e:?}"
        );
    }
    elements.iter().map(|e| e.ip).collect()
}

impl Setup {
    /// Runs the periodic upkeep with the feed due.
    fn tick_with_feed(&mut self) {
        self.set.next_feed = Instant::now();
        self.set.tick();
    }
}

#[test]
fn startup_loads_what_the_store_lists_and_leaves_out_loopback_and_excluded() {
    let mut s = setup();
    s.writer
        .write_batch(&[
            event("192.0.2.7", Origin::Local),
            event("127.0.0.1", Origin::Local),
            event("203.0.113.9", Origin::Local),
            event("2001:db8::7", Origin::Local),
            // A single peer author lists with corroboration 1.
            event("192.0.2.8", Origin::Peer("12D3KooWpeer".into())),
        ])
        .unwrap();
    s.set.tick();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(matches!(calls[0], Call::Load(_)));
    assert_eq!(
        added(&calls[0]),
        [ip("192.0.2.7"), ip("192.0.2.8"), ip("2001:db8::7")]
    );
    assert_eq!(s.set.stats.elements.load(Ordering::Relaxed), 3);
    assert_eq!(s.set.stats.reconciles.load(Ordering::Relaxed), 1);
    assert!(s.set.stats.last_reconcile_ms.load(Ordering::Relaxed) > 0);
    // Nothing new: the feed and the flush have nothing to do.
    s.tick_with_feed();
    assert!(s.backend.take().is_empty());
}

#[test]
fn local_events_reach_the_kernel_in_one_batch_without_the_store() {
    let mut s = setup();
    s.set.tick();
    assert_eq!(s.backend.take(), [Call::Load(vec![])]);
    let batch = [
        event("192.0.2.1", Origin::Local),
        event("192.0.2.1", Origin::Local),
        event("2001:db8::1", Origin::Local),
        // Never: allowlisted, loopback, a peer's word alone, a probe forged from our own address.
        event("203.0.113.1", Origin::Local),
        event("127.0.0.5", Origin::Local),
        event("192.0.2.2", Origin::Peer("12D3KooWpeer".into())),
        event("198.51.100.250", Origin::Local),
    ];
    s.set.write(&batch).unwrap();
    s.set.tick();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let mut got = added(&calls[0]);
    got.sort();
    assert_eq!(got, [ip("192.0.2.1"), ip("2001:db8::1")]);
    let Call::Apply(c) = &calls[0] else { panic!() };
    assert!(c.replace.is_empty() && c.remove.is_empty());
    assert_eq!(s.set.stats.added.load(Ordering::Relaxed), 2);
    assert_eq!(s.set.stats.batches.load(Ordering::Relaxed), 2);
    // Seen again at once: already there, nothing to do.
    s.set.write(&[event("192.0.2.1", Origin::Local)]).unwrap();
    s.set.tick();
    assert!(s.backend.take().is_empty());
    // The store then writes the same events: the feed confirms the node's own sightings
    // without a change, and brings the peer's report, which it lists (corroboration 1).
    s.writer.write_batch(&batch).unwrap();
    s.tick_with_feed();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(added(&calls[0]), [ip("192.0.2.2")]);
    assert!(s.set.known[&ip("192.0.2.1")].confirmed);
}

#[test]
fn the_feed_brings_peers_listings_and_removals() {
    let mut s = setup();
    s.set.tick();
    s.backend.take();
    s.writer
        .write_batch(&[
            event("192.0.2.30", Origin::Peer("12D3KooWpeer".into())),
            event("192.0.2.31", Origin::Local),
        ])
        .unwrap();
    s.tick_with_feed();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let mut got = added(&calls[0]);
    got.sort();
    assert_eq!(got, [ip("192.0.2.30"), ip("192.0.2.31")]);
    // 192.0.2.31 turns out to be this node's own address: the store ends its listing.
    let mut own = (*event("192.0.2.99", Origin::Local)).clone();
    own.destination = "192.0.2.31:5060".parse().unwrap();
    s.writer.write_batch(&[Arc::new(own)]).unwrap();
    s.tick_with_feed();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let Call::Apply(c) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(c.remove, [ip("192.0.2.31")]);
    assert_eq!(added(&calls[0]), [ip("192.0.2.99")]);
    assert_eq!(s.set.stats.removed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_listing_the_store_has_not_written_yet_survives_a_reconcile() {
    let mut s = setup();
    s.set.tick();
    s.backend.take();
    s.set.write(&[event("192.0.2.40", Origin::Local)]).unwrap();
    s.set.tick();
    s.backend.take();
    // SIGHUP: a whole rewrite, which keeps the event's address.
    for f in &s.hangups {
        f();
    }
    s.set.tick();
    let calls = s.backend.take();
    assert!(matches!(calls[..], [Call::Load(_)]), "{calls:?}");
    assert_eq!(added(&calls[0]), [ip("192.0.2.40")]);
}

#[test]
fn an_allowlist_reload_takes_addresses_out_at_once() {
    let mut s = setup();
    s.writer
        .write_batch(&[
            event("192.0.2.50", Origin::Local),
            event("192.0.2.51", Origin::Local),
        ])
        .unwrap();
    s.set.tick();
    s.backend.take();
    s.rules
        .set_allow(AllowList::new([Cidr::parse("192.0.2.50/32").unwrap()]));
    s.set.tick();
    let calls = s.backend.take();
    assert!(matches!(calls[..], [Call::Load(_)]), "{calls:?}");
    assert_eq!(added(&calls[0]), [ip("192.0.2.51")]);
}

#[test]
fn a_failed_batch_is_counted_and_the_sets_are_rewritten_whole() {
    let mut s = setup();
    s.set.tick();
    s.backend.take();
    s.backend.fail.store(true, Ordering::Relaxed);
    s.set.write(&[event("192.0.2.60", Origin::Local)]).unwrap();
    s.set.tick();
    assert_eq!(s.set.stats.failures.load(Ordering::Relaxed), 1);
    s.backend.take();
    // While failing, new addresses wait for the retry instead of failing batch after batch.
    s.set.write(&[event("192.0.2.61", Origin::Local)]).unwrap();
    s.set.tick();
    assert!(s.backend.take().is_empty());
    assert_eq!(s.set.stats.failures.load(Ordering::Relaxed), 1);
    s.backend.fail.store(false, Ordering::Relaxed);
    // Not at once, then when the retry is due.
    s.set.tick();
    assert!(s.backend.take().is_empty());
    s.set.next_full = Instant::now();
    s.set.tick();
    let calls = s.backend.take();
    assert!(matches!(calls[..], [Call::Load(_)]), "{calls:?}");
    assert_eq!(added(&calls[0]), [ip("192.0.2.60"), ip("192.0.2.61")]);
    // Back to batches.
    s.set.write(&[event("192.0.2.62", Origin::Local)]).unwrap();
    s.set.tick();
    let calls = s.backend.take();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(added(&calls[0]), [ip("192.0.2.62")]);
}

#[test]
fn an_extension_beyond_the_slack_replaces_the_element() {
    let mut s = setup();
    s.set.tick();
    s.backend.take();
    let now = crate::actors::now_ms();
    s.set.list(ip("192.0.2.70"), now + 10_000, true, now);
    s.set.flush().unwrap();
    s.backend.take();
    // Within the slack (a hundredth of the TTL): nothing; beyond it: a replacement.
    s.set.list(ip("192.0.2.70"), now + 20_000, true, now);
    s.set.flush().unwrap();
    assert!(s.backend.take().is_empty());
    s.set.list(ip("192.0.2.70"), now + 60_000, true, now);
    s.set.flush().unwrap();
    let calls = s.backend.take();
    let [Call::Apply(c)] = &calls[..] else {
        panic!("{calls:?}")
    };
    assert!(c.add.is_empty() && c.replace.len() == 1 && c.remove.is_empty());
}

#[test]
fn what_may_go_in_a_kernel_set() {
    for yes in ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "100.64.0.1"] {
        assert!(enforceable(ip(yes)), "{yes}");
    }
    for no in [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "255.255.255.255",
        "::ffff:127.0.0.1",
    ] {
        assert!(!enforceable(ip(no)), "{no}");
    }
}
