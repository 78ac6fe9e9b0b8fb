//! Log rotation: SIGHUP reopens the JSON log at its path and never stops the node, so logrotate
//! can move the file away and signal the node (no copytruncate). Nothing accepted is lost,
//! repeated or split across the two files, and the shipped logrotate file works with the real tool.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

/// The JSON log's name inside the node's directory.
const LOG: &str = "sentrypeer_json.log";
/// The line the node logs for each reopen that took effect.
const REOPENED: &str = "Reopened the JSON log.";
/// The shipped logrotate file and the path it rotates.
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/logrotate/sentrypeer");
const SHIPPED_PATH: &str = "/var/log/sentrypeer/sentrypeer_json.log";
/// How long one run of logrotate may take.
const LOGROTATE_TIMEOUT: Duration = Duration::from_secs(30);

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Waits until the node has logged `n` reopens.
fn wait_reopened(node: &Node, n: usize) {
    let ok = poll(DEFAULT_WAIT, || {
        node.log_text().matches(REOPENED).count() >= n
    });
    assert!(ok, "expected {n} reopens:\n{}", node.log_text());
}

/// Complete lines in a file being written (0 when it does not exist).
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn wait_lines(node: &Node, path: &Path, n: usize) {
    let ok = poll(DEFAULT_WAIT, || complete_lines(path) >= n);
    assert!(
        ok,
        "expected {n} lines in {}, have {}\n{}",
        path.display(),
        complete_lines(path),
        node.log_text()
    );
}

/// Every line of a finished JSON log, each required to be one whole JSON object.
fn objects(text: &str, name: &str) -> Vec<serde_json::Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{name} ends in a partial line"
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{name}: a line that is not one JSON object ({e}): {l}"))
        })
        .collect()
}

fn read_objects(path: &Path) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    objects(&text, &path.display().to_string())
}

fn field_of(objects: &[serde_json::Value], key: &str) -> Vec<String> {
    objects
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

fn numbers(path: &Path) -> Vec<String> {
    field_of(&read_objects(path), "called_number")
}

/// Sends probes over one TCP connection and waits for each reply: an answered probe is an
/// accepted event, and the pace is the node's own, so its queues never overflow.
struct Prober {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Prober {
    fn connect(node: &Node) -> Prober {
        let stream = TcpStream::connect(node.tcp[0]).unwrap();
        stream.set_read_timeout(Some(DEFAULT_WAIT)).unwrap();
        Prober {
            stream,
            pending: Vec::new(),
        }
    }

    fn probe(&mut self, branch: u64) {
        self.stream
            .write_all(&options(
                &format!("{}", 2000 + branch % 1000),
                "rotation",
                branch,
            ))
            .unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(len) = reply_len(&self.pending) {
                let reply = String::from_utf8_lossy(&self.pending[..len]).to_string();
                assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
                self.pending.drain(..len);
                return;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .expect("a reply within the wait");
            assert!(n > 0, "the node closed the connection");
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The length of the first whole SIP reply in `buf`, head and body.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let body: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0);
    (buf.len() >= end + body).then_some(end + body)
}

#[test]
fn sighup_on_an_idle_node_reopens_the_json_log_and_the_node_keeps_answering() {
    let mut node = Node::start(&["-l", LOG]);
    let path = node.path(LOG);
    let rotated = node.path(&format!("{LOG}.1"));
    node.send_udp(&options("100", "before", 1));
    wait_lines(&node, &path, 1);
    std::fs::rename(&path, &rotated).unwrap();

    kill(node.pid(), "HUP");
    wait_reopened(&node, 1);
    assert!(path.exists(), "the reopen creates the new file at once");
    assert_eq!(node.health()["status"], "OK");
    node.send_udp(&options("200", "after", 2));
    node.wait_rows(2);
    wait_lines(&node, &path, 1);

    let status = node.signal("TERM");
    assert!(status.success(), "{status:?}\n{}", node.log_text());
    assert_eq!(numbers(&rotated), ["100"]);
    assert_eq!(
        numbers(&path),
        ["200"],
        "an event after the SIGHUP is in the new file"
    );
    assert_eq!(node.log_text().matches(REOPENED).count(), 1);
}

#[test]
fn sighup_without_a_json_log_never_stops_the_node() {
    let mut node = Node::start(&[]);
    // A pending SIGHUP is delivered before a later SIGTERM: if it stopped the node, the exit
    // would be by the signal, not 0 after a drain.
    kill(node.pid(), "HUP");
    let status = node.signal("TERM");
    assert!(status.success(), "{status:?}\n{}", node.log_text());
    assert!(node.log_text().contains("Shutdown complete."));
}

#[test]
fn a_rotation_under_load_puts_every_event_in_exactly_one_file_with_no_split_line() {
    let mut node = Node::start(&["-r", "-l", LOG]);
    let path = node.path(LOG);
    let rotated = node.path(&format!("{LOG}.1"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut prober = Prober::connect(&node);
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                prober.probe(sent);
                sent += 1;
            }
            sent
        })
    };

    wait_lines(&node, &path, 500);
    std::fs::rename(&path, &rotated).unwrap();
    kill(node.pid(), "HUP");
    wait_reopened(&node, 1);
    wait_lines(&node, &path, 500);
    stop.store(true, Ordering::Relaxed);
    let answered = sender.join().unwrap();
    let status = node.signal("TERM");
    assert!(status.success(), "{status:?}\n{}", node.log_text());

    let old = field_of(&read_objects(&rotated), "event_uuid");
    let new = field_of(&read_objects(&path), "event_uuid");
    assert!(!old.is_empty() && !new.is_empty(), "both files hold events");
    let mut in_files = HashSet::new();
    for uuid in old.iter().chain(&new) {
        assert!(in_files.insert(uuid.clone()), "{uuid} written twice");
    }
    let stored: HashSet<String> = node
        .db()
        .prepare("SELECT event_uuid FROM honey")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let accepted = node.final_figure("events_accepted");
    assert_eq!(
        stored.len() as i64,
        accepted,
        "every accepted event is stored"
    );
    assert!(
        accepted as u64 >= answered,
        "every answered probe was accepted"
    );
    assert_eq!(
        in_files, stored,
        "every accepted event is in one of the files"
    );
    assert_eq!(node.output_figure("json_log", "dropped"), 0);
    assert_eq!(node.output_figure("json_log", "failed"), 0);
}

/// The shipped file, rotating `log` and signalling `pid` instead of the service.
fn shipped_config_for(log: &Path, pid: u32) -> String {
    let shipped = std::fs::read_to_string(SHIPPED).unwrap();
    assert!(shipped.contains(SHIPPED_PATH), "{shipped}");
    let config = shipped.replace(SHIPPED_PATH, log.to_str().unwrap());
    let start = config.find("postrotate\n").expect("a postrotate script") + "postrotate\n".len();
    let end = config.find("endscript").expect("an endscript");
    assert!(start < end, "{shipped}");
    format!(
        "{}        kill -HUP {pid}\n    {}",
        &config[..start],
        &config[end..]
    )
}

fn logrotate(args: &[&str], config: &Path) -> ToolRun {
    let run = run_tool(
        Command::new("logrotate").args(args).arg(config),
        LOGROTATE_TIMEOUT,
    );
    assert!(
        run.status.success() && !run.text().contains("error:"),
        "logrotate {args:?} failed: {:?}\n{}",
        run.status,
        run.text()
    );
    run
}

#[test]
fn logrotate_with_the_shipped_directives_rotates_a_running_nodes_json_log() {
    require("logrotate");
    require("gzip");
    let mut node = Node::start(&["-l", LOG]);
    let path = node.path(LOG);
    let tool_dir = tempfile::tempdir().unwrap();
    let config = tool_dir.path().join("sentrypeer");
    std::fs::write(&config, shipped_config_for(&path, node.pid())).unwrap();
    let state = tool_dir.path().join("state");
    let state = state.to_str().unwrap();

    node.send_udp(&options("100", "first", 1));
    wait_lines(&node, &path, 1);
    logrotate(&["-f", "-s", state], &config);
    wait_reopened(&node, 1);
    node.send_udp(&options("200", "second", 2));
    wait_lines(&node, &path, 1);
    // The second rotation compresses the first (delaycompress).
    logrotate(&["-f", "-s", state], &config);
    wait_reopened(&node, 2);
    node.send_udp(&options("300", "third", 3));
    wait_lines(&node, &path, 1);

    let status = node.signal("TERM");
    assert!(status.success(), "{status:?}\n{}", node.log_text());
    let oldest = node.path(&format!("{LOG}.2.gz"));
    let unzipped = run_tool(
        Command::new("gzip").arg("-dc").arg(&oldest),
        LOGROTATE_TIMEOUT,
    );
    assert!(unzipped.status.success(), "{}", unzipped.text());
    let oldest_numbers = field_of(&objects(&unzipped.stdout, "the .2.gz"), "called_number");
    assert_eq!(oldest_numbers, ["100"]);
    assert_eq!(numbers(&node.path(&format!("{LOG}.1"))), ["200"]);
    assert_eq!(numbers(&path), ["300"]);
}

#[test]
fn the_shipped_logrotate_file_parses_without_error() {
    require("logrotate");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = logrotate(&["-d", "-s", state.to_str().unwrap()], Path::new(SHIPPED));
    assert!(run.text().contains(SHIPPED_PATH), "{}", run.text());
}
