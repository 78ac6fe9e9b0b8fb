//! The shipped CrowdSec parser and scenarios (`contrib/crowdsec/`) run by the real `crowdsec`
//! in replay mode over a JSON log the node wrote: a probe's sender is banned, an address
//! dialling many numbers is caught as a number scan, and an event a peer reported is dropped.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// The Debian package's offline copy of the hub (its index and the items we enable).
const HUB: &str = "/usr/share/crowdsec/hub";
/// How long a replay of a few lines may take (LAPI start, replay, alert push, shutdown).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// Loopback sources: one probe, a number scan, and the address a peer's claim names.
const PROBER: &str = "127.0.0.1";
const SCANNER: &str = "127.0.0.2";
const CLAIMED: &str = "127.0.0.3";

fn contrib(rel: &str) -> String {
    format!("{}/contrib/crowdsec/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn copy(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} to {to:?}: {e}"));
}

/// A port nothing listens on now, for the replay's own local API.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-contained CrowdSec configuration under `dir`: the package's grok patterns and
/// profiles, the hub's raw (non-syslog) and date parsers, our parser and scenarios, a sqlite
/// database, no Central API and no metrics listener.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let etc = dir.join("etc");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    copy(
        &format!("{HUB}/parsers/s00-raw/crowdsecurity/syslog-logs.yaml"),
        &etc.join("parsers/s00-raw/syslog-logs.yaml"),
    );
    copy(
        &format!("{HUB}/parsers/s02-enrich/crowdsecurity/dateparse-enrich.yaml"),
        &etc.join("parsers/s02-enrich/dateparse-enrich.yaml"),
    );
    copy(
        &contrib("parsers/s01-parse/sentrypeer/sentrypeer-logs.yaml"),
        &etc.join("parsers/s01-parse/sentrypeer-logs.yaml"),
    );
    for s in ["sip-probe.yaml", "sip-number-scan.yaml"] {
        copy(
            &contrib(&format!("scenarios/sentrypeer/{s}")),
            &etc.join("scenarios").join(s),
        );
    }
    for f in ["profiles.yaml", "simulation.yaml"] {
        copy(&format!("/etc/crowdsec/{f}"), &etc.join(f));
    }
    let status = Command::new("cp")
        .arg("-r")
        .arg("/etc/crowdsec/patterns")
        .arg(etc.join("patterns"))
        .status()
        .unwrap();
    assert!(status.success(), "copy /etc/crowdsec/patterns");
    std::fs::write(etc.join("acquis.yaml"), "").unwrap();
    let (etc_s, data_s) = (etc.display(), data.display());
    let config = format!(
        "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n\
         config_paths:\n  config_dir: {etc_s}/\n  data_dir: {data_s}/\n  \
         simulation_path: {etc_s}/simulation.yaml\n  hub_dir: {HUB}/\n  \
         index_path: {HUB}/.index.json\n\
         crowdsec_service:\n  acquisition_path: {etc_s}/acquis.yaml\n  parser_routines: 1\n\
         db_config:\n  type: sqlite\n  db_path: {data_s}/crowdsec.db\n  use_wal: false\n\
         api:\n  client:\n    credentials_path: {etc_s}/local_api_credentials.yaml\n  \
         server:\n    listen_uri: 127.0.0.1:{}\n    profiles_path: {etc_s}/profiles.yaml\n\
         prometheus:\n  enabled: false\n",
        free_port()
    );
    let path = etc.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    // The replay pushes its alerts to its own local API as this machine.
    let creds = etc.join("local_api_credentials.yaml");
    let run = run_tool(
        Command::new("cscli")
            .arg("-c")
            .arg(&path)
            .args(["machines", "add", "-a", "-f"])
            .arg(&creds),
        DEFAULT_WAIT,
    );
    assert!(run.status.success(), "cscli machines add:\n{}", run.text());
    path
}

/// (scenario, source address) of every alert in the replay's database.
fn alerts(db: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT scenario, source_ip FROM alerts ORDER BY id")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn crowdsec_bans_local_probes_and_number_scans_but_never_a_peers_claim() {
    if !available(have("crowdsec") && have("cscli"), "crowdsec") {
        return;
    }
    let node = Node::start(&["-j", "-l", "json.log"]);
    let addr = node.udp[0];
    let prober = UdpSocket::bind(format!("{PROBER}:0")).unwrap();
    prober
        .send_to(&options("100", "friendly-scanner", 1), addr)
        .unwrap();
    let scanner = UdpSocket::bind(format!("{SCANNER}:0")).unwrap();
    for n in 0..6u64 {
        scanner
            .send_to(&options(&format!("90{n}"), "sipvicious", 10 + n), addr)
            .unwrap();
    }
    let log = node.path("json.log");
    let mut lines = Vec::new();
    let complete = poll(DEFAULT_WAIT, || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= 7
    });
    assert!(
        complete,
        "7 events in the JSON log, have {lines:?}\n{}",
        node.log_text()
    );

    // An event as a peer reports it: the node's own line for another address, with the
    // peer's id. It names an address nothing on this host saw, so it must not lead anywhere.
    let mut claim: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    claim["source_ip"] = format!("{CLAIMED}:5060").into();
    claim["received_from_peer"] = "12D3KooWPeerThatReportedThis".into();
    lines.push(claim.to_string());

    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.log");
    std::fs::write(&sample, lines.join("\n") + "\n").unwrap();
    let config = write_config(dir.path());
    let run = run_tool(
        Command::new("crowdsec")
            .arg("-c")
            .arg(&config)
            .arg("-dsn")
            .arg(format!("file://{}", sample.display()))
            .args(["-type", "sentrypeer"]),
        REPLAY_TIMEOUT,
    );
    assert!(run.status.success(), "crowdsec replay:\n{}", run.text());

    let alerts = alerts(&dir.path().join("data/crowdsec.db"));
    let has = |scenario: &str, ip: &str| {
        alerts
            .iter()
            .any(|(s, a)| s == &format!("sentrypeer/{scenario}") && a == ip)
    };
    let why = || {
        format!(
            "alerts {alerts:?}\nsample:\n{}\n{}",
            lines.join("\n"),
            run.text()
        )
    };
    assert!(
        has("sip-probe", PROBER),
        "a local probe is banned: {}",
        why()
    );
    assert!(
        !has("sip-number-scan", PROBER),
        "one number is no scan: {}",
        why()
    );
    assert!(
        has("sip-number-scan", SCANNER),
        "six numbers are a scan: {}",
        why()
    );
    assert!(
        alerts.iter().all(|(_, a)| a != CLAIMED),
        "a peer's claim leads to nothing: {}",
        why()
    );
}

/// The hub tests shipped beside the parser and scenarios (`contrib/crowdsec/.tests/`), run by
/// `cscli hubtest` through `contrib/crowdsec/hubtest.sh`: each must pass, and a failing
/// assertion must fail the run (the script's exit status is what this reads).
#[test]
fn crowdsec_hub_tests_pass() {
    if !available(
        have("crowdsec") && have("cscli") && Path::new(HUB).join(".index.json").exists(),
        "crowdsec hub",
    ) {
        return;
    }
    let run = run_tool(
        Command::new("bash").arg(contrib("hubtest.sh")).arg(HUB),
        REPLAY_TIMEOUT * 3,
    );
    let text = run.text();
    assert!(run.status.success(), "cscli hubtest:\n{text}");
    for test in ["sentrypeer-logs", "sip-probe", "sip-number-scan"] {
        assert!(
            text.contains(&format!("Test '{test}' passed successfully")),
            "hub test {test} ran and passed:\n{text}"
        );
    }
}
