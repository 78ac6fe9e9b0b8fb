//! The bad-actor set for machines: `/blocklist/ip-addresses` and `/blocklist/numbers` in the
//! formats firewalls and threat-intelligence platforms load, APIBAN's v1 `/banned` for the
//! clients written for it, and a MISP feed (`/misp/...`) a MISP instance can subscribe to.
//! Every answer is streamed from the database a page at a time and carries, in
//! `X-SentryPeer-Cursor`, the change sequence it is complete up to; `since=` that cursor gives
//! what changed after it (additions and removals), by sequence, not by clock.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{ApiError, ApiState, Client, client_ip, json_response, stream_chunks};
use crate::actors::Kind;
use crate::actors::export::{self, Format};
use crate::store::{ExportCursor, ExportRequest, Scope, actors as stored};

/// Addresses per APIBAN batch, as APIBAN sends them.
const APIBAN_BATCH: usize = 250;
/// APIBAN IDs are our change sequence numbers plus this, so that `100`, which APIBAN clients
/// send first, means "from the start" and no ID we hand out is ever 100 or below.
pub const APIBAN_ID_OFFSET: u64 = 100;
/// The longest ipset set name accepted (ipset allows 31 bytes; we append `6` for IPv6).
const MAX_IPSET_NAME: usize = 30;

/// The header carrying an export's cursor.
pub const CURSOR_HEADER: &str = "x-sentrypeer-cursor";

pub(super) async fn ip_addresses(
    State(s): State<ApiState>,
    c: Client,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    export(s, Kind::Ip, client_ip(c), &q).await
}

pub(super) async fn numbers(
    State(s): State<ApiState>,
    c: Client,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    export(s, Kind::Number, client_ip(c), &q).await
}

/// Reads `format`, `scope`, `since` and `set` into an export request, or says what is wrong.
pub fn request(kind: Kind, q: &HashMap<String, String>) -> Result<ExportRequest, String> {
    let format = match q.get("format") {
        None => Format::Json,
        Some(f) => Format::parse(f)
            .filter(|f| f.supports(kind))
            .ok_or_else(|| format!("format must be one of {}", Format::names_for(kind)))?,
    };
    let scope = match q.get("scope") {
        None => Scope::All,
        Some(s) => Scope::parse(s).ok_or("scope must be local or all")?,
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| "since must be a cursor from an earlier answer")?,
        ),
    };
    let ipset_name = match q.get("set") {
        None => export::DEFAULT_IPSET_NAME.to_string(),
        Some(n)
            if !n.is_empty()
                && n.len() <= MAX_IPSET_NAME
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            n.clone()
        }
        Some(_) => {
            return Err(format!(
                "set must be 1-{MAX_IPSET_NAME} letters, digits, _ or -"
            ));
        }
    };
    Ok(ExportRequest {
        kind,
        format,
        scope,
        since,
        ipset_name,
    })
}

async fn export(
    s: ApiState,
    kind: Kind,
    client: IpAddr,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let req = request(kind, q).map_err(ApiError::Invalid)?;
    let format = req.format;
    let (store, rules, node_id) = (s.store.clone(), s.rules.clone(), s.node_id);
    let cursor =
        tokio::task::spawn_blocking(move || ExportCursor::new(&store, req, rules, node_id))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let seq = cursor.cursor().to_string();
    stream_chunks(
        &s,
        cursor,
        client,
        format.content_type(),
        &[(CURSOR_HEADER, seq)],
    )
    .await
}

/// The next APIBAN batch after `id`: up to 250 listed addresses in change order, and the ID to
/// ask with next. `None` when nothing was listed after `id`.
pub fn banned_batch(
    store: &crate::store::ReadPool,
    rules: &crate::actors::Rules,
    id: u64,
) -> rusqlite::Result<Option<(Vec<String>, u64)>> {
    let mut after = id.saturating_sub(APIBAN_ID_OFFSET).min(i64::MAX as u64) as i64;
    let upto = store.with(stored::current_seq)? as i64;
    let now = crate::actors::now_ms();
    let mut out = Vec::new();
    while out.len() < APIBAN_BATCH {
        let page = store
            .with(|c| stored::page_by_change(c, Kind::Ip, after, upto, APIBAN_BATCH as i64))?;
        let Some(last) = page.last() else { break };
        let full = page.len() == APIBAN_BATCH;
        let last_seq = last.change_seq;
        for row in page {
            if row.listed_until(Kind::Ip, rules, now).is_some() {
                out.push(row.key);
                after = row.change_seq;
                if out.len() == APIBAN_BATCH {
                    break;
                }
            } else {
                after = row.change_seq;
            }
        }
        if out.len() < APIBAN_BATCH {
            after = last_seq;
        }
        if !full {
            break;
        }
    }
    Ok((!out.is_empty()).then(|| (out, after as u64 + APIBAN_ID_OFFSET)))
}

/// `GET /banned`: APIBAN's v1 list from the start (see `api::apiban`).
pub(super) async fn banned(State(s): State<ApiState>) -> Result<Response, ApiError> {
    super::apiban::banned_from(&s, None).await
}

/// `GET /banned/{ID}`: what was listed after `ID`.
pub(super) async fn banned_since(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    super::apiban::banned_from(&s, Some(&id)).await
}

/// `GET /misp/manifest.json`: the node's two feed events (addresses, numbers) as MISP's feed
/// fetcher indexes them.
pub(super) async fn misp_manifest(State(s): State<ApiState>) -> Response {
    let now = crate::actors::now_ms();
    let date = export::rfc3339(now);
    let orgc: serde_json::Value =
        serde_json::from_str(&export::misp_orgc(s.node_id)).unwrap_or_default();
    let mut manifest = serde_json::Map::new();
    for kind in [Kind::Ip, Kind::Number] {
        manifest.insert(
            export::misp_event_uuid(s.node_id, kind).to_string(),
            json!({
                "Orgc": orgc,
                "Tag": [{"name": "tlp:white"}, {"name": "sentrypeer"}],
                "info": export::misp_info(kind),
                "date": date.get(..10).unwrap_or_default(),
                "analysis": 2,
                "threat_level_id": 3,
                "timestamp": (now / 1000).to_string(),
            }),
        );
    }
    json_response(StatusCode::OK, &serde_json::Value::Object(manifest))
}

/// `GET /misp/{uuid}.json`: one feed event, streamed.
pub(super) async fn misp_event(
    State(s): State<ApiState>,
    c: Client,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let uuid = file.strip_suffix(".json").ok_or(ApiError::NotFound)?;
    let kind = [Kind::Ip, Kind::Number]
        .into_iter()
        .find(|k| export::misp_event_uuid(s.node_id, *k).to_string() == uuid)
        .ok_or(ApiError::NotFound)?;
    let q = HashMap::from([("format".to_string(), "misp".to_string())]);
    export(s, kind, client_ip(c), &q).await
}

/// `GET /misp/hashes.csv`: `md5(value),event uuid` for every attribute of both events, streamed.
pub(super) async fn misp_hashes(
    State(s): State<ApiState>,
    c: Client,
) -> Result<Response, ApiError> {
    let doc = MispHashes {
        rules: s.rules.clone(),
        node_id: s.node_id,
        now_ms: crate::actors::now_ms(),
        kinds: vec![Kind::Number, Kind::Ip],
        after: String::new(),
    };
    stream_chunks(&s, doc, client_ip(c), "text/csv; charset=utf-8", &[]).await
}

/// The hashes file, a page of actors per chunk.
struct MispHashes {
    rules: std::sync::Arc<crate::actors::Rules>,
    node_id: uuid::Uuid,
    now_ms: i64,
    /// Kinds still to do, the current one last.
    kinds: Vec<Kind>,
    after: String,
}

impl super::Chunks for MispHashes {
    fn next_chunk(&mut self, store: &crate::store::ReadPool) -> rusqlite::Result<Option<Vec<u8>>> {
        use md5::{Digest, Md5};
        use std::io::Write;
        const PAGE: i64 = 2000;
        let Some(&kind) = self.kinds.last() else {
            return Ok(None);
        };
        let event = export::misp_event_uuid(self.node_id, kind);
        let page = store.with(|c| stored::page_by_key(c, kind, &self.after, PAGE))?;
        let mut out = Vec::with_capacity(page.len() * 70);
        for row in &page {
            if row.listed_until(kind, &self.rules, self.now_ms).is_some() {
                for b in Md5::digest(row.key.as_bytes()) {
                    let _ = write!(out, "{b:02x}");
                }
                let _ = writeln!(out, ",{event}");
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => self.after.clone_from(&last.key),
            _ => {
                self.kinds.pop();
                self.after.clear();
            }
        }
        Ok(Some(out))
    }
}
