//! The bad-actor set's exports, loaded by the real consumers: `nft` and `ipset` (in a private
//! network namespace, never the host's), the `stix2` and PyMISP libraries, and an APIBAN client;
//! and the set's rule seen through them: expiry, the allowlist, scopes and bad parameters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// The scripts under `tests/consumers/`.
fn consumer(script: &str) -> String {
    format!("{}/tests/consumers/{script}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether the Python modules a consumer script imports are installed.
fn python_with(modules: &[&str]) -> bool {
    let imports = modules.join(", ");
    let ok = have("python3")
        && Command::new("python3")
            .args(["-c", &format!("import {imports}")])
            .output()
            .is_ok_and(|o| o.status.success());
    available(
        ok,
        &format!("python3 with {imports} (pip install -r tests/requirements.txt)"),
    )
}

/// Whether this machine can make a private network namespace and run `tools` in it.
fn namespace_with(tools: &[&str]) -> bool {
    for tool in tools {
        if !available(
            have(tool),
            &format!("{tool} (apt-get install nftables ipset)"),
        ) {
            return false;
        }
    }
    let ok = have("unshare")
        && Command::new("unshare")
            .args(["-n", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
    available(
        ok,
        "a private network namespace (unshare -n, which needs root or CAP_SYS_ADMIN)",
    )
}

/// Runs a bash script in a network namespace of its own, so nothing it does to nftables or
/// ipset touches the host; fails the test with the script's output if it fails.
fn in_namespace(script: &str, dir: &Path) -> String {
    let run = run_tool(
        Command::new("unshare")
            .args(["-n", "bash", "-euo", "pipefail", "-c", script, "ns"])
            .arg(dir),
        Duration::from_secs(120),
    );
    assert!(
        run.status.success(),
        "namespace script failed:\n{}",
        run.text()
    );
    run.stdout
}

/// The sections of a script's output, each after a `=== NAME` line.
fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("=== ") {
            name = n.to_string();
            out.insert(name.clone(), String::new());
        } else if let Some(s) = out.get_mut(&name) {
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}

/// Every address named in a text, with the word after `timeout` that follows it, if any.
fn addresses_in(text: &str) -> BTreeMap<String, Option<String>> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '='))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = BTreeMap::new();
    for (i, w) in words.iter().enumerate() {
        if w.parse::<IpAddr>().is_ok() {
            let timeout = (words.get(i + 1) == Some(&"timeout"))
                .then(|| words.get(i + 2).map(|t| t.to_string()))
                .flatten();
            out.insert(w.to_string(), timeout);
        }
    }
    out
}

/// Seconds in an nft time (`1h`, `59m58s`, `2s500ms`).
fn nft_secs(t: &str) -> u64 {
    let mut total_ms = 0u64;
    let mut n = 0u64;
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            n = n * 10 + u64::from(d);
            continue;
        }
        let unit_ms = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1000,
            _ => panic!("not an nft time: {t}"),
        };
        total_ms += n * unit_ms;
        n = 0;
    }
    total_ms / 1000
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends one probe from `source` (a loopback address: never taken for the node's own).
fn probe_from(node: &Node, source: &str, number: &str, n: u64) {
    let s = UdpSocket::bind(format!("{source}:0")).unwrap();
    s.send_to(&options(number, "blocklist-test", n), node.udp[0])
        .unwrap();
}

/// One address or number as written straight into the database.
struct Seed<'a> {
    key: &'a str,
    /// Seen by this node at this time (ms).
    local_ms: Option<i64>,
    /// Listed on peers' word from this time (ms), with these authors' reports.
    peers: Option<(i64, &'a [&'a str])>,
}

impl<'a> Seed<'a> {
    fn local(key: &'a str, at: i64) -> Self {
        Seed {
            key,
            local_ms: Some(at),
            peers: None,
        }
    }
}

/// Writes listed addresses into a stopped node's database as the writer would have: facts,
/// announced expiry and a change sequence number each, the counter moved past them.
fn seed(db: &Path, rows: &[Seed<'_>], ttl_ms: i64) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    let tx = c.transaction().unwrap();
    let mut seq: i64 = tx
        .query_row(
            "SELECT change_seq FROM sentrypeer_actor_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for row in rows {
        seq += 1;
        let seen = row
            .local_ms
            .into_iter()
            .chain(row.peers.map(|p| p.0))
            .max()
            .unwrap();
        tx.execute(
            "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count, first_seen_ms,
               last_seen_ms, local_last_ms, corroborated_ms, announced_until_ms, change_seq)
             VALUES (?1, strftime('%Y-%m-%d %H:%M:%f000000', ?2 / 1000.0, 'unixepoch'), 1, ?2, ?2,
               ?3, ?4, ?5, ?6)",
            rusqlite::params![
                row.key,
                seen,
                row.local_ms,
                row.peers.map(|p| p.0),
                seen + ttl_ms,
                seq
            ],
        )
        .unwrap();
        for author in row.peers.map_or(&[][..], |p| p.1) {
            tx.execute(
                "INSERT INTO sentrypeer_actor_reports (kind, key, author, last_ms) VALUES (0, ?1, ?2, ?3)",
                rusqlite::params![row.key, author, seen],
            )
            .unwrap();
        }
    }
    tx.execute(
        "UPDATE sentrypeer_actor_state SET change_seq = ?1 WHERE id = 1",
        [seq],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Node {
    Node::start_with(NodeOptions {
        args: args.iter().map(|s| s.to_string()).collect(),
        dir: Some(dir),
        ..Default::default()
    })
}

/// A node started with `args` on a database holding `rows` (written while it was stopped, after
/// a first start made the database and recorded the rule). `allow` is `allow.txt`'s content.
fn seeded(args: &[&str], rows: &[Seed<'_>], ttl_ms: i64, allow: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow.txt"), allow).unwrap();
    let mut node = start_in(dir, args);
    assert!(node.signal("TERM").success(), "{}", node.log_text());
    seed(&node.db_path(), rows, ttl_ms);
    let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
    start_in(dir, args)
}

/// `GET /blocklist/{what}?{query}`: the body and the cursor it carries.
fn export(node: &Node, what: &str, query: &str) -> (String, u64) {
    let r = node.get(&format!("/blocklist/{what}?{query}"));
    assert_eq!(
        r.status,
        200,
        "{what}?{query}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let cursor = r
        .header("x-sentrypeer-cursor")
        .unwrap_or_else(|| panic!("{what}?{query} has no cursor"))
        .parse()
        .unwrap();
    (String::from_utf8(r.body).unwrap(), cursor)
}

/// `sentrypeer [node_args] -f DB export ARGS`, from the node's directory beside it: the output and
/// the cursor it printed on standard error.
fn export_cli(node: &Node, node_args: &[&str], args: &[&str]) -> (String, u64) {
    let mut cmd = Command::new(bin());
    cmd.current_dir(node.dir.path())
        .env("XDG_CONFIG_HOME", node.dir.path())
        .env_remove("SENTRYPEER_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("SENTRYPEER_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(node_args)
        .arg("-f")
        .arg(node.db_path())
        .arg("export")
        .args(args);
    let run = run_tool(&mut cmd, Duration::from_secs(60));
    assert!(run.status.success(), "export {args:?}:\n{}", run.text());
    let cursor = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("cursor: "))
        .unwrap_or_else(|| panic!("no cursor on stderr:\n{}", run.stderr))
        .trim()
        .parse()
        .unwrap();
    (run.stdout, cursor)
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_string).collect()
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls until `since=cursor` (plain) holds every line of `want`, and returns its lines.
fn wait_changes(
    node: &Node,
    what: &str,
    extra: &str,
    cursor: u64,
    want: &[&str],
) -> BTreeSet<String> {
    let mut last = BTreeSet::new();
    let ok = poll(DEFAULT_WAIT, || {
        last = lines(&export(node, what, &format!("format=plain&since={cursor}{extra}")).0);
        want.iter().all(|w| last.contains(*w))
    });
    assert!(
        ok,
        "since={cursor} never held {want:?}; last {last:?}\n{}",
        node.log_text()
    );
    last
}

fn hangup(node: &Node) {
    let ok = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

const HOUR_MS: i64 = 3_600_000;
const HOUR_ARGS: [&str; 4] = ["--actor-ttl", "1h", "--allow-file", "allow.txt"];

/// A node whose set changes after a full export: three IPv4 and two IPv6 addresses listed at
/// the start; then 127.0.0.9 is listed, 127.0.0.10 listed and allowlisted, and 203.0.113.2 and
/// 2001:db8::2 allowlisted (SIGHUP). Returns the node, the full export in `format` (from the
/// API and from `sentrypeer export`) and the `since` export of what changed after it.
struct Churn {
    node: Node,
    full: String,
    cli_full: String,
    since: String,
}

fn churn(query: &str, cli: &[&str]) -> Churn {
    let now = now_ms();
    let rows: Vec<Seed<'_>> = [
        "203.0.113.1",
        "203.0.113.2",
        "203.0.113.3",
        "2001:db8::1",
        "2001:db8::2",
    ]
    .into_iter()
    .map(|k| Seed::local(k, now))
    .collect();
    let node = seeded(&HOUR_ARGS, &rows, HOUR_MS, "# nothing yet\n");
    let (full, cursor) = export(&node, "ip-addresses", query);
    let (cli_full, cli_cursor) = export_cli(&node, &HOUR_ARGS, cli);
    assert_eq!(cli_cursor, cursor);
    probe_from(&node, "127.0.0.9", "100", 1);
    probe_from(&node, "127.0.0.10", "100", 2);
    node.wait_rows(2);
    std::fs::write(
        node.path("allow.txt"),
        "203.0.113.2\n2001:db8::2\n127.0.0.10\n",
    )
    .unwrap();
    hangup(&node);
    let changes = wait_changes(
        &node,
        "ip-addresses",
        "",
        cursor,
        &["+127.0.0.9", "-127.0.0.10", "-203.0.113.2", "-2001:db8::2"],
    );
    assert_eq!(changes.len(), 4, "only what changed: {changes:?}");
    let (since, _) = export(&node, "ip-addresses", &format!("{query}&since={cursor}"));
    Churn {
        node,
        full,
        cli_full,
        since,
    }
}

#[test]
fn nft_loads_the_full_and_since_exports_into_its_sets_in_a_private_namespace() {
    if !namespace_with(&["nft"]) {
        return;
    }
    let c = churn("format=nft", &["--format", "nft"]);
    let dir = c.node.dir.path();
    std::fs::write(dir.join("full.nft"), &c.full).unwrap();
    std::fs::write(dir.join("cli.nft"), &c.cli_full).unwrap();
    std::fs::write(dir.join("since.nft"), &c.since).unwrap();
    assert!(
        c.since
            .contains("delete element inet sentrypeer bad_actors_v4 { 127.0.0.10 }"),
        "{}",
        c.since
    );
    let out = in_namespace(
        r#"cd "$1"
        nft -c -f cli.nft
        nft -c -f full.nft
        nft -f full.nft
        echo "=== full v4"; nft list set inet sentrypeer bad_actors_v4
        echo "=== full v6"; nft list set inet sentrypeer bad_actors_v6
        nft -c -f since.nft
        nft -f since.nft
        echo "=== since v4"; nft list set inet sentrypeer bad_actors_v4
        echo "=== since v6"; nft list set inet sentrypeer bad_actors_v6
        # Loaded again, the same changes still apply (removals of absent elements included).
        nft -f since.nft
        echo "=== again v4"; nft list set inet sentrypeer bad_actors_v4"#,
        dir,
    );
    let s = sections(&out);
    let set = |name: &str| addresses_in(&s[name]);
    let check = |name: &str, want: &[&str]| {
        let got = set(name);
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            set_of(want),
            "{name}:\n{out}"
        );
        for (ip, timeout) in &got {
            let secs = nft_secs(
                timeout
                    .as_deref()
                    .unwrap_or_else(|| panic!("{ip} has no timeout:\n{out}")),
            );
            assert!(
                (3000..=3600).contains(&secs),
                "{ip} timeout {secs}s:\n{out}"
            );
            assert!(s[name].contains("expires"), "{name}:\n{out}");
        }
    };
    check("full v4", &["203.0.113.1", "203.0.113.2", "203.0.113.3"]);
    check("full v6", &["2001:db8::1", "2001:db8::2"]);
    check("since v4", &["127.0.0.9", "203.0.113.1", "203.0.113.3"]);
    check("since v6", &["2001:db8::1"]);
    check("again v4", &["127.0.0.9", "203.0.113.1", "203.0.113.3"]);
}

#[test]
fn ipset_restores_the_full_and_since_exports_in_a_private_namespace() {
    if !namespace_with(&["ipset"]) {
        return;
    }
    // ipset keeps its sets in the kernel module; a sandbox without it cannot make one.
    let can = Command::new("unshare")
        .args(["-n", "ipset", "create", "probe", "hash:ip", "timeout", "10"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available(can, "ipset sets in a namespace (the ip_set kernel module)") {
        return;
    }
    let c = churn(
        "format=ipset&set=sp_test",
        &["--format", "ipset", "--set", "sp_test"],
    );
    let dir = c.node.dir.path();
    std::fs::write(dir.join("full.ipset"), &c.full).unwrap();
    std::fs::write(dir.join("cli.ipset"), &c.cli_full).unwrap();
    std::fs::write(dir.join("since.ipset"), &c.since).unwrap();
    let out = in_namespace(
        r#"cd "$1"
        ipset restore < cli.ipset
        ipset destroy sp_test; ipset destroy sp_test6
        ipset restore < full.ipset
        echo "=== full v4"; ipset list sp_test
        echo "=== full v6"; ipset list sp_test6
        ipset restore < since.ipset
        echo "=== since v4"; ipset list sp_test
        echo "=== since v6"; ipset list sp_test6
        ipset restore < since.ipset
        echo "=== again v4"; ipset list sp_test"#,
        dir,
    );
    let s = sections(&out);
    let check = |name: &str, want: &[&str]| {
        let members = s[name]
            .split("Members:")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}:\n{out}"));
        let got = addresses_in(members);
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            set_of(want),
            "{name}:\n{out}"
        );
        for (ip, timeout) in &got {
            let secs: u64 = timeout
                .as_deref()
                .unwrap_or_else(|| panic!("{ip}:\n{out}"))
                .parse()
                .unwrap();
            assert!((3000..=3600).contains(&secs), "{ip} timeout {secs}:\n{out}");
        }
        assert!(
            s[name].contains("timeout 3600"),
            "the set's default timeout is the TTL:\n{out}"
        );
    };
    check("full v4", &["203.0.113.1", "203.0.113.2", "203.0.113.3"]);
    check("full v6", &["2001:db8::1", "2001:db8::2"]);
    check("since v4", &["127.0.0.9", "203.0.113.1", "203.0.113.3"]);
    check("since v6", &["2001:db8::1"]);
    check("again v4", &["127.0.0.9", "203.0.113.1", "203.0.113.3"]);
}

/// Runs `tests/consumers/stix_check.py` on a bundle: each indicator's address, `valid_until` and
/// whether it is revoked.
fn stix_check(node: &Node, name: &str, bundle: &str) -> BTreeMap<String, (Option<String>, bool)> {
    let path = node.path(name);
    std::fs::write(&path, bundle).unwrap();
    let run = run_tool(
        Command::new("python3")
            .arg(consumer("stix_check.py"))
            .arg(&path),
        Duration::from_secs(120),
    );
    assert!(
        run.status.success(),
        "stix2 refused {name}:\n{}\n{bundle}",
        run.text()
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    v["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["address"].as_str().unwrap().to_string(),
                (
                    i["valid_until"].as_str().map(str::to_string),
                    i["revoked"].as_bool().unwrap(),
                ),
            )
        })
        .collect()
}

/// The indicator for `address` in a STIX bundle.
fn indicator(bundle: &str, address: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(bundle).unwrap();
    let pattern = format!("'{address}']");
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pattern"].as_str().is_some_and(|p| p.ends_with(&pattern)))
        .unwrap_or_else(|| panic!("no indicator for {address}"))
        .clone()
}

#[test]
fn stix2_parses_the_bundle_with_no_custom_content_and_every_indicator_validates() {
    if !python_with(&["stix2", "stix2patterns"]) {
        return;
    }
    let now = now_ms();
    let rows = [
        Seed::local("203.0.113.20", now),
        Seed::local("2001:db8::20", now - 60_000),
    ];
    let node = seeded(&HOUR_ARGS, &rows, HOUR_MS, "");
    probe_from(&node, "127.0.0.21", "100", 1);
    node.wait_rows(1);

    let (json, cursor) = export(&node, "ip-addresses", "format=json");
    let expires: BTreeMap<String, (Option<String>, bool)> =
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["ip_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["ip_address"].as_str().unwrap().to_string(),
                    (a["expires"].as_str().map(str::to_string), false),
                )
            })
            .collect();
    assert_eq!(expires.len(), 3, "{json}");
    let (bundle, _) = export(&node, "ip-addresses", "format=stix");
    // One indicator per listed address, valid until its listing ends.
    assert_eq!(stix_check(&node, "full.json", &bundle), expires);

    // A listing that ends is its indicator revoked, under the same id.
    std::fs::write(node.path("allow.txt"), "203.0.113.20\n").unwrap();
    hangup(&node);
    wait_changes(&node, "ip-addresses", "", cursor, &["-203.0.113.20"]);
    let (since, _) = export(
        &node,
        "ip-addresses",
        &format!("format=stix&since={cursor}"),
    );
    let got = stix_check(&node, "since.json", &since);
    assert_eq!(got.len(), 1, "{since}");
    assert!(got["203.0.113.20"].1, "revoked: {since}");
    // STIX versioning: a new version keeps the id and `created` and has a later `modified`.
    let (was, now) = (
        indicator(&bundle, "203.0.113.20"),
        indicator(&since, "203.0.113.20"),
    );
    assert_eq!((&now["id"], &now["created"]), (&was["id"], &was["created"]));
    assert!(
        now["modified"].as_str() > was["modified"].as_str(),
        "{was}\n{now}"
    );
    // The CLI writes a bundle the library takes too.
    let (cli, _) = export_cli(&node, &HOUR_ARGS, &["--format", "stix"]);
    let got = stix_check(&node, "cli.json", &cli);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        set_of(&["127.0.0.21", "2001:db8::20"])
    );
}

#[test]
fn the_misp_feed_has_the_layout_mispss_feed_fetcher_reads_and_pymisp_makes_the_same_manifest_and_hashes()
 {
    let now = now_ms();
    let rows = [
        Seed::local("203.0.113.30", now),
        Seed::local("2001:db8::30", now),
    ];
    let node = seeded(&HOUR_ARGS, &rows, HOUR_MS, "");
    probe_from(&node, "127.0.0.31", "+441234567890", 1);
    probe_from(&node, "127.0.0.31", "100", 2);
    probe_from(&node, "127.0.0.32", "admin", 3);
    node.wait_rows(3);

    let manifest = node.get("/misp/manifest.json");
    assert_eq!(manifest.status, 200);
    let manifest = manifest.json();
    let manifest = manifest.as_object().unwrap();
    assert_eq!(
        manifest.len(),
        2,
        "an event for addresses and one for numbers: {manifest:?}"
    );
    let ip_event =
        serde_json::from_str::<serde_json::Value>(&export(&node, "ip-addresses", "format=misp").0)
            .unwrap()["Event"]["uuid"]
            .as_str()
            .unwrap()
            .to_string();
    let mut hashes = BTreeSet::new();
    let mut events = BTreeMap::new();
    for (uuid, entry) in manifest {
        uuid::Uuid::parse_str(uuid).unwrap();
        for key in [
            "Orgc",
            "Tag",
            "info",
            "date",
            "analysis",
            "threat_level_id",
            "timestamp",
        ] {
            assert!(
                entry.get(key).is_some(),
                "manifest entry without {key}: {entry}"
            );
        }
        assert!(
            entry["Orgc"]["name"].is_string() && entry["Orgc"]["uuid"].is_string(),
            "{entry}"
        );
        assert!(
            entry["Tag"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["name"].is_string()),
            "{entry}"
        );
        let date = entry["date"].as_str().unwrap();
        assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{date}");
        let ts: i64 = match &entry["timestamp"] {
            serde_json::Value::String(s) => s.parse().unwrap(),
            v => v.as_i64().unwrap(),
        };
        assert!((ts - now / 1000).abs() < 600, "timestamp {ts}");

        let r = node.get(&format!("/misp/{uuid}.json"));
        assert_eq!(r.status, 200, "{uuid}");
        let doc = r.json();
        let event = &doc["Event"];
        assert_eq!(doc.as_object().unwrap().len(), 1, "only the Event");
        assert_eq!(event["uuid"], uuid.as_str());
        assert_eq!(event["info"], entry["info"]);
        assert_eq!(event["Orgc"], entry["Orgc"]);
        let mut values = BTreeSet::new();
        for a in event["Attribute"].as_array().unwrap() {
            uuid::Uuid::parse_str(a["uuid"].as_str().unwrap()).unwrap();
            let value = a["value"].as_str().unwrap();
            if *uuid == ip_event {
                assert_eq!(a["type"], "ip-src", "{a}");
                assert_eq!(a["category"], "Network activity", "{a}");
                assert_eq!(a["to_ids"], true, "{a}");
            } else {
                assert!(
                    a["type"].is_string() && a["category"].is_string() && a["to_ids"].is_boolean(),
                    "{a}"
                );
            }
            hashes.insert(format!("{},{uuid}", md5_hex(value)));
            values.insert(value.to_string());
        }
        std::fs::create_dir_all(node.path("feed")).unwrap();
        std::fs::write(node.path(&format!("feed/{uuid}.json")), &r.body).unwrap();
        events.insert(uuid.clone(), values);
    }
    // The events hold exactly the listed actors.
    let ips = lines(&export(&node, "ip-addresses", "format=plain").0);
    assert_eq!(
        ips,
        set_of(&["127.0.0.31", "127.0.0.32", "203.0.113.30", "2001:db8::30"])
    );
    assert_eq!(events[&ip_event], ips);
    let numbers = lines(&export(&node, "numbers", "format=plain").0);
    assert_eq!(
        numbers,
        set_of(&["+441234567890", "100"]),
        "a SIP user name is no number"
    );
    let number_event = manifest.keys().find(|k| **k != ip_event).unwrap();
    assert_eq!(events[number_event], numbers);
    // hashes.csv: md5(value),event for every attribute, nothing else.
    let r = node.get("/misp/hashes.csv");
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body).unwrap();
    assert_eq!(lines(&body), hashes);
    assert_eq!(body.lines().count(), hashes.len(), "no line twice");
    assert_eq!(
        node.get("/misp/00000000-0000-0000-0000-000000000000.json")
            .status,
        404
    );

    if !python_with(&["pymisp"]) {
        return;
    }
    std::fs::write(
        node.path("feed/manifest.json"),
        serde_json::to_vec(manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(node.path("feed/hashes.csv"), &body).unwrap();
    let run = run_tool(
        Command::new("python3")
            .arg(consumer("misp_check.py"))
            .arg(node.path("feed")),
        Duration::from_secs(120),
    );
    assert!(run.status.success(), "PyMISP disagrees:\n{}", run.text());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["hashes"], hashes.len());
    let loaded: BTreeSet<String> = v["events"][&ip_event]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(loaded, ips);
}

/// Runs `tests/consumers/apiban_client.py` against the node from `id`: the addresses received,
/// the ID to start from next and the number of batches.
fn apiban(node: &Node, id: &str) -> (Vec<String>, String, u64) {
    let run = run_tool(
        Command::new("python3")
            .arg(consumer("apiban_client.py"))
            .arg(format!("http://{}", node.api[0]))
            .arg(id),
        Duration::from_secs(120),
    );
    assert!(run.status.success(), "APIBAN client:\n{}", run.text());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ips = v["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (
        ips,
        v["id"].as_str().unwrap().to_string(),
        v["batches"].as_u64().unwrap(),
    )
}

/// Probes from each source, waiting for the rows every hundred so no datagram is dropped.
fn probe_all(node: &Node, sources: &[String], rows_before: i64) {
    for (i, s) in sources.iter().enumerate() {
        probe_from(node, s, "100", rows_before as u64 + i as u64);
        if i % 100 == 99 {
            node.wait_rows(rows_before + i as i64 + 1);
        }
    }
    node.wait_rows(rows_before + sources.len() as i64);
}

#[test]
fn an_apiban_client_gets_every_listed_address_in_batches_then_exactly_the_new_ones() {
    if !available(have("python3"), "python3") {
        return;
    }
    let node = Node::start(&[]);
    let first: Vec<String> = (0..1000)
        .map(|i| format!("127.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    probe_all(&node, &first, 0);
    let plain = lines(&export(&node, "ip-addresses", "format=plain").0);
    assert_eq!(plain, first.iter().cloned().collect::<BTreeSet<_>>());

    let (got, id, batches) = apiban(&node, "100");
    assert_eq!(got.len(), 1000, "no address twice");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), plain);
    assert!(batches >= 4, "250 a batch: {batches} batches");
    // `/banned` with no ID starts from the beginning too, a batch at a time.
    let v = node.get("/banned").json();
    assert_eq!(v["ipaddress"].as_array().unwrap().len(), 250);

    let second: Vec<String> = (0..300)
        .map(|i| format!("127.2.{}.{}", i / 250, i % 250 + 1))
        .collect();
    probe_all(&node, &second, 1000);
    let (got, id2, _) = apiban(&node, &id);
    assert_eq!(got.len(), 300, "{got:?}");
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        second.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(id2.parse::<u64>().unwrap() > id.parse::<u64>().unwrap());
    // Up to date: nothing more, and the ID stays.
    assert_eq!(apiban(&node, &id2), (vec![], id2.clone(), 0));
    let r = node.get(&format!("/banned/{id2}"));
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"ipaddress": ["no new bans"], "ID": "none"})
        )
    );
}

#[test]
fn an_expired_listing_leaves_lookups_and_every_export_and_since_reports_its_removal() {
    const TTL: [&str; 2] = ["--actor-ttl", "2s"];
    let node = Node::start(&TTL);
    let (ip, number) = ("127.0.0.7", "15550007");
    let lookup = format!("/ip-addresses/{ip}");
    let number_lookup = format!("/numbers/{number}");
    // Every check follows a fresh sighting, so its 2 s have not run out when it looks.
    let mut n = 0;
    let mut seen = || {
        n += 1;
        probe_from(&node, ip, number, n);
        node.wait_rows(n as i64);
    };

    seen();
    assert_eq!(node.get(&lookup).status, 200);
    assert_eq!(node.get(&number_lookup).status, 200);
    let (plain, before) = export(&node, "ip-addresses", "format=plain");
    assert_eq!(plain, format!("{ip}\n"));
    seen();
    let list = node.get("/ip-addresses").json();
    assert!(
        list["ip_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ip_address"] == ip),
        "{list}"
    );
    for (format, want) in [
        ("csv", format!("\n{ip},")),
        ("json", format!("\"ip_address\":\"{ip}\"")),
        ("ipset", format!("\nadd sentrypeer {ip} timeout ")),
        ("nft", format!("bad_actors_v4 {{ {ip} timeout ")),
        ("stix", format!("[ipv4-addr:value = '{ip}']")),
        ("misp", format!("\"value\":\"{ip}\"")),
    ] {
        seen();
        let (body, _) = export(&node, "ip-addresses", &format!("format={format}"));
        assert!(body.contains(&want), "{format}: {body}");
    }
    for (format, want) in [
        ("plain", format!("{number}\n")),
        ("csv", format!("\n{number},")),
        ("json", format!("\"number\":\"{number}\"")),
        ("misp", format!("\"value\":\"{number}\"")),
    ] {
        seen();
        let (body, _) = export(&node, "numbers", &format!("format={format}"));
        assert!(body.contains(&want), "numbers {format}: {body}");
    }
    seen();
    let hashes = String::from_utf8(node.get("/misp/hashes.csv").body).unwrap();
    assert!(hashes.contains(&md5_hex(ip)), "{hashes}");
    seen();
    assert_eq!(
        node.get("/banned/100").json()["ipaddress"],
        serde_json::json!([ip])
    );
    seen();
    assert_eq!(
        export_cli(&node, &TTL, &["--format", "plain"]).0,
        format!("{ip}\n")
    );
    seen();
    let (nft, _) = export_cli(&node, &TTL, &["--format", "nft"]);
    assert!(
        nft.contains(&format!("bad_actors_v4 {{ {ip} timeout ")),
        "{nft}"
    );
    seen();
    let (numbers, _) = export_cli(&node, &TTL, &["--format", "plain", "--type", "number"]);
    assert_eq!(numbers, format!("{number}\n"));

    // No more sightings: two seconds on, it is gone from the lookups...
    let gone = poll(DEFAULT_WAIT, || {
        node.get(&lookup).status == 404 && node.get(&number_lookup).status == 404
    });
    assert!(gone, "still listed:\n{}", node.log_text());
    // ...and once the sweep has announced it, `since` reports its removal.
    let changes = wait_changes(&node, "ip-addresses", "", before, &[&format!("-{ip}")]);
    assert_eq!(changes, set_of(&[&format!("-{ip}")]));
    let changes = wait_changes(&node, "numbers", "", before, &[&format!("-{number}")]);
    assert_eq!(changes, set_of(&[&format!("-{number}")]));
    // (`/ip-addresses` is upstream's list of every address ever seen, not the set: it keeps the
    // address after its listing ends, as upstream's does.)

    // Every full export leaves it out.
    let full = |what: &str, format: &str| export(&node, what, &format!("format={format}")).0;
    assert_eq!(full("ip-addresses", "plain"), "");
    assert_eq!(
        full("ip-addresses", "csv"),
        "address,first_seen,last_seen,count,expires,origin\n"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&full("ip-addresses", "json")).unwrap()["ip_addresses"],
        serde_json::json!([])
    );
    for format in ["ipset", "nft", "stix", "misp"] {
        let body = full("ip-addresses", format);
        assert!(!body.contains(ip), "{format}: {body}");
    }
    assert!(!full("ip-addresses", "ipset").contains("\nadd "));
    assert!(!full("ip-addresses", "nft").contains("add element"));
    for format in ["plain", "csv", "json", "misp"] {
        let body = full("numbers", format);
        assert!(!body.contains(number), "numbers {format}: {body}");
    }
    let hashes = String::from_utf8(node.get("/misp/hashes.csv").body).unwrap();
    assert_eq!(hashes, "");
    let r = node.get("/banned/100");
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"ipaddress": ["no new bans"], "ID": "none"})
        )
    );
    assert_eq!(export_cli(&node, &TTL, &["--format", "plain"]).0, "");
    assert_eq!(
        export_cli(&node, &TTL, &["--format", "nft"])
            .0
            .matches("add element")
            .count(),
        0
    );

    // Every `since` format reports the removal.
    let since = |what: &str, format: &str| {
        export(&node, what, &format!("format={format}&since={before}")).0
    };
    assert!(since("ip-addresses", "csv").contains(&format!("\nremove,{ip},")));
    let json: serde_json::Value = serde_json::from_str(&since("ip-addresses", "json")).unwrap();
    assert_eq!(
        json["changes"],
        serde_json::json!([{"change": "remove", "ip_address": ip}])
    );
    assert!(since("ip-addresses", "ipset").contains(&format!("\ndel sentrypeer {ip} -exist\n")));
    assert!(since("ip-addresses", "nft").contains(&format!(
        "delete element inet sentrypeer bad_actors_v4 {{ {ip} }}"
    )));
    let stix: serde_json::Value = serde_json::from_str(&since("ip-addresses", "stix")).unwrap();
    let revoked = &stix["objects"][1];
    assert_eq!(
        (&revoked["revoked"], &revoked["pattern"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(format!("[ipv4-addr:value = '{ip}']"))
        )
    );
    assert!(since("numbers", "csv").contains(&format!("\nremove,{number},")));
    let (cli, _) = export_cli(
        &node,
        &TTL,
        &["--format", "plain", "--since", &before.to_string()],
    );
    assert_eq!(cli, format!("-{ip}\n"));
}

#[test]
fn allowlisted_addresses_are_never_listed_and_a_reloaded_allow_file_lifts_and_adds_listings() {
    const ARGS: [&str; 4] = ["--allow", "127.0.0.2", "--allow-file", "allow.txt"];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow.txt"), "# our trunk\n127.0.0.4\n").unwrap();
    let node = start_in(dir, &ARGS);
    for (i, source) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .into_iter()
        .enumerate()
    {
        probe_from(&node, source, "100", i as u64);
    }
    node.wait_rows(3);
    let status = |ip: &str| node.get(&format!("/ip-addresses/{ip}")).status;
    assert_eq!(
        (
            status("127.0.0.2"),
            status("127.0.0.3"),
            status("127.0.0.4")
        ),
        (404, 200, 404)
    );
    let (plain, cursor) = export(&node, "ip-addresses", "format=plain");
    assert_eq!(lines(&plain), set_of(&["127.0.0.3"]));
    assert_eq!(
        node.get("/banned/100").json()["ipaddress"],
        serde_json::json!(["127.0.0.3"])
    );
    assert_eq!(
        lines(&export_cli(&node, &ARGS, &[]).0),
        set_of(&["127.0.0.3"])
    );

    // The file now lists .3 instead of .4: on SIGHUP .3 is lifted and .4 listed.
    std::fs::write(node.path("allow.txt"), "127.0.0.3\n").unwrap();
    hangup(&node);
    let swapped = poll(DEFAULT_WAIT, || {
        status("127.0.0.3") == 404 && status("127.0.0.4") == 200
    });
    assert!(swapped, "{}", node.log_text());
    let changes = wait_changes(
        &node,
        "ip-addresses",
        "",
        cursor,
        &["-127.0.0.3", "+127.0.0.4"],
    );
    assert_eq!(changes, set_of(&["-127.0.0.3", "+127.0.0.4"]));
    // 127.0.0.2, allowed on the command line, is still never listed, however often it probes.
    probe_from(&node, "127.0.0.2", "100", 4);
    node.wait_rows(4);
    assert_eq!(status("127.0.0.2"), 404);
    let (plain, _) = export(&node, "ip-addresses", "format=plain");
    assert_eq!(lines(&plain), set_of(&["127.0.0.4"]));
    let (since, _) = export(
        &node,
        "ip-addresses",
        &format!("format=plain&since={cursor}"),
    );
    assert!(!since.contains("127.0.0.2"), "{since}");
    assert_eq!(
        lines(&export_cli(&node, &ARGS, &[]).0),
        set_of(&["127.0.0.4"])
    );
}

#[test]
fn scope_local_leaves_out_actors_only_peers_reported() {
    let now = now_ms();
    let rows = [
        Seed::local("203.0.113.50", now),
        Seed {
            key: "203.0.113.51",
            local_ms: None,
            peers: Some((now, &["peer-a", "peer-b"])),
        },
    ];
    let node = seeded(&HOUR_ARGS, &rows, HOUR_MS, "");
    let all = set_of(&["203.0.113.50", "203.0.113.51"]);
    let local = set_of(&["203.0.113.50"]);
    assert_eq!(
        lines(&export(&node, "ip-addresses", "format=plain").0),
        all,
        "all is the default"
    );
    assert_eq!(
        lines(&export(&node, "ip-addresses", "format=plain&scope=all").0),
        all
    );
    assert_eq!(
        lines(&export(&node, "ip-addresses", "format=plain&scope=local").0),
        local
    );
    let (csv, _) = export(&node, "ip-addresses", "format=csv&scope=all");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("203.0.113.51,") && l.ends_with(",peers")),
        "{csv}"
    );
    let (since, _) = export(&node, "ip-addresses", "format=plain&scope=local&since=0");
    assert!(
        since.contains("+203.0.113.50") && !since.contains("+203.0.113.51"),
        "{since}"
    );
    assert_eq!(
        node.get("/ip-addresses/203.0.113.51").status,
        200,
        "listed on peers' word"
    );
    let cli = |scope: &str| lines(&export_cli(&node, &HOUR_ARGS, &["--scope", scope]).0);
    assert_eq!(cli("local"), local);
    assert_eq!(cli("all"), all);
}

#[test]
fn bad_export_parameters_are_a_400_whose_json_names_the_problem() {
    let node = Node::start(&[]);
    for (path, names) in [
        ("/blocklist/ip-addresses?format=xml", "format"),
        ("/blocklist/numbers?format=nft", "format"),
        ("/blocklist/numbers?format=ipset", "format"),
        (
            "/blocklist/ip-addresses?format=plain&since=yesterday",
            "since",
        ),
        ("/blocklist/numbers?since=-1", "since"),
        (
            "/blocklist/ip-addresses?format=ipset&set=no%20spaces",
            "set",
        ),
        ("/blocklist/ip-addresses?format=ipset&set=", "set"),
        (
            "/blocklist/ip-addresses?format=ipset&set=a_name_longer_than_ipset_allows",
            "set",
        ),
        ("/blocklist/ip-addresses?scope=everyone", "scope"),
        ("/banned/latest", "ID"),
    ] {
        let r = node.get(path);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(names), "{path}: {error}");
    }
    let mut cmd = Command::new(bin());
    cmd.current_dir(node.dir.path())
        .arg("-f")
        .arg(node.db_path())
        .args(["export", "--type", "number", "--format", "nft"]);
    let run = run_tool(&mut cmd, Duration::from_secs(60));
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("format must be one of"),
        "{}",
        run.text()
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn retention_prunes_old_events_but_the_lists_and_the_bad_actor_set_keep_what_they_told() {
    let node = Node::start(&["--retention", "2s"]);
    node.send_udp(&options("5559001", "friendly-scanner", 1));
    node.wait_rows(1);
    assert_eq!(node.get("/ip-addresses/127.0.0.1").status, 200);
    // The writer's upkeep deletes the event once it is older than the retention.
    assert!(
        poll(DEFAULT_WAIT, || node.count("SELECT count(*) FROM honey")
            == 0),
        "the event was never pruned\n{}",
        node.log_text()
    );
    // What it told stays: the lookups, the lists with their counts, the exports.
    assert_eq!(node.get("/ip-addresses/127.0.0.1").status, 200);
    assert_eq!(node.get("/numbers/5559001").status, 200);
    let v = node.get("/numbers").json();
    assert_eq!(v["called_numbers"][0]["called_number"], "5559001");
    assert_eq!(v["called_numbers"][0]["seen_count"], "1");
    let plain = String::from_utf8(node.get("/blocklist/numbers?format=plain").body).unwrap();
    assert_eq!(plain, "5559001\n");
}
