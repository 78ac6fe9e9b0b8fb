//! APIBAN's API, under `/api/`, so that APIBAN's own clients work against a node by changing
//! only their base URL to `http://NODE:8082/api/`: the v1 forms with the key in the path
//! (`GET /api/{KEY}/banned[/{ID}]`, `GET /api/{KEY}/check/{IP}`: the shell and nftables clients,
//! the Kamailio recipes) and the v2 forms with the key as a bearer token (`POST /api/get`,
//! `POST /api/check`: the Go client library).
//!
//! The answers follow APIBAN's: batches of 250 addresses with an `ID` that only grows (our
//! change sequence plus [`APIBAN_ID_OFFSET`]), `400 {"ipaddress":["no new bans"],"ID":"none"}`
//! at the end, `400 {"ipaddress":["not blocked"],"ID":"none"}` for an address that is not listed,
//! `"ID":"unauthorized"` for a wrong key. Only listed addresses, and only the set `sip`.
//!
//! Keys: by default any key is accepted (the node's blocklist is public data); with
//! `--apiban-key` one of those keys is required.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::blocklist::{APIBAN_ID_OFFSET, banned_batch};
use super::{ApiError, ApiState, json_response};
use crate::actors::Kind;
use crate::store::actors as stored;

/// The one APIBAN set a SIP honeypot has.
const SET: &str = "sip";

fn answer(status: StatusCode, what: &str, id: &str) -> Response {
    json_response(status, &json!({"ipaddress": [what], "ID": id}))
}

fn unauthorized() -> Response {
    answer(StatusCode::FORBIDDEN, "unauthorized", "unauthorized")
}

/// Whether `key` opens the API: any key when none is configured, else one of them.
fn key_ok(s: &ApiState, key: &str) -> bool {
    s.apiban_keys.is_empty()
        || s.apiban_keys
            .iter()
            .any(|k| constant_time_eq(k.expose().as_bytes(), key.as_bytes()))
}

/// Compares without an early exit on the first difference, so the time taken tells nothing
/// about how much of a key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a v2 request.
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("")
        .trim()
}

/// The APIBAN batch after `id` (`None` or `100`: from the start), as APIBAN answers it.
pub(super) async fn banned_from(s: &ApiState, id: Option<&str>) -> Result<Response, ApiError> {
    // `100` (APIBAN's first ID) and no ID both mean from the start.
    let id = match id {
        None => 0,
        Some(id) => match id.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                // APIBAN's shape, plus the `error` our own endpoints carry.
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"ipaddress": ["bad id"], "ID": "none",
                            "error": "the ID must be a number"}),
                ));
            }
        },
    };
    let (store, rules) = (s.store.clone(), s.rules.clone());
    let batch = tokio::task::spawn_blocking(move || banned_batch(&store, &rules, id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(match batch {
        Some((ips, next)) => json_response(
            StatusCode::OK,
            &json!({"ipaddress": ips, "ID": next.to_string()}),
        ),
        None => answer(StatusCode::BAD_REQUEST, "no new bans", "none"),
    })
}

async fn check_ip(s: &ApiState, ip: &str) -> Result<Response, ApiError> {
    let Ok(ip) = ip.trim().parse::<std::net::IpAddr>() else {
        return Ok(answer(StatusCode::BAD_REQUEST, "not blocked", "none"));
    };
    let ip = ip.to_canonical().to_string();
    let now = crate::actors::now_ms();
    let row = s.store.with(|c| stored::get(c, Kind::Ip, &ip))?;
    Ok(match row {
        Some(r) if r.listed_until(Kind::Ip, &s.rules, now).is_some() => {
            let id = (r.change_seq.max(0) as u64 + APIBAN_ID_OFFSET).to_string();
            json_response(StatusCode::OK, &json!({"ipaddress": [ip], "ID": id}))
        }
        _ => answer(StatusCode::BAD_REQUEST, "not blocked", "none"),
    })
}

/// `GET /api/{KEY}/banned`
pub(super) async fn v1_banned(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    if !key_ok(&s, &key) {
        return Ok(unauthorized());
    }
    banned_from(&s, None).await
}

/// `GET /api/{KEY}/banned/{ID}`
pub(super) async fn v1_banned_since(
    State(s): State<ApiState>,
    Path((key, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !key_ok(&s, &key) {
        return Ok(unauthorized());
    }
    banned_from(&s, Some(&id)).await
}

/// `GET /api/{KEY}/check/{IP}`
pub(super) async fn v1_check(
    State(s): State<ApiState>,
    Path((key, ip)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !key_ok(&s, &key) {
        return Ok(unauthorized());
    }
    check_ip(&s, &ip).await
}

/// The body of a v2 request: `{"set":"sip","id":"100"}` (get) or
/// `{"set":"sip","ipaddress":"203.0.113.7"}` (check).
#[derive(Debug, Deserialize)]
pub(super) struct V2Body {
    #[serde(default)]
    set: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ipaddress: Option<String>,
}

type V2Json = Result<Json<V2Body>, axum::extract::rejection::JsonRejection>;

fn set_ok(set: Option<&str>) -> bool {
    set.is_none_or(|s| s.eq_ignore_ascii_case(SET))
}

/// What every v2 request must pass: the bearer key, a JSON body, the `sip` set.
fn v2_body(s: &ApiState, headers: &HeaderMap, body: V2Json) -> Result<V2Body, Box<Response>> {
    if !key_ok(s, bearer(headers)) {
        return Err(Box::new(unauthorized()));
    }
    let Ok(Json(body)) = body else {
        return Err(Box::new(answer(
            StatusCode::BAD_REQUEST,
            "bad request",
            "none",
        )));
    };
    if !set_ok(body.set.as_deref()) {
        return Err(Box::new(answer(
            StatusCode::BAD_REQUEST,
            "unknown set",
            "none",
        )));
    }
    Ok(body)
}

/// `POST /api/get` with `{"set":"sip","id":"100"}` and `Authorization: Bearer KEY`.
pub(super) async fn v2_get(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: V2Json,
) -> Result<Response, ApiError> {
    match v2_body(&s, &headers, body) {
        Ok(body) => banned_from(&s, body.id.as_deref()).await,
        Err(answer) => Ok(*answer),
    }
}

/// `POST /api/check` with `{"set":"sip","ipaddress":"203.0.113.7"}` and a bearer key.
pub(super) async fn v2_check(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: V2Json,
) -> Result<Response, ApiError> {
    match v2_body(&s, &headers, body) {
        Ok(body) => check_ip(&s, body.ipaddress.as_deref().unwrap_or("")).await,
        Err(answer) => Ok(*answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole_and_bearer_tokens_are_read() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer k3y".parse().unwrap());
        assert_eq!(bearer(&h), "k3y");
        assert_eq!(bearer(&HeaderMap::new()), "");
        assert!(set_ok(None) && set_ok(Some("SIP")) && !set_ok(Some("ssh")));
    }
}
