//! The dashboard in a real browser: headless Chromium, driven over the DevTools protocol,
//! loads `/ui/` from the real binary. No console errors, the live feed shows a probe within
//! 2 s, every tab renders data, an attacker's markup stays text, the keyboard moves between
//! tabs, and it fits 320 px. Screenshots go to `test-artifacts/dashboard/` in the target
//! directory.
//! Also measured here: ingest with 100 live-feed clients against none.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::harness::*;

const XSS: &str = "<img src=x onerror=alert(1)>";

/// Headless Chromium and one page, attached in flat mode over the browser's socket.
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Console errors, exceptions and dialogs seen so far.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium's DevTools address");
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools handshake");
        // From now on a read returns within a fifth of a second, so waits can poll.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 1,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    /// Sends a command (to the page once attached) and waits for its result, noting events.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            if let Some(v) = self.read() {
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                    return v["result"].clone();
                }
            }
        }
    }

    /// One message, if one comes within the read timeout; events are noted.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                self.note(&v);
                Some(v)
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools socket: {e}"),
        }
    }

    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!("exception: {p}")),
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {p}"))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]))
            }
            Some("Page.javascriptDialogOpening") => self.errors.push(format!("dialog: {p}")),
            _ => {}
        }
    }

    /// Evaluates an expression in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls an expression until it is true.
    fn wait_for(&mut self, expr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.eval(expr) == Value::Bool(true) {
                return true;
            }
            // Let events in while waiting.
            let _ = self.read();
        }
        false
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "{url} did not load");
            if let Some(v) = self.read() {
                if v["method"] == "Page.loadEventFired" {
                    return;
                }
            }
        }
    }

    fn key(&mut self, key: &str, code: u32) {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            );
        }
    }

    fn screenshot(&mut self, name: &str) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "{name}");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("test-artifacts/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn the_dashboard_loads_in_chromium_shows_live_probes_and_keeps_hostile_strings_as_text() {
    if !available(have("chromium"), "chromium") {
        return;
    }
    let node = Node::start(&[]);
    node.send_udp(&options("100", "friendly-scanner", 1));
    node.send_udp(&options("+441234567890", XSS, 2));
    node.wait_rows(2);
    let mut b = Browser::start();
    let base = format!("http://{}", node.api[0]);
    let started = Instant::now();
    b.navigate(&format!("{base}/ui/"));
    let loaded = started.elapsed();
    assert!(
        b.wait_for(
            "document.getElementById('live-state').textContent === '(connected)'",
            Duration::from_secs(10)
        ),
        "the live feed did not connect"
    );
    // First contentful paint, from navigation start: printed (the under-1-second figure on
    // loopback is a measurement, taken on a quiet machine; a test run shares its cores with
    // the rest of the suite), and required to have happened.
    let paint = b
        .eval(
            "(performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint') || {}).startTime || -1",
        )
        .as_f64()
        .unwrap();
    assert!(paint > 0.0, "no first paint");
    eprintln!("dashboard: load event after {loaded:?}, first contentful paint {paint:.0} ms");

    // A probe sent now shows in the live feed within 2 s.
    let sent = Instant::now();
    node.send_udp(&options("200", "live-probe-7", 3));
    assert!(b.wait_for(
        "document.querySelector('#live tbody').textContent.includes('live-probe-7')",
        Duration::from_secs(2)
    ));
    eprintln!("dashboard: live probe shown after {:?}", sent.elapsed());
    node.send_udp(&options("300", XSS, 4));
    assert!(b.wait_for(
        &format!(
            "document.querySelector('#live tbody').textContent.includes({})",
            json!(XSS)
        ),
        Duration::from_secs(2)
    ));
    b.screenshot("live");

    // Each tab renders rows for the window.
    for (tab, expect) in [
        ("source-ips", "127.0.0.1"),
        ("user-agents", "friendly-scanner"),
        ("sip-methods", "OPTIONS"),
        ("countries", "unknown"),
        ("called-numbers", "100"),
    ] {
        b.eval(&format!(
            "document.getElementById('tab-{tab}').click(), true"
        ));
        assert!(
            b.wait_for(
                &format!(
                    "document.getElementById('panel').dataset.loaded === '{tab}' && \
                     document.querySelectorAll('#panel tbody tr').length > 0 && \
                     document.getElementById('panel').textContent.includes({})",
                    json!(expect)
                ),
                Duration::from_secs(5)
            ),
            "tab {tab}"
        );
        b.screenshot(&format!("tab-{tab}"));
    }
    // Without a database the countries tab says how to add one.
    b.eval("document.getElementById('tab-countries').click(), true");
    assert!(b.wait_for(
        "document.getElementById('panel').textContent.includes('--geoip-db')",
        Duration::from_secs(5)
    ));
    // The attacker's user agent is text in the tab too.
    b.eval("document.getElementById('tab-user-agents').click(), true");
    assert!(b.wait_for(
        &format!(
            "document.getElementById('panel').dataset.loaded === 'user-agents' && \
             document.getElementById('panel').textContent.includes({})",
            json!(XSS)
        ),
        Duration::from_secs(5)
    ));
    assert_eq!(b.eval("document.querySelectorAll('main img').length"), 0);
    assert_eq!(b.eval("document.querySelectorAll('img[src=x]').length"), 0);

    // The keyboard moves between tabs.
    b.eval("document.getElementById('tab-user-agents').focus(), true");
    b.key("ArrowRight", 39);
    assert!(b.wait_for(
        "document.activeElement.id === 'tab-sip-methods' && \
         document.getElementById('tab-sip-methods').getAttribute('aria-selected') === 'true'",
        Duration::from_secs(5)
    ));

    // Search: an address's history and standing.
    b.eval("document.getElementById('q').value = '127.0.0.1', document.getElementById('search').requestSubmit(), true");
    assert!(b.wait_for(
        "document.getElementById('found').textContent.includes('listed until')",
        Duration::from_secs(5)
    ));
    b.screenshot("search");

    // 320 px wide: nothing wider than the screen.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 320, "height": 900, "deviceScaleFactor": 1, "mobile": true}),
    );
    assert!(b.wait_for(
        "document.documentElement.scrollWidth <= 320",
        Duration::from_secs(5)
    ));
    b.screenshot("narrow-320");

    // Let late events arrive, then: no console errors, exceptions or dialogs.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let _ = b.read();
    }
    assert!(b.errors.is_empty(), "{:#?}", b.errors);
}

/// Sends probes from one socket for `secs`, paced at `per_second` (`None`: as fast as it can),
/// and returns how many were sent and the rate the node accepted.
fn ingest(node: &Node, per_second: Option<f64>, secs: f64) -> (u64, f64) {
    let before = node.counter("events_accepted");
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = options("100", "rate", 1);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let due = per_second.map_or(sent + 64, |r| (start.elapsed().as_secs_f64() * r) as u64);
        while sent < due {
            if s.send_to(&msg, node.udp[0]).is_ok() {
                sent += 1;
            }
        }
        if per_second.is_some() {
            #[allow(clippy::disallowed_methods)] // the test's own pacing thread, no runtime
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // What was sent has arrived (or was lost) a moment later.
    poll(Duration::from_secs(5), || {
        node.counter("events_accepted") - before >= sent
    });
    let accepted = node.counter("events_accepted") - before;
    (sent, accepted as f64 / secs)
}

#[test]
fn a_hundred_live_feed_clients_do_not_lower_the_ingest_rate() {
    const OFFERED: f64 = 4_000.0;
    let node = Node::start(&[]);
    // Warm up (page cache, the database's first pages), then measure without watchers: the
    // most the node takes from one sender, and a steady load it keeps up with.
    ingest(&node, None, 1.0);
    let (_, idle_max) = ingest(&node, None, 3.0);
    let (sent_idle, idle) = ingest(&node, Some(OFFERED), 3.0);
    // 100 clients from four loopback addresses (an address may hold 32 streams).
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..100 {
        let mut live = crate::dashboard::open_live(&node, &format!("127.0.0.{}", 1 + i % 4));
        let received = received.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n) = live.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let got = buf.get(..n).unwrap_or(&[]);
                let events = got.windows(12).filter(|w| w == b"event: probe").count();
                received.fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let (sent_watched, watched) = ingest(&node, Some(OFFERED), 3.0);
    let (_, watched_max) = ingest(&node, None, 3.0);
    let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "ingest at {OFFERED}/s offered: {idle:.0}/s accepted with no live clients \
         ({sent_idle} sent), {watched:.0}/s with 100 ({sent_watched} sent); \
         flat out: {idle_max:.0}/s without, {watched_max:.0}/s with (ratio {:.2}); \
         {delivered} events delivered to the clients",
        watched_max / idle_max
    );
    assert!(delivered > 0, "the clients received nothing");
    assert!(
        watched >= idle * 0.95,
        "ingest fell from {idle:.0}/s to {watched:.0}/s with 100 live clients"
    );
    drop(node);
    for r in readers {
        let _ = r.join();
    }
}
