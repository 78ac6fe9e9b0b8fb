//! The OAuth 2 client-credentials token: fetched as upstream does (the credentials and audience
//! as JSON), parsed with its lifetime (at most a day), cached and shared by every request, and
//! forgotten when the endpoint refuses it. Errors never carry the secret.
//!
//! Must not depend on the outbox, the database or the deliverer's loop; from `endpoint` it
//! borrows only the helpers for reading an answer (`read_prefix`, `describe` and their limits).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::OAuth2Config;
use super::endpoint::{EXCERPT_BYTES, MAX_DRAIN_BYTES, describe, read_prefix};
use crate::metrics::WebhookStats;
use crate::settings::Secret;

/// A token is fetched again this long before it expires (at most a tenth of its lifetime).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The longest a token is used, whatever the token server says: a day. A token whose lifetime
/// is not stated (or is zero or negative) is used this long too, or until the endpoint's 401
/// or 403.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why no token could be had. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub(super) enum TokenError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status} from the token URL: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("the token URL's answer has no access_token")]
    Malformed,
}

impl TokenError {
    /// The token server said no to the credentials: an operator must fix them.
    pub(super) fn is_credentials(&self) -> bool {
        matches!(
            self,
            TokenError::Status {
                status: 400 | 401 | 403,
                ..
            }
        )
    }
}

/// One bearer token and until when to use it (or until the endpoint answers 401 or 403).
#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    fresh_until: Instant,
}

impl Token {
    /// A token that lives `expires_in` seconds (at most `MAX_TOKEN_LIFETIME`, which is also
    /// what a lifetime of 0 or none stands for) is used until a tenth of its life, at most
    /// `TOKEN_REFRESH_MARGIN`, before its end.
    fn new(value: Secret, fetched: Instant, expires_in: Option<u64>) -> Token {
        let life = expires_in
            .filter(|&secs| secs > 0)
            .map_or(MAX_TOKEN_LIFETIME, |secs| {
                Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME)
            });
        let use_for = life.saturating_sub((life / 10).min(TOKEN_REFRESH_MARGIN));
        // Past the clock's end (never in practice): fetch again next time.
        let fresh_until = fetched.checked_add(use_for).unwrap_or(fetched);
        Token { value, fresh_until }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }
}

/// The OAuth 2 client-credentials token, fetched on demand and shared by every request.
pub(super) struct TokenCache {
    config: OAuth2Config,
    /// Held across a fetch, so that eight requests waiting for a token cause one fetch.
    current: tokio::sync::Mutex<Option<Token>>,
}

impl TokenCache {
    pub(super) fn new(config: OAuth2Config) -> TokenCache {
        TokenCache {
            config,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token while it is fresh, else a new one.
    pub(super) async fn get(
        &self,
        client: &reqwest::Client,
        stats: &WebhookStats,
    ) -> Result<Secret, TokenError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref().filter(|t| t.is_fresh(Instant::now())) {
            return Ok(t.value.clone());
        }
        let token = self.fetch(client).await?;
        stats.token_fetches.fetch_add(1, Ordering::Relaxed);
        let value = token.value.clone();
        *current = Some(token);
        Ok(value)
    }

    /// Forgets the token the endpoint refused, unless another request already replaced it.
    pub(super) async fn invalidate(&self, stale: &Secret) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| &t.value == stale) {
            *current = None;
        }
    }

    /// Upstream's request: the credentials and audience as JSON, `grant_type` client_credentials.
    async fn fetch(&self, client: &reqwest::Client) -> Result<Token, TokenError> {
        let fetched = Instant::now();
        let body = serde_json::json!({
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.expose(),
            "audience": self.config.audience,
            "grant_type": "client_credentials",
        });
        let mut resp = client
            .post(&self.config.token_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| TokenError::Transport(describe(e)))?;
        let status = resp.status();
        let raw = read_prefix(&mut resp, MAX_DRAIN_BYTES).await;
        if !status.is_success() {
            let excerpt = String::from_utf8_lossy(raw.get(..EXCERPT_BYTES).unwrap_or(&raw));
            return Err(TokenError::Status {
                status: status.as_u16(),
                excerpt: excerpt.into_owned(),
            });
        }
        parse_token(&raw, fetched).ok_or(TokenError::Malformed)
    }
}

/// `{"access_token": "...", "expires_in": 86400}`; `expires_in` may be a number (a fraction
/// is cut, a huge one saturates) or a string. A negative or unreadable one counts as none.
fn parse_token(raw: &[u8], fetched: Instant) -> Option<Token> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let token = v.get("access_token")?.as_str().filter(|t| !t.is_empty())?;
    let expires_in = match v.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Some(Token::new(Secret::new(token), fetched, expires_in))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_token_is_used_until_a_tenth_of_its_life_before_it_ends() {
        let t0 = Instant::now();
        let t = parse_token(br#"{"access_token":"abc","expires_in":100}"#, t0).unwrap();
        assert_eq!(t.value.expose(), "abc");
        assert!(t.is_fresh(t0 + Duration::from_secs(89)));
        assert!(!t.is_fresh(t0 + Duration::from_secs(90)));
        let day_less_margin = t0 + Duration::from_secs(86_400 - 60);
        let day = parse_token(br#"{"access_token":"d","expires_in":"86400"}"#, t0).unwrap();
        assert_eq!(day.fresh_until, day_less_margin);
        let short = parse_token(br#"{"access_token":"s","expires_in":1}"#, t0).unwrap();
        assert_eq!(short.fresh_until, t0 + Duration::from_millis(900));
        let frac = parse_token(br#"{"access_token":"s","expires_in":100.7}"#, t0).unwrap();
        assert_eq!(frac.fresh_until, t0 + Duration::from_secs(90));
        // Longer than a day, huge, zero, negative, unreadable or absent: a day at most.
        for raw in [
            r#"{"access_token":"x","expires_in":172800}"#,
            r#"{"access_token":"x","expires_in":18446744073709551615}"#,
            r#"{"access_token":"x","expires_in":1e300}"#,
            r#"{"access_token":"x","expires_in":"99999999999999999999999"}"#,
            r#"{"access_token":"x","expires_in":0}"#,
            r#"{"access_token":"x","expires_in":0.5}"#,
            r#"{"access_token":"x","expires_in":-5}"#,
            r#"{"access_token":"x","expires_in":"soon"}"#,
            r#"{"access_token":"x","expires_in":null}"#,
            r#"{"access_token":"x"}"#,
        ] {
            let t = parse_token(raw.as_bytes(), t0).unwrap();
            assert_eq!(t.fresh_until, day_less_margin, "{raw}");
            assert!(t.is_fresh(t0 + Duration::from_secs(3600)), "{raw}");
        }
        assert!(parse_token(br#"{"access_token":""}"#, t0).is_none());
        assert!(parse_token(br#"{"error":"nope"}"#, t0).is_none());
        assert!(parse_token(b"not json", t0).is_none());
    }

    /// A token server on loopback that counts its requests and checks the body upstream sends.
    async fn token_server(expires_in: u64) -> (String, Arc<AtomicU64>) {
        use axum::{Json, Router, routing::post};
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let app = Router::new().route(
            "/token",
            post(move |Json(body): Json<serde_json::Value>| {
                let c = c.clone();
                async move {
                    assert_eq!(body["client_id"], "id");
                    assert_eq!(body["client_secret"], "hunter2");
                    assert_eq!(body["audience"], "aud");
                    assert_eq!(body["grant_type"], "client_credentials");
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    Json(serde_json::json!({"access_token": format!("tok-{n}"), "expires_in": expires_in}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/token"), count)
    }

    fn cache(url: String) -> TokenCache {
        TokenCache::new(OAuth2Config {
            client_id: "id".into(),
            client_secret: Secret::new("hunter2"),
            token_url: url,
            audience: "aud".into(),
        })
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_again_only_after_a_refusal() {
        let (url, fetches) = token_server(3600).await;
        let cache = cache(url);
        let client = reqwest::Client::new();
        let stats = WebhookStats::default();
        let a = cache.get(&client, &stats).await.unwrap();
        let b = cache.get(&client, &stats).await.unwrap();
        assert_eq!((a.expose(), b.expose()), ("tok-1", "tok-1"));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A refusal of an older token does not throw away a newer one.
        cache.invalidate(&Secret::new("tok-0")).await;
        assert_eq!(cache.get(&client, &stats).await.unwrap().expose(), "tok-1");
        cache.invalidate(&a).await;
        assert_eq!(cache.get(&client, &stats).await.unwrap().expose(), "tok-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(stats.token_fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_expired_token_is_fetched_again() {
        let (url, fetches) = token_server(1).await;
        let cache = cache(url);
        let client = reqwest::Client::new();
        let stats = WebhookStats::default();
        assert_eq!(cache.get(&client, &stats).await.unwrap().expose(), "tok-1");
        // Age the cached token instead of waiting for it.
        if let Some(t) = cache.current.lock().await.as_mut() {
            t.fresh_until = Instant::now() - Duration::from_millis(1);
        }
        assert_eq!(cache.get(&client, &stats).await.unwrap().expose(), "tok-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_huge_or_zero_expires_in_from_the_token_server_keeps_a_token_for_at_most_a_day() {
        let client = reqwest::Client::new();
        let use_for = MAX_TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN;
        for expires_in in [u64::MAX, 0] {
            let (url, fetches) = token_server(expires_in).await;
            let cache = cache(url);
            let stats = WebhookStats::default();
            let before = Instant::now();
            let a = cache.get(&client, &stats).await.unwrap();
            let after = Instant::now();
            let b = cache.get(&client, &stats).await.unwrap();
            assert_eq!((a.expose(), b.expose()), ("tok-1", "tok-1"), "{expires_in}");
            assert_eq!(fetches.load(Ordering::SeqCst), 1, "{expires_in}");
            let until = cache.current.lock().await.as_ref().unwrap().fresh_until;
            assert!(
                before + use_for <= until && until <= after + use_for,
                "{expires_in}"
            );
            // A refusal still replaces it at once.
            cache.invalidate(&a).await;
            assert_eq!(cache.get(&client, &stats).await.unwrap().expose(), "tok-2");
        }
    }

    #[test]
    fn token_errors_never_show_the_secret() {
        let e = TokenError::Status {
            status: 401,
            excerpt: "access_denied".into(),
        };
        assert!(e.is_credentials());
        assert_eq!(e.to_string(), "HTTP 401 from the token URL: access_denied");
    }
}
