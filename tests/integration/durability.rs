//! Under a 50,000 probes/s run: SIGTERM loses nothing the node accepted, and `kill -9` leaves a
//! sound database that reopens, missing at most the batch that was being written.

use std::process::{Child, Command, Stdio};

use crate::harness::*;

/// Probes per second in these runs (the target rate).
const RATE: u64 = 50_000;
/// Probes sent in all: three seconds at that rate.
const COUNT: u64 = 150_000;

fn loadgen(node: &Node) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sentrypeer-loadgen"))
        .args([
            "send",
            "--target",
            &node.udp[0].to_string(),
            "--rate",
            &RATE.to_string(),
            "--count",
            &COUNT.to_string(),
            "--sources",
            "32",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start sentrypeer-loadgen")
}

#[test]
fn sigterm_in_a_50000_per_second_run_keeps_every_accepted_probe_in_the_database_and_json_log() {
    let mut node = Node::start(&["-j"]);
    let mut generator = loadgen(&node);
    assert!(
        poll(DEFAULT_WAIT, || node.counter("events_accepted") >= 20_000),
        "{}",
        node.log_text()
    );
    let status = node.signal("TERM");
    let _ = generator.kill();
    let _ = generator.wait();
    assert!(status.success(), "exit {status:?}\n{}", node.log_text());

    let accepted = node.final_figure("events_accepted");
    let (written, dropped, failed) = (
        node.output_figure("sqlite", "written"),
        node.output_figure("sqlite", "dropped"),
        node.output_figure("sqlite", "failed"),
    );
    let rows = node.count("SELECT count(*) FROM honey");
    assert!(accepted >= 20_000);
    assert_eq!(failed, 0);
    // The queue holds over a second of this rate, and intake stopped well within it.
    assert_eq!(dropped, 0, "the database queue dropped probes");
    assert_eq!(
        rows, written,
        "the database holds exactly what its output wrote"
    );
    assert_eq!(
        rows,
        accepted - dropped,
        "the drop counter says exactly what did not reach the database"
    );
    let json_lines = std::fs::read_to_string(node.path("sentrypeer_json.log"))
        .unwrap()
        .lines()
        .count() as i64;
    assert_eq!(
        json_lines,
        accepted - node.output_figure("json_log", "dropped"),
        "and the same for the JSON log"
    );
    let distinct: i64 = node.count("SELECT count(DISTINCT event_uuid) FROM honey");
    assert_eq!(distinct, rows, "no event written twice");
}

#[test]
fn kill_9_in_a_50000_per_second_run_leaves_a_sound_database_that_reopens() {
    let mut node = Node::start(&[]);
    let mut generator = loadgen(&node);
    assert!(
        poll(DEFAULT_WAIT, || node.counter("events_accepted") >= 30_000),
        "{}",
        node.log_text()
    );
    // What the database output had committed just before the kill can never be lost.
    let committed = node.health()["outputs"]["sqlite"]["written"]
        .as_i64()
        .unwrap();
    assert!(committed > 0);
    let status = node.signal("KILL");
    let _ = generator.kill();
    let _ = generator.wait();
    assert!(!status.success());

    let rows;
    {
        let db = node.db();
        let ok: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        rows = node.count("SELECT count(*) FROM honey");
    }
    assert!(
        rows >= committed,
        "{rows} rows, but {committed} had been committed"
    );

    // It reopens, serves, and its summaries agree with its events.
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    let again = Node::start_with(NodeOptions {
        dir: Some(dir),
        ..Default::default()
    });
    let total: i64 = again.count("SELECT coalesce(sum(seen_count), 0) FROM sentrypeer_numbers");
    assert_eq!(total, rows, "summaries match the events after the crash");
    let v = again.get("/numbers").json();
    assert!(v["called_numbers_total"].as_i64().unwrap() > 0);
    again.send_udp(&options("777", "after-crash", 1));
    again.wait_rows(rows + 1);
}
