//! `--nftables`, `--nftables-set-only` and `--ipset` against the real kernel, inside network
//! namespaces each test creates and deletes: the node runs in one (`ip netns exec`), with
//! 198.51.100.1 on a veth pair whose other end, 198.51.100.2 (and 198.51.100.3, allowlisted),
//! is an attacker's namespace. The host's own ruleset is never touched.
//!
//! They need root, iproute2, nftables, ipset and iptables (`.ci/install-deps`). Where network
//! namespaces cannot be made, they fail with the reason under CI and are skipped elsewhere.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Node, NodeOptions, options, poll, require, run_tool};

const NODE: &str = "198.51.100.1";
const NODE6: &str = "2001:db8::1";
const ATTACKER: &str = "198.51.100.2";
const ATTACKER6: &str = "2001:db8::2";
/// A second address of the attacker's namespace, allowlisted by the tests.
const FRIEND: &str = "198.51.100.3";
/// The listing TTL the tests run with: short, so a block lifts within the test.
const TTL_SECS: u64 = 4;
/// How long a blocked TCP connection attempt is given.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);

/// A network namespace made by `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with a unique name and its loopback up; `None` (outside CI) where network
    /// namespaces cannot be made.
    fn new(tag: &str) -> Option<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sp{}-{tag}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        let ok = out.as_ref().is_ok_and(|o| o.status.success());
        if !ok {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            let message = format!(
                "cannot create a network namespace ({why}): the kernel-set tests need root and \
                 iproute2 on a kernel with network namespaces"
            );
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        let run = run_tool(&mut cmd, Duration::from_secs(30));
        assert!(run.status.success(), "ip {args:?}: {}", run.text());
    }

    /// Runs a command inside the namespace: `ip netns exec NS PROGRAM ARGS`.
    fn exec(&self, program: &str, args: &[&str]) -> crate::harness::ToolRun {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        run_tool(&mut cmd, Duration::from_secs(30))
    }

    /// Like `exec`, and it must succeed; returns its output.
    fn must(&self, program: &str, args: &[&str]) -> String {
        let run = self.exec(program, args);
        assert!(run.status.success(), "{program} {args:?}: {}", run.text());
        run.stdout
    }

    /// Runs `f` on a thread inside the namespace: its sockets are the namespace's.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::scope(|s| {
            let t = s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                f()
            });
            t.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip netns exec NS`, for the harness to start the node under.
    fn prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A node's namespace and an attacker's, joined by a veth pair.
struct Lab {
    node: Netns,
    attacker: Netns,
}

fn lab(tools: &[&str]) -> Option<Lab> {
    require("ip");
    for t in tools {
        require(t);
    }
    let node = Netns::new("n")?;
    let attacker = Netns::new("a")?;
    node.ip(&[
        "link",
        "add",
        "sp0",
        "type",
        "veth",
        "peer",
        "name",
        "sp1",
        "netns",
        &attacker.name,
    ]);
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "sp0"]);
    node.ip(&["addr", "add", &format!("{NODE6}/64"), "dev", "sp0", "nodad"]);
    node.ip(&["link", "set", "sp0", "up"]);
    for a in [ATTACKER, FRIEND] {
        attacker.ip(&["addr", "add", &format!("{a}/24"), "dev", "sp1"]);
    }
    attacker.ip(&[
        "addr",
        "add",
        &format!("{ATTACKER6}/64"),
        "dev",
        "sp1",
        "nodad",
    ]);
    attacker.ip(&["link", "set", "sp1", "up"]);
    Some(Lab { node, attacker })
}

impl Lab {
    /// Starts the node inside its namespace: SIP on the veth address, the API on the
    /// namespace's loopback, the attacker's second address allowlisted, listings lasting
    /// `ttl`.
    fn start(&self, ttl: &str, extra: &[&str]) -> Node {
        let mut args: Vec<String> = [
            "--udp-listen",
            &format!("{NODE}:0"),
            "--udp-listen",
            &format!("[{NODE6}]:0"),
            "--tcp-listen",
            &format!("{NODE}:0"),
            "-N",
            "--api-listen",
            "127.0.0.1:0",
            "-f",
            "sentrypeer.db",
            "--allow",
            FRIEND,
            "--actor-ttl",
            ttl,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Node::start_with(NodeOptions {
            args,
            loopback_defaults: false,
            prefix: self.node.prefix(),
            ..Default::default()
        })
    }

    /// Sends one probe from `from` (an address of the attacker's namespace) with a called
    /// number that marks it.
    fn probe(&self, node: &Node, from: &str, number: u64) {
        let ip: std::net::IpAddr = from.parse().unwrap();
        let to = *node
            .udp
            .iter()
            .find(|a| a.is_ipv4() == ip.is_ipv4())
            .unwrap();
        self.attacker.run(|| {
            let s = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
            s.send_to(&options(&number.to_string(), "kernel-sets", number), to)
                .unwrap();
        });
    }

    /// Whether a TCP connection from `from` to the node's SIP port gets through.
    fn connects(&self, node: &Node, from: &str) -> bool {
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        let to = node.tcp[0];
        self.attacker.run(|| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&local.into()).unwrap();
            s.connect_timeout(&to.into(), CONNECT_TIMEOUT).is_ok()
        })
    }

    fn counter(&self, node: &Node, name: &str) -> u64 {
        self.node.run(|| node.counter(name))
    }

    fn health(&self, node: &Node) -> serde_json::Value {
        self.node.run(|| node.health())
    }
}

/// Whether the node recorded a probe with this called number.
fn recorded(node: &Node, number: u64) -> bool {
    node.db()
        .query_row(
            "SELECT count(*) FROM honey WHERE called_number = ?1",
            [number.to_string()],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        > 0
}

fn wait_recorded(node: &Node, number: u64) {
    assert!(
        poll(Duration::from_secs(10), || recorded(node, number)),
        "probe {number} was not recorded:\n{}",
        node.log_text()
    );
}

/// Checks, without sleeping, that a probe from `from` is dropped: a probe from the allowlisted
/// address sent after it travels the same path to the same socket, so once that one is
/// recorded, the first would have been too.
fn assert_dropped(lab: &Lab, node: &Node, from: &str, number: u64) {
    let before = lab.counter(node, "messages_received");
    lab.probe(node, from, number);
    lab.probe(node, FRIEND, number + 1);
    wait_recorded(node, number + 1);
    assert!(!recorded(node, number), "a probe from {from} got through");
    assert_eq!(lab.counter(node, "messages_received"), before + 1);
}

/// How long after `since` a check first held, polling every 10 ms for up to `within`.
fn time_until(
    since: Instant,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    poll(within, &mut check).then(|| since.elapsed())
}

fn nft_has(lab: &Lab, set: &str, ip: &str) -> bool {
    lab.node
        .exec(
            "nft",
            &[
                "get",
                "element",
                "inet",
                "sentrypeer",
                set,
                &format!("{{ {ip} }}"),
            ],
        )
        .status
        .success()
}

#[test]
fn nftables_drops_a_probing_address_within_a_second_until_its_listing_ends() {
    let Some(lab) = lab(&["nft"]) else { return };
    let node = lab.start(&format!("{TTL_SECS}s"), &["--nftables"]);
    let ruleset = lab
        .node
        .must("nft", &["list", "table", "inet", "sentrypeer"]);
    assert!(
        ruleset.contains("hook input priority filter - 10")
            && ruleset.contains("ip saddr @bad_actors_v4 counter")
            && ruleset.contains("flags timeout"),
        "{ruleset}"
    );
    assert!(lab.connects(&node, ATTACKER), "not blocked yet");

    // One probe: in the kernel set within a second.
    let sent = Instant::now();
    lab.probe(&node, ATTACKER, 1000);
    let took = time_until(sent, Duration::from_secs(5), || {
        nft_has(&lab, "bad_actors_v4", ATTACKER)
    })
    .expect("the attacker never reached the kernel set");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let element = lab.node.must(
        "nft",
        &[
            "get",
            "element",
            "inet",
            "sentrypeer",
            "bad_actors_v4",
            &format!("{{ {ATTACKER} }}"),
        ],
    );
    assert!(element.contains("expires"), "{element}");

    // Its next datagram and TCP connection are dropped; the allowlisted address still counts.
    assert_dropped(&lab, &node, ATTACKER, 1010);
    assert!(
        !lab.connects(&node, ATTACKER),
        "a TCP connection got through"
    );
    assert!(lab.connects(&node, FRIEND));
    assert!(!nft_has(&lab, "bad_actors_v4", FRIEND));

    // IPv6 the same way.
    lab.probe(&node, ATTACKER6, 2000);
    assert!(
        poll(Duration::from_secs(1), || nft_has(
            &lab,
            "bad_actors_v6",
            ATTACKER6
        )),
        "the IPv6 attacker did not reach the kernel set within a second"
    );

    // The block lifts on its own when the listing ends: the TTL after the probe.
    let mut n = 3000;
    let lifted = time_until(sent, Duration::from_secs(TTL_SECS + 10), || {
        n += 1;
        lab.probe(&node, ATTACKER, n);
        poll(Duration::from_millis(150), || recorded(&node, n))
    })
    .expect("the block never lifted");
    assert!(
        lifted >= Duration::from_millis(TTL_SECS * 1000 - 300),
        "lifted after {lifted:?}, before the TTL"
    );

    let h = lab.health(&node);
    let k = &h["kernel_sets"]["nftables"];
    // The first probe may have come with the startup load (a whole rewrite), the rest in
    // batches of their own.
    assert!(k["batches"].as_u64().unwrap() >= 2, "{h}");
    assert!(k["added"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(k["failures"], 0, "{h}");
    assert!(k["reconciles"].as_u64().unwrap() >= 1, "{h}");
    assert!(k["max_delay_ms"].as_u64().unwrap() < 1000, "{h}");
    let metrics = lab.node.run(|| node.get("/metrics"));
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("sentrypeer_kernel_set_elements_added_total{set=\"nftables\"}"),
        "{text}"
    );
}

#[test]
fn nftables_set_only_fills_the_sets_reconciles_on_sighup_and_flush_removes_the_table() {
    let Some(lab) = lab(&["nft"]) else { return };
    let mut node = lab.start("7d", &["--nftables-set-only"]);
    let table = lab
        .node
        .must("nft", &["list", "table", "inet", "sentrypeer"]);
    assert!(!table.contains("chain"), "{table}");

    lab.probe(&node, ATTACKER, 1000);
    assert!(poll(Duration::from_secs(1), || nft_has(
        &lab,
        "bad_actors_v4",
        ATTACKER
    )));
    // In the set, but nothing drops it: its next probe is recorded.
    lab.probe(&node, ATTACKER, 1001);
    wait_recorded(&node, 1001);

    // Someone empties the set; SIGHUP rewrites it from the store.
    lab.node.must(
        "nft",
        &["flush", "set", "inet", "sentrypeer", "bad_actors_v4"],
    );
    assert!(!nft_has(&lab, "bad_actors_v4", ATTACKER));
    let pid = node.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        poll(Duration::from_secs(5), || nft_has(
            &lab,
            "bad_actors_v4",
            ATTACKER
        )),
        "not restored after SIGHUP:\n{}",
        node.log_text()
    );

    // The table stays after the node stops; `sentrypeer nftables flush` removes it.
    assert!(node.signal("TERM").success());
    assert!(nft_has(&lab, "bad_actors_v4", ATTACKER));
    let out = lab.node.must(crate::harness::bin(), &["nftables", "flush"]);
    assert!(out.contains("Deleted"), "{out}");
    let tables = lab.node.must("nft", &["list", "tables"]);
    assert!(!tables.contains("sentrypeer"), "{tables}");
}

#[test]
fn ipset_fills_sets_that_the_operators_iptables_rules_use() {
    let Some(lab) = lab(&["ipset", "iptables", "ip6tables"]) else {
        return;
    };
    let node = lab.start(&format!("{TTL_SECS}s"), &["--ipset", "spt"]);
    let names = lab.node.must("ipset", &["list", "-n"]);
    assert!(
        names.contains("spt\n") && names.contains("spt6\n"),
        "{names}"
    );
    // The operator's own rules: the node never adds any.
    lab.node.must(
        "iptables",
        &[
            "-I",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "spt",
            "src",
            "-j",
            "DROP",
        ],
    );
    assert!(lab.connects(&node, ATTACKER));

    let sent = Instant::now();
    lab.probe(&node, ATTACKER, 1000);
    let took = time_until(sent, Duration::from_secs(5), || {
        lab.node
            .exec("ipset", &["test", "spt", ATTACKER])
            .status
            .success()
    })
    .expect("the attacker never reached the ipset");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_dropped(&lab, &node, ATTACKER, 1010);
    assert!(
        !lab.connects(&node, ATTACKER),
        "a TCP connection got through"
    );
    assert!(
        !lab.node
            .exec("ipset", &["test", "spt", FRIEND])
            .status
            .success()
    );

    // IPv6: the NAME6 set, matched by the operator's ip6tables rule.
    lab.node.must(
        "ip6tables",
        &[
            "-I",
            "INPUT",
            "-m",
            "set",
            "--match-set",
            "spt6",
            "src",
            "-j",
            "DROP",
        ],
    );
    lab.probe(&node, ATTACKER6, 2000);
    assert!(
        poll(Duration::from_secs(1), || lab
            .node
            .exec("ipset", &["test", "spt6", ATTACKER6])
            .status
            .success()),
        "the IPv6 attacker did not reach the ipset within a second"
    );

    let mut n = 3000;
    let lifted = time_until(sent, Duration::from_secs(TTL_SECS + 10), || {
        n += 1;
        lab.probe(&node, ATTACKER, n);
        poll(Duration::from_millis(150), || recorded(&node, n))
    })
    .expect("the block never lifted");
    assert!(
        lifted >= Duration::from_millis(TTL_SECS * 1000 - 300),
        "lifted after {lifted:?}"
    );
    let h = lab.health(&node);
    assert_eq!(h["kernel_sets"]["ipset"]["failures"], 0, "{h}");
}

#[test]
fn without_cap_net_admin_either_option_stops_the_node_naming_it() {
    let Some(lab) = lab(&["nft", "ipset", "setpriv"]) else {
        return;
    };
    for (option, value) in [
        ("--nftables", None),
        ("--nftables-set-only", None),
        ("--ipset", Some("spt")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sentrypeer.db");
        let mut args = vec![
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            crate::harness::bin(),
            "--udp-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "-N",
            "-f",
            db.to_str().unwrap(),
            option,
        ];
        args.extend(value);
        let run = lab.node.exec("setpriv", &args);
        assert_eq!(run.status.code(), Some(2), "{option}: {}", run.text());
        assert!(
            run.stderr.contains(option) && run.stderr.contains("CAP_NET_ADMIN"),
            "{option}: {}",
            run.stderr
        );
    }
}

#[test]
fn the_grafana_dashboards_kernel_set_metrics_are_exported() {
    let Some(lab) = lab(&["nft", "ipset"]) else {
        return;
    };
    let node = lab.start("1h", &["--nftables", "--ipset", "grafana"]);
    let metrics = lab
        .node
        .run(|| String::from_utf8(node.get("/metrics").body).unwrap());
    let exported = crate::grafana::metric_names(&metrics);
    let wanted: Vec<String> = crate::grafana::dashboard_metrics()
        .into_iter()
        .filter(|m| m.starts_with("sentrypeer_kernel_set_"))
        .collect();
    assert!(!wanted.is_empty());
    let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names kernel-set metrics not exported: {missing:?}"
    );
}
