//! The attack and test tools people really point at a SIP honeypot — sipsak, sipvicious
//! (svmap, svwar, svcrack) and SIPp — run as subprocesses against the real binary on loopback.
//! Each probe must be recorded with the tool's own method, number and user agent, and in
//! responsive mode each tool must get the answers it needs to finish its work.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// How long one tool run may take; sipvicious waits out its own receive timeouts (~10 s for
/// svcrack) before it exits, and a cold CI machine is slow.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// One `honey` row, the fields a tool test asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    source_ip: String,
    method: String,
    called_number: String,
    user_agent: String,
    transport: String,
    collected_method: String,
    message: String,
}

fn rows(node: &Node) -> Vec<Row> {
    let db = node.db();
    let mut stmt = db
        .prepare(
            "SELECT source_ip, method, called_number, user_agent, transport_type, \
             collected_method, CAST(sip_message AS BLOB) FROM honey ORDER BY honey_id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            source_ip: r.get(0)?,
            method: r.get(1)?,
            called_number: r.get(2)?,
            user_agent: r.get(3)?,
            transport: r.get(4)?,
            collected_method: r.get(5)?,
            message: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(6)?).into_owned(),
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Waits for at least `n` rows, then returns them all.
fn wait_for_rows(node: &Node, n: i64) -> Vec<Row> {
    node.wait_rows(n);
    rows(node)
}

/// The value of the first header `name` in a SIP message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Every row came from loopback over `transport`, as a probe of this mode, with `agent`.
fn assert_all_from(rows: &[Row], transport: &str, collected: &str, agent: &str) {
    for r in rows {
        assert_eq!(r.source_ip, "127.0.0.1", "{r:?}");
        assert_eq!(r.transport, transport, "{r:?}");
        assert_eq!(r.collected_method, collected, "{r:?}");
        assert_eq!(r.user_agent, agent, "{r:?}");
        assert_eq!(header(&r.message, "User-Agent"), Some(agent), "{r:?}");
    }
}

// ---------------------------------------------------------------- sipsak

/// sipsak's User-Agent is `sipsak <version>`; read the version from the installed binary.
fn sipsak_agent() -> String {
    let out = run_tool(
        Command::new("sipsak").arg("--version"),
        Duration::from_secs(10),
    );
    let first = out.stdout.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    let (Some("sipsak"), Some(version)) = (words.next(), words.next()) else {
        panic!("unexpected sipsak --version output: {}", out.text());
    };
    format!("sipsak {version}")
}

/// Sends one OPTIONS with sipsak to `number` over `transport` and checks it was answered
/// (sipsak exits 0 only on a 200) and recorded with sipsak's own fields.
fn sipsak_options(transport: &str, number: &str) {
    require("sipsak");
    let node = Node::start(&["-r"]);
    let (target, extra): (_, &[&str]) = match transport {
        "UDP" => (node.udp[0], &["-E", "udp"]),
        "TCP" => (node.tcp[0], &["-E", "tcp"]),
        // The node's certificate is self-signed.
        "TLS" => (node.tls[0], &["-E", "tls", "--tls-ignore-cert-failure"]),
        _ => unreachable!(),
    };
    let out = run_tool(
        Command::new("sipsak")
            .args(extra)
            .arg("-vv")
            .arg("-s")
            .arg(format!("sip:{number}@127.0.0.1:{}", target.port())),
        TOOL_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipsak exits 0 only when a 200 answers its OPTIONS:\n{}\n{}",
        out.text(),
        node.log_text()
    );
    assert!(out.stdout.contains("SIP/2.0 200 OK"), "{}", out.text());

    let rows = wait_for_rows(&node, 1);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(r.method, "OPTIONS");
    assert_eq!(r.called_number, number);
    assert_all_from(&rows, transport, "responsive", &sipsak_agent());
    assert!(
        r.message
            .starts_with(&format!("OPTIONS sip:{number}@127.0.0.1")),
        "{}",
        r.message
    );
    let via = header(&r.message, "Via").unwrap();
    assert!(
        via.starts_with(&format!("SIP/2.0/{transport} ")),
        "sipsak's Via names the transport it used: {via}"
    );
}

#[test]
fn sipsak_options_over_udp_is_answered_200_and_recorded_with_its_agent() {
    sipsak_options("UDP", "100");
}

#[test]
fn sipsak_options_over_tcp_is_answered_200_and_recorded_with_its_agent() {
    sipsak_options("TCP", "101");
}

/// Regression: the node sent TLS 1.3 session tickets after the handshake; sipsak (GnuTLS)
/// select()s, reads the ticket record instead of a reply, and gave up with "nothing received,
/// select returned error" (exit 2) although the probe had been answered.
#[test]
fn sipsak_options_over_tls_is_answered_200_and_recorded_with_its_agent() {
    sipsak_options("TLS", "102");
}

// ---------------------------------------------------------------- sipvicious

/// sipvicious's fixed User-Agent.
const SIPVICIOUS_AGENT: &str = "friendly-scanner";

/// The Server header the node answers with, read from a reply to our own OPTIONS.
fn server_header(node: &Node) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
    s.send_to(&options("999", "server-header-probe", 1), node.udp[0])
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("a reply to our OPTIONS");
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    header(&reply, "Server")
        .unwrap_or_else(|| panic!("no Server header in {reply}"))
        .to_string()
}

#[test]
fn svmap_is_recorded_and_reports_the_node_by_its_server_header() {
    require("svmap");
    let node = Node::start(&["-r"]);
    let port = node.udp[0].port();
    let out = run_tool(
        Command::new("svmap").args(["127.0.0.1", "-p", &port.to_string()]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.text());

    let rows = wait_for_rows(&node, 1);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].method, "OPTIONS");
    assert_eq!(rows[0].called_number, "100", "svmap probes extension 100");
    assert_all_from(&rows, "UDP", "responsive", SIPVICIOUS_AGENT);

    let server = server_header(&node);
    let device = format!("127.0.0.1:{port}");
    assert!(
        out.text()
            .lines()
            .any(|l| l.contains(&device) && l.contains(&server)),
        "svmap lists {device} as a SIP device with our Server header {server:?}:\n{}",
        out.text()
    );
}

#[test]
fn svmap_finds_nothing_on_a_passive_node_but_is_recorded() {
    require("svmap");
    let node = Node::start(&[]);
    let port = node.udp[0].port();
    let out = run_tool(
        Command::new("svmap").args(["127.0.0.1", "-p", &port.to_string()]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.text());
    assert!(
        !out.text().contains(&format!("127.0.0.1:{port}")),
        "a passive node must stay invisible to svmap:\n{}",
        out.text()
    );
    let rows = wait_for_rows(&node, 1);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0].method.as_str(), rows[0].called_number.as_str()),
        ("OPTIONS", "100")
    );
    assert_all_from(&rows, "UDP", "passive", SIPVICIOUS_AGENT);
}

/// svwar first probes a random extension to learn what "no such user" looks like.
fn is_range_extension(number: &str, range: &std::ops::RangeInclusive<u32>) -> bool {
    number.parse::<u32>().is_ok_and(|n| range.contains(&n))
}

#[test]
fn svwar_invite_scan_records_every_extension_with_its_invite_ack_and_bye() {
    require("svwar");
    let node = Node::start(&["-r"]);
    let port = node.udp[0].port().to_string();
    let out = run_tool(
        Command::new("svwar").args(["-m", "INVITE", "-e100-110", "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.text());

    // Each extension: an INVITE the node answers 200, then svwar's ACK and BYE for that call;
    // plus svwar's opening INVITE to a random extension.
    let extensions = 100..=110u32;
    let expected = 3 * extensions.clone().count() + 1;
    let rows = wait_for_rows(&node, expected as i64);
    assert_all_from(&rows, "UDP", "responsive", SIPVICIOUS_AGENT);
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        *seen
            .entry((r.called_number.clone(), r.method.clone()))
            .or_default() += 1;
    }
    for ext in extensions.clone() {
        for method in ["INVITE", "ACK", "BYE"] {
            assert_eq!(
                seen.get(&(ext.to_string(), method.to_string())),
                Some(&1),
                "{method} to {ext}: {seen:?}"
            );
        }
    }
    let sanity: Vec<&Row> = rows
        .iter()
        .filter(|r| !is_range_extension(&r.called_number, &extensions))
        .collect();
    assert_eq!(sanity.len(), 1, "{sanity:#?}");
    assert_eq!(sanity[0].method, "INVITE");
    assert_eq!(rows.len(), expected, "{seen:?}");
}

#[test]
fn svwar_register_scan_is_recorded_and_challenged_like_any_extension() {
    require("svwar");
    let node = Node::start(&["-r"]);
    let port = node.udp[0].port().to_string();
    // Without --force svwar stops at once: the node challenges its random extension too, as a
    // PBX that never reveals which users exist does.
    let out = run_tool(
        Command::new("svwar").args(["--force", "-e100-110", "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.text());
    assert!(
        out.text().contains("SIP/2.0 401"),
        "svwar saw the digest challenge:\n{}",
        out.text()
    );
    assert!(
        !out.text().contains("exists"),
        "no extension stands out from an unknown one:\n{}",
        out.text()
    );

    let rows = wait_for_rows(&node, 2);
    assert_all_from(&rows, "UDP", "responsive", SIPVICIOUS_AGENT);
    assert!(rows.iter().all(|r| r.method == "REGISTER"), "{rows:#?}");
    assert!(
        rows.iter().any(|r| r.called_number == "100"),
        "extension 100 is recorded: {rows:#?}"
    );
    let extensions = 100..=110u32;
    let random: Vec<&Row> = rows
        .iter()
        .filter(|r| !is_range_extension(&r.called_number, &extensions))
        .collect();
    assert_eq!(random.len(), 1, "svwar's random first probe: {random:#?}");
}

/// MD5 as lowercase hex, from coreutils' md5sum (no MD5 crate among the dev-dependencies).
fn md5_hex(text: &str) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum (coreutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// `key="value"` (or `key=value`) from a Digest header.
fn digest_param<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = header.strip_prefix("Digest ")?;
    rest.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

#[test]
fn svcrack_password_guesses_are_each_recorded_with_their_digest_and_none_succeeds() {
    require("svcrack");
    require("md5sum");
    let node = Node::start(&["-r"]);
    let port = node.udp[0].port().to_string();
    let out = run_tool(
        Command::new("svcrack").args(["-u100", "-r1000-1010", "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.text());
    assert!(
        !out.text().contains("The password for"),
        "the node accepted a password:\n{}",
        out.text()
    );

    let passwords: Vec<String> = (1000..=1010).map(|p| p.to_string()).collect();
    // Each guess is a challenged REGISTER followed by one carrying the digest.
    let rows = wait_for_rows(&node, 2 * passwords.len() as i64);
    assert_all_from(&rows, "UDP", "responsive", SIPVICIOUS_AGENT);
    for r in &rows {
        assert_eq!(
            (r.method.as_str(), r.called_number.as_str()),
            ("REGISTER", "100"),
            "{r:?}"
        );
    }

    // svcrack also tries the user name itself as a password.
    let candidates: Vec<&str> = std::iter::once("100")
        .chain(passwords.iter().map(String::as_str))
        .collect();
    let mut tried = BTreeSet::new();
    for r in &rows {
        let Some(auth) = header(&r.message, "Authorization") else {
            continue;
        };
        assert_eq!(digest_param(auth, "username"), Some("100"), "{auth}");
        let realm = digest_param(auth, "realm").unwrap();
        let nonce = digest_param(auth, "nonce").unwrap();
        let uri = digest_param(auth, "uri").unwrap();
        let response = digest_param(auth, "response").unwrap();
        // sipvicious 0.3 computes the RFC 2069 form (no cnonce) even when it writes qop=auth.
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let password = candidates
            .iter()
            .find(|p| {
                let ha1 = md5_hex(&format!("100:{realm}:{p}"));
                md5_hex(&format!("{ha1}:{nonce}:{ha2}")) == response
            })
            .unwrap_or_else(|| panic!("no candidate password gives {auth}"));
        tried.insert(password.to_string());
    }
    for p in &passwords {
        assert!(
            tried.contains(p),
            "password {p} was not recorded: {tried:?}"
        );
    }
}

// ---------------------------------------------------------------- SIPp

/// The last row of SIPp's `-trace_stat` file, by column name.
fn sipp_final_stats(csv: &str) -> BTreeMap<String, String> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let names: Vec<&str> = lines.next().expect("a header row").split(';').collect();
    let last = lines.next_back().expect("a statistics row");
    names
        .into_iter()
        .zip(last.split(';'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// SIPp's built-in `uac` scenario (INVITE, 200, ACK, pause, BYE, 200) completes one call with
/// no retransmission, and the node records the call's three requests.
fn sipp_uac_call(transport: &str) {
    require("sipp");
    let node = Node::start(&["-r"]);
    let (target, mode) = match transport {
        "UDP" => (node.udp[0], "u1"),
        "TCP" => (node.tcp[0], "t1"),
        _ => unreachable!(),
    };
    let work = tempfile::tempdir().unwrap();
    let stats = work.path().join("stats.csv");
    let errors = work.path().join("errors.log");
    let out = run_tool(
        Command::new("sipp")
            .current_dir(work.path())
            .args(["-sn", "uac", &target.to_string(), "-m", "1", "-t", mode])
            .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
            .arg("-trace_stat")
            .arg("-stf")
            .arg(&stats)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors),
        TOOL_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp exits 0 when every call succeeded:\n{}\n{}",
        out.text(),
        node.log_text()
    );
    let stats = sipp_final_stats(&std::fs::read_to_string(&stats).unwrap());
    for (counter, value) in [
        ("OutgoingCall(C)", "1"),
        ("SuccessfulCall(C)", "1"),
        ("FailedCall(C)", "0"),
        ("Retransmissions(C)", "0"),
        ("FailedMaxUDPRetrans(C)", "0"),
        ("FailedUnexpectedMessage(C)", "0"),
        ("DeadCallMsgs(C)", "0"),
        ("OutOfCallMsgs(C)", "0"),
    ] {
        assert_eq!(
            stats.get(counter).map(String::as_str),
            Some(value),
            "{counter}: {stats:?}"
        );
    }
    let unexpected = std::fs::read_to_string(&errors).unwrap_or_default();
    assert!(unexpected.trim().is_empty(), "sipp errors: {unexpected}");

    let rows = wait_for_rows(&node, 3);
    let methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["INVITE", "ACK", "BYE"]);
    for r in &rows {
        // SIPp's `-s` service, default "service", is the user of its To URI.
        assert_eq!(r.called_number, "service", "{r:?}");
        assert_eq!(r.source_ip, "127.0.0.1", "{r:?}");
        assert_eq!(r.transport, transport, "{r:?}");
        assert_eq!(r.collected_method, "responsive", "{r:?}");
        // The built-in scenario sends no User-Agent: the contract's NOT_FOUND.
        assert_eq!(header(&r.message, "User-Agent"), None, "{r:?}");
        assert_eq!(r.user_agent, "NOT_FOUND", "{r:?}");
        assert!(
            header(&r.message, "From").is_some_and(|f| f.starts_with("sipp <sip:sipp@")),
            "{r:?}"
        );
    }
    assert_eq!(
        header(&rows[0].message, "Subject"),
        Some("Performance Test"),
        "the INVITE is SIPp's own"
    );
}

#[test]
fn sipp_uac_call_over_udp_completes_once_without_retransmissions_and_is_recorded() {
    sipp_uac_call("UDP");
}

#[test]
fn sipp_uac_call_over_tcp_completes_once_without_retransmissions_and_is_recorded() {
    sipp_uac_call("TCP");
}
