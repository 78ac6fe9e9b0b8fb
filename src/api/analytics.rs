//! Analytics over a window (`?window=1h|24h|7d|30d`, default 24h), read from the buckets the
//! writer keeps (`store::analytics`): `/user-agents`, `/sip-methods`, `/countries` and one
//! value of each, `/probes` (the time series), `/networks` (top /24s and /48s, and autonomous
//! systems with an ASN database), `/lookup/{value}` (an address's or number's history and
//! standing) and `/live` (server-sent events of every event as it is recorded).

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{ApiError, ApiState, json_response};
use crate::store::analytics::{self, Dim, ValueRow, Window};

/// Values a list gives by default, and at most (`?limit=`).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Recent events `/lookup` shows.
const LOOKUP_EVENTS: i64 = 50;
/// Live streams open at once, and from one source (below the API's connections per source,
/// so a source watching cannot take all of its connections).
pub const MAX_LIVE_STREAMS: usize = 256;
pub const MAX_LIVE_STREAMS_PER_SOURCE: usize = 32;
/// A comment sent on an idle live stream, so proxies and browsers keep it open.
const LIVE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the GeoIP databases given (`--geoip-db`) provide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeoStatus {
    pub country: bool,
    pub asn: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct WindowQuery {
    window: Option<String>,
    limit: Option<usize>,
}

impl WindowQuery {
    fn window(&self) -> Result<Window, ApiError> {
        match &self.window {
            None => Ok(Window::Day),
            Some(w) => Window::parse(w)
                .ok_or_else(|| ApiError::Invalid("window must be one of 1h, 24h, 7d, 30d".into())),
        }
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

fn query(q: Result<Query<WindowQuery>, QueryRejection>) -> Result<WindowQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|_| ApiError::Invalid("bad query: window=1h|24h|7d|30d, limit=1..1000".into()))
}

fn ts(ms: i64) -> String {
    crate::event::format_timestamp(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
    )
}

/// How a dimension is named in upstream's style: the list's key, the total's key, one
/// value's key and what a miss says.
struct Names {
    dim: Dim,
    list: &'static str,
    total: &'static str,
    one: &'static str,
    missing: &'static str,
}

const USER_AGENTS: Names = Names {
    dim: Dim::UserAgent,
    list: "user_agents",
    total: "user_agents_total",
    one: "user_agent",
    missing: "No user agent found",
};
const SIP_METHODS: Names = Names {
    dim: Dim::Method,
    list: "sip_methods",
    total: "sip_methods_total",
    one: "sip_method",
    missing: "No SIP method found",
};
const COUNTRIES: Names = Names {
    dim: Dim::Country,
    list: "countries",
    total: "countries_total",
    one: "country",
    missing: "No country found",
};
const SOURCE_IPS: Names = Names {
    dim: Dim::SourceIp,
    list: "ip_addresses",
    total: "ip_addresses_total",
    one: "ip_address",
    missing: "No bad actor found",
};
const CALLED_NUMBERS: Names = Names {
    dim: Dim::Number,
    list: "numbers",
    total: "numbers_total",
    one: "called_number",
    missing: "No phone number found",
};
const NETWORKS: Names = Names {
    dim: Dim::Network,
    list: "networks",
    total: "networks_total",
    one: "network",
    missing: "No network found",
};
const AUTONOMOUS_SYSTEMS: Names = Names {
    dim: Dim::Asn,
    list: "autonomous_systems",
    total: "autonomous_systems_total",
    one: "autonomous_system",
    missing: "No autonomous system found",
};

fn row_json(key: &str, r: &ValueRow) -> Value {
    json!({
        key: r.value,
        "seen_count": r.count,
        "seen_first": ts(r.first_ms),
        "seen_last": ts(r.last_ms),
    })
}

fn series_json(window: Window, now_ms: i64, counts: Vec<i64>) -> Value {
    json!({
        "step_seconds": window.step_seconds(),
        "start": ts(window.start_ms(now_ms)),
        "counts": counts,
    })
}

/// Runs a read on the blocking pool: a window over a month of buckets takes milliseconds.
async fn read<T: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.with(f))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// A dimension's top values in the window, with the window's probes and their series.
async fn list(s: &ApiState, names: &'static Names, q: WindowQuery) -> Result<Value, ApiError> {
    let window = q.window()?;
    let limit = q.limit();
    let now = crate::actors::now_ms();
    let (rows, distinct, counts) = read(s, move |c| {
        let (rows, distinct) = analytics::top(c, names.dim, window, now, limit)?;
        let counts = analytics::series(c, None, window, now)?;
        Ok((rows, distinct, counts))
    })
    .await?;
    let probes: i64 = counts.iter().sum();
    Ok(json!({
        "window": window.as_str(),
        names.total: distinct,
        "probes_total": probes,
        names.list: rows.iter().map(|r| row_json(names.one, r)).collect::<Vec<_>>(),
        "series": series_json(window, now, counts),
    }))
}

/// One value of a dimension in the window, with its series; 404 when not seen in it.
async fn one(
    s: &ApiState,
    names: &'static Names,
    value: String,
    q: WindowQuery,
) -> Result<Response, ApiError> {
    let window = q.window()?;
    let now = crate::actors::now_ms();
    let key = value.clone();
    let (row, counts) = read(s, move |c| {
        let row = analytics::one(c, names.dim, &key, window, now)?;
        let counts = match row {
            Some(_) => analytics::series(c, Some((names.dim, &key)), window, now)?,
            None => Vec::new(),
        };
        Ok((row, counts))
    })
    .await?;
    let Some(row) = row else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": names.missing}),
        ));
    };
    let mut body = row_json(names.one, &row);
    body["window"] = window.as_str().into();
    body["series"] = series_json(window, now, counts);
    Ok(json_response(StatusCode::OK, &body))
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v).map_err(|_| ApiError::BadRequest)
}

pub(super) async fn user_agents(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let body = list(&s, &USER_AGENTS, query(q)?).await?;
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn user_agent(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    one(&s, &USER_AGENTS, path(p)?, query(q)?).await
}

pub(super) async fn sip_methods(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let body = list(&s, &SIP_METHODS, query(q)?).await?;
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn sip_method(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    one(&s, &SIP_METHODS, path(p)?, query(q)?).await
}

pub(super) async fn countries(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut body = list(&s, &COUNTRIES, query(q)?).await?;
    body["geoip"] = s.geoip.country.into();
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn country(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    // Country codes are upper case (`gb` finds `GB`); `unknown` stays as it is.
    let cc = path(p)?;
    let cc = if cc.len() == 2 {
        cc.to_ascii_uppercase()
    } else {
        cc
    };
    one(&s, &COUNTRIES, cc, query(q)?).await
}

/// `GET /source-ips`: the sources that sent most probes in the window.
pub(super) async fn source_ips(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let body = list(&s, &SOURCE_IPS, query(q)?).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /called-numbers`: the numbers (and users) called most in the window.
pub(super) async fn called_numbers(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let body = list(&s, &CALLED_NUMBERS, query(q)?).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /probes`: probes in the window and their series.
pub(super) async fn probes(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let window = query(q)?.window()?;
    let now = crate::actors::now_ms();
    let counts = read(&s, move |c| analytics::series(c, None, window, now)).await?;
    let total: i64 = counts.iter().sum();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "window": window.as_str(),
            "probes_total": total,
            "series": series_json(window, now, counts),
        }),
    ))
}

/// `GET /networks`: the top source /24s and /48s, and autonomous systems (with an ASN
/// database: `geoip_asn`).
pub(super) async fn networks(
    State(s): State<ApiState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let window = q.window()?;
    let limit = q.limit();
    let now = crate::actors::now_ms();
    let (nets, asns) = read(&s, move |c| {
        Ok((
            analytics::top(c, Dim::Network, window, now, limit)?,
            analytics::top(c, Dim::Asn, window, now, limit)?,
        ))
    })
    .await?;
    let rows = |names: &Names, rows: &[ValueRow]| -> Vec<Value> {
        rows.iter().map(|r| row_json(names.one, r)).collect()
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "window": window.as_str(),
            NETWORKS.total: nets.1,
            NETWORKS.list: rows(&NETWORKS, &nets.0),
            AUTONOMOUS_SYSTEMS.total: asns.1,
            AUTONOMOUS_SYSTEMS.list: rows(&AUTONOMOUS_SYSTEMS, &asns.0),
            "geoip_asn": s.geoip.asn,
        }),
    ))
}

/// `GET /lookup/{value}`: an address or a number: its sightings, whether it is listed and
/// until when, and its most recent events.
pub(super) async fn lookup(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let value = path(p)?;
    let (kind, key, column) = match value.parse::<IpAddr>() {
        Ok(ip) => (
            crate::actors::Kind::Ip,
            ip.to_canonical().to_string(),
            "source_ip",
        ),
        Err(_) if value.len() <= 256 => (crate::actors::Kind::Number, value, "called_number"),
        Err(_) => return Err(ApiError::BadRequest),
    };
    let now = crate::actors::now_ms();
    let lookup_key = key.clone();
    let (row, events) = read(&s, move |c| {
        let row = crate::store::actors::get(c, kind, &lookup_key)?;
        let mut stmt = c.prepare_cached(&format!(
            "SELECT event_timestamp, source_ip, called_number, method, user_agent, transport_type
             FROM honey WHERE {column} = ?1 ORDER BY honey_id DESC LIMIT ?2"
        ))?;
        let events = stmt
            .query_map(rusqlite::params![lookup_key, LOOKUP_EVENTS], |r| {
                Ok(json!({
                    "event_timestamp": r.get::<_, Option<String>>(0)?,
                    "source_ip": r.get::<_, Option<String>>(1)?,
                    "called_number": r.get::<_, Option<String>>(2)?,
                    "sip_method": r.get::<_, Option<String>>(3)?,
                    "sip_user_agent": r.get::<_, Option<String>>(4)?,
                    "transport_type": r.get::<_, Option<String>>(5)?,
                }))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((row, events))
    })
    .await?;
    let kind_name = match kind {
        crate::actors::Kind::Ip => "ip_address",
        crate::actors::Kind::Number => "number",
    };
    let Some(row) = row else {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": "Never seen", "kind": kind_name, kind_name: key}),
        ));
    };
    let until = row.listed_until(kind, &s.rules, now);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": kind_name,
            kind_name: key,
            "seen_count": row.count,
            "seen_first": ts(row.first_seen_ms),
            "seen_last": ts(row.last_seen_ms),
            "listed": until.is_some(),
            "listed_until": until.map(|u| if u == i64::MAX { "forever".to_string() } else { ts(u) }),
            "events": events,
        }),
    ))
}

/// `GET /live`: events as they are recorded, as server-sent events (`event: probe`, the
/// JSON log object; at most `LIVE_EVENTS_PER_SECOND`). A client that falls behind, or a
/// flood beyond the rate, gets `event: dropped` with how many it missed. Whatever is waiting
/// is sent in one write, up to [`LIVE_CHUNK_BYTES`].
pub(super) async fn live(
    State(s): State<ApiState>,
    c: super::Client,
) -> Result<Response, ApiError> {
    let Some(tx) = &s.live else {
        return Err(ApiError::NotFound);
    };
    let slot = s
        .live_streams
        .admit(super::client_ip(c))
        .ok_or(ApiError::Busy)?;
    let rx = tx.subscribe();
    let body = axum::body::Body::from_stream(frames(rx, s.shutdown.clone(), slot));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The most bytes a live stream writes at once, when frames are waiting.
const LIVE_CHUNK_BYTES: usize = 64 * 1024;

fn frames(
    rx: tokio::sync::broadcast::Receiver<Bytes>,
    shutdown: tokio_util::sync::CancellationToken,
    slot: crate::conn_limits::Slot,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(
        (rx, shutdown, slot),
        |(mut rx, shutdown, slot)| async move {
            let dropped = |n: u64| crate::output::live::frame("dropped", &n.to_string());
            let first = tokio::select! {
                r = tokio::time::timeout(LIVE_KEEP_ALIVE, rx.recv()) => r,
                () = shutdown.cancelled() => return None,
            };
            let mut chunk = match first {
                // Idle: a comment keeps proxies and the browser from closing the stream.
                Err(_) => {
                    return Some((
                        Ok(Bytes::from_static(b": keep-alive\n\n")),
                        (rx, shutdown, slot),
                    ));
                }
                Ok(Ok(f)) => f.to_vec(),
                Ok(Err(RecvError::Lagged(n))) => dropped(n).to_vec(),
                Ok(Err(RecvError::Closed)) => return None,
            };
            while chunk.len() < LIVE_CHUNK_BYTES {
                match rx.try_recv() {
                    Ok(f) => chunk.extend_from_slice(&f),
                    Err(TryRecvError::Lagged(n)) => chunk.extend_from_slice(&dropped(n)),
                    Err(_) => break,
                }
            }
            Some((Ok(Bytes::from(chunk)), (rx, shutdown, slot)))
        },
    )
}
