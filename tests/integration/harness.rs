//! Starts the real binary on loopback with every port 0, learns the bound addresses from its
//! startup log, and kills it on drop. Waits are polls with a deadline, never sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the binary may take to start (a cold CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for something to appear in the database or API, which should take a
/// second or two. Generous: it costs time only when a test fails, and CI machines are loaded.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

pub struct Node {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub api: Vec<SocketAddr>,
    /// The fraud-check agent's UDP and TCP addresses (`--agent-listen`).
    pub agent: Vec<SocketAddr>,
    pub agent_tcp: Vec<SocketAddr>,
    /// DNS blocklist addresses (UDP and TCP on each), with `--dnsbl-listen`.
    pub dnsbl: Vec<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Options for starting a node.
pub struct NodeOptions<'a> {
    pub args: Vec<String>,
    pub envs: Vec<(&'a str, String)>,
    /// Listen on loopback for SIP (UDP, TCP, TLS) and the API with port 0.
    pub loopback_defaults: bool,
    /// Use this directory (kept by the caller) instead of a fresh one, e.g. to restart a node.
    pub dir: Option<tempfile::TempDir>,
    /// A command the binary is run under, such as `ip netns exec NS` (it must exec the binary,
    /// so that the process started is the node).
    pub prefix: Vec<String>,
}

impl Default for NodeOptions<'_> {
    fn default() -> Self {
        Self {
            args: vec![],
            envs: vec![],
            loopback_defaults: true,
            dir: None,
            prefix: vec![],
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sentrypeer")
}

impl Node {
    pub fn start(args: &[&str]) -> Node {
        Node::start_with(NodeOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    pub fn start_with(opts: NodeOptions<'_>) -> Node {
        let dir = opts.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut cmd = match opts.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.current_dir(dir.path())
            .env_remove("SENTRYPEER_LOG")
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("SENTRYPEER_") {
                cmd.env_remove(k);
            }
        }
        if opts.loopback_defaults {
            cmd.args([
                "--udp-listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ]);
            cmd.args(["-f", "sentrypeer.db"]);
        }
        cmd.args(&opts.args);
        for (k, v) in opts.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the sentrypeer binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let ready = line.contains("Ready.");
                log2.lock().unwrap().push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let log3 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                log3.lock().unwrap().push(format!("stdout: {line}"));
            }
        });
        let mut node = Node {
            child: Some(child),
            dir,
            udp: vec![],
            tcp: vec![],
            tls: vec![],
            api: vec![],
            agent: vec![],
            agent_tcp: vec![],
            dnsbl: vec![],
            log,
        };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            panic!("sentrypeer did not become ready:\n{}", node.log_text());
        }
        for line in node.log.lock().unwrap().iter() {
            if !line.contains("Listening.") {
                continue;
            }
            let (Some(t), Some(a)) = (field(line, "transport"), field(line, "addr")) else {
                continue;
            };
            // P2P addresses are multiaddrs, read by `Node::p2p`.
            let Ok(addr) = a.parse::<SocketAddr>() else {
                continue;
            };
            match t.as_str() {
                "UDP" => node.udp.push(addr),
                "TCP" => node.tcp.push(addr),
                "TLS" => node.tls.push(addr),
                "API" => node.api.push(addr),
                "AGENT" => node.agent.push(addr),
                "AGENT-TCP" => node.agent_tcp.push(addr),
                "DNSBL" => node.dnsbl.push(addr),
                _ => {}
            }
        }
        node
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("sentrypeer.db")
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal by name (TERM, INT, KILL) and waits for the exit.
    pub fn signal(&mut self, sig: &str) -> ExitStatus {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
        self.wait_exit(Duration::from_secs(60))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "sentrypeer did not exit:\n{}",
                self.log_text()
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// The node's own database, read-only.
    pub fn db(&self) -> rusqlite::Connection {
        open_db(&self.db_path())
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Waits until `SELECT count(*) FROM honey` reaches `n` and the summaries count every row
    /// (lookups, lists and the bad-actor set see them: under a stream of big batches they are
    /// written up to 250 ms after the rows).
    pub fn wait_rows(&self, n: i64) -> i64 {
        let mut last = 0;
        let mut summarised = true;
        let ok = poll(DEFAULT_WAIT, || {
            last = self.count("SELECT count(*) FROM honey");
            summarised = self.count(
                "SELECT coalesce((SELECT max(honey_id) FROM honey), 0)
                   <= coalesce((SELECT last_honey_id FROM sentrypeer_summary_state), 0)",
            ) == 1;
            last >= n && summarised
        });
        assert!(
            ok,
            "expected {n} rows and their summaries, have {last} rows (summarised: {summarised})\n{}",
            self.log_text()
        );
        last
    }

    /// A GET against the API.
    pub fn get(&self, path: &str) -> Response {
        http(self.api[0], "GET", path)
    }

    pub fn send_udp(&self, msg: &[u8]) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(msg, self.udp[0]).unwrap();
        s
    }

    pub fn health(&self) -> serde_json::Value {
        let r = self.get("/health-check");
        assert_eq!(r.status, 200);
        r.json()
    }

    /// The node's last log line, written when shutdown completes.
    fn final_line(&self) -> String {
        let log = self.log_text();
        log.lines()
            .rev()
            .find(|l| l.contains("Shutdown complete."))
            .unwrap_or_else(|| panic!("no final line:\n{log}"))
            .to_string()
    }

    /// `key=N` from the final log line (e.g. `events_accepted`).
    pub fn final_figure(&self, key: &str) -> i64 {
        number_after(&self.final_line(), key)
    }

    /// `key=N` from one output's part of the final log line (`sqlite: written=… dropped=…;`).
    pub fn output_figure(&self, output: &str, key: &str) -> i64 {
        let line = self.final_line();
        let part = line
            .split(&format!("{output}: "))
            .nth(1)
            .unwrap_or_else(|| panic!("no {output} in {line}"));
        number_after(part.split(';').next().unwrap_or(""), key)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.health()["counters"][name].as_u64().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn open_db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Polls `f` until it is true or the time is up.
pub fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(25));
    }
}

/// `key=value` from a log line (value up to the next space, quotes stripped).
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = line.get(at..)?;
    let v = rest.split_whitespace().next()?;
    Some(v.trim_matches('"').to_string())
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 client (Connection: close; chunked bodies decoded).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    http_on(TcpStream::connect(addr).unwrap(), addr, method, path)
}

/// [`http`] from a chosen local address (for example another loopback address than 127.0.0.1).
pub fn http_from(local: &str, addr: SocketAddr, method: &str, path: &str) -> Response {
    let local: SocketAddr = format!("{local}:0").parse().unwrap();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&addr.into()).unwrap();
    http_on(s.into(), addr, method, path)
}

fn http_on(s: TcpStream, addr: SocketAddr, method: &str, path: &str) -> Response {
    http_full(s, addr, method, path, &[], b"")
}

/// An HTTP request with extra headers and a body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    http_full(
        TcpStream::connect(addr).unwrap(),
        addr,
        method,
        path,
        headers,
        body,
    )
}

fn http_full(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

pub fn testdata(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// An OPTIONS probe as sipvicious sends it, with a chosen number and agent.
pub fn options(number: &str, agent: &str, branch: u64) -> Vec<u8> {
    format!(
        "OPTIONS sip:{number}@198.51.100.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         To: \"{number}\" <sip:{number}@198.51.100.10>\r\n\
         From: \"{number}\" <sip:{number}@198.51.100.10>;tag=6{branch}\r\n\
         User-Agent: {agent}\r\n\
         Call-ID: {branch}-call\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Whether a command is on PATH (the real-tool tests need CI to have installed them).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Fails loudly when a tool CI must install is missing, instead of passing without testing.
pub fn require(tool: &str) {
    assert!(
        have(tool),
        "{tool} is not installed: run .ci/run's apt-get step (or apt-get install it)"
    );
}

/// What a bounded tool run left behind.
pub struct ToolRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// Both streams, for assertion messages and for tools that log to stderr.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs a command to completion, killing it (and failing the test) after `timeout`.
pub fn run_tool(cmd: &mut Command, timeout: Duration) -> ToolRun {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = None;
    poll(timeout, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} did not finish within {timeout:?}:\n{}\n{}",
            out.join().unwrap(),
            err.join().unwrap()
        );
    };
    ToolRun {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

impl Node {
    /// The peer-to-peer multiaddrs the node logged before it was ready (`transport=P2P`).
    #[cfg_attr(not(feature = "p2p"), allow(dead_code))]
    pub fn p2p(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Listening.") && field(l, "transport").as_deref() == Some("P2P"))
            .filter_map(|l| field(l, "addr"))
            .collect()
    }
}

/// The number after `key=` in `text`.
fn number_after(text: &str, key: &str) -> i64 {
    let at = text
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + key.len()
        + 1;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether something a test needs is there. Under CI (`CI` set), which must install it, its
/// absence fails the test; elsewhere the test is skipped and says why.
pub fn available(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing: .ci/install-deps installs it"
        );
        eprintln!("SKIPPED: {what} is not available here");
    }
    ok
}

/// A node on the peer network on loopback (TCP on port 0, no mDNS), bootstrapping from each of
/// `bootstrap`, with `extra` arguments.
#[cfg(feature = "p2p")]
pub fn p2p_node_from(dir: Option<tempfile::TempDir>, bootstrap: &[&Node], extra: &[&str]) -> Node {
    let mut args: Vec<String> = [
        "-p",
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--p2p-no-mdns",
    ]
    .map(String::from)
    .to_vec();
    for b in bootstrap {
        args.push("-b".into());
        args.push(b.p2p()[0].clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let node = Node::start_with(NodeOptions {
        args,
        dir,
        ..Default::default()
    });
    assert!(
        !node.p2p().is_empty(),
        "no P2P address:\n{}",
        node.log_text()
    );
    node
}

/// A node's peer id, from its health check.
#[cfg(feature = "p2p")]
pub fn peer_id(n: &Node) -> String {
    n.health()["peer_id"].as_str().unwrap().to_string()
}
