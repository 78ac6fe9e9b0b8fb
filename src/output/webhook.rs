//! The WebHook deliverer: POSTs the events waiting in the durable outbox (`store::outbox`) to
//! the endpoint and deletes each only after a 2xx. It never sees the pipeline: the sqlite
//! output's writer queues each event in the outbox in the same transaction as its `honey` row,
//! then wakes this task. So a slow or absent endpoint slows nothing but itself, and an
//! undelivered event waits in the database across restarts.
//!
//! Delivery: up to `MAX_IN_FLIGHT` requests at once, one event per request (upstream's shape)
//! or a JSON array in batch mode. 408, 429, 5xx, 401/403 (the credentials, not the event, are
//! wrong) and transport errors are retried: the whole deliverer pauses with exponential backoff
//! and jitter, or for the `Retry-After` the endpoint asked for, then probes with one request
//! until one succeeds. Any other status dead-letters the request's events with the status and
//! an excerpt of the answer. Delivery is at least once: a crash between the 2xx and the
//! deletion sends those events again. A request task that panics has its events retried like
//! a failed request. The dead letters are kept to `--webhook-dead-letter-cap`: beyond it the
//! oldest are deleted (and counted), so an endpoint refusing for weeks fills no disk.
//!
//! Authorization: none, a static header value, or an OAuth 2 client-credentials bearer token
//! fetched as upstream does, cached until shortly before it expires (at most a day; a lifetime
//! not stated, zero or negative counts as a day too), and fetched again once when the endpoint
//! answers 401 or 403 (some gateways answer a revoked or expired token with 403).
//!
//! Depends on `store::outbox` for the tables and `metrics::WebhookStats` for what it reports.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;

use crate::config::{OAuth2Config, Secret, WebhookConfig};
use crate::event::APP_VERSION;
use crate::metrics::WebhookStats;
use crate::store::outbox::{self, Pending, Rejection};

/// Requests in flight at once: hides an endpoint's latency (eight 2-second requests still move
/// 4 events/s; a local endpoint takes thousands) without looking like a flood to it.
pub const MAX_IN_FLIGHT: usize = 8;
/// The first pause after a failure; it doubles with each consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than an hour is cut to an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows read from the outbox at once.
const FETCH_ROWS: usize = 512;
/// Delivered rows deleted in one transaction. At most this many (plus what is in flight) are
/// sent twice after a crash; fewer transactions leave the database to the capture writer.
const ACK_BATCH: usize = 256;
/// The longest a delivered row waits for its deletion.
const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How often the outbox is read even without a wake-up: picks up rows another process put
/// there (`sentrypeer webhook replay`) and recounts the depth gauge.
const RECHECK_INTERVAL: Duration = Duration::from_secs(2);
/// After the writer stops (shutdown), how long delivery of what is due may go on. What is left
/// stays in the outbox for the next start.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// The most of a refusing answer kept with a dead letter.
const EXCERPT_BYTES: usize = 512;
/// The most of a successful answer read (so the connection can be reused); more closes it.
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// A token is fetched again this long before it expires (at most a tenth of its lifetime).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The longest a token is used, whatever the token server says: a day. A token whose lifetime
/// is not stated (or is zero or negative) is used this long too, or until the endpoint's 401
/// or 403.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The deliverer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the outbox: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("the WebHook Authorization value is not a valid header value")]
    Authorization,
}

/// Where and how requests go.
struct Endpoint {
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

/// A task ready to run: `run` until the writer is gone and the outbox drained (or the grace
/// period is over).
pub struct Deliverer {
    db: Arc<Mutex<Connection>>,
    endpoint: Arc<Endpoint>,
    stats: Arc<WebhookStats>,
    batch: usize,
    max_backoff: Duration,
    dead_letter_cap: u64,
}

impl Deliverer {
    /// Opens the deliverer's own connection to the database and builds the HTTP client.
    pub fn new(
        config: &WebhookConfig,
        db_file: &std::path::Path,
        stats: Arc<WebhookStats>,
    ) -> Result<Deliverer, StartError> {
        let conn = outbox::open(db_file)?;
        stats
            .outbox_depth
            .store(outbox::depth(&conn)?, Ordering::Relaxed);
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
        Ok(Deliverer {
            db: Arc::new(Mutex::new(conn)),
            endpoint: Arc::new(Endpoint {
                client,
                url: config.url.clone(),
                auth,
                stats: stats.clone(),
            }),
            stats,
            batch: config.batch.max(1),
            max_backoff: config.max_backoff,
            dead_letter_cap: config.dead_letter_cap.max(1),
        })
    }

    /// Delivers until `wake` closes (the writer has stopped), then for at most `DRAIN_GRACE`.
    pub async fn run(self, wake: mpsc::Receiver<()>) {
        let mut s = State::new(self, wake);
        s.run().await;
    }
}

/// One request in flight: its events, and the failure round it started in.
struct Request {
    ids: Vec<i64>,
    generation: u64,
}

/// One request's events and how it ended.
struct Done {
    ids: Vec<i64>,
    generation: u64,
    outcome: Outcome,
}

/// How a request ended, for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
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

/// The pause after a failure: the backoff, or what the endpoint asked for in `Retry-After` if
/// longer. The endpoint's wish is a floor, not a licence to hammer: "0", or a date already past
/// by the endpoint's slow clock, still backs off.
fn pause_after(retry_after: Option<Duration>, failures: u32, max: Duration, unit: f64) -> Duration {
    let backed_off = backoff(failures, max, unit);
    retry_after.map_or(backed_off, |asked| asked.max(backed_off))
}

/// The pause after `failures` consecutive failures: `FIRST_BACKOFF` doubled per failure, at
/// most `max`, of which the second half is jitter (`unit` in [0, 1)) so that many nodes
/// pushed back at once do not come back at once.
fn backoff(failures: u32, max: Duration, unit: f64) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let full = FIRST_BACKOFF.saturating_mul(factor).min(max);
    full.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 10.2.3; a date already past means now),
/// at most an hour. Anything else is ignored and backoff applies.
fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let wait = if text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A number in [0, 1) from the operating system's randomness (through a v4 UUID).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1);
    bits as f64 / (1u64 << 53) as f64
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
fn describe(e: reqwest::Error) -> String {
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
async fn read_prefix(resp: &mut reqwest::Response, limit: usize) -> Vec<u8> {
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
    /// POSTs one body: fetches a token first if needed, and once more after a 401 or 403.
    async fn deliver(&self, body: Bytes) -> Outcome {
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

/// Why no token could be had. Never carries the secret.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status} from the token URL: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("the token URL's answer has no access_token")]
    Malformed,
}

impl TokenError {
    /// The token server said no to the credentials: an operator must fix them.
    fn is_credentials(&self) -> bool {
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
struct TokenCache {
    config: OAuth2Config,
    /// Held across a fetch, so that eight requests waiting for a token cause one fetch.
    current: tokio::sync::Mutex<Option<Token>>,
}

impl TokenCache {
    fn new(config: OAuth2Config) -> TokenCache {
        TokenCache {
            config,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token while it is fresh, else a new one.
    async fn get(
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
    async fn invalidate(&self, stale: &Secret) {
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

/// Counts a request in flight while it lives (an aborted request too).
struct InFlight(Arc<WebhookStats>);

impl InFlight {
    fn new(stats: Arc<WebhookStats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The deliverer's loop state.
struct State {
    d: Deliverer,
    /// `None` once the writer has stopped.
    wake: Option<mpsc::Receiver<()>>,
    /// Due rows read but not yet sent, oldest first.
    pending: VecDeque<Pending>,
    /// Rows pending, in flight or delivered but not yet deleted: never read twice.
    claimed: HashSet<i64>,
    /// Reading resumes after this id; 0 starts from the oldest row again.
    cursor: i64,
    /// The last read found nothing more due: wait for a wake-up, a timer or a recheck.
    exhausted: bool,
    /// When the next row not yet due becomes due.
    next_due: Option<Instant>,
    /// The requests' tasks, and each task's events by its id: a task that fails (panics)
    /// returns no `Done`, but its events must still be released and retried.
    in_flight: JoinSet<Outcome>,
    requests: HashMap<tokio::task::Id, Request>,
    /// Delivered rows to delete, and by when.
    acks: Vec<i64>,
    ack_by: Option<Instant>,
    /// Consecutive failures; while above 0 only one request probes the endpoint.
    failures: u32,
    /// Bumped at each failure counted, so the other requests of that round count no more.
    generation: u64,
    paused_until: Option<Instant>,
    recheck_at: Instant,
    /// Set when the writer has stopped: deliver what is due until then.
    drain_until: Option<Instant>,
}

impl State {
    fn new(d: Deliverer, wake: mpsc::Receiver<()>) -> State {
        State {
            d,
            wake: Some(wake),
            pending: VecDeque::new(),
            claimed: HashSet::new(),
            cursor: 0,
            exhausted: false,
            next_due: None,
            in_flight: JoinSet::new(),
            requests: HashMap::new(),
            acks: Vec::new(),
            ack_by: None,
            failures: 0,
            generation: 0,
            paused_until: None,
            recheck_at: Instant::now() + RECHECK_INTERVAL,
            drain_until: None,
        }
    }

    async fn run(&mut self) {
        loop {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t <= now) {
                self.paused_until = None;
                self.exhausted = false;
            }
            if self.next_due.is_some_and(|t| t <= now) {
                self.next_due = None;
                self.exhausted = false;
            }
            self.dispatch().await;
            if let Some(until) = self.drain_until {
                let idle = self.in_flight.is_empty() && self.pending.is_empty() && self.exhausted;
                if idle || now >= until || self.paused_until.is_some() {
                    break;
                }
            }
            let flush_now = self.acks.len() >= ACK_BATCH
                || (!self.acks.is_empty() && self.in_flight.is_empty())
                || self.ack_by.is_some_and(|t| t <= now);
            if flush_now {
                self.flush_acks().await;
            }
            let mut timer = self.recheck_at;
            for t in [self.paused_until, self.ack_by, self.drain_until]
                .into_iter()
                .chain([self.next_due.filter(|_| self.exhausted)])
                .flatten()
            {
                timer = timer.min(t);
            }
            tokio::select! {
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.joined(joined).await;
                }
                woken = recv(&mut self.wake), if self.wake.is_some() => {
                    self.exhausted = false;
                    if woken.is_none() {
                        self.wake = None;
                        self.drain_until = Some(Instant::now() + DRAIN_GRACE);
                    }
                }
                () = tokio::time::sleep_until(timer) => {
                    if Instant::now() >= self.recheck_at {
                        self.recheck().await;
                    }
                }
            }
        }
        self.flush_acks().await;
        // Dropping the join set aborts what is still in flight: those rows stay in the outbox.
        self.in_flight.abort_all();
        self.requests.clear();
        let left = self.d.stats.outbox_depth.load(Ordering::Relaxed);
        if left > 0 {
            tracing::info!(
                events = left,
                "WebHook deliverer stopped; undelivered events stay in the outbox for the next start."
            );
        } else {
            tracing::debug!("WebHook deliverer stopped with an empty outbox.");
        }
    }

    /// Starts requests while there is room and due rows.
    async fn dispatch(&mut self) {
        let room = if self.failures > 0 { 1 } else { MAX_IN_FLIGHT };
        while self.paused_until.is_none() && self.in_flight.len() < room {
            if self.pending.is_empty() && !self.exhausted {
                self.refill().await;
            }
            if self.pending.is_empty() {
                break;
            }
            let n = self.d.batch.min(self.pending.len());
            let rows: Vec<Pending> = self.pending.drain(..n).collect();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let body = if self.d.batch == 1 {
                Bytes::from(rows.into_iter().map(|r| r.body).collect::<String>())
            } else {
                let mut b =
                    String::with_capacity(rows.iter().map(|r| r.body.len() + 1).sum::<usize>() + 2);
                b.push('[');
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        b.push(',');
                    }
                    b.push_str(&r.body);
                }
                b.push(']');
                Bytes::from(b)
            };
            let endpoint = self.d.endpoint.clone();
            let guard = InFlight::new(self.d.stats.clone());
            self.spawn_request(ids, async move {
                let outcome = endpoint.deliver(body).await;
                drop(guard);
                outcome
            });
        }
    }

    /// Starts one request for `ids`, remembering them by the task's id.
    fn spawn_request(
        &mut self,
        ids: Vec<i64>,
        request: impl Future<Output = Outcome> + Send + 'static,
    ) -> AbortHandle {
        let handle = self.in_flight.spawn(request);
        let generation = self.generation;
        self.requests
            .insert(handle.id(), Request { ids, generation });
        handle
    }

    /// Settles a request whose task ended. One that panicked (or was cancelled) counts as a
    /// failed attempt: its events are rescheduled and released, and backoff applies.
    async fn joined(&mut self, joined: Result<(tokio::task::Id, Outcome), JoinError>) {
        let (id, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "A WebHook request task failed; its events will be retried.");
                let error = if e.is_panic() {
                    "request task panicked"
                } else {
                    "request task cancelled"
                };
                let outcome = Outcome::Retry {
                    error: error.into(),
                    retry_after: None,
                };
                (e.id(), outcome)
            }
        };
        match self.requests.remove(&id) {
            Some(Request { ids, generation }) => {
                self.finished(Done {
                    ids,
                    generation,
                    outcome,
                })
                .await;
            }
            None => tracing::warn!("A WebHook request ended that was not tracked."),
        }
    }

    /// Reads the next due rows that are not already claimed.
    async fn refill(&mut self) {
        loop {
            let (cursor, db) = (self.cursor, self.d.db.clone());
            let read = blocking(move || {
                let conn = lock(&db);
                let now = outbox::now_ms();
                let rows = outbox::due(&conn, now, cursor, FETCH_ROWS)?;
                let next = if rows.len() < FETCH_ROWS {
                    outbox::next_due_after(&conn, now)?
                } else {
                    None
                };
                Ok((rows, next, now))
            })
            .await;
            let (rows, next, now_ms) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the WebHook outbox.");
                    self.exhausted = true;
                    return;
                }
            };
            let full = rows.len() == FETCH_ROWS;
            self.cursor = if full {
                rows.last().map_or(0, |r| r.id)
            } else {
                0
            };
            for r in rows {
                if self.claimed.insert(r.id) {
                    self.pending.push_back(r);
                }
            }
            if !full {
                self.exhausted = true;
                self.next_due = next.map(|at| {
                    Instant::now() + Duration::from_millis(at.saturating_sub(now_ms) as u64)
                });
                return;
            }
            if !self.pending.is_empty() {
                return;
            }
        }
    }

    async fn finished(&mut self, done: Done) {
        let n = done.ids.len() as u64;
        let stats = self.d.stats.clone();
        match done.outcome {
            Outcome::Delivered => {
                stats.delivered.fetch_add(n, Ordering::Relaxed);
                if self.failures > 0 {
                    tracing::info!(
                        failures = self.failures,
                        "WebHook endpoint answers again; delivering the outbox."
                    );
                    self.failures = 0;
                    stats.consecutive_failures.store(0, Ordering::Relaxed);
                }
                self.acks.extend(done.ids);
                self.ack_by
                    .get_or_insert_with(|| Instant::now() + ACK_FLUSH_INTERVAL);
            }
            Outcome::Retry { error, retry_after } => {
                stats.retried.fetch_add(n, Ordering::Relaxed);
                stats.set_last_error(&error);
                let now = Instant::now();
                if done.generation == self.generation {
                    self.generation += 1;
                    self.failures = self.failures.saturating_add(1);
                    stats
                        .consecutive_failures
                        .store(self.failures.into(), Ordering::Relaxed);
                    let pause = pause_after(
                        retry_after,
                        self.failures,
                        self.d.max_backoff,
                        random_unit(),
                    );
                    self.paused_until = Some(now + pause);
                    if self.failures == 1 {
                        tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "WebHook delivery failed; retrying with backoff.");
                    } else {
                        tracing::debug!(%error, failures = self.failures, pause_ms = pause.as_millis() as u64, "WebHook delivery failed again.");
                    }
                } else if let Some(asked) = retry_after {
                    let until = now + asked;
                    self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                }
                let wait = self.paused_until.map_or(Duration::ZERO, |p| p - now);
                let next_attempt = outbox::now_ms() + wait.as_millis() as i64;
                let (db, ids) = (self.d.db.clone(), done.ids.clone());
                let result = blocking(move || {
                    let mut conn = lock(&db);
                    outbox::reschedule(&mut conn, &ids, next_attempt, &error)
                })
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Cannot record a WebHook retry in the outbox.");
                }
                self.release(&done.ids);
                // Resume with the oldest rows after the pause.
                for r in self.pending.drain(..) {
                    self.claimed.remove(&r.id);
                }
                self.cursor = 0;
                self.exhausted = false;
            }
            Outcome::Reject(why) => {
                stats.set_last_error(&why.reason);
                let (db, ids, why2) = (self.d.db.clone(), done.ids.clone(), why.clone());
                let result = blocking(move || {
                    let mut conn = lock(&db);
                    outbox::dead_letter(&mut conn, &ids, &why2)
                })
                .await;
                match result {
                    Ok(moved) => {
                        let before = stats.dead_lettered.fetch_add(moved, Ordering::Relaxed);
                        let _ = stats.outbox_depth.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |d| Some(d.saturating_sub(moved)),
                        );
                        // Once, then every 1,000 events.
                        if before == 0 || before / 1000 != (before + moved) / 1000 {
                            tracing::warn!(status = ?why.status, total = before + moved, "WebHook endpoint refused events; they are in the dead letters (sentrypeer webhook dead-letters).");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot dead-letter WebHook events."),
                }
                self.release(&done.ids);
                self.prune_dead_letters().await;
            }
        }
    }

    /// Deletes delivered rows from the outbox.
    async fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acks);
        self.ack_by = None;
        let (db, ids2) = (self.d.db.clone(), ids.clone());
        let result = blocking(move || {
            let mut conn = lock(&db);
            outbox::delete(&mut conn, &ids2)
        })
        .await;
        match result {
            Ok(deleted) => {
                let _ = self.d.stats.outbox_depth.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |d| Some(d.saturating_sub(deleted)),
                );
                self.release(&ids);
            }
            Err(e) => {
                // Keep them claimed (not sent again) and try the deletion later.
                tracing::warn!(error = %e, "Cannot delete delivered WebHook events; will retry.");
                self.acks = ids;
                self.ack_by = Some(Instant::now() + ACK_FLUSH_INTERVAL);
            }
        }
    }

    /// Recounts the outbox and reads it again: rows may have come from another process.
    async fn recheck(&mut self) {
        self.recheck_at = Instant::now() + RECHECK_INTERVAL;
        self.exhausted = false;
        let db = self.d.db.clone();
        match blocking(move || {
            let conn = lock(&db);
            outbox::depth_and_retrying(&conn)
        })
        .await
        {
            Ok((depth, retrying)) => {
                self.d.stats.outbox_depth.store(depth, Ordering::Relaxed);
                self.d.stats.retrying.store(retrying, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "Cannot count the WebHook outbox."),
        }
        // The writer dead-letters what a full outbox pushes out: the cap is kept from here.
        self.prune_dead_letters().await;
    }

    /// Deletes the oldest dead letters beyond the cap, and counts them.
    async fn prune_dead_letters(&mut self) {
        let (db, cap) = (self.d.db.clone(), self.d.dead_letter_cap);
        let result = blocking(move || {
            let mut conn = lock(&db);
            outbox::prune_dead_letters(&mut conn, cap)
        })
        .await;
        match result {
            Ok(0) => {}
            Ok(pruned) => {
                let before = self
                    .d
                    .stats
                    .dead_letters_pruned
                    .fetch_add(pruned, Ordering::Relaxed);
                // Once, then every 10,000 events.
                if before == 0 || before / 10_000 != (before + pruned) / 10_000 {
                    tracing::warn!(
                        total = before + pruned,
                        cap,
                        "WebHook dead letters over their cap (--webhook-dead-letter-cap): deleted the oldest."
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "Cannot prune the WebHook dead letters."),
        }
    }

    fn release(&mut self, ids: &[i64]) {
        for id in ids {
            self.claimed.remove(id);
        }
    }
}

/// Waits for a wake-up; `None` when the writer is gone.
async fn recv(wake: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match wake {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The deliverer's connection. A panic while it was held leaves it usable: every change is
/// one transaction, rolled back if unfinished.
fn lock(db: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a database call off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn retry_after_is_a_floor_under_the_backoff() {
        let max = Duration::from_secs(60);
        let zero = pause_after(Some(Duration::ZERO), 1, max, 0.0);
        assert_eq!(zero, backoff(1, max, 0.0));
        assert!(zero >= Duration::from_millis(250));
        assert_eq!(
            pause_after(Some(Duration::from_secs(2)), 1, max, 0.5),
            Duration::from_secs(2)
        );
        // Many failures in, a short Retry-After does not undo the backoff.
        assert_eq!(
            pause_after(Some(Duration::from_secs(2)), 12, max, 0.99),
            backoff(12, max, 0.99)
        );
        assert_eq!(pause_after(None, 3, max, 0.3), backoff(3, max, 0.3));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_the_cap_with_jitter_in_the_upper_half() {
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, max, 0.0), Duration::from_millis(250));
        assert_eq!(
            backoff(1, max, 0.999_999),
            Duration::from_millis(500) - Duration::from_nanos(250)
        );
        assert_eq!(backoff(2, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(30, max, 0.0), Duration::from_secs(150));
        assert_eq!(backoff(u32::MAX, max, 0.5), Duration::from_secs(225));
        assert_eq!(
            backoff(9, Duration::from_secs(1), 0.0),
            Duration::from_millis(500)
        );
        for _ in 0..100 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_capped_at_an_hour() {
        // Wed, 21 Oct 2015 07:28:00 GMT
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let p = |v: &[u8]| parse_retry_after(v, now);
        assert_eq!(p(b"2"), Some(Duration::from_secs(2)));
        assert_eq!(p(b" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p(b"0"), Some(Duration::ZERO));
        assert_eq!(p(b"86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(p(b"99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            p(b"Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // The two obsolete date forms HTTP still allows.
        assert_eq!(
            p(b"Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p(b"Wed Oct 21 07:28:05 2015"), Some(Duration::from_secs(5)));
        assert_eq!(
            p(b"Wed, 21 Oct 2015 07:00:00 GMT"),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(p(b"Thu, 22 Oct 2015 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(p(b"-1"), None);
        assert_eq!(p(b""), None);
        assert_eq!(p(b"1.5"), None);
        assert_eq!(p(b"tomorrow"), None);
        assert_eq!(p(&[0xff, 0xfe]), None);
    }

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

    /// A deliverer on a fresh database holding `rows` outbox rows, with an endpoint nobody
    /// listens on (these tests start no real request).
    fn state_with_rows(dir: &tempfile::TempDir, rows: usize) -> (State, Arc<WebhookStats>) {
        let path = dir.path().join("webhook.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(outbox::SCHEMA).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..rows {
            outbox::insert(&tx, &format!("uuid-{i}"), "{}").unwrap();
        }
        tx.commit().unwrap();
        let config = WebhookConfig {
            url: "http://127.0.0.1:9/events".into(),
            oauth2: None,
            authorization: None,
            batch: 1,
            outbox_cap: 100,
            dead_letter_cap: 100,
            max_backoff: Duration::from_secs(60),
        };
        let stats = Arc::new(WebhookStats::new(100));
        let d = Deliverer::new(&config, &path, stats.clone()).unwrap();
        let (_wake, woken) = mpsc::channel(1);
        (State::new(d, woken), stats)
    }

    #[tokio::test]
    async fn a_request_task_that_panics_or_is_cancelled_has_its_rows_released_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, stats) = state_with_rows(&dir, 3);
        s.refill().await;
        let ids: Vec<i64> = s.pending.drain(..2).map(|r| r.id).collect();
        assert_eq!(s.claimed.len(), 3);
        s.spawn_request(vec![ids[0]], async { panic!("a bug in a request task") });
        let never = s.spawn_request(vec![ids[1]], std::future::pending());
        never.abort();
        assert_eq!(s.requests.len(), 2);
        while let Some(joined) = s.in_flight.join_next_with_id().await {
            assert!(joined.is_err());
            s.joined(joined).await;
        }
        assert!(s.requests.is_empty());
        // Released (the pending row too: reading resumes from the oldest after the pause).
        assert!(s.claimed.is_empty() && s.pending.is_empty());
        // One failure round (both started in it), with backoff.
        assert_eq!(s.failures, 1);
        assert!(s.paused_until.is_some());
        assert_eq!(stats.retried.load(Ordering::SeqCst), 2);
        let last = stats.last_error().unwrap();
        assert!(last.starts_with("request task "), "{last}");
        let conn = lock(&s.d.db);
        let mut stmt = conn
            .prepare("SELECT id, attempts, last_error FROM sentrypeer_webhook_outbox ORDER BY id")
            .unwrap();
        let rows: Vec<(i64, i64, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (ids[0], 1, Some("request task panicked".into())),
                (ids[1], 1, Some("request task cancelled".into())),
                (ids[1] + 1, 0, None),
            ]
        );
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
