//! The WebHook never loses an event: each is POSTed as upstream does (bearer token included),
//! waits in the outbox while the endpoint is down, slow or failing, survives a restart, and
//! what the endpoint refuses is dead-lettered, listed and replayed from the command line.
//!
//! Each test runs its own receiver and OAuth 2 token server (axum, on a runtime of the test's
//! own) on 127.0.0.1:0; "down" closes the receiver's port and "up" opens the same one again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::harness::*;

/// How long a test waits for deliveries (a debug build on a busy two-core machine).
const DELIVERY_WAIT: Duration = Duration::from_secs(120);
/// How long the receiver stays down in the outage tests; the spec's 30 s, shortened by default
/// (with `--webhook-max-backoff 1` the node retries every second or so either way).
fn downtime() -> Duration {
    let secs = std::env::var("WEBHOOK_TEST_DOWNTIME_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "s3cret-d0-not-log";
const AUDIENCE: &str = "https://sentrypeer.com/api";

/// What the receiver answers.
#[derive(Clone)]
struct Behaviour {
    status: u16,
    body: &'static str,
    delay: Duration,
    retry_after: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 200,
            body: "ok",
            delay: Duration::ZERO,
            retry_after: None,
        }
    }
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    /// Delivered (answered 2xx) events by `event_uuid`.
    per_uuid: HashMap<String, u32>,
    /// Every request's arrival.
    arrivals: Vec<Instant>,
    /// Requests answered 2xx, and of those the JSON arrays and the longest array.
    ok_requests: u64,
    arrays: u64,
    longest_array: usize,
    first_ok: Option<Instant>,
    last_ok: Option<Instant>,
    /// Requests refused for a missing, unknown or expired token.
    unauthorized: u64,
    /// Authorization values seen.
    authorizations: HashSet<String>,
    /// Requests whose Content-Type or body was wrong.
    malformed: u64,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    /// The first this many requests get `fail_status` instead.
    fail_next: AtomicU32,
    fail_status: Mutex<(u16, Option<u64>)>,
    received: Mutex<Received>,
    /// Check bearer tokens against the token server's.
    require_token: bool,
    /// The status a missing, unknown or expired token gets: 401, or 403 as some gateways answer.
    refused_token_status: AtomicU16,
    /// Tokens issued and until when they are valid.
    tokens: Mutex<HashMap<String, Instant>>,
    token_requests: AtomicU64,
    expires_in: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct InFlight(Arc<Shared>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(n, Ordering::SeqCst);
    let _guard = InFlight(s.clone());
    s.received.lock().unwrap().arrivals.push(Instant::now());
    let b = s.behaviour.lock().unwrap().clone();
    if !b.delay.is_zero() {
        tokio::time::sleep(b.delay).await; // the receiver under test is slow on purpose
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(a) = &auth {
        s.received.lock().unwrap().authorizations.insert(a.clone());
    }
    if s.require_token {
        let valid = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| s.tokens.lock().unwrap().get(t).copied())
            .is_some_and(|until| Instant::now() < until);
        if !valid {
            s.received.lock().unwrap().unauthorized += 1;
            let status = s.refused_token_status.load(Ordering::SeqCst);
            return (StatusCode::from_u16(status).unwrap(), "invalid token").into_response();
        }
    }
    let failing = s
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let (status, retry_after) = if failing {
        *s.fail_status.lock().unwrap()
    } else {
        (b.status, b.retry_after)
    };
    if status != 200 {
        let mut r = (StatusCode::from_u16(status).unwrap(), b.body).into_response();
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        }
        return r;
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let mut r = s.received.lock().unwrap();
    let (events, array) = match parsed {
        Some(serde_json::Value::Array(a)) => (a, true),
        Some(o @ serde_json::Value::Object(_)) => (vec![o], false),
        _ => (vec![], false),
    };
    let uuids: Vec<String> = events
        .iter()
        .filter_map(|e| e["event_uuid"].as_str().map(str::to_string))
        .collect();
    if !json_type || uuids.is_empty() || uuids.len() != events.len() {
        r.malformed += 1;
        return (StatusCode::BAD_REQUEST, "malformed").into_response();
    }
    for u in uuids {
        *r.per_uuid.entry(u).or_default() += 1;
    }
    r.ok_requests += 1;
    if array {
        r.arrays += 1;
        r.longest_array = r.longest_array.max(events.len());
    }
    let now = Instant::now();
    r.first_ok.get_or_insert(now);
    r.last_ok = Some(now);
    (StatusCode::OK, "ok").into_response()
}

/// Upstream's client-credentials request, checked field by field.
async fn token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ok = v["client_id"] == CLIENT_ID
        && v["client_secret"] == CLIENT_SECRET
        && v["audience"] == AUDIENCE
        && v["grant_type"] == "client_credentials";
    if !ok {
        return (StatusCode::UNAUTHORIZED, "access_denied").into_response();
    }
    let n = s.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = s.expires_in.load(Ordering::SeqCst);
    let token = format!("tok-{n}-{}", uuid::Uuid::new_v4().simple());
    s.tokens.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    axum::Json(serde_json::json!({
        "access_token": token, "expires_in": expires_in, "token_type": "Bearer"
    }))
    .into_response()
}

/// An HTTP server on a fixed loopback address that can go down and come back.
struct Server {
    rt: Arc<tokio::runtime::Runtime>,
    addr: SocketAddr,
    router: Router,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

fn listen(addr: SocketAddr) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(1024).unwrap();
    s.set_nonblocking(true).unwrap();
    s.into()
}

impl Server {
    fn start(rt: Arc<tokio::runtime::Runtime>, router: Router) -> Server {
        let l = listen("127.0.0.1:0".parse().unwrap());
        let addr = l.local_addr().unwrap();
        let mut s = Server {
            rt,
            addr,
            router,
            running: None,
        };
        s.serve(l);
        s
    }

    fn serve(&mut self, l: std::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = self.router.clone();
        let task = self.rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((tx, task));
    }

    /// Closes the port: connections are refused until `up`.
    fn down(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            self.rt.block_on(task).unwrap();
        }
    }

    fn up(&mut self) {
        if self.running.is_none() {
            let l = listen(self.addr);
            self.serve(l);
        }
    }
}

/// A receiver and a token server.
struct Rig {
    shared: Arc<Shared>,
    receiver: Server,
    tokens: Server,
}

impl Rig {
    fn new(require_token: bool) -> Rig {
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        );
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::default()),
            fail_next: AtomicU32::new(0),
            fail_status: Mutex::new((500, None)),
            received: Mutex::new(Received::default()),
            require_token,
            refused_token_status: AtomicU16::new(401),
            tokens: Mutex::new(HashMap::new()),
            token_requests: AtomicU64::new(0),
            expires_in: AtomicU64::new(3600),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let receiver = Server::start(
            rt.clone(),
            Router::new()
                .route("/events", post(receive))
                .with_state(shared.clone()),
        );
        let tokens = Server::start(
            rt,
            Router::new()
                .route("/oauth/token", post(token))
                .with_state(shared.clone()),
        );
        Rig {
            shared,
            receiver,
            tokens,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.receiver.addr)
    }

    /// `-w` plus the OAuth 2 flags for this rig's token server.
    fn oauth_args(&self) -> Vec<String> {
        [
            "-w",
            &self.url(),
            "-i",
            CLIENT_ID,
            "-c",
            CLIENT_SECRET,
            "--oauth2-token-url",
            &format!("http://{}/oauth/token", self.tokens.addr),
            "--oauth2-audience",
            AUDIENCE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn behave(&self, b: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = b;
    }

    fn received<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.shared.received.lock().unwrap())
    }

    fn distinct(&self) -> usize {
        self.received(|r| r.per_uuid.len())
    }

    fn total(&self) -> u64 {
        self.received(|r| r.per_uuid.values().map(|&n| u64::from(n)).sum())
    }

    /// Waits until `n` distinct events have arrived.
    fn wait_delivered(&self, n: usize, node: &Node) {
        let ok = poll(DELIVERY_WAIT, || self.distinct() >= n);
        assert!(
            ok,
            "{} of {n} events delivered; health: {}\n{}",
            self.distinct(),
            node.health()["webhook"],
            node.log_text()
        );
    }
}

fn start(args: &[String]) -> Node {
    Node::start_with(NodeOptions {
        args: args.to_vec(),
        ..Default::default()
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Sends `n` OPTIONS probes over UDP in bursts the kernel's buffer holds, waiting after each
/// burst until the node has accepted it: none is lost before the node sees it.
fn send_paced(node: &Node, n: u64) {
    const BURST: u64 = 100;
    let base = node.counter("events_accepted");
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    while sent < n {
        let burst = BURST.min(n - sent);
        for i in sent..sent + burst {
            s.send_to(
                &options(&format!("{}", 1000 + i % 700), "webhook-test", i),
                node.udp[0],
            )
            .unwrap();
        }
        sent += burst;
        let mut accepted = 0;
        let ok = poll(DEFAULT_WAIT, || {
            accepted = node.counter("events_accepted") - base;
            accepted >= sent
        });
        assert!(ok, "the node accepted {accepted} of {sent} probes");
    }
    assert_eq!(node.counter("events_accepted") - base, n);
}

fn outbox_rows(node: &Node) -> i64 {
    node.count("SELECT count(*) FROM sentrypeer_webhook_outbox")
}

fn dead_letter_rows(node: &Node) -> i64 {
    node.count("SELECT count(*) FROM sentrypeer_webhook_dead_letter")
}

fn webhook_stat(node: &Node, name: &str) -> u64 {
    node.health()["webhook"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no webhook.{name} in /health-check"))
}

/// Runs `sentrypeer ARGS` (a one-shot command) and returns (exit code, stdout, stderr).
fn sentrypeer(node: &Node, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .current_dir(node.dir.path())
        .env("XDG_CONFIG_HOME", node.dir.path())
        .env_remove("SENTRYPEER_DB_FILE")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ten_thousand_events_are_each_delivered_exactly_once_with_the_bearer_token() {
    let rig = Rig::new(true);
    let node = start(&rig.oauth_args());
    let started = Instant::now();
    send_paced(&node, 10_000);
    rig.wait_delivered(10_000, &node);
    let elapsed = started.elapsed();
    assert_eq!(rig.distinct(), 10_000);
    assert_eq!(rig.total(), 10_000, "an event was delivered twice");
    rig.received(|r| {
        assert_eq!(r.unauthorized, 0, "every request carried a valid token");
        assert_eq!(r.malformed, 0);
        assert_eq!(r.arrays, 0, "one event per request, as upstream");
        assert_eq!(r.ok_requests, 10_000);
        assert_eq!(r.authorizations.len(), 1);
    });
    assert_eq!(rig.shared.token_requests.load(Ordering::SeqCst), 1);
    assert!(poll(DEFAULT_WAIT, || outbox_rows(&node) == 0));
    assert_eq!(dead_letter_rows(&node), 0);
    let w = node.health()["webhook"].clone();
    assert_eq!(w["delivered"], 10_000, "{w}");
    assert_eq!(w["outbox_depth"], 0, "{w}");
    assert_eq!(w["token_fetches"], 1, "{w}");
    eprintln!(
        "10,000 events captured and delivered in {:.1} s ({:.0} events/s end to end, debug build)",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("sentrypeer_webhook_delivered_total 10000"),
        "{metrics}"
    );
    assert!(metrics.contains("sentrypeer_webhook_outbox_depth 0"));
}

#[test]
fn events_queued_while_the_receiver_is_down_arrive_when_it_comes_back() {
    let mut rig = Rig::new(false);
    rig.receiver.down();
    let mut a = args(&["--webhook-max-backoff", "1", "-w"]);
    a.push(rig.url());
    let node = start(&a);
    let down_since = Instant::now();
    send_paced(&node, 200);
    node.wait_rows(200);
    assert_eq!(outbox_rows(&node), 200);
    let outage = downtime();
    assert!(poll(outage + DEFAULT_WAIT, || down_since.elapsed()
        >= outage
        && webhook_stat(&node, "consecutive_failures") >= 3));
    assert!(poll(DEFAULT_WAIT, || webhook_stat(&node, "retrying") >= 1));
    let w = node.health()["webhook"].clone();
    assert_eq!(w["delivered"], 0, "{w}");
    assert!(
        w["last_error"]
            .as_str()
            .unwrap()
            .contains("error sending request"),
        "{w}"
    );
    rig.receiver.up();
    rig.wait_delivered(200, &node);
    assert_eq!(rig.total(), 200);
    assert!(poll(DEFAULT_WAIT, || outbox_rows(&node) == 0));
    assert_eq!(dead_letter_rows(&node), 0);
    assert_eq!(webhook_stat(&node, "consecutive_failures"), 0);
    assert!(poll(DEFAULT_WAIT, || webhook_stat(&node, "retrying") == 0));
    assert!(
        node.log_text().contains("WebHook endpoint answers again"),
        "{}",
        node.log_text()
    );
}

#[test]
fn events_queued_while_the_receiver_is_down_survive_a_restart() {
    let mut rig = Rig::new(false);
    rig.receiver.down();
    let mut a = args(&["--webhook-max-backoff", "1", "-w"]);
    a.push(rig.url());
    let mut node = start(&a);
    send_paced(&node, 100);
    node.wait_rows(100);
    assert!(poll(DEFAULT_WAIT, || webhook_stat(&node, "retried") >= 1));
    assert!(node.signal("TERM").success(), "{}", node.log_text());
    assert_eq!(outbox_rows(&node), 100, "the outbox survives the shutdown");
    assert!(
        node.log_text()
            .contains("undelivered events stay in the outbox"),
        "{}",
        node.log_text()
    );
    let again = Node::start_with(NodeOptions {
        args: a.clone(),
        dir: Some(std::mem::replace(
            &mut node.dir,
            tempfile::tempdir().unwrap(),
        )),
        ..Default::default()
    });
    assert_eq!(webhook_stat(&again, "outbox_depth"), 100);
    rig.receiver.up();
    rig.wait_delivered(100, &again);
    assert_eq!(rig.total(), 100);
    let stored: HashSet<String> = {
        let db = again.db();
        let mut stmt = db.prepare("SELECT event_uuid FROM honey").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let delivered: HashSet<String> = rig.received(|r| r.per_uuid.keys().cloned().collect());
    assert_eq!(
        delivered, stored,
        "exactly the stored events were delivered"
    );
    assert!(poll(DEFAULT_WAIT, || outbox_rows(&again) == 0));
}

#[test]
fn a_slow_receiver_slows_neither_capture_nor_the_database() {
    let rig = Rig::new(false);
    rig.behave(Behaviour {
        delay: Duration::from_secs(2),
        ..Default::default()
    });
    let mut a = args(&["-w"]);
    a.push(rig.url());
    let node = start(&a);
    let t0 = Instant::now();
    send_paced(&node, 300);
    node.wait_rows(300);
    let captured = t0.elapsed();
    assert!(
        captured < Duration::from_secs(10),
        "300 probes took {captured:?} to reach the database"
    );
    assert!(
        rig.distinct() < 300,
        "the receiver is slow, so most events still wait"
    );
    assert_eq!(node.health()["outputs"]["sqlite"]["dropped"], 0);
    // Requests overlap, up to the bound and no further.
    assert!(poll(DEFAULT_WAIT, || rig
        .shared
        .max_in_flight
        .load(Ordering::SeqCst)
        >= 8));
    rig.wait_delivered(40, &node);
    assert_eq!(rig.shared.max_in_flight.load(Ordering::SeqCst), 8);
    assert!(webhook_stat(&node, "outbox_depth") > 0);
}

#[test]
fn an_expiring_token_is_fetched_again() {
    let rig = Rig::new(true);
    rig.shared.expires_in.store(1, Ordering::SeqCst);
    let node = start(&rig.oauth_args());
    for round in 1..=3u64 {
        let issued = rig.shared.token_requests.load(Ordering::SeqCst);
        send_paced(&node, 20);
        rig.wait_delivered(20 * round as usize, &node);
        // Let the token the node holds expire before the next round.
        assert!(poll(DEFAULT_WAIT, || {
            let tokens = rig.shared.tokens.lock().unwrap();
            tokens.values().all(|until| Instant::now() >= *until)
        }));
        assert!(rig.shared.token_requests.load(Ordering::SeqCst) > issued);
    }
    assert_eq!(rig.total(), 60);
    assert!(rig.shared.token_requests.load(Ordering::SeqCst) >= 3);
    assert_eq!(dead_letter_rows(&node), 0);
}

#[test]
fn a_revoked_token_gets_one_refresh_and_the_events_are_retried() {
    let rig = Rig::new(true);
    let mut a = rig.oauth_args();
    a.push("-d".into());
    let node = start(&a);
    send_paced(&node, 10);
    rig.wait_delivered(10, &node);
    rig.shared.tokens.lock().unwrap().clear();
    send_paced(&node, 10);
    rig.wait_delivered(20, &node);
    assert_eq!(rig.total(), 20);
    assert!(rig.received(|r| r.unauthorized) >= 1);
    assert_eq!(
        rig.shared.token_requests.load(Ordering::SeqCst),
        2,
        "one new token for the whole refusal"
    );
    assert_eq!(dead_letter_rows(&node), 0);
    let log = node.log_text();
    assert!(!log.contains(CLIENT_SECRET), "the secret reached the log");
    assert!(!log.contains("tok-"), "a token reached the log");
}

#[test]
fn a_token_refused_with_403_gets_one_refresh_and_the_events_are_delivered() {
    let rig = Rig::new(true);
    rig.shared.refused_token_status.store(403, Ordering::SeqCst);
    let mut a = rig.oauth_args();
    a.extend(args(&["--webhook-max-backoff", "1"]));
    let node = start(&a);
    send_paced(&node, 10);
    rig.wait_delivered(10, &node);
    assert_eq!(rig.shared.token_requests.load(Ordering::SeqCst), 1);
    // The endpoint forgets the token: from now on it answers 403 to it.
    rig.shared.tokens.lock().unwrap().clear();
    send_paced(&node, 10);
    rig.wait_delivered(20, &node);
    assert_eq!(rig.total(), 20);
    assert!(
        rig.received(|r| r.unauthorized) >= 1,
        "no request met a 403"
    );
    assert_eq!(
        rig.shared.token_requests.load(Ordering::SeqCst),
        2,
        "one new token for the whole refusal"
    );
    assert_eq!(webhook_stat(&node, "token_fetches"), 2);
    assert_eq!(dead_letter_rows(&node), 0);
}

#[test]
fn a_400_is_dead_lettered_listed_and_replayed_from_the_command_line() {
    let rig = Rig::new(false);
    rig.behave(Behaviour {
        status: 400,
        body: r#"{"error":"bad event shape"}"#,
        ..Default::default()
    });
    let mut a = args(&["-w"]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 3);
    assert!(poll(DEFAULT_WAIT, || dead_letter_rows(&node) == 3));
    assert_eq!(outbox_rows(&node), 0);
    let (status, attempts, reason, excerpt): (i64, i64, String, String) = node
        .db()
        .query_row(
            "SELECT status, attempts, reason, response_excerpt FROM sentrypeer_webhook_dead_letter LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (status, attempts, reason.as_str(), excerpt.as_str()),
        (400, 1, "HTTP 400", r#"{"error":"bad event shape"}"#)
    );
    assert!(poll(DEFAULT_WAIT, || webhook_stat(&node, "dead_lettered") == 3));
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(metrics.contains("sentrypeer_webhook_dead_lettered_total{reason=\"refused\"} 3"));

    let db = node.db_path();
    let db = db.to_str().unwrap();
    let (code, out, err) = sentrypeer(&node, &["-f", db, "webhook", "dead-letters"]);
    assert_eq!(code, 0, "{err}");
    let uuids: Vec<String> = {
        let c = node.db();
        let mut stmt = c
            .prepare("SELECT event_uuid FROM honey ORDER BY honey_id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for u in &uuids {
        assert!(out.contains(u.as_str()), "{u} missing from:\n{out}");
    }
    assert!(
        out.contains("HTTP 400") && out.contains("bad event shape"),
        "{out}"
    );
    // `-f` also goes after the subcommand.
    let (code, out, _) = sentrypeer(&node, &["webhook", "dead-letters", "--json", "-f", db]);
    assert_eq!(code, 0);
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["status"], 400);
    let first_id = listed[0]["id"].as_i64().unwrap().to_string();

    rig.behave(Behaviour::default());
    let (code, out, err) = sentrypeer(&node, &["-f", db, "webhook", "replay", &first_id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Moved 1 dead letters"), "{out}");
    rig.wait_delivered(1, &node);
    let (code, out, _) = sentrypeer(&node, &["-f", db, "webhook", "replay", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("Moved 2 dead letters"), "{out}");
    rig.wait_delivered(3, &node);
    assert_eq!(rig.total(), 3);
    let delivered: HashSet<String> = rig.received(|r| r.per_uuid.keys().cloned().collect());
    assert_eq!(delivered, uuids.into_iter().collect());
    let (code, _, err) = sentrypeer(&node, &["-f", db, "webhook", "replay", &first_id]);
    assert_eq!(code, 1);
    assert!(err.contains("not dead letters"), "{err}");
    assert!(poll(DEFAULT_WAIT, || outbox_rows(&node) == 0));
    let (code, out, _) = sentrypeer(&node, &["-f", db, "webhook", "status"]);
    assert_eq!((code, out.as_str()), (0, "outbox: 0\ndead letters: 0\n"));
    let (code, _, err) = sentrypeer(&node, &["-f", db, "webhook", "replay"]);
    assert_eq!(code, 2, "replay needs --all or ids: {err}");
}

#[test]
fn a_receiver_failing_forever_fills_the_outbox_to_its_cap_and_the_overflow_is_counted() {
    let rig = Rig::new(false);
    rig.behave(Behaviour {
        status: 500,
        body: "broken",
        ..Default::default()
    });
    let mut a = args(&[
        "--webhook-outbox-cap",
        "50",
        "--webhook-max-backoff",
        "1",
        "-w",
    ]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 80);
    node.wait_rows(80);
    assert!(poll(DEFAULT_WAIT, || dead_letter_rows(&node) == 30));
    assert_eq!(outbox_rows(&node), 50);
    let full = node.count(
        "SELECT count(*) FROM sentrypeer_webhook_dead_letter WHERE reason = 'outbox full' AND status IS NULL",
    );
    assert_eq!(full, 30);
    let oldest_match = node.count(
        "SELECT count(*) FROM sentrypeer_webhook_dead_letter d JOIN
           (SELECT event_uuid FROM honey ORDER BY honey_id LIMIT 30) h USING (event_uuid)",
    );
    assert_eq!(oldest_match, 30, "the oldest events were pushed out");
    let w = node.health()["webhook"].clone();
    assert_eq!(w["dead_lettered_outbox_full"], 30, "{w}");
    assert_eq!(w["outbox_depth"], 50, "{w}");
    assert_eq!(w["outbox_cap"], 50, "{w}");
    assert_eq!(w["delivered"], 0, "{w}");
    assert!(poll(DEFAULT_WAIT, || webhook_stat(&node, "retried") >= 1));
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("sentrypeer_webhook_dead_lettered_total{reason=\"outbox_full\"} 30"),
        "{metrics}"
    );
    assert!(
        node.log_text().contains("WebHook outbox full"),
        "{}",
        node.log_text()
    );
}

#[test]
fn dead_letters_beyond_their_cap_are_deleted_oldest_first_and_counted() {
    let rig = Rig::new(false);
    rig.behave(Behaviour {
        status: 500,
        body: "broken",
        ..Default::default()
    });
    let mut a = args(&[
        "--webhook-outbox-cap",
        "20",
        "--webhook-dead-letter-cap",
        "10",
        "--webhook-max-backoff",
        "1",
        "-w",
    ]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 60);
    node.wait_rows(60);
    // 40 pushed out of the outbox; the deliverer keeps the newest 10 of them.
    assert!(
        poll(DEFAULT_WAIT, || webhook_stat(&node, "dead_letters_pruned")
            == 30),
        "{}",
        node.health()["webhook"]
    );
    assert_eq!(dead_letter_rows(&node), 10);
    assert_eq!(outbox_rows(&node), 20);
    let newest_kept = node.count(
        "SELECT count(*) FROM sentrypeer_webhook_dead_letter d JOIN
           (SELECT event_uuid FROM honey ORDER BY honey_id LIMIT 10 OFFSET 30) h USING (event_uuid)",
    );
    assert_eq!(newest_kept, 10, "the oldest dead letters went first");
    let w = node.health()["webhook"].clone();
    assert_eq!(w["dead_lettered_outbox_full"], 40, "{w}");
    assert_eq!(w["dead_letters_pruned"], 30, "{w}");
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("sentrypeer_webhook_dead_letters_pruned_total 30"),
        "{metrics}"
    );
    assert!(
        node.log_text()
            .contains("WebHook dead letters over their cap"),
        "{}",
        node.log_text()
    );
    let db = node.db_path();
    let (code, out, _) = sentrypeer(&node, &["-f", db.to_str().unwrap(), "webhook", "status"]);
    assert_eq!((code, out.as_str()), (0, "outbox: 20\ndead letters: 10\n"));
}

#[test]
fn a_429_retry_after_is_honoured() {
    let rig = Rig::new(false);
    rig.shared.fail_next.store(1, Ordering::SeqCst);
    *rig.shared.fail_status.lock().unwrap() = (429, Some(2));
    let mut a = args(&["--webhook-max-backoff", "1", "-w"]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 1);
    rig.wait_delivered(1, &node);
    let arrivals = rig.received(|r| r.arrivals.clone());
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, not the 2 s the endpoint asked for"
    );
}

#[test]
fn batch_mode_posts_json_arrays_without_authorization_when_none_is_configured() {
    let rig = Rig::new(false);
    let mut a = args(&["--webhook-batch", "25", "-w"]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 300);
    rig.wait_delivered(300, &node);
    assert_eq!(rig.total(), 300);
    rig.received(|r| {
        assert_eq!(r.arrays, r.ok_requests, "every request is an array");
        assert!(r.ok_requests < 300, "{} requests", r.ok_requests);
        assert!((2..=25).contains(&r.longest_array), "{}", r.longest_array);
        assert!(r.authorizations.is_empty());
    });
}

#[test]
fn a_static_authorization_value_is_sent_as_is() {
    let rig = Rig::new(false);
    let node = Node::start_with(NodeOptions {
        args: vec!["-w".into(), rig.url()],
        envs: vec![(
            "SENTRYPEER_WEBHOOK_AUTHORIZATION",
            "Token static-abc".into(),
        )],
        ..Default::default()
    });
    send_paced(&node, 5);
    rig.wait_delivered(5, &node);
    rig.received(|r| {
        assert_eq!(
            r.authorizations,
            HashSet::from(["Token static-abc".to_string()])
        )
    });
}

/// The delivery rate against a fast local receiver, without capture in the way: 10,000 events
/// wait in the outbox while the receiver is down, then it comes up and the time from its first
/// to its last delivery is measured. Run it with
/// `cargo test --test integration webhook::delivery_rate -- --ignored --nocapture`
/// (`WEBHOOK_TEST_BATCH=100` measures batch mode).
#[test]
#[ignore = "a measurement, not a check: run it explicitly"]
fn delivery_rate_against_a_fast_local_receiver() {
    let mut rig = Rig::new(false);
    rig.receiver.down();
    let batch = std::env::var("WEBHOOK_TEST_BATCH").unwrap_or_else(|_| "1".into());
    let mut a = args(&[
        "--webhook-max-backoff",
        "1",
        "--webhook-batch",
        &batch,
        "-w",
    ]);
    a.push(rig.url());
    let node = start(&a);
    send_paced(&node, 10_000);
    node.wait_rows(10_000);
    rig.receiver.up();
    rig.wait_delivered(10_000, &node);
    assert_eq!(rig.total(), 10_000);
    let (first, last) = rig.received(|r| (r.first_ok.unwrap(), r.last_ok.unwrap()));
    let secs = (last - first).as_secs_f64();
    eprintln!(
        "WebHook delivery: 10,000 events in {secs:.2} s = {:.0} events/s ({batch} per request, {} requests, at most {} in flight)",
        10_000.0 / secs,
        rig.received(|r| r.ok_requests),
        rig.shared.max_in_flight.load(Ordering::SeqCst)
    );
}
