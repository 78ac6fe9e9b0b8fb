//! The REST API: upstream's endpoints with upstream's JSON shapes and headers, then our own
//! (`/metrics`). Full lists are streamed from the database in chunks, never built in memory.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::event::APP_VERSION;
use crate::metrics::{Counters, KernelSetStats, WebhookStats};
use crate::pipeline::OutputStats;
use crate::store::{ListCursor, ListKind, ReadPool};

pub mod analytics;
pub mod apiban;
pub mod blocklist;
pub mod serve;
pub mod ui;

/// Full lists streamed at once, and to one source (an IPv6 source per /64), so that slow
/// readers cannot tie up the database's readers nor one client every stream; beyond this,
/// `503` with `Retry-After`.
pub const MAX_LIST_STREAMS: usize = 16;
pub const MAX_LIST_STREAMS_PER_SOURCE: usize = 4;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<ReadPool>,
    pub counters: Arc<Counters>,
    pub outputs: Arc<Vec<Arc<OutputStats>>>,
    pub node_id: Uuid,
    pub started: Instant,
    /// The WebHook's numbers, when it is enabled.
    pub webhook: Option<Arc<WebhookStats>>,
    /// The kernel sets' numbers (`--nftables`, `--ipset`), one per configured output.
    pub kernel_sets: Arc<Vec<Arc<KernelSetStats>>>,
    /// The peer network, when `-p` is on.
    pub p2p: Option<Arc<crate::p2p::P2pHandle>>,
    /// Slots for full-list streams ([`MAX_LIST_STREAMS`], [`MAX_LIST_STREAMS_PER_SOURCE`]).
    pub list_streams: Arc<crate::conn_limits::ConnLimits>,
    /// Who is listed: the rule lookups, lists and exports answer by.
    pub rules: Arc<crate::actors::Rules>,
    /// Keys the APIBAN-compatible API requires (`--apiban-key`); empty: any key.
    pub apiban_keys: Arc<Vec<crate::settings::Secret>>,
    /// The fraud-check agent's counters, when it runs.
    pub agent: Option<Arc<crate::agent::AgentStats>>,
    /// The BGP feed's sessions and routes, when it runs.
    pub bgp: Option<Arc<crate::bgp::BgpStats>>,
    /// What the GeoIP databases given provide (countries, autonomous systems).
    pub geoip: analytics::GeoStatus,
    /// The live feed `/live` subscribes to.
    pub live: Option<crate::output::live::LiveSender>,
    /// Slots for live streams ([`analytics::MAX_LIVE_STREAMS`] and per source).
    pub live_streams: Arc<crate::conn_limits::ConnLimits>,
    /// Cancelled when the node shuts down: ends the live streams.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The API's errors, each with upstream's body; internals are logged, never sent.
#[derive(Debug)]
pub enum ApiError {
    BadRequest,
    /// A bad query parameter, with what is wrong (our own endpoints).
    Invalid(String),
    NotFound,
    /// Too many lists are being streamed; the client may try again shortly.
    Busy,
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "The request data was invalid"}),
            ),
            ApiError::Invalid(why) => {
                json_response(StatusCode::BAD_REQUEST, &json!({"error": why}))
            }
            ApiError::NotFound => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "The requested resource could not be found."}),
            ),
            ApiError::Busy => {
                let mut r = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"error": "Too many lists being sent; try again shortly."}),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Internal(e) => {
                tracing::warn!(error = %e, "API request failed.");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "Internal server error"}),
                )
            }
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", only_get(get(home)))
        .route("/health-check", only_get(get(health_check)))
        .route("/user-agents", only_get(get(analytics::user_agents)))
        .route("/user-agents/{ua}", only_get(get(analytics::user_agent)))
        .route("/sip-methods", only_get(get(analytics::sip_methods)))
        .route(
            "/sip-methods/{method}",
            only_get(get(analytics::sip_method)),
        )
        .route("/countries", only_get(get(analytics::countries)))
        .route("/countries/{cc}", only_get(get(analytics::country)))
        .route("/source-ips", only_get(get(analytics::source_ips)))
        .route("/called-numbers", only_get(get(analytics::called_numbers)))
        .route("/probes", only_get(get(analytics::probes)))
        .route("/networks", only_get(get(analytics::networks)))
        .route("/lookup/{value}", only_get(get(analytics::lookup)))
        .route("/live", only_get(get(analytics::live)))
        .route("/ui", only_get(get(ui::to_index)))
        .route("/ui/", only_get(get(ui::index)))
        .route("/ui/{file}", only_get(get(ui::file)))
        .route("/metrics", only_get(get(metrics)))
        .route("/peers", only_get(get(peers)))
        .route("/bgp", only_get(get(bgp)))
        .route("/ip-addresses", only_get(get(ip_addresses)))
        .route("/ip-addresses/{ip}", only_get(get(ip_address)))
        .route("/ip-address/{ip}", only_get(get(ip_address)))
        .route("/numbers", only_get(get(numbers)))
        .route("/numbers/{number}", only_get(get(number)))
        .route("/usernames", only_get(get(usernames)))
        .route(
            "/blocklist/ip-addresses",
            only_get(get(blocklist::ip_addresses)),
        )
        .route("/blocklist/numbers", only_get(get(blocklist::numbers)))
        .route("/banned", only_get(get(blocklist::banned)))
        .route("/banned/{id}", only_get(get(blocklist::banned_since)))
        .route(
            "/misp/manifest.json",
            only_get(get(blocklist::misp_manifest)),
        )
        .route("/misp/hashes.csv", only_get(get(blocklist::misp_hashes)))
        .route("/misp/{file}", only_get(get(blocklist::misp_event)))
        .route("/api/get", only_post(post(apiban::v2_get)))
        .route("/api/check", only_post(post(apiban::v2_check)))
        .route("/api/{key}/banned", only_get(get(apiban::v1_banned)))
        .route(
            "/api/{key}/banned/{id}",
            only_get(get(apiban::v1_banned_since)),
        )
        .route("/api/{key}/check/{ip}", only_get(get(apiban::v1_check)))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::map_response(common_headers))
        .with_state(state)
}

/// A POST-only route: other methods get 405 with an `Allow` header.
fn only_post(route: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    route.fallback(|| async {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        r
    })
}

/// Every other method gets 405 with an `Allow` header (upstream just drops the connection).
fn only_get(route: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    route.fallback(|| async {
        let mut r = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    })
}

async fn common_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert("x-powered-by", HeaderValue::from_static("SentryPeer"));
    h.insert(
        "x-sentrypeer-version",
        HeaderValue::from_static(APP_VERSION),
    );
    h.entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    r
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /`: upstream's answer.
async fn home() -> Response {
    json_response(StatusCode::OK, &json!({"status": "OK"}))
}

async fn health_check(State(s): State<ApiState>) -> Response {
    let counters: serde_json::Map<String, serde_json::Value> = s
        .counters
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let outputs: serde_json::Map<String, serde_json::Value> = s
        .outputs
        .iter()
        .map(|o| {
            let v = json!({
                "queue_depth": o.depth(),
                "queue_capacity": o.capacity,
                "queue_bytes": o.depth_bytes(),
                "queue_capacity_bytes": o.capacity_bytes,
                "dropped": o.dropped.load(std::sync::atomic::Ordering::Relaxed),
                "written": o.written.load(std::sync::atomic::Ordering::Relaxed),
                "failed": o.failed.load(std::sync::atomic::Ordering::Relaxed),
            });
            (o.name.to_string(), v)
        })
        .collect();
    let mut body = json!({
        "status": "OK",
        "message": "Hello from SentryPeer!",
        "version": APP_VERSION,
        "node_id": s.node_id.hyphenated().to_string(),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "counters": counters,
        "outputs": outputs,
    });
    if let Some(w) = &s.webhook {
        let mut v: serde_json::Map<String, serde_json::Value> = w
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        v.insert("last_error".into(), w.last_error().into());
        body["webhook"] = v.into();
    }
    if let Some(p) = &s.p2p {
        body["peer_id"] = p.peer_id.clone().into();
    }
    if let Some(a) = &s.agent {
        let v: serde_json::Map<String, serde_json::Value> = a
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("agent_").to_string(), v.into()))
            .collect();
        body["agent"] = v.into();
    }
    if let Some(b) = &s.bgp {
        body["bgp"] = b.json();
    }
    if !s.kernel_sets.is_empty() {
        let sets: serde_json::Map<String, serde_json::Value> = s
            .kernel_sets
            .iter()
            .map(|k| {
                let v: serde_json::Map<String, serde_json::Value> = k
                    .snapshot()
                    .into_iter()
                    .map(|(name, n)| (name.to_string(), n.into()))
                    .collect();
                (k.name.to_string(), v.into())
            })
            .collect();
        body["kernel_sets"] = sets.into();
    }
    json_response(StatusCode::OK, &body)
}

/// `GET /bgp`: the blackhole feed's sessions (state, routes, announcements, withdrawals,
/// flaps) and routes. Without `--bgp-neighbor`: `bgp: false`.
async fn bgp(State(s): State<ApiState>) -> Response {
    let body = match &s.bgp {
        Some(b) => {
            let mut v = b.json();
            v["bgp"] = true.into();
            v
        }
        None => json!({"bgp": false, "neighbors": []}),
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /peers`: this node's peer id and its connected peers, with what each has given and
/// received and its standing. Without `-p`: `peer_to_peer: false` and no peers.
async fn peers(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let Some(p) = &s.p2p else {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"peer_to_peer": false, "peer_id": null, "peers_total": 0, "peers": []}),
        ));
    };
    let snapshot = p
        .snapshot()
        .await
        .ok_or_else(|| ApiError::Internal("the peer network is not answering".into()))?;
    let mut body = serde_json::to_value(snapshot).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["peer_to_peer"] = true.into();
    Ok(json_response(StatusCode::OK, &body))
}

/// The WebHook's families: delivery counters, the outbox gauges, dead letters by reason.
fn webhook_metrics(out: &mut String, w: &WebhookStats) {
    use std::fmt::Write;
    let mut values: std::collections::HashMap<&str, u64> = w.snapshot().into_iter().collect();
    let mut get = |k: &str| values.remove(k).unwrap_or(0);
    let dead = [
        ("refused", get("dead_lettered")),
        ("outbox_full", get("dead_lettered_outbox_full")),
    ];
    for (family, kind, key) in [
        ("delivered_total", "counter", "delivered"),
        ("retried_total", "counter", "retried"),
        (
            "dead_letters_pruned_total",
            "counter",
            "dead_letters_pruned",
        ),
        ("outbox_depth", "gauge", "outbox_depth"),
        ("retrying", "gauge", "retrying"),
        ("outbox_capacity", "gauge", "outbox_cap"),
        ("in_flight", "gauge", "in_flight"),
        ("consecutive_failures", "gauge", "consecutive_failures"),
        ("token_fetches_total", "counter", "token_fetches"),
    ] {
        let _ = writeln!(
            out,
            "# TYPE sentrypeer_webhook_{family} {kind}\nsentrypeer_webhook_{family} {}",
            get(key)
        );
    }
    let _ = writeln!(out, "# TYPE sentrypeer_webhook_dead_lettered_total counter");
    for (reason, n) in dead {
        let _ = writeln!(
            out,
            "sentrypeer_webhook_dead_lettered_total{{reason=\"{reason}\"}} {n}"
        );
    }
}

/// The kernel sets' families, one series per output (`set="nftables"`, `set="ipset"`).
fn kernel_set_metrics(out: &mut String, sets: &[Arc<KernelSetStats>]) {
    use std::fmt::Write;
    if sets.is_empty() {
        return;
    }
    let snapshots: Vec<(&str, std::collections::HashMap<&str, u64>)> = sets
        .iter()
        .map(|k| (k.name, k.snapshot().into_iter().collect()))
        .collect();
    // (family, type, key, whether the value is milliseconds shown as seconds)
    for (family, kind, key, ms) in [
        ("elements_added_total", "counter", "added", false),
        ("elements_removed_total", "counter", "removed", false),
        ("batches_total", "counter", "batches", false),
        ("failures_total", "counter", "failures", false),
        ("elements", "gauge", "elements", false),
        ("reconciles_total", "counter", "reconciles", false),
        (
            "last_reconcile_timestamp_seconds",
            "gauge",
            "last_reconcile_ms",
            true,
        ),
        (
            "last_reconcile_duration_seconds",
            "gauge",
            "last_reconcile_duration_ms",
            true,
        ),
        ("max_delay_seconds", "gauge", "max_delay_ms", true),
    ] {
        let _ = writeln!(out, "# TYPE sentrypeer_kernel_set_{family} {kind}");
        for (name, values) in &snapshots {
            let v = values.get(key).copied().unwrap_or(0);
            let v = if ms {
                format!("{}.{:03}", v / 1000, v % 1000)
            } else {
                v.to_string()
            };
            let _ = writeln!(out, "sentrypeer_kernel_set_{family}{{set=\"{name}\"}} {v}");
        }
    }
}

/// A per-output metric family: name, Prometheus type, and how to read it.
type Family = (&'static str, &'static str, fn(&OutputStats) -> u64);

/// Prometheus text format.
async fn metrics(State(s): State<ApiState>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::with_capacity(4096);
    for (name, value) in s.counters.snapshot() {
        let _ = writeln!(
            out,
            "# TYPE sentrypeer_{name}_total counter\nsentrypeer_{name}_total {value}"
        );
    }
    let families: [Family; 6] = [
        ("output_queue_depth", "gauge", |o| o.depth()),
        ("output_queue_capacity", "gauge", |o| o.capacity as u64),
        ("output_queue_bytes", "gauge", |o| o.depth_bytes()),
        ("output_dropped_total", "counter", |o| {
            o.dropped.load(Relaxed)
        }),
        ("output_written_total", "counter", |o| {
            o.written.load(Relaxed)
        }),
        ("output_failed_total", "counter", |o| o.failed.load(Relaxed)),
    ];
    for (family, kind, get) in families {
        let _ = writeln!(out, "# TYPE sentrypeer_{family} {kind}");
        for o in s.outputs.iter() {
            let _ = writeln!(
                out,
                "sentrypeer_{family}{{output=\"{}\"}} {}",
                o.name,
                get(o)
            );
        }
    }
    if let Some(w) = &s.webhook {
        webhook_metrics(&mut out, w);
    }
    if let Some(a) = &s.agent {
        for (name, value) in a.snapshot() {
            let _ = writeln!(
                out,
                "# TYPE sentrypeer_{name}_total counter\nsentrypeer_{name}_total {value}"
            );
        }
    }
    if let Some(b) = &s.bgp {
        b.write_metrics(&mut out);
    }
    kernel_set_metrics(&mut out, &s.kernel_sets);
    let _ = writeln!(
        out,
        "# TYPE sentrypeer_uptime_seconds gauge\nsentrypeer_uptime_seconds {}",
        s.started.elapsed().as_secs()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn ip_address(
    State(s): State<ApiState>,
    ip: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    // A segment that is not even UTF-8 is invalid data too, answered in JSON like the rest.
    let Path(ip) = ip.map_err(|_| ApiError::BadRequest)?;
    let ip: IpAddr = ip.parse().map_err(|_| ApiError::BadRequest)?;
    let ip = ip.to_canonical().to_string();
    // A primary-key lookup of a few microseconds: run it here, not on the blocking pool, whose
    // hand-off costs more than the query (WAL readers never wait for the writer).
    let found = (is_listed(&s, crate::actors::Kind::Ip, &ip)?, ip);
    Ok(match found {
        (true, ip) => json_response(StatusCode::OK, &json!({"bad_actor_found": ip})),
        (false, _) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": "No bad actor found"}),
        ),
    })
}

async fn number(
    State(s): State<ApiState>,
    number: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(number) = number.map_err(|_| ApiError::NotFound)?;
    if !crate::store::is_dialled_number(&number) {
        return Err(ApiError::NotFound);
    }
    // A primary-key lookup, run in place as for addresses.
    let found = is_listed(&s, crate::actors::Kind::Number, &number)?;
    Ok(if found {
        json_response(StatusCode::OK, &json!({"phone_number_found": number}))
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": "No phone number found"}),
        )
    })
}

/// A document produced a chunk at a time, each chunk one short read.
pub(crate) trait Chunks: Send + 'static {
    fn next_chunk(&mut self, store: &ReadPool) -> rusqlite::Result<Option<Vec<u8>>>;
}

impl Chunks for ListCursor {
    fn next_chunk(&mut self, store: &ReadPool) -> rusqlite::Result<Option<Vec<u8>>> {
        ListCursor::next_chunk(self, store)
    }
}

impl Chunks for crate::store::ExportCursor {
    fn next_chunk(&mut self, store: &ReadPool) -> rusqlite::Result<Option<Vec<u8>>> {
        crate::store::ExportCursor::next_chunk(self, store)
    }
}

/// One chunk of a document, read on the blocking pool, and the document to go on with (none
/// if the read panicked).
async fn next_chunk<C: Chunks>(
    store: Arc<ReadPool>,
    mut list: C,
) -> (Result<Option<Vec<u8>>, String>, Option<C>) {
    let joined = tokio::task::spawn_blocking(move || {
        let r = list.next_chunk(&store).map_err(|e| e.to_string());
        (r, list)
    })
    .await;
    match joined {
        Ok((r, list)) => (r, Some(list)),
        Err(e) => (Err(e.to_string()), None),
    }
}

/// Whether an address or number is a bad actor now (the bad-actor set's rule: seen within the
/// TTL, not allowlisted, seen here or corroborated by peers).
fn is_listed(s: &ApiState, kind: crate::actors::Kind, key: &str) -> Result<bool, ApiError> {
    let now = crate::actors::now_ms();
    let row = s.store.with(|c| crate::store::actors::get(c, kind, key))?;
    Ok(row.is_some_and(|r| r.listed_until(kind, &s.rules, now).is_some()))
}

/// Where a request came from; unknown (a router driven without the server) counts as one
/// source.
type Client = Option<axum::Extension<serve::ClientAddr>>;

fn client_ip(c: Client) -> IpAddr {
    c.map_or(IpAddr::from([0, 0, 0, 0]), |axum::Extension(a)| a.0)
}

async fn ip_addresses(State(s): State<ApiState>, c: Client) -> Result<Response, ApiError> {
    stream_list(s, ListKind::IpAddresses, client_ip(c)).await
}

/// `GET /numbers`'s query: `all=true` lists every called value (user names and `NOT_FOUND`
/// too), not only dialled numbers.
#[derive(Debug, Default, serde::Deserialize)]
struct NumbersQuery {
    #[serde(default)]
    all: bool,
}

async fn numbers(
    State(s): State<ApiState>,
    c: Client,
    query: Result<Query<NumbersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::BadRequest)?;
    let kind = if query.all {
        ListKind::CalledValues
    } else {
        ListKind::Numbers
    };
    stream_list(s, kind, client_ip(c)).await
}

/// `GET /usernames`: the accounts requests tried to log in as (Digest user names, and the
/// extensions REGISTERs asked for), newest first, in `/numbers`' shape:
/// `{"usernames_total":N,"usernames":[{"username":…,"seen_last":…,"seen_count":"…"}]}`.
async fn usernames(State(s): State<ApiState>, c: Client) -> Result<Response, ApiError> {
    stream_list(s, ListKind::Usernames, client_ip(c)).await
}

/// Streams a full list: each chunk is one short read on the blocking pool, made when the client
/// has taken the previous one, so a slow reader holds no thread and no snapshot; it holds only
/// its list slot.
async fn stream_list(s: ApiState, kind: ListKind, client: IpAddr) -> Result<Response, ApiError> {
    let cutoff = match s.rules.ttl {
        crate::actors::Ttl::Forever => i64::MIN,
        crate::actors::Ttl::For(d) => {
            crate::actors::now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
    };
    stream_chunks(
        &s,
        ListCursor::new(kind, cutoff),
        client,
        "application/json",
        &[],
    )
    .await
}

/// Streams a chunked document under one of the list slots.
pub(crate) async fn stream_chunks<C: Chunks>(
    s: &ApiState,
    doc: C,
    client: IpAddr,
    content_type: &'static str,
    headers: &[(&'static str, String)],
) -> Result<Response, ApiError> {
    let slot = s.list_streams.admit(client).ok_or(ApiError::Busy)?;
    let store = s.store.clone();
    // The first chunk before the answer, so that a database error is still a clean 500.
    let (first, list) = next_chunk(store.clone(), doc).await;
    let first = match first {
        Ok(Some(chunk)) => chunk,
        Ok(None) => return Err(ApiError::Internal("an empty document".into())),
        Err(e) => return Err(ApiError::Internal(e)),
    };
    let rest =
        futures_util::stream::unfold((list, store, slot), |(list, store, slot)| async move {
            // After an error the cursor gives no more chunks, so the stream ends.
            match next_chunk(store.clone(), list?).await {
                (Ok(Some(chunk)), list) => Some((Ok(Bytes::from(chunk)), (list, store, slot))),
                (Ok(None), _) => None,
                (Err(e), list) => Some((Err(std::io::Error::other(e)), (list, store, slot))),
            }
        });
    let body = futures_util::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    let mut r = (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    Ok(r)
}
