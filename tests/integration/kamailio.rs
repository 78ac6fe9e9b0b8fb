//! Kamailio 5.6 running the configurations in `contrib/kamailio/` in front of a sipp UAS, with
//! sipp playing the attacker (a source the honeypot recorded) and an innocent caller from other
//! loopback addresses: the per-call dip, the blocklist pull (our `since` feed and APIBAN's v1
//! form) and the fraud-check agent as a redirect server.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Debian's module directory, where the configurations look.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
/// The source the honeypot records as an attacker, and an innocent caller.
const ATTACKER: &str = "127.0.0.3";
const INNOCENT: &str = "127.0.0.4";
/// A number the attacker dials at the honeypot, and one nobody does.
const BAD_NUMBER: &str = "900442037690000";
const GOOD_NUMBER: &str = "441234567";
/// How long one sipp call may take before it is a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether Kamailio and the modules the configurations load are installed.
fn kamailio_here() -> bool {
    let modules = [
        "http_client.so",
        "json.so",
        "htable.so",
        "rtimer.so",
        "tm.so",
    ]
    .iter()
    .all(|m| Path::new(MODULES).join(m).exists());
    available(
        have("kamailio") && modules && have("sipp"),
        "kamailio (Debian packages kamailio, kamailio-utils-modules, kamailio-json-modules) and sipp",
    )
}

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/kamailio")
        .join(name)
}

/// A port that was free on 127.0.0.1 a moment ago (UDP). Whoever uses it retries on a clash.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something holds 127.0.0.1:`port` (UDP).
fn bound(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// A define whose value is a string in Kamailio's config language.
fn string_define(name: &str, value: impl std::fmt::Display) -> String {
    format!("{name}=\"{value}\"")
}

/// Lines a child writes, collected by a thread.
fn collect(r: impl std::io::Read + Send + 'static, log: &Arc<Mutex<Vec<String>>>) {
    let log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line);
        }
    });
}

/// Kamailio in the foreground in its own process group, killed (the whole group) on drop.
struct Kamailio {
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts `cfg` with these `-A` defines on a free port, retrying on a clash, and waits until
    /// it answers an OPTIONS ping.
    fn start(cfg: &str, defines: &[String]) -> Kamailio {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_udp_port();
            let mut cmd = Command::new("kamailio");
            cmd.arg("-f")
                .arg(config(cfg))
                .args(["-DD", "-E", "-m", "64", "-M", "16"])
                .arg("-P")
                .arg(dir.path().join("kamailio.pid"))
                .arg("-Y")
                .arg(dir.path())
                .args(["-A", &format!("SP_LISTEN=udp:127.0.0.1:{port}")])
                .args(["-A", "SP_CHILDREN=2"]);
            for d in defines {
                cmd.args(["-A", d]);
            }
            cmd.current_dir(dir.path())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("start kamailio");
            let log = Arc::new(Mutex::new(Vec::new()));
            collect(child.stdout.take().unwrap(), &log);
            collect(child.stderr.take().unwrap(), &log);
            let mut k = Kamailio {
                child: Some(child),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log,
                _dir: dir,
            };
            if k.ready() {
                return k;
            }
            last = k.log_text();
        }
        panic!("kamailio did not start:\n{last}");
    }

    /// Polls with OPTIONS until Kamailio answers 200, or it exits, or the time is up.
    fn ready(&mut self) -> bool {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let local = s.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            n += 1;
            let ping = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:test@{local}>;tag=r{n}\r\n\
                 To: <sip:{addr}>\r\nCall-ID: ready-{n}@test\r\nCSeq: {n} OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                addr = self.addr
            );
            let _ = s.send_to(ping.as_bytes(), self.addr);
            let mut buf = [0u8; 2048];
            if let Ok(len) = s.recv(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200 ") {
                    return true;
                }
            }
        }
        false
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains every one of `parts`.
    fn wait_log(&self, parts: &[&str]) {
        let found = poll(DEFAULT_WAIT, || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| parts.iter().all(|p| l.contains(p)))
        });
        assert!(found, "no log line with {parts:?}:\n{}", self.log_text());
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // Its main process stops the workers on TERM; the group is killed if any is left.
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        poll(Duration::from_secs(5), || {
            c.try_wait().map(|s| s.is_some()).unwrap_or(true)
        });
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A sipp scenario from `tests/data/sipp/`.
fn sipp_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sipp")
        .join(name)
}

/// A sipp UAS on 127.0.0.1 taking `calls` calls, then exiting; killed on drop.
struct Uas {
    child: Option<Child>,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Uas {
    /// sipp cannot listen on port 0: pick a free port, and pick again if sipp lost it.
    fn start(dir: &Path, calls: u32) -> Uas {
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_udp_port();
            let mut child = Command::new("sipp")
                .arg("-sf")
                .arg(sipp_file("uas-answers.xml"))
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-m", &calls.to_string(), "-nostdin", "-timeout", "90s"])
                .arg("-timeout_error")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start sipp");
            let log = Arc::new(Mutex::new(Vec::new()));
            collect(child.stdout.take().unwrap(), &log);
            collect(child.stderr.take().unwrap(), &log);
            let mut exited = false;
            let up = poll(Duration::from_secs(10), || {
                exited = child.try_wait().unwrap().is_some();
                exited || bound(port)
            });
            if up && !exited {
                return Uas {
                    child: Some(child),
                    port,
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = log.lock().unwrap().join("\n");
        }
        panic!("sipp could not listen as a UAS:\n{last}");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for sipp to have taken its calls and exited 0.
    fn finish(mut self) {
        let mut child = self.child.take().unwrap();
        let mut status = None;
        poll(CALL_TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log.lock().unwrap().join("\n");
        assert!(
            status.is_some_and(|s| s.success()),
            "the UAS did not take its calls ({status:?}):\n{log}"
        );
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A sipp scenario, written to `dir`: an INVITE that must be refused with `code`, and its ACK.
fn refused_scenario(dir: &Path, code: u16) -> PathBuf {
    let path = dir.join(format!("refused-{code}.xml"));
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="refused with {code}">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]-[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{code}"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    );
    std::fs::write(&path, xml).unwrap();
    path
}

/// One call with sipp from `source` (its own free port there) to `number` through Kamailio;
/// `refused` names the code it must be refused with, `None` that it must be answered and
/// completed (`tests/data/sipp/uac-call.xml`).
fn call(dir: &Path, k: &Kamailio, source: &str, number: &str, refused: Option<u16>) {
    let what = match refused {
        Some(code) => format!("refused with {code}"),
        None => "answered".to_string(),
    };
    let mut last = String::new();
    for _ in 0..5 {
        let port = UdpSocket::bind(format!("{source}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("sipp");
        cmd.arg(k.addr.to_string())
            .arg("-sf")
            .arg(match refused {
                Some(code) => refused_scenario(dir, code),
                None => sipp_file("uac-call.xml"),
            })
            .args(["-s", number, "-i", source, "-p", &port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
            .current_dir(dir);
        let run = run_tool(&mut cmd, CALL_TIMEOUT);
        if run.status.success() {
            return;
        }
        last = run.text();
        // Someone took the port between the pick and sipp's bind: pick again.
        if !last.contains("bind") {
            break;
        }
    }
    panic!(
        "the call from {source} to {number} was not {what}:\n{last}\nkamailio:\n{}",
        k.log_text()
    );
}

/// The honeypot records `source` dialling `number`; waits until the node lists both.
fn attack(node: &Node, source: &str, number: &str) {
    let s = UdpSocket::bind(format!("{source}:0")).unwrap();
    s.send_to(&options(number, "friendly-scanner", 1), node.udp[0])
        .unwrap();
    let listed = poll(DEFAULT_WAIT, || {
        node.get(&format!("/ip-addresses/{source}")).status == 200
            && node.get(&format!("/numbers/{number}")).status == 200
    });
    assert!(
        listed,
        "the node did not list the attack:\n{}",
        node.log_text()
    );
}

#[test]
fn lookups_answer_one_line_so_http_clients_that_keep_the_first_line_get_it_all() {
    let node = Node::start(&[]);
    attack(&node, ATTACKER, BAD_NUMBER);
    for (path, status) in [
        (format!("/ip-addresses/{ATTACKER}"), 200),
        (format!("/ip-address/{ATTACKER}"), 200),
        (format!("/ip-addresses/{INNOCENT}"), 404),
        ("/ip-addresses/not-an-address".to_string(), 400),
        (format!("/numbers/{BAD_NUMBER}"), 200),
        (format!("/numbers/{GOOD_NUMBER}"), 404),
    ] {
        let r = node.get(&path);
        assert_eq!(r.status, status, "{path}");
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            !body.trim_end_matches('\n').contains(['\n', '\r']),
            "{path}: more than one line: {body:?}"
        );
        r.json();
    }
}

#[test]
fn the_dip_refuses_the_attacker_and_a_dialled_number_and_relays_the_innocent() {
    if !kamailio_here() {
        return;
    }
    let node = Node::start(&[]);
    attack(&node, ATTACKER, BAD_NUMBER);
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-dip.cfg",
        &[
            string_define("SP_API", node.api[0]),
            string_define("UAS", uas.addr()),
        ],
    );
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, BAD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
    k.wait_log(&["refused", ATTACKER, "bad actor"]);
    k.wait_log(&["refused", BAD_NUMBER, "bad number"]);
}

#[test]
fn the_dip_lets_calls_through_when_the_node_is_down() {
    if !kamailio_here() {
        return;
    }
    let mut node = Node::start(&[]);
    let api = node.api[0];
    node.signal("TERM");
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-dip.cfg",
        &[
            string_define("SP_API", api),
            string_define("UAS", uas.addr()),
        ],
    );
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
    k.wait_log(&["address lookup for", INNOCENT, "failed", "call goes on"]);
}

#[test]
fn the_pull_loads_the_since_feed_and_keeps_refusing_when_the_node_is_down() {
    if !kamailio_here() {
        return;
    }
    let mut node = Node::start(&[]);
    attack(&node, ATTACKER, BAD_NUMBER);
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 2);
    let k = Kamailio::start(
        "sentrypeer-pull.cfg",
        &[
            string_define("SP_API", node.api[0]),
            string_define("UAS", uas.addr()),
            "SP_PULL_SECS=1".to_string(),
            "SP_TIMEOUT=1".to_string(),
        ],
    );
    k.wait_log(&["pulled ip-addresses", "added=1", "total=1"]);
    k.wait_log(&["pulled numbers", "added=1", "total=1"]);
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, BAD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);

    // The node goes away: what was loaded still decides, and innocent calls still flow.
    node.signal("TERM");
    k.wait_log(&["pull of ip-addresses failed", "keeping what is loaded"]);
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, BAD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
}

#[test]
fn the_pull_drops_an_address_whose_listing_ended() {
    if !kamailio_here() {
        return;
    }
    let node = Node::start(&["--actor-ttl", "3s"]);
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-pull.cfg",
        &[
            string_define("SP_API", node.api[0]),
            string_define("UAS", uas.addr()),
            "SP_PULL_SECS=1".to_string(),
        ],
    );
    // Attacked once Kamailio pulls, so that it sees the listing begin and end.
    attack(&node, ATTACKER, BAD_NUMBER);
    k.wait_log(&["pulled ip-addresses", "added=1", "total=1"]);
    k.wait_log(&["pulled ip-addresses", "removed=1", "total=0"]);
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, None);
    uas.finish();
}

#[test]
fn the_pull_loads_addresses_with_apibans_v1_form() {
    if !kamailio_here() {
        return;
    }
    let node = Node::start(&["--apiban-key", "kamailio-key"]);
    attack(&node, ATTACKER, BAD_NUMBER);
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-pull.cfg",
        &[
            string_define("SP_API", node.api[0]),
            string_define("UAS", uas.addr()),
            "SP_PULL_SECS=1".to_string(),
            "SP_APIBAN".to_string(),
            string_define("SP_APIBAN_KEY", "kamailio-key"),
        ],
    );
    k.wait_log(&["pulled apiban", "added=1", "total=1"]);
    k.wait_log(&["pulled numbers", "added=1", "total=1"]);
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, BAD_NUMBER, Some(403));
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
}

#[test]
fn the_redirect_set_up_declines_on_the_agents_603_and_relays_on_its_404() {
    if !kamailio_here() {
        return;
    }
    let node = Node::start(&["--agent-listen", "127.0.0.1:0"]);
    attack(&node, ATTACKER, BAD_NUMBER);
    let dir = tempfile::tempdir().unwrap();
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-redirect.cfg",
        &[
            string_define("SP_AGENT", node.agent[0]),
            string_define("UAS", uas.addr()),
        ],
    );
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, Some(603));
    call(dir.path(), &k, INNOCENT, BAD_NUMBER, Some(603));
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
    k.wait_log(&["refused", &format!("bad actor {ATTACKER}")]);
    k.wait_log(&["refused", &format!("bad number {BAD_NUMBER}")]);
    let agent = &node.health()["agent"];
    assert_eq!(agent["declined"], 2, "{agent}");
    assert_eq!(agent["proceeded"], 1, "{agent}");
}

#[test]
fn the_redirect_set_up_sends_the_attacker_to_the_divert_target_on_the_agents_302() {
    if !kamailio_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ivr = Uas::start(dir.path(), 1);
    let divert = format!("sip:ivr@{}", ivr.addr());
    let node = Node::start(&["--agent-listen", "127.0.0.1:0", "--agent-divert", &divert]);
    attack(&node, ATTACKER, BAD_NUMBER);
    let uas = Uas::start(dir.path(), 1);
    let k = Kamailio::start(
        "sentrypeer-redirect.cfg",
        &[
            string_define("SP_AGENT", node.agent[0]),
            string_define("UAS", uas.addr()),
        ],
    );
    // Both calls are answered: the attacker's by the divert target, the innocent's by the UAS.
    call(dir.path(), &k, ATTACKER, GOOD_NUMBER, None);
    ivr.finish();
    call(dir.path(), &k, INNOCENT, GOOD_NUMBER, None);
    uas.finish();
    k.wait_log(&["diverted", ATTACKER, &divert]);
    assert_eq!(node.health()["agent"]["diverted"], 1);
}

#[test]
fn a_forged_in_dialog_invite_is_not_relayed_by_any_set_up() {
    if !kamailio_here() {
        return;
    }
    let node = Node::start(&["--agent-listen", "127.0.0.1:0"]);
    attack(&node, ATTACKER, BAD_NUMBER);
    // Stands where the UAS would: nothing may reach it.
    let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
    uas.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let uas_addr = uas.local_addr().unwrap();
    for cfg in [
        "sentrypeer-dip.cfg",
        "sentrypeer-pull.cfg",
        "sentrypeer-redirect.cfg",
    ] {
        let k = Kamailio::start(
            cfg,
            &[
                string_define("SP_API", node.api[0]),
                string_define("SP_AGENT", node.agent[0]),
                string_define("UAS", uas_addr),
            ],
        );
        // An attacker's INVITE dressed as a re-INVITE: a To-tag and a Route through the proxy.
        let s = UdpSocket::bind(format!("{ATTACKER}:0")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let me = s.local_addr().unwrap();
        let forged = format!(
            "INVITE sip:{BAD_NUMBER}@{uas_addr} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-forged\r\n\
             Route: <sip:{proxy};lr>\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@{me}>;tag=f1\r\nTo: <sip:{BAD_NUMBER}@{uas_addr}>;tag=t1\r\n\
             Call-ID: forged@{ATTACKER}\r\nCSeq: 2 INVITE\r\nContact: <sip:caller@{me}>\r\n\
             Content-Length: 0\r\n\r\n",
            proxy = k.addr
        );
        s.send_to(forged.as_bytes(), k.addr).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).expect("an answer to the forged INVITE");
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("SIP/2.0 404 "), "{cfg}: {answer}");
        assert!(
            uas.recv(&mut buf).is_err(),
            "{cfg} relayed a forged in-dialog INVITE"
        );
    }
}
