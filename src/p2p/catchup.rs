//! Catch-up and peer exchange: the request-response protocol's messages and the database side
//! of serving them. A node that joins or returns asks each peer for pages of the events of the
//! last seven days after a cursor `(event_timestamp, event_uuid)`; every page is bounded in
//! events and bytes, and every event in it is validated again by the asker exactly as a
//! real-time one: signature, node id and all.
//!
//! A page carries signed events only (`validate`'s envelopes), so that the serving peer can
//! vouch for nothing and the asker records each event's author, not the server. Peers' events
//! are served as they arrived, from `sentrypeer_signed_events`, where the database writer keeps
//! every received envelope for seven days; events received without one (before signatures) are
//! not served. This node's own events are signed as the page is read: ed25519 signatures are
//! deterministic and the node holds its key, so nothing is stored for them. They are rebuilt
//! from `honey` (which keeps the bare source address: port 0) and hidden like a real-time
//! event, with the destination kept in `honey.destination_ip` and the addresses the node knows
//! as its own.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{CollectedMethod, Event, Origin, Transport, format_timestamp};
use crate::p2p::validate::{self, MAX_EVENT_AGE, Policy, Signer};

/// The catch-up protocol's name; the version changes if the messages do.
pub const PROTOCOL: &str = "/sentrypeer/catch-up/2";
/// Events in one page: small enough to validate and store without stalling the node.
pub const MAX_PAGE_EVENTS: usize = 256;
/// Encoded events in one page, in bytes (a page of typical 1 KiB probes is about 256 KiB).
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// The largest response read: a full page plus framing.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// The largest request read: a cursor is under 100 bytes.
pub const MAX_REQUEST_BYTES: u64 = 4 * 1024;
/// Peers named in one peer-exchange answer.
pub const MAX_SHARED_PEERS: usize = 32;
/// Addresses given per peer in a peer-exchange answer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// The longest multiaddr text accepted in a peer-exchange answer.
pub const MAX_ADDR_LEN: usize = 256;

/// Where a page starts: after this timestamp, or at it but after this event UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub since: String,
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Events from the cursor on, oldest first; at most `limit` (capped at [`MAX_PAGE_EVENTS`]).
    CatchUp { cursor: Cursor, limit: u32 },
    /// Some peers this one is connected to, and their addresses.
    Peers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A page of signed events (their envelopes) and where the next page starts, if there is one.
    Events {
        events: Vec<String>,
        next: Option<Cursor>,
    },
    Peers {
        peers: Vec<PeerAddrs>,
    },
    /// Not served (for example: a listener past its grace period, or asking too fast).
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddrs {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

/// The oldest timestamp anyone shares at `now`.
pub fn horizon(now: SystemTime) -> String {
    format_timestamp(now.checked_sub(MAX_EVENT_AGE).unwrap_or(now))
}

/// Where this node should start asking at startup: a little before its newest event (events
/// recorded by others while it was down come after that), never before the horizon.
pub fn startup_cursor(
    conn: &Connection,
    now: SystemTime,
    overlap: std::time::Duration,
) -> rusqlite::Result<Cursor> {
    let floor = horizon(now);
    let newest: Option<String> = conn.query_row(
        "SELECT max(event_timestamp) FROM honey WHERE event_timestamp >= ?1",
        [&floor],
        |r| r.get(0),
    )?;
    let since = newest
        .as_deref()
        .and_then(validate::parse_timestamp)
        .map(|t| format_timestamp(t.checked_sub(overlap).unwrap_or(t)))
        .filter(|s| *s > floor)
        .unwrap_or(floor);
    Ok(Cursor { since, after: None })
}

/// One page of what this node holds from the cursor on (its own events, signed by `signer`
/// now with the addresses in `own` hidden, and its peers' as they were signed), oldest first,
/// each one checked as a receiver will check it. Rows that fail, and peers' events kept without
/// a signature, are skipped but still move the cursor, so a bad row cannot stall a peer's
/// catch-up.
pub fn page(
    conn: &Connection,
    cursor: &Cursor,
    limit: u32,
    now: SystemTime,
    policy: Policy,
    signer: &Signer,
    own: &HashSet<IpAddr>,
) -> rusqlite::Result<(Vec<String>, Option<Cursor>)> {
    let limit = (limit as usize).clamp(1, MAX_PAGE_EVENTS);
    let floor = horizon(now);
    let since = if validate::parse_timestamp(&cursor.since).is_some() && cursor.since > floor {
        cursor.since.clone()
    } else {
        floor
    };
    let after = cursor.after.clone().unwrap_or_default();
    let mut stmt = conn.prepare_cached(
        "SELECT h.event_timestamp, h.event_uuid, h.received_from_peer IS NULL, s.payload,
           h.collected_method, h.source_ip, h.called_number, h.transport_type, h.method,
           h.user_agent, CASE WHEN h.received_from_peer IS NULL THEN h.sip_message END,
           h.destination_ip
         FROM honey h LEFT JOIN sentrypeer_signed_events s ON s.event_uuid = h.event_uuid
         WHERE h.event_timestamp >= ?1 AND (h.event_timestamp > ?1 OR h.event_uuid > ?2)
         ORDER BY h.event_timestamp, h.event_uuid LIMIT ?3",
    )?;
    let mut rows = stmt.query(rusqlite::params![since, after, limit as i64])?;
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut read = 0;
    let mut last: Option<Cursor> = None;
    while let Some(row) = rows.next()? {
        read += 1;
        let text = |i: usize| -> rusqlite::Result<String> {
            Ok(row.get::<_, Option<String>>(i)?.unwrap_or_default())
        };
        let timestamp = text(0)?;
        let uuid = text(1)?;
        last = Some(Cursor {
            since: timestamp.clone(),
            after: Some(uuid.clone()),
        });
        let ours: bool = row.get(2)?;
        let signed = if ours {
            own_event(row, timestamp, &uuid).and_then(|e| {
                validate::sign_local(&e, signer, own, now, policy)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            })
        } else {
            row.get::<_, Option<Vec<u8>>>(3)?
                .filter(|p| validate::decode(p, now, policy).is_ok())
                .and_then(|p| String::from_utf8(p).ok())
        };
        let Some(json) = signed else {
            continue;
        };
        bytes += json.len();
        events.push(json);
        if bytes >= MAX_PAGE_BYTES {
            break;
        }
    }
    let more = read == limit || bytes >= MAX_PAGE_BYTES;
    Ok((events, if more { last } else { None }))
}

/// This node's own event, rebuilt from its `honey` row (see [`page`]'s query).
fn own_event(row: &rusqlite::Row<'_>, timestamp: String, uuid: &str) -> Option<Event> {
    let text = |i: usize| row.get::<_, Option<String>>(i).ok().flatten();
    Some(Event {
        timestamp,
        uuid: Uuid::parse_str(uuid).ok()?,
        // `validate::encode` writes the signer's.
        node_id: Uuid::nil(),
        collected_method: CollectedMethod::parse(&text(4)?)?,
        source: validate::parse_addr(&text(5)?)?,
        called_number: text(6)?,
        transport: Transport::parse(&text(7)?)?,
        method: text(8)?,
        user_agent: text(9)?,
        message: text(10)?,
        // Unknown for rows written before it was kept (or by upstream): hidden then by the
        // addresses known as ours.
        destination: text(11)
            .and_then(|d| validate::parse_addr(&d))
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
        origin: Origin::Local,
        signed: None,
        sip_auth: None,
        registered_attacker: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    struct Db {
        conn: Connection,
        writer: crate::store::Writer,
        _dir: tempfile::TempDir,
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = crate::store::open(&path).unwrap().writer;
        let conn = Connection::open(&path).unwrap();
        Db {
            conn,
            writer,
            _dir: dir,
        }
    }

    fn signer() -> Signer {
        Signer::new(&libp2p::identity::Keypair::generate_ed25519()).unwrap()
    }

    fn no_addresses() -> HashSet<IpAddr> {
        HashSet::new()
    }

    /// One of this node's own events, as upstream or an older version wrote it.
    fn insert(conn: &Connection, ago: Duration, source: &str, uuid: &str) {
        conn.execute(
            "INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip,
              called_number, transport_type, method, user_agent, sip_message, created_by_node_id)
             VALUES (?1, ?2, 'passive', ?3, '100', 'UDP', 'OPTIONS', 'friendly-scanner',
              'OPTIONS sip:100@x SIP/2.0', ?4)",
            rusqlite::params![
                format_timestamp(now() - ago),
                uuid,
                source,
                Uuid::nil().hyphenated().to_string()
            ],
        )
        .unwrap();
    }

    fn uuid(n: u8) -> String {
        Uuid::from_bytes([n; 16]).hyphenated().to_string()
    }

    fn start() -> Cursor {
        Cursor {
            since: "1970-01-01 00:00:00.000000000".into(),
            after: None,
        }
    }

    fn event(ago: Duration, source: &str, n: u8) -> Event {
        let mut e = crate::event::tests::sample();
        e.timestamp = format_timestamp(now() - ago);
        e.uuid = Uuid::from_bytes([n; 16]);
        e.source = source.parse().unwrap();
        e
    }

    #[test]
    fn pages_walk_the_last_seven_days_oldest_first_and_skip_invalid_rows() {
        let d = db();
        let conn = &d.conn;
        let me = signer();
        insert(
            conn,
            MAX_EVENT_AGE + Duration::from_secs(5),
            "8.8.8.8",
            &uuid(1),
        );
        insert(conn, Duration::from_secs(300), "8.8.8.8", &uuid(2));
        insert(conn, Duration::from_secs(200), "10.0.0.1", &uuid(3));
        insert(conn, Duration::from_secs(100), "9.9.9.9:5060", &uuid(4));
        insert(conn, Duration::from_secs(100), "1.1.1.1", &uuid(5));
        let read = |cursor: &Cursor| {
            page(
                conn,
                cursor,
                2,
                now(),
                Policy::default(),
                &me,
                &no_addresses(),
            )
            .unwrap()
        };
        let (events, next) = read(&start());
        assert_eq!(events.len(), 1, "the private source is skipped");
        let e = validate::decode(events[0].as_bytes(), now(), Policy::default()).unwrap();
        assert_eq!(e.uuid.hyphenated().to_string(), uuid(2));
        assert_eq!(e.source, "8.8.8.8:0".parse().unwrap());
        assert_eq!(
            e.origin,
            Origin::Peer(me.peer_id().to_string()),
            "signed by us"
        );
        assert_eq!(e.node_id, me.node_id());
        let next = next.expect("more to come");
        assert_eq!(next.after, Some(uuid(3)));
        let (events, next) = read(&next);
        let got: Vec<String> = events
            .iter()
            .map(|e| {
                let e = validate::decode(e.as_bytes(), now(), Policy::default()).unwrap();
                e.uuid.hyphenated().to_string()
            })
            .collect();
        assert_eq!(got, [uuid(4), uuid(5)]);
        let (events, next) = read(&next.unwrap());
        assert!(events.is_empty() && next.is_none());
    }

    #[test]
    fn peers_events_are_served_as_their_authors_signed_them_and_unsigned_ones_never() {
        let mut d = db();
        let (conn, writer) = (&d.conn, &mut d.writer);
        let (me, author) = (signer(), signer());
        let mut theirs = event(Duration::from_secs(300), "8.8.8.8:5071", 1);
        let sealed =
            validate::sign_local(&theirs, &author, &no_addresses(), now(), Policy::default())
                .unwrap();
        let received = validate::decode(&sealed, now(), Policy::default()).unwrap();
        assert_eq!(received.origin, Origin::Peer(author.peer_id().to_string()));
        // Received before signatures: kept, but nothing to vouch for it with.
        theirs.uuid = Uuid::from_bytes([2; 16]);
        theirs.origin = Origin::Peer("12D3KooWOld".into());
        writer
            .write_batch(&[Arc::new(received), Arc::new(theirs)])
            .unwrap();
        let (events, next) = page(
            conn,
            &start(),
            10,
            now(),
            Policy::default(),
            &me,
            &no_addresses(),
        )
        .unwrap();
        assert_eq!(events, [String::from_utf8(sealed).unwrap()]);
        assert!(next.is_none());
    }

    #[test]
    fn our_own_events_are_served_signed_with_the_sensor_addresses_hidden() {
        let mut d = db();
        let (conn, writer) = (&d.conn, &mut d.writer);
        let me = signer();
        let mut ours = event(Duration::from_secs(60), "8.8.8.8:5071", 7);
        ours.destination = "198.51.100.7:5060".parse().unwrap();
        ours.message = "OPTIONS sip:100@198.51.100.7 SIP/2.0\r\n\
                        Via: SIP/2.0/UDP 198.51.100.8:5060;branch=z9hG4bK1\r\n\
                        To: <sip:100@198.51.100.7>\r\n\r\n"
            .into();
        writer.write_batch(&[Arc::new(ours)]).unwrap();
        let own: HashSet<IpAddr> = ["198.51.100.8".parse().unwrap()].into();
        let (events, _) = page(conn, &start(), 10, now(), Policy::default(), &me, &own).unwrap();
        assert_eq!(events.len(), 1);
        for hidden in ["198.51.100.7", "198.51.100.8"] {
            assert!(!events[0].contains(hidden), "{hidden}: {}", events[0]);
        }
        let e = validate::decode(events[0].as_bytes(), now(), Policy::default()).unwrap();
        assert_eq!(e.destination, "0.0.0.0:5060".parse().unwrap());
        assert!(
            e.message.starts_with("OPTIONS sip:100@0.0.0.0 SIP/2.0"),
            "{}",
            e.message
        );
        // Signed as it is read, the same way every time.
        let (again, _) = page(conn, &start(), 10, now(), Policy::default(), &me, &own).unwrap();
        assert_eq!(again, events);
    }

    #[test]
    fn allow_private_serves_lab_sources() {
        let d = db();
        let conn = &d.conn;
        insert(conn, Duration::from_secs(200), "127.0.0.1", &uuid(3));
        let start = Cursor {
            since: horizon(now()),
            after: None,
        };
        let lab = Policy {
            allow_private: true,
        };
        let (events, next) =
            page(conn, &start, 10, now(), lab, &signer(), &no_addresses()).unwrap();
        assert_eq!(events.len(), 1);
        assert!(next.is_none());
    }

    #[test]
    fn the_startup_cursor_overlaps_the_newest_event_and_never_passes_the_horizon() {
        let d = db();
        let conn = &d.conn;
        let overlap = Duration::from_secs(600);
        assert_eq!(
            startup_cursor(conn, now(), overlap).unwrap().since,
            horizon(now())
        );
        insert(conn, Duration::from_secs(3600), "8.8.8.8", &uuid(1));
        assert_eq!(
            startup_cursor(conn, now(), overlap).unwrap().since,
            format_timestamp(now() - Duration::from_secs(4200))
        );
    }

    #[test]
    fn messages_round_trip_through_cbor_sized_under_the_limits() {
        let r = Request::CatchUp {
            cursor: Cursor {
                since: horizon(now()),
                after: Some(uuid(1)),
            },
            limit: 256,
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert!((json.len() as u64) < MAX_REQUEST_BYTES);
        assert_eq!(serde_json::from_slice::<Request>(&json).unwrap(), r);
    }
}
