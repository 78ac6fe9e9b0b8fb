//! The bad-actor set in the database: listing, expiry, slack, exclusions, corroboration,
//! re-evaluation and migration, through the real writer on a temporary database.
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::actors::{AllowList, Cidr, Ttl};
use crate::event::{Event, Origin as EventOrigin};

const T0: i64 = 1_700_000_000_000;

fn event(source: &str, number: &str, at_ms: i64, origin: EventOrigin) -> Arc<Event> {
    let mut e = crate::event::tests::sample();
    e.source = format!("{source}:5060").parse().unwrap();
    e.destination = "198.51.100.250:5060".parse().unwrap();
    e.called_number = number.into();
    e.timestamp =
        crate::event::format_timestamp(std::time::UNIX_EPOCH + Duration::from_millis(at_ms as u64));
    e.uuid = uuid::Uuid::new_v4();
    e.origin = origin;
    Arc::new(e)
}

fn local(source: &str, number: &str, at_ms: i64) -> Arc<Event> {
    event(source, number, at_ms, EventOrigin::Local)
}

fn peer(source: &str, number: &str, at_ms: i64, author: &str) -> Arc<Event> {
    event(source, number, at_ms, EventOrigin::Peer(author.into()))
}

struct Db {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    writer: crate::store::Writer,
    rules: Arc<Rules>,
}

fn db(rules: Rules) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut writer = crate::store::open(&path).unwrap().writer;
    let rules = Arc::new(rules);
    writer.set_rules(rules.clone()).unwrap();
    while writer.reevaluating() {
        writer.maintain(T0).unwrap();
    }
    Db {
        _dir: dir,
        path,
        writer,
        rules,
    }
}

fn ttl_rules(secs: u64) -> Rules {
    Rules::new(
        Ttl::For(Duration::from_secs(secs)),
        2,
        ["trusted-peer".to_string()].into(),
        AllowList::new([Cidr::parse("192.0.2.0/24").unwrap()]),
    )
}

impl Db {
    fn listed(&self, kind: Kind, key: &str, now: i64) -> Option<i64> {
        let conn = Connection::open(&self.path).unwrap();
        get(&conn, kind, key)
            .unwrap()
            .and_then(|r| r.listed_until(kind, &self.rules, now))
    }

    fn changes(&self, kind: Kind, after: i64) -> Vec<(String, bool)> {
        self.changes_at(kind, after, T0 + 500)
    }

    /// The actors changed after `after`, and whether each is listed at `now`.
    fn changes_at(&self, kind: Kind, after: i64, now: i64) -> Vec<(String, bool)> {
        let conn = Connection::open(&self.path).unwrap();
        let upto = current_seq(&conn).unwrap() as i64;
        page_by_change(&conn, kind, after, upto, 1000)
            .unwrap()
            .into_iter()
            .map(|r| {
                let listed = matches!(r.entry(kind, &self.rules, now), Entry::Listed(_));
                (r.key, listed)
            })
            .collect()
    }
}

#[test]
fn a_local_sighting_lists_the_address_and_a_dialled_number_until_the_ttl_runs_out() {
    let mut d = db(ttl_rules(60));
    d.writer
        .write_batch(&[
            local("203.0.113.7", "+442012345678", T0),
            local("203.0.113.7", "admin", T0),
        ])
        .unwrap();
    assert_eq!(d.listed(Kind::Ip, "203.0.113.7", T0 + 1), Some(T0 + 60_000));
    assert_eq!(
        d.listed(Kind::Number, "+442012345678", T0 + 1),
        Some(T0 + 60_000)
    );
    assert_eq!(
        d.listed(Kind::Number, "admin", T0 + 1),
        None,
        "a user name is no number"
    );
    assert_eq!(
        d.listed(Kind::Ip, "203.0.113.7", T0 + 60_000),
        None,
        "expired"
    );
    // The sweep turns the expiry into a change consumers see.
    let before = d.changes(Kind::Ip, 0);
    assert_eq!(before, [("203.0.113.7".to_string(), true)]);
    let seq = current_seq(&Connection::open(&d.path).unwrap()).unwrap() as i64;
    assert_eq!(d.writer.maintain(T0 + 60_000).unwrap(), 2);
    assert_eq!(
        d.changes_at(Kind::Ip, seq, T0 + 60_000),
        [("203.0.113.7".to_string(), false)]
    );
}

#[test]
fn seen_again_within_the_slack_is_no_change_but_the_lookup_follows_the_newest_sighting() {
    let mut d = db(ttl_rules(600));
    d.writer
        .write_batch(&[local("203.0.113.7", "100", T0)])
        .unwrap();
    let seq = current_seq(&Connection::open(&d.path).unwrap()).unwrap() as i64;
    d.writer
        .write_batch(&[local("203.0.113.7", "100", T0 + 1_000)])
        .unwrap();
    assert!(d.changes(Kind::Ip, seq).is_empty(), "within 1% of the TTL");
    assert_eq!(d.listed(Kind::Ip, "203.0.113.7", T0), Some(T0 + 601_000));
    // Past the first announced expiry the sweep re-announces instead of removing.
    d.writer.maintain(T0 + 600_000).unwrap();
    assert_eq!(
        d.changes(Kind::Ip, seq),
        [("203.0.113.7".to_string(), true)]
    );
    // A sighting that moves the expiry by more than the slack is announced at once.
    let seq = current_seq(&Connection::open(&d.path).unwrap()).unwrap() as i64;
    d.writer
        .write_batch(&[local("203.0.113.7", "100", T0 + 100_000)])
        .unwrap();
    assert_eq!(d.changes(Kind::Ip, seq).len(), 1);
}

#[test]
fn allowlisted_and_own_addresses_are_never_listed() {
    let mut d = db(ttl_rules(60));
    d.writer
        .write_batch(&[
            local("192.0.2.9", "100", T0),
            local("198.51.100.250", "100", T0),
        ])
        .unwrap();
    assert_eq!(d.listed(Kind::Ip, "192.0.2.9", T0), None);
    assert_eq!(d.listed(Kind::Ip, "198.51.100.250", T0), None);
    assert!(d.changes(Kind::Ip, 0).is_empty());
}

#[test]
fn peers_list_only_with_two_authors_or_a_trusted_one() {
    let mut d = db(ttl_rules(60));
    d.writer
        .write_batch(&[
            peer("203.0.113.1", "100", T0, "a"),
            peer("203.0.113.2", "200", T0, "trusted-peer"),
        ])
        .unwrap();
    assert_eq!(
        d.listed(Kind::Ip, "203.0.113.1", T0),
        None,
        "one author is a claim"
    );
    assert_eq!(d.listed(Kind::Ip, "203.0.113.2", T0), Some(T0 + 60_000));
    d.writer
        .write_batch(&[peer("203.0.113.1", "100", T0 + 5_000, "a")])
        .unwrap();
    assert_eq!(
        d.listed(Kind::Ip, "203.0.113.1", T0),
        None,
        "the same author twice"
    );
    d.writer
        .write_batch(&[peer("203.0.113.1", "100", T0 + 10_000, "b")])
        .unwrap();
    // Listed until the older of the two reports is past the TTL.
    assert_eq!(
        d.listed(Kind::Ip, "203.0.113.1", T0 + 10_000),
        Some(T0 + 65_000)
    );
    let conn = Connection::open(&d.path).unwrap();
    let row = get(&conn, Kind::Ip, "203.0.113.1").unwrap().unwrap();
    assert_eq!(
        row.origin(),
        Origin {
            local: false,
            peers: true
        }
    );
}

#[test]
fn a_changed_rule_reevaluates_every_actor() {
    let mut d = db(ttl_rules(60));
    d.writer
        .write_batch(&[
            local("203.0.113.7", "100", T0),
            local("198.51.100.7", "100", T0),
        ])
        .unwrap();
    d.rules
        .set_allow(AllowList::new([Cidr::parse("203.0.113.0/24").unwrap()]));
    // Readers follow the new allowlist at once...
    assert_eq!(d.listed(Kind::Ip, "203.0.113.7", T0), None);
    let seq = current_seq(&Connection::open(&d.path).unwrap()).unwrap() as i64;
    // ...and the writer tells consumers.
    d.writer.check_rules().unwrap();
    while d.writer.reevaluating() {
        d.writer.maintain(T0 + 1).unwrap();
    }
    assert_eq!(
        d.changes(Kind::Ip, seq),
        [("203.0.113.7".to_string(), false)]
    );
}

#[test]
fn an_older_database_gets_its_facts_from_honey() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(super::super::UPSTREAM_SCHEMA).unwrap();
    let ts = crate::event::now_timestamp();
    conn.execute(
        "INSERT INTO honey (event_timestamp, source_ip, called_number) VALUES (?1, '203.0.113.5:5060', '999')",
        [&ts],
    )
    .unwrap();
    drop(conn);
    let mut writer = crate::store::open(&path).unwrap().writer;
    while writer.reevaluating() {
        writer.maintain(crate::actors::now_ms()).unwrap();
    }
    let conn = Connection::open(&path).unwrap();
    let row = get(&conn, Kind::Ip, "203.0.113.5").unwrap().unwrap();
    assert_eq!(row.local_last_ms, timestamp_ms(&ts));
    assert!(
        row.listed_until(Kind::Ip, &Rules::default(), crate::actors::now_ms())
            .is_some()
    );
}

#[test]
fn event_timestamps_read_back_as_epoch_milliseconds() {
    assert_eq!(
        timestamp_ms("2023-11-14 22:13:20.000000005"),
        Some(1_700_000_000_000)
    );
    assert_eq!(
        timestamp_ms("2023-11-14 22:13:20.123456789"),
        Some(1_700_000_000_123)
    );
    assert_eq!(timestamp_ms("1970-01-01 00:00:00"), Some(0));
    assert_eq!(timestamp_ms("2000-02-29 00:00:00.5"), Some(951_782_400_500));
    assert_eq!(timestamp_ms("2000-13-01 00:00:00"), None);
    assert_eq!(timestamp_ms("garbage"), None);
    assert_eq!(timestamp_ms(""), None);
    let now = std::time::SystemTime::now();
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(timestamp_ms(&crate::event::format_timestamp(now)), Some(ms));
}
