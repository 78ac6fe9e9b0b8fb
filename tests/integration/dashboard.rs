//! The analytics API, the dashboard's files and the live feed, over HTTP to the real binary.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

fn probe(node: &Node, number: &str, agent: &str, n: u64) {
    node.send_udp(&options(number, agent, n));
}

#[test]
fn analytics_count_user_agents_methods_countries_and_networks_per_window() {
    let node = Node::start(&[]);
    for n in 0..3 {
        probe(&node, "100", "friendly-scanner", n);
    }
    probe(&node, "+441234567890", "sipvicious", 3);
    node.wait_rows(4);

    let v = node.get("/user-agents?window=1h").json();
    assert_eq!(v["window"], "1h");
    assert_eq!(v["user_agents_total"], 2);
    assert_eq!(v["probes_total"], 4);
    let first = &v["user_agents"][0];
    assert_eq!(first["user_agent"], "friendly-scanner");
    assert_eq!(first["seen_count"], 3);
    assert!(first["seen_first"].as_str().unwrap() <= first["seen_last"].as_str().unwrap());
    assert_eq!(v["user_agents"][1]["user_agent"], "sipvicious");
    let series = v["series"]["counts"].as_array().unwrap();
    assert_eq!(series.len(), 60);
    assert_eq!(v["series"]["step_seconds"], 60);
    assert_eq!(series.iter().map(|c| c.as_i64().unwrap()).sum::<i64>(), 4);

    // The default window is 24 h, in minutes; 7 d and 30 d are in hours.
    assert_eq!(node.get("/user-agents").json()["window"], "24h");
    let month = node.get("/probes?window=30d").json();
    assert_eq!(month["series"]["counts"].as_array().unwrap().len(), 720);
    assert_eq!(month["series"]["step_seconds"], 3600);
    assert_eq!(month["probes_total"], 4);

    let one = node.get("/user-agents/friendly-scanner?window=7d");
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["seen_count"], 3);
    assert_eq!(one.json()["user_agent"], "friendly-scanner");
    let missing = node.get("/user-agents/nobody");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "No user agent found");

    let m = node.get("/sip-methods").json();
    assert_eq!(m["sip_methods_total"], 1);
    assert_eq!(m["sip_methods"][0]["sip_method"], "OPTIONS");
    assert_eq!(m["sip_methods"][0]["seen_count"], 4);
    assert_eq!(node.get("/sip-methods/OPTIONS").json()["seen_count"], 4);
    assert_eq!(node.get("/sip-methods/INVITE").status, 404);

    // No GeoIP database: every source is unknown, and the answer says so.
    let c = node.get("/countries").json();
    assert_eq!(c["geoip"], false);
    assert_eq!(c["countries"][0]["country"], "unknown");
    assert_eq!(c["countries"][0]["seen_count"], 4);
    assert_eq!(node.get("/countries/unknown").json()["seen_count"], 4);

    let n = node.get("/networks?window=1h").json();
    assert_eq!(n["networks"][0]["network"], "127.0.0.0/24");
    assert_eq!(n["networks"][0]["seen_count"], 4);
    assert_eq!(n["geoip_asn"], false);
    assert_eq!(n["autonomous_systems_total"], 0);

    let ips = node.get("/source-ips").json();
    assert_eq!(ips["ip_addresses"][0]["ip_address"], "127.0.0.1");
    let numbers = node.get("/called-numbers").json();
    assert_eq!(numbers["numbers"][0]["called_number"], "100");
    assert_eq!(numbers["numbers"][0]["seen_count"], 3);

    for bad in [
        "/user-agents?window=2h",
        "/probes?window=",
        "/countries?limit=x",
    ] {
        let r = node.get(bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].is_string());
    }

    // An address's history and standing.
    let l = node.get("/lookup/127.0.0.1");
    assert_eq!(l.status, 200);
    let l = l.json();
    assert_eq!(l["kind"], "ip_address");
    assert_eq!(l["seen_count"], 4);
    assert_eq!(l["listed"], true);
    assert!(l["listed_until"].is_string());
    assert_eq!(l["events"].as_array().unwrap().len(), 4);
    assert_eq!(l["events"][0]["sip_user_agent"], "sipvicious");
    let l = node.get("/lookup/100").json();
    assert_eq!(l["kind"], "number");
    assert_eq!(l["seen_count"], 3);
    assert_eq!(node.get("/lookup/192.0.2.99").status, 404);
}

#[test]
fn root_and_health_check_keep_upstreams_answers() {
    let node = Node::start(&[]);
    let r = node.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"status": "OK"}));
    let h = node.get("/health-check").json();
    assert_eq!(h["status"], "OK");
    assert_eq!(h["message"], "Hello from SentryPeer!");
}

#[test]
fn the_dashboard_is_served_from_the_binary_under_a_strict_content_security_policy() {
    let node = Node::start(&[]);
    let mut total = 0;
    for (path, ty) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = node.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        total += r.body.len();
    }
    assert!(total < 300 * 1024, "{total} bytes");
    let page = String::from_utf8(node.get("/ui/").body).unwrap();
    // Nothing from elsewhere, no inline script or style.
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("<script>") && !page.contains("style="));
    let r = node.get("/ui");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/ui/"));
    assert_eq!(node.get("/ui/../Cargo.toml").status, 404);
    assert_eq!(node.get("/ui/nothing.js").status, 404);
}

/// Opens `/live` from a loopback address and returns a reader positioned after the response
/// head.
pub fn open_live(node: &Node, from: &str) -> BufReader<TcpStream> {
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&node.api[0].into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut ct = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.to_ascii_lowercase().starts_with("content-type:") {
            ct = line.clone();
        }
        if line == "\r\n" {
            break;
        }
    }
    assert!(ct.contains("text/event-stream"), "{ct}");
    r
}

#[test]
fn the_live_feed_sends_each_probe_as_a_server_sent_event() {
    let node = Node::start(&[]);
    let mut live = open_live(&node, "127.0.0.1");
    let agent = "<img src=x onerror=alert(1)>";
    let sent = Instant::now();
    probe(&node, "100", agent, 1);
    let mut line = String::new();
    let data = loop {
        line.clear();
        live.read_line(&mut line).unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            break d.trim().to_string();
        }
    };
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["sip_user_agent"], agent);
    assert_eq!(v["sip_method"], "OPTIONS");
    assert_eq!(v["called_number"], "100");
    assert!(v["event_uuid"].is_string());
}
