//! The endpoint: one POST of a body with its Authorization (none, a static value or an OAuth 2
//! bearer token, fetched again once after a 401 or 403), and what the answer means for the
//! request's events (`Class`, `Outcome`). Also the helpers for reading an answer without
//! trusting its size (`read_prefix`) and for naming a transport error without its URL
//! (`describe`), which the token fetch shares.
//!
//! Knows nothing of the outbox's rows, the database or the deliverer's loop: it answers one
//! request at a time. Uses `token` for the bearer token and `retry` to read `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::WebhookConfig;
use super::retry::parse_retry_after;
use super::token::{TokenCache, TokenError};
use super::{MAX_IN_FLIGHT, StartError};
use crate::event::APP_VERSION;
use crate::metrics::WebhookStats;
use crate::settings::Secret;
use crate::store::outbox::Rejection;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a refusing answer kept with a dead letter.
pub(super) const EXCERPT_BYTES: usize = 512;
/// The most of a successful answer read (so the connection can be reused); more closes it.
pub(super) const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Where and how requests go.
pub(super) struct Endpoint {
    client: reqwest::Client,
    url: String,
    auth: Auth,
    stats: Arc<WebhookStats>,
}

enum Auth {
    None,
    Static(HeaderValue),
    OAuth2(TokenCache),
}

/// How a request ended, for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Reject(Rejection),
}

/// What a status means for the events of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Delivered,
    Retry,
    Reject,
}

/// 2xx delivers. 408, 429 and 5xx are the endpoint's trouble, 401 and 403 the credentials':
/// retried, since dead-lettering would move every event. Any other answer refuses the event.
fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        200..=299 => Class::Delivered,
        401 | 403 | 408 | 429 | 500..=599 => Class::Retry,
        _ => Class::Reject,
    }
}

/// The endpoint refused the credentials: a bearer token is fetched again (once per request)
/// before the request is retried. 403 counts too, since gateways answer a revoked or expired
/// token with either.
fn refuses_token(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// The endpoint's `host:port`, for logs: a URL may carry credentials in its user or query.
pub fn endpoint_name(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// A transport error with its causes, without the URL.
pub(super) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads at most `limit` bytes of a response body.
pub(super) async fn read_prefix(resp: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(limit);
    out
}

impl Endpoint {
    /// Builds the HTTP client and the Authorization every request carries.
    pub(super) fn new(
        config: &WebhookConfig,
        stats: Arc<WebhookStats>,
    ) -> Result<Endpoint, StartError> {
        let client = reqwest::Client::builder()
            .user_agent(format!("sentrypeer/{APP_VERSION}"))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()?;
        let auth = match (&config.oauth2, &config.authorization) {
            (Some(o), _) => Auth::OAuth2(TokenCache::new(o.clone())),
            (None, Some(value)) => {
                let mut v =
                    HeaderValue::from_str(value.expose()).map_err(|_| StartError::Authorization)?;
                v.set_sensitive(true);
                Auth::Static(v)
            }
            (None, None) => Auth::None,
        };
        Ok(Endpoint {
            client,
            url: config.url.clone(),
            auth,
            stats,
        })
    }

    /// POSTs one body: fetches a token first if needed, and once more after a 401 or 403.
    pub(super) async fn deliver(&self, body: Bytes) -> Outcome {
        let token = match self.token().await {
            Ok(t) => t,
            Err(e) => return self.token_failed(e),
        };
        let mut resp = match self.post(body.clone(), token.as_ref()).await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    error: describe(e),
                    retry_after: None,
                };
            }
        };
        if refuses_token(resp.status()) {
            if let (Auth::OAuth2(cache), Some(stale)) = (&self.auth, &token) {
                let _ = read_prefix(&mut resp, MAX_DRAIN_BYTES).await;
                cache.invalidate(stale).await;
                let fresh = match cache.get(&self.client, &self.stats).await {
                    Ok(t) => t,
                    Err(e) => return self.token_failed(e),
                };
                resp = match self.post(body, Some(&fresh)).await {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Retry {
                            error: describe(e),
                            retry_after: None,
                        };
                    }
                };
            }
        }
        let status = resp.status();
        match classify(status) {
            Class::Delivered => {
                let _ = read_prefix(&mut resp, MAX_DRAIN_BYTES).await;
                Outcome::Delivered
            }
            Class::Retry => {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
                let _ = read_prefix(&mut resp, MAX_DRAIN_BYTES).await;
                Outcome::Retry {
                    error: format!("HTTP {}", status.as_u16()),
                    retry_after,
                }
            }
            Class::Reject => {
                let excerpt = read_prefix(&mut resp, EXCERPT_BYTES).await;
                Outcome::Reject(Rejection {
                    status: Some(status.as_u16()),
                    reason: format!("HTTP {}", status.as_u16()),
                    excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
                })
            }
        }
    }

    async fn token(&self) -> Result<Option<Secret>, TokenError> {
        match &self.auth {
            Auth::OAuth2(cache) => cache.get(&self.client, &self.stats).await.map(Some),
            _ => Ok(None),
        }
    }

    fn token_failed(&self, e: TokenError) -> Outcome {
        if e.is_credentials() {
            tracing::error!(error = %e, "The OAuth 2 token server refused our credentials (-i, -c); WebHook events wait in the outbox.");
        }
        Outcome::Retry {
            error: format!("token: {e}"),
            retry_after: None,
        }
    }

    async fn post(
        &self,
        body: Bytes,
        token: Option<&Secret>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match (&self.auth, token) {
            (_, Some(t)) => req = req.bearer_auth(t.expose()),
            (Auth::Static(v), None) => req = req.header(AUTHORIZATION, v.clone()),
            _ => {}
        }
        req.send().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_deliver_retry_or_reject() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        for s in [200, 201, 202, 204] {
            assert_eq!(c(s), Class::Delivered, "{s}");
        }
        for s in [401, 403, 408, 429, 500, 502, 503, 504] {
            assert_eq!(c(s), Class::Retry, "{s}");
        }
        for s in [301, 400, 404, 405, 409, 413, 422] {
            assert_eq!(c(s), Class::Reject, "{s}");
        }
    }

    #[test]
    fn logs_name_the_endpoint_without_its_credentials() {
        assert_eq!(
            endpoint_name("https://user:pw@hooks.example.com/x?token=t"),
            "https://hooks.example.com:443"
        );
        assert_eq!(
            endpoint_name("http://127.0.0.1:8080/e"),
            "http://127.0.0.1:8080"
        );
    }
}
