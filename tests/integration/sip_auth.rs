//! Credentials, fake success and personas of responsive mode, against the real tools of toll
//! fraud: svwar walks extensions, svcrack guesses a password until the node lets it "succeed",
//! SIPp registers with a cracked password and dials a premium number, and svmap fingerprints
//! each persona.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// How long one tool run may take; sipvicious waits out its own receive timeouts.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The JSON log lines written so far.
fn json_lines(node: &Node) -> Vec<serde_json::Value> {
    std::fs::read_to_string(node.path("events.json"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The user names `/usernames` lists, with their counts.
fn listed_usernames(node: &Node) -> Vec<(String, u64)> {
    let r = node.get("/usernames");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let list = v["usernames"].as_array().unwrap();
    assert_eq!(
        v["usernames_total"].as_u64(),
        Some(list.len() as u64),
        "{v}"
    );
    list.iter()
        .map(|u| {
            assert!(
                u["seen_last"].as_str().is_some_and(|s| s.len() == 29),
                "{u}"
            );
            (
                u["username"].as_str().unwrap().to_string(),
                u["seen_count"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// One `sentrypeer_sip_auth` row.
#[derive(Debug)]
struct AuthRow {
    method: String,
    username: String,
    header: Option<String>,
    realm: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    own_nonce: bool,
    trap_password_matched: bool,
    registered_attacker: bool,
}

fn auth_rows(node: &Node) -> Vec<AuthRow> {
    let db = node.db();
    let mut stmt = db
        .prepare(
            "SELECT a.method, a.username, a.auth_header, a.realm, a.uri, a.response, a.own_nonce,
                    a.trap_password_matched, a.registered_attacker
             FROM sentrypeer_sip_auth a JOIN honey h ON h.event_uuid = a.event_uuid
             ORDER BY h.honey_id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(AuthRow {
            method: r.get(0)?,
            username: r.get(1)?,
            header: r.get(2)?,
            realm: r.get(3)?,
            uri: r.get(4)?,
            response: r.get(5)?,
            own_nonce: r.get(6)?,
            trap_password_matched: r.get(7)?,
            registered_attacker: r.get(8)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn svwar_extensions_are_recorded_as_usernames_in_the_database_the_json_log_and_the_api() {
    require("svwar");
    // With fake success on, unknown-looking accounts get 404 and extensions a challenge, so
    // svwar (without --force) learns "no such user" from its random probe and walks on.
    let node = Node::start(&[
        "-r",
        "--sip-accept-register-after",
        "3",
        "-l",
        "events.json",
    ]);
    let port = node.udp[0].port().to_string();
    let out = run_tool(
        Command::new("svwar").args(["-e", "100-120", "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    println!(
        "svwar -e 100-120 against --sip-accept-register-after 3:\n{}",
        out.stdout
    );
    assert!(out.status.success(), "{}", out.text());
    let found: BTreeSet<String> = table_rows(&out.stdout)
        .into_iter()
        .filter(|r| r.len() == 2 && r[1] == "reqauth")
        .map(|r| r[0].clone())
        .collect();

    let wanted: BTreeSet<String> = (100..=120).map(|n: u32| n.to_string()).collect();
    assert_eq!(
        found, wanted,
        "svwar reports every extension as needing a password"
    );
    let mut listed = Vec::new();
    let all_there = poll(DEFAULT_WAIT, || {
        listed = listed_usernames(&node);
        let names: BTreeSet<String> = listed.iter().map(|(u, _)| u.clone()).collect();
        wanted.is_subset(&names)
    });
    assert!(
        all_there,
        "every extension svwar tried is listed: {listed:?}"
    );
    for (name, count) in &listed {
        if wanted.contains(name) {
            assert_eq!(*count, 1, "{name} was tried once: {listed:?}");
        }
    }
    // svwar's own first probe, a random extension, is one more.
    assert_eq!(listed.len(), wanted.len() + 1, "{listed:?}");

    let rows = auth_rows(&node);
    for ext in &wanted {
        let row = rows.iter().find(|r| &r.username == ext).unwrap();
        assert_eq!(row.method, "REGISTER");
        assert!(row.header.is_none() && row.response.is_none(), "{row:?}");
        assert!(!row.registered_attacker);
    }
    let mut logged = BTreeSet::new();
    assert!(poll(DEFAULT_WAIT, || {
        logged = json_lines(&node)
            .iter()
            .filter_map(|l| l["sip_auth_username"].as_str().map(str::to_string))
            .collect();
        wanted.is_subset(&logged)
    }));
    for line in json_lines(&node) {
        assert!(line.get("registered_attacker").is_none(), "{line}");
    }
}

/// MD5 as lowercase hex, from coreutils' md5sum.
fn md5_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
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

/// `key="value"` (or `key=value`) of the Authorization header in a recorded message.
fn authorization_param(message: &str, key: &str) -> Option<String> {
    let line = message
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))?;
    let value = line.split_once(':')?.1.trim().strip_prefix("Digest ")?;
    value.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == key).then(|| v.trim_matches('"').to_string())
    })
}

/// Which dictionary password each recorded Authorization carried, in order.
fn passwords_tried(node: &Node, dictionary: &[&str]) -> Vec<(String, bool)> {
    let db = node.db();
    let mut stmt = db
        .prepare(
            "SELECT CAST(h.sip_message AS BLOB), a.registered_attacker FROM honey h
             JOIN sentrypeer_sip_auth a ON a.event_uuid = h.event_uuid
             WHERE a.auth_header IS NOT NULL ORDER BY h.honey_id",
        )
        .unwrap();
    let rows: Vec<(String, bool)> = stmt
        .query_map([], |r| {
            Ok((
                String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned(),
                r.get(1)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.into_iter()
        .map(|(message, registered)| {
            let p = |k| authorization_param(&message, k).unwrap();
            let (user, realm, nonce, uri, response) = (
                p("username"),
                p("realm"),
                p("nonce"),
                p("uri"),
                p("response"),
            );
            let ha2 = md5_hex(&format!("REGISTER:{uri}"));
            let password = dictionary
                .iter()
                .find(|pw| {
                    let ha1 = md5_hex(&format!("{user}:{realm}:{pw}"));
                    md5_hex(&format!("{ha1}:{nonce}:{ha2}")) == response
                })
                .unwrap_or_else(|| panic!("no dictionary password gives {message}"));
            (password.to_string(), registered)
        })
        .collect()
}

/// The (extension, password) rows of svcrack's result table.
fn cracked(stdout: &str) -> Vec<(String, String)> {
    table_rows(stdout)
        .into_iter()
        .filter(|r| r.len() == 2 && r[0] != "Extension")
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

/// The cells of each `| a | b |` row of a sipvicious result table.
fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn dictionary_file(node: &Node, name: &str, words: &[&str]) -> String {
    let path = node.path(name);
    std::fs::write(&path, words.join("\n") + "\n").unwrap();
    path.display().to_string()
}

#[test]
fn svcrack_cracks_a_password_after_three_refusals_and_every_guess_is_recorded() {
    require("svcrack");
    require("md5sum");
    let node = Node::start(&[
        "-r",
        "--sip-accept-register-after",
        "3",
        "-l",
        "events.json",
    ]);
    let dictionary = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let dict = dictionary_file(&node, "dictionary.txt", &dictionary);
    let port = node.udp[0].port().to_string();
    let out = run_tool(
        Command::new("svcrack").args(["-u100", "-d", &dict, "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    println!(
        "svcrack against --sip-accept-register-after 3:\n{}",
        out.text()
    );
    assert!(out.status.success(), "{}", out.text());
    assert_eq!(
        cracked(&out.stdout),
        [("100".to_string(), "delta".to_string())],
        "svcrack reports the fourth guess as cracked:\n{}",
        out.text()
    );

    assert!(poll(DEFAULT_WAIT, || auth_rows(&node)
        .iter()
        .any(|r| r.registered_attacker)));
    let rows = auth_rows(&node);
    let digests: Vec<&AuthRow> = rows.iter().filter(|r| r.header.is_some()).collect();
    assert_eq!(digests.len(), 4, "{rows:#?}");
    for r in &digests {
        assert_eq!(r.header.as_deref(), Some("Authorization"));
        assert_eq!(r.username, "100");
        assert_eq!(r.realm.as_deref(), Some("asterisk"));
        assert!(
            r.uri.as_deref().is_some_and(|u| u.starts_with("sip:")),
            "{r:?}"
        );
        assert_eq!(r.response.as_deref().map(str::len), Some(32), "{r:?}");
        assert!(r.own_nonce, "svcrack answered our own challenge: {r:?}");
        assert!(!r.trap_password_matched);
    }
    let tried = passwords_tried(&node, &dictionary);
    assert_eq!(
        tried,
        [
            ("alpha".to_string(), false),
            ("bravo".to_string(), false),
            ("charlie".to_string(), false),
            ("delta".to_string(), true),
        ]
    );
    // The JSON log marks the accepted REGISTER and names the account.
    let lines = json_lines(&node);
    assert!(
        lines.iter().any(|l| l["sip_method"] == "REGISTER"
            && l["registered_attacker"] == true
            && l["sip_auth_username"] == "100"),
        "{lines:#?}"
    );
}

#[test]
fn a_trap_password_is_accepted_at_once_and_recorded_as_matched() {
    require("svcrack");
    let work = tempfile::tempdir().unwrap();
    let traps = work.path().join("traps.txt");
    std::fs::write(&traps, "# bait\nbravo\n").unwrap();
    let traps = traps.display().to_string();
    let node = Node::start(&["-r", "--sip-trap-passwords", &traps]);
    let dictionary = ["alpha", "bravo", "charlie"];
    let dict = dictionary_file(&node, "dictionary.txt", &dictionary);
    let port = node.udp[0].port().to_string();
    let out = run_tool(
        Command::new("svcrack").args(["-u100", "-d", &dict, "127.0.0.1", "-p", &port]),
        TOOL_TIMEOUT,
    );
    assert_eq!(
        cracked(&out.stdout),
        [("100".to_string(), "bravo".to_string())],
        "{}",
        out.text()
    );
    assert!(poll(DEFAULT_WAIT, || auth_rows(&node)
        .iter()
        .any(|r| r.registered_attacker)));
    let digests: Vec<(bool, bool)> = auth_rows(&node)
        .iter()
        .filter(|r| r.header.is_some())
        .map(|r| (r.trap_password_matched, r.registered_attacker))
        .collect();
    assert_eq!(digests, [(false, false), (true, true)]);
}

/// SIPp as the fraudster after the crack: registers as 100 with the trap password, dials a
/// premium number, takes the answer, and is hung up on.
const REGISTER_THEN_DIAL: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register then dial">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:100@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-Agent: fraud-dialer/1.0
      Expires: 300
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:100@[local_ip]:[local_port];transport=[transport]>
      [authentication username=100 password=1234]
      Max-Forwards: 70
      User-Agent: fraud-dialer/1.0
      Expires: 300
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <send retrans="500">
    <![CDATA[
      INVITE sip:900442037690000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:900442037690000@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 3 INVITE
      Contact: <sip:100@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      User-Agent: fraud-dialer/1.0
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK sip:900442037690000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@[remote_ip]>;tag=[pid]SIPpTag01[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 ACK
      Max-Forwards: 70
      User-Agent: fraud-dialer/1.0
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

fn sipp_registers_then_dials(transport: &str) {
    require("sipp");
    let work = tempfile::tempdir().unwrap();
    let traps = work.path().join("traps.txt");
    std::fs::write(&traps, "1234\n").unwrap();
    let traps = traps.display().to_string();
    let node = Node::start(&["-r", "--sip-trap-passwords", &traps, "-l", "events.json"]);
    let (target, mode) = match transport {
        "UDP" => (node.udp[0], "u1"),
        "TCP" => (node.tcp[0], "t1"),
        _ => unreachable!(),
    };
    let scenario = work.path().join("register_then_dial.xml");
    std::fs::write(&scenario, REGISTER_THEN_DIAL).unwrap();
    let errors = work.path().join("errors.log");
    let out = run_tool(
        Command::new("sipp")
            .current_dir(work.path())
            .arg("-sf")
            .arg(&scenario)
            .arg(target.to_string())
            .args([
                "-m",
                "1",
                "-t",
                mode,
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&errors),
        TOOL_TIMEOUT,
    );
    let unexpected = std::fs::read_to_string(&errors).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp registered, dialled, was answered and hung up on:\n{}\n{unexpected}\n{}",
        out.text(),
        node.log_text()
    );

    // The dialled number is listed, and every request after the REGISTER is marked.
    let mut numbers = serde_json::Value::Null;
    assert!(poll(DEFAULT_WAIT, || {
        numbers = node.get("/numbers").json();
        numbers["called_numbers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["called_number"] == "900442037690000"))
    }));
    let marked: Vec<(String, String)> = {
        let db = node.db();
        let mut stmt = db
            .prepare(
                "SELECT r.method, r.called_number FROM sentrypeer_registered_events r
                 JOIN honey h ON h.event_uuid = r.event_uuid ORDER BY h.honey_id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        marked,
        [
            ("REGISTER".to_string(), "100".to_string()),
            ("INVITE".to_string(), "900442037690000".to_string()),
            ("ACK".to_string(), "900442037690000".to_string()),
        ]
    );
    let mut lines = Vec::new();
    assert!(poll(DEFAULT_WAIT, || {
        lines = json_lines(&node);
        lines.len() >= 4
    }));
    let flags: Vec<(String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["sip_method"].as_str().unwrap().to_string(),
                l["registered_attacker"] == true,
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            ("REGISTER".to_string(), false),
            ("REGISTER".to_string(), true),
            ("INVITE".to_string(), true),
            ("ACK".to_string(), true),
        ]
    );
    let row = auth_rows(&node)
        .into_iter()
        .find(|r| r.header.is_some())
        .unwrap();
    assert!(row.own_nonce && row.trap_password_matched, "{row:?}");
}

#[test]
fn sipp_registers_with_a_trap_password_then_dials_and_the_number_is_recorded_over_udp() {
    sipp_registers_then_dials("UDP");
}

#[test]
fn sipp_registers_with_a_trap_password_then_dials_and_the_number_is_recorded_over_tcp() {
    sipp_registers_then_dials("TCP");
}

/// Each persona, as svmap fingerprints it: the product name svmap prints for the node.
#[test]
fn svmap_fingerprints_each_persona_as_its_product() {
    require("svmap");
    for (persona, product) in [
        ("asterisk", "Asterisk PBX 18.20.2"),
        ("freepbx", "FPBX-16.0.40.7(18.20.2)"),
        ("kamailio", "kamailio (5.6.3 (x86_64/linux))"),
        ("cisco", "Cisco-SIPGateway/IOS-15.5.3.S"),
        ("yealink", "Yealink SIP-T46S 66.86.0.15"),
    ] {
        let node = Node::start(&["-r", "--sip-persona", persona]);
        let port = node.udp[0].port().to_string();
        let out = run_tool(
            Command::new("svmap").args(["127.0.0.1", "-p", &port]),
            TOOL_TIMEOUT,
        );
        println!(
            "svmap against --sip-persona {persona}:\n{}",
            out.stdout.trim_end()
        );
        assert!(out.status.success(), "{}", out.text());
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{port}")))
            .unwrap_or_else(|| panic!("svmap lists the node:\n{}", out.text()));
        assert!(
            line.contains(product),
            "svmap names {persona} {product:?}: {line}"
        );
    }
}

/// The challenge each persona sends, as a REGISTER without credentials gets it.
#[test]
fn each_persona_challenges_in_its_products_format() {
    let register = |port: u16| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-1;rport\r\n\
             From: <sip:100@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (persona, prefix) in [
        ("", "Digest realm=\"asterisk\", nonce=\""),
        ("asterisk", "Digest realm=\"asterisk\",nonce=\""),
        ("kamailio", "Digest realm=\"127.0.0.1\", nonce=\""),
        ("cisco", "Digest realm=\"cisco\",nonce=\""),
    ] {
        let args: Vec<&str> = if persona.is_empty() {
            vec!["-r"]
        } else {
            vec!["-r", "--sip-persona", persona]
        };
        let node = Node::start(&args);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
        let port = s.local_addr().unwrap().port();
        s.send_to(register(port).as_bytes(), node.udp[0]).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        let www = reply
            .lines()
            .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
            .unwrap_or_else(|| panic!("{reply}"));
        assert!(www.starts_with(prefix), "{persona}: {www}");
        println!("--sip-persona {persona:?} challenges with: {www}");
    }
}

/// A SIP request from `port` on loopback, as a raw tool would send it.
fn raw(method: &str, user: &str, port: u16, call_id: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:{user}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n\
         From: <sip:100@127.0.0.1>;tag=caller\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n\
         Contact: <sip:100@127.0.0.1:{port}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn receive(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 8192];
    let n = s.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn header_of<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_registered_source_is_hung_up_on_in_the_dialog_and_still_held_to_the_reply_budget() {
    // 0: the first answer with our nonce is accepted, whatever its password.
    let node = Node::start(&["-r", "--sip-accept-register-after", "0"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
    let port = s.local_addr().unwrap().port();
    s.send_to(&raw("REGISTER", "100", port, "reg", ""), node.udp[0])
        .unwrap();
    let challenge = receive(&s).unwrap();
    let www = header_of(&challenge, "WWW-Authenticate").unwrap();
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let auth = format!(
        "Authorization: Digest username=\"100\",realm=\"asterisk\",nonce=\"{nonce}\",uri=\"sip:127.0.0.1\",response=\"00000000000000000000000000000000\",algorithm=MD5\r\nExpires: 600\r\n"
    );
    s.send_to(&raw("REGISTER", "100", port, "reg", &auth), node.udp[0])
        .unwrap();
    let ok = receive(&s).unwrap();
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert_eq!(header_of(&ok, "Expires"), Some("600"));
    // A made-up nonce never registers anyone.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
    let forged = auth.replace(nonce, "0123456789abcdef0123456789abcdef");
    let other_port = other.local_addr().unwrap().port();
    other
        .send_to(
            &raw("REGISTER", "100", other_port, "forged", &forged),
            node.udp[0],
        )
        .unwrap();
    assert!(
        receive(&other)
            .unwrap()
            .starts_with("SIP/2.0 403 Forbidden\r\n")
    );

    // One call: answered like a PBX, then hung up in the dialog, from the node's address.
    let started = std::time::Instant::now();
    s.send_to(
        &raw("INVITE", "900442037690000", port, "call-1", ""),
        node.udp[0],
    )
    .unwrap();
    let answers: Vec<String> = (0..3).map(|_| receive(&s).unwrap()).collect();
    let firsts: Vec<&str> = answers.iter().map(|a| a.lines().next().unwrap()).collect();
    assert_eq!(
        firsts,
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK"
        ]
    );
    let to = header_of(&answers[2], "To").unwrap();
    let (bye, from) = {
        let mut buf = [0u8; 8192];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    };
    let waited = started.elapsed();
    assert_eq!(from, node.udp[0]);
    assert!(bye.starts_with("BYE sip:100@127.0.0.1:"), "{bye}");
    assert!(
        waited >= Duration::from_millis(2500),
        "hung up after {waited:?}"
    );
    assert_eq!(header_of(&bye, "Call-ID"), Some("call-1"));
    assert_eq!(
        header_of(&bye, "From"),
        Some(to),
        "our To tag is the BYE's From tag"
    );
    assert_eq!(
        header_of(&bye, "To"),
        Some("<sip:100@127.0.0.1>;tag=caller")
    );

    // A flood of calls from the registered source gets no more answers than any source.
    let flood = 300;
    let sent = std::time::Instant::now();
    for i in 0..flood {
        s.send_to(
            &raw("INVITE", "900442037690000", port, &format!("flood-{i}"), ""),
            node.udp[0],
        )
        .unwrap();
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut replies = 0u64;
    while let Some(r) = receive(&s) {
        if r.starts_with("SIP/2.0 ") {
            replies += 1;
        }
    }
    // The budget: a burst of 200 replies, then 100 a second.
    let budget = 200 + 100 * (sent.elapsed().as_secs() + 1);
    println!("{flood} INVITEs from a registered source: {replies} replies (budget {budget})");
    assert!(replies <= budget, "{replies} replies > {budget}");
    assert!(node.counter("replies_rate_limited") > 0);
}

#[test]
fn bad_credential_settings_exit_2_naming_the_option() {
    for (args, option) in [
        (
            vec!["--sip-accept-register-after", "many"],
            "--sip-accept-register-after",
        ),
        (
            vec!["--sip-trap-passwords", "/nonexistent/traps"],
            "--sip-trap-passwords",
        ),
        (vec!["--sip-persona", "opensips"], "--sip-persona"),
    ] {
        let out = Command::new(bin())
            .args([
                "-r",
                "-N",
                "--udp-listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
            ])
            .args(&args)
            .env_remove("SENTRYPEER_SIP_PERSONA")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(option), "{args:?}: {err}");
    }
}
