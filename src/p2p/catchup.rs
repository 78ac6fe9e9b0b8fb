//! Catch-up and peer exchange: the request-response protocol's messages and the database side
//! of serving them. A node that joins or returns asks each peer for pages of the events of the
//! last seven days after a cursor `(event_timestamp, event_uuid)`; every page is bounded in
//! events and bytes, and every event in it is validated again by the asker exactly as a
//! real-time one. Events served here are vouched for by the serving peer (they are not signed
//! by their author), so the asker records that peer as where they came from.

use std::time::SystemTime;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::event::{Origin, format_timestamp};
use crate::p2p::validate::{self, MAX_EVENT_AGE, MAX_SIP_MESSAGE_BYTES, Policy};

/// The catch-up protocol's name; the version changes if the messages do.
pub const PROTOCOL: &str = "/sentrypeer/catch-up/1";
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
    /// A page of events (their wire JSON) and where the next page starts, if there is one.
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

/// One page of what this node holds from the cursor on (its own events and its peers'),
/// oldest first, each one checked as a receiver will check it. Rows that fail are skipped but
/// still move the cursor, so a bad row cannot stall a peer's catch-up.
pub fn page(
    conn: &Connection,
    cursor: &Cursor,
    limit: u32,
    now: SystemTime,
    policy: Policy,
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
        "SELECT event_timestamp, event_uuid, collected_method, source_ip, called_number,
           transport_type, method, user_agent, sip_message, created_by_node_id
         FROM honey WHERE event_timestamp >= ?1 AND (event_timestamp > ?1 OR event_uuid > ?2)
         ORDER BY event_timestamp, event_uuid LIMIT ?3",
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
        let source = text(3)?;
        let message = text(8)?;
        let message = message
            .get(..floor_boundary(&message, MAX_SIP_MESSAGE_BYTES))
            .unwrap_or_default();
        let json = serde_json::json!({
            "app_name": crate::event::APP_NAME,
            "app_version": crate::event::APP_VERSION,
            "event_timestamp": timestamp,
            "event_uuid": uuid,
            "created_by_node_id": text(9)?,
            "collected_method": text(2)?,
            "transport_type": text(5)?,
            // The database keeps the bare address; the port is not known here.
            "source_ip": with_port_zero(&source),
            "destination_ip": "0.0.0.0:0",
            "called_number": text(4)?,
            "sip_method": text(6)?,
            "sip_user_agent": text(7)?,
            "sip_message": message,
        })
        .to_string();
        last = Some(Cursor {
            since: timestamp,
            after: Some(uuid),
        });
        if validate::decode(json.as_bytes(), now, policy, Origin::Local).is_err() {
            continue;
        }
        bytes += json.len();
        events.push(json);
        if bytes >= MAX_PAGE_BYTES {
            break;
        }
    }
    let more = read == limit || bytes >= MAX_PAGE_BYTES;
    Ok((events, if more { last } else { None }))
}

fn with_port_zero(source: &str) -> String {
    match source.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 0).to_string(),
        Err(_) => source.to_string(),
    }
}

fn floor_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use uuid::Uuid;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn db() -> Connection {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(crate::store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        // Keep the directory alive as long as the connection by leaking it (tests only).
        std::mem::forget(dir);
        conn
    }

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

    #[test]
    fn pages_walk_the_last_seven_days_oldest_first_and_skip_invalid_rows() {
        let conn = db();
        insert(
            &conn,
            MAX_EVENT_AGE + Duration::from_secs(5),
            "8.8.8.8",
            &uuid(1),
        );
        insert(&conn, Duration::from_secs(300), "8.8.8.8", &uuid(2));
        insert(&conn, Duration::from_secs(200), "10.0.0.1", &uuid(3));
        insert(&conn, Duration::from_secs(100), "9.9.9.9:5060", &uuid(4));
        insert(&conn, Duration::from_secs(100), "1.1.1.1", &uuid(5));
        let start = Cursor {
            since: "1970-01-01 00:00:00.000000000".into(),
            after: None,
        };
        let (events, next) = page(&conn, &start, 2, now(), Policy::default()).unwrap();
        assert_eq!(events.len(), 1, "the private source is skipped");
        let v: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(v["event_uuid"], uuid(2));
        assert_eq!(v["source_ip"], "8.8.8.8:0");
        let next = next.expect("more to come");
        assert_eq!(next.after, Some(uuid(3)));
        let (events, next) = page(&conn, &next, 2, now(), Policy::default()).unwrap();
        let got: Vec<String> = events
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(e).unwrap()["event_uuid"].to_string()
            })
            .collect();
        assert_eq!(
            got,
            [format!("\"{}\"", uuid(4)), format!("\"{}\"", uuid(5))]
        );
        let (events, next) = page(&conn, &next.unwrap(), 2, now(), Policy::default()).unwrap();
        assert!(events.is_empty() && next.is_none());
    }

    #[test]
    fn allow_private_serves_lab_sources() {
        let conn = db();
        insert(&conn, Duration::from_secs(200), "127.0.0.1", &uuid(3));
        let start = Cursor {
            since: horizon(now()),
            after: None,
        };
        let lab = Policy {
            allow_private: true,
        };
        let (events, next) = page(&conn, &start, 10, now(), lab).unwrap();
        assert_eq!(events.len(), 1);
        assert!(next.is_none());
    }

    #[test]
    fn the_startup_cursor_overlaps_the_newest_event_and_never_passes_the_horizon() {
        let conn = db();
        let overlap = Duration::from_secs(600);
        assert_eq!(
            startup_cursor(&conn, now(), overlap).unwrap().since,
            horizon(now())
        );
        insert(&conn, Duration::from_secs(3600), "8.8.8.8", &uuid(1));
        assert_eq!(
            startup_cursor(&conn, now(), overlap).unwrap().since,
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
