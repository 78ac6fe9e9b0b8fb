//! The BGP blackhole feed against real BGP daemons from Debian, started by the tests on
//! loopback with ports found free: gobgpd (the node connects to it) and BIRD 2 (it connects to
//! the node). Each sees a host route per listed address with the communities and the discard
//! next hop, sees it withdrawn when the listing expires, gets everything again after a
//! restart, and a Cease when the node stops.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// How long a daemon may take to start or a route to arrive.
const WAIT: Duration = Duration::from_secs(30);
/// How long one CLI call may take.
const CLI: Duration = Duration::from_secs(20);

/// A port free on `ip` right now.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon killed (and reaped) when dropped.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn spawn(cmd: &mut Command, log: &Path) -> Daemon {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Daemon { child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let exited = poll(Duration::from_secs(10), || {
                c.try_wait().ok().flatten().is_some()
            });
            if !exited {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lists addresses as if this node saw each at the given time (ms since the epoch) in a
/// database the node has not opened yet; returns the path.
fn seed(dir: &Path, rows: &[(&str, i64)]) -> std::path::PathBuf {
    let path = dir.join("sentrypeer.db");
    drop(sentrypeer::store::open(&path).expect("create the database"));
    let db = rusqlite::Connection::open(&path).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    let mut seq: i64 = tx
        .query_row(
            "SELECT change_seq FROM sentrypeer_actor_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (ip, seen) in rows {
        seq += 1;
        tx.execute(
            "INSERT INTO sentrypeer_ip_addresses (ip_address, seen_last, seen_count, first_seen_ms,
               last_seen_ms, local_last_ms, announced_until_ms, change_seq)
             VALUES (?1, '2026-11-30 10:00:00.000000000', 1, ?2, ?2, ?2, ?2 + 604800000, ?3)",
            rusqlite::params![ip, seen, seq],
        )
        .unwrap();
    }
    tx.execute("UPDATE sentrypeer_actor_state SET change_seq = ?1", [seq])
        .unwrap();
    tx.commit().unwrap();
    path
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Starts the node in `dir` (which may hold a seeded database) with the feed's options.
fn start_node(dir: tempfile::TempDir, args: &[String]) -> Node {
    Node::start_with(NodeOptions {
        args: args.to_vec(),
        dir: Some(dir),
        ..Default::default()
    })
}

/// The feed's view of its one neighbour (`GET /bgp`).
fn session_of(node: &Node) -> Value {
    let r = node.get("/bgp");
    assert_eq!(r.status, 200);
    r.json()["neighbors"][0].clone()
}

/// Sends one probe from `from` (a loopback address), which lists it.
fn probe_from(node: &Node, from: &str) {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.send_to(&options("100", "friendly-scanner", 7), node.udp[0])
        .unwrap();
}

/// Polls `f` until it holds, failing with `what` and the text last seen.
fn wait_for(what: &str, mut f: impl FnMut() -> (bool, String)) {
    let mut last = String::new();
    let ok = poll(WAIT, || {
        let (ok, text) = f();
        last = text;
        ok
    });
    assert!(ok, "{what}; last seen:\n{last}");
}

struct GoBgp {
    daemon: Daemon,
    api: SocketAddr,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl GoBgp {
    /// gobgpd on 127.0.0.3:`port`, AS 65001, waiting (passive) for the node from 127.0.0.1.
    fn start(port: u16) -> GoBgp {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gobgpd.toml");
        std::fs::write(
            &config,
            format!(
                r#"[global.config]
  as = 65001
  router-id = "192.0.2.3"
  port = {port}
  local-address-list = ["127.0.0.3"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.0.1"
    peer-as = 65000
  [neighbors.transport.config]
    passive-mode = true
    local-address = "127.0.0.3"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
            ),
        )
        .unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let mut g = GoBgp {
            daemon: Daemon { child: None },
            api,
            dir,
            config,
        };
        g.restart();
        g
    }

    fn restart(&mut self) {
        self.daemon.stop();
        self.daemon = Daemon::spawn(
            Command::new("gobgpd").args([
                "-f",
                self.config.to_str().unwrap(),
                "--api-hosts",
                &self.api.to_string(),
                "--pprof-disable",
            ]),
            &self.dir.path().join("gobgpd.log"),
        );
        wait_for("gobgpd answers on its API", || {
            let r = self.try_cli(&["neighbor"]);
            (r.0, r.1)
        });
    }

    fn try_cli(&self, args: &[&str]) -> (bool, String) {
        let r = run_tool(
            Command::new("gobgp")
                .args([
                    "-u",
                    &self.api.ip().to_string(),
                    "-p",
                    &self.api.port().to_string(),
                ])
                .args(args),
            CLI,
        );
        (r.status.success(), r.text())
    }

    fn cli(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_cli(args);
        assert!(ok, "gobgp {args:?} failed: {text}");
        text
    }

    fn established(&self) -> (bool, String) {
        let t = self.cli(&["neighbor"]);
        (
            t.lines()
                .any(|l| l.starts_with("127.0.0.1") && l.contains("Establ")),
            t,
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gobgpd.log")).unwrap_or_default()
    }
}

/// The node's feed options towards one neighbour.
fn feed_args(neighbor: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--bgp-neighbor",
        neighbor,
        "--bgp-local-as",
        "65000",
        "--bgp-peer-as",
        "65001",
        "--bgp-next-hop",
        "192.0.2.1",
        "--bgp-next-hop",
        "100::1",
        "--bgp-community",
        "65535:666",
        "--bgp-community",
        "65535:65281",
        "--bgp-community",
        "65000:666:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn gobgpd_gets_host_routes_with_blackhole_communities_withdrawals_and_everything_after_a_restart() {
    if !available(
        have("gobgpd") && have("gobgp"),
        "gobgpd (apt-get install gobgpd)",
    ) {
        return;
    }
    let port = free_port("127.0.0.3");
    let mut gobgp = GoBgp::start(port);
    let neighbor = format!("127.0.0.3:{port}");

    // Listed addresses: one of each family, seen a minute ago.
    let dir = tempfile::tempdir().unwrap();
    let seen = now_ms() - 60_000;
    seed(dir.path(), &[("198.51.100.7", seen), ("2001:db8::7", seen)]);
    let mut node = start_node(dir, &feed_args(&neighbor, &[]));
    wait_for("gobgpd shows the node's session Established", || {
        gobgp.established()
    });
    wait_for(
        "the /32 with its next hop and communities in gobgpd's RIB",
        || {
            let t = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
            let ok = t.lines().any(|l| {
                l.contains("198.51.100.7/32")
                    && l.contains("192.0.2.1")
                    && l.contains("65000")
                    && l.contains("blackhole")
                    && l.contains("no-export")
                    && l.contains("65000:666:1")
            });
            (ok, t)
        },
    );
    wait_for("the /128 with the IPv6 next hop in gobgpd's RIB", || {
        let t = gobgp.cli(&["global", "rib", "-a", "ipv6"]);
        let ok = t.lines().any(|l| {
            l.contains("2001:db8::7/128") && l.contains("100::1") && l.contains("blackhole")
        });
        (ok, t)
    });
    let n = session_of(&node);
    assert_eq!(n["state"], "established", "{n}");
    assert_eq!(n["routes"], 2, "{n}");
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    assert!(
        metrics.contains(&format!(
            "sentrypeer_bgp_session_established{{neighbor=\"{neighbor}\"}} 1"
        )),
        "{metrics}"
    );
    assert_eq!(node.health()["bgp"]["announced"], 2);

    // A route gobgpd offers is read, counted and ignored: the node installs nothing.
    let before = session_of(&node)["updates_ignored"].as_u64().unwrap();
    gobgp.cli(&["global", "rib", "add", "-a", "ipv4", "203.0.113.0/24"]);
    wait_for("gobgpd's UPDATE counted as ignored", || {
        let n = session_of(&node);
        (n["updates_ignored"].as_u64() > Some(before), n.to_string())
    });
    let n = session_of(&node);
    assert_eq!(
        (n["state"].as_str(), n["routes"].as_u64()),
        (Some("established"), Some(2)),
        "{n}"
    );
    assert_eq!(node.health()["bgp"]["listed"], 2);

    // A restart of the daemon: everything is announced again on the new session.
    gobgp.restart();
    wait_for("gobgpd Established again after its restart", || {
        gobgp.established()
    });
    wait_for("both routes in gobgpd's RIB after its restart", || {
        let v4 = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
        let v6 = gobgp.cli(&["global", "rib", "-a", "ipv6"]);
        (
            v4.contains("198.51.100.7/32") && v6.contains("2001:db8::7/128"),
            format!("{v4}\n{v6}"),
        )
    });
    let n = session_of(&node);
    assert_eq!(
        (n["flaps"].as_u64(), n["routes"].as_u64()),
        (Some(1), Some(2)),
        "{n}"
    );

    // Shutdown: a Cease (administrative shutdown), and gobgpd drops the routes.
    assert!(node.signal("TERM").success());
    wait_for("gobgpd logs the Cease", || {
        let log = gobgp.log();
        (log.contains("administrative shutdown"), log)
    });
    let t = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
    assert!(!t.contains("198.51.100.7/32"), "{t}");

    // A probe lists its source for 3 s: announced, then withdrawn on expiry.
    let node = Node::start_with(NodeOptions {
        args: feed_args(&neighbor, &["--actor-ttl", "3s"]),
        ..Default::default()
    });
    wait_for("gobgpd Established with the second node", || {
        gobgp.established()
    });
    probe_from(&node, "127.0.0.7");
    wait_for("the prober's /32 in gobgpd's RIB", || {
        let t = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
        (t.contains("127.0.0.7/32"), t)
    });
    wait_for("the /32 withdrawn when the listing expires", || {
        let t = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
        (!t.contains("127.0.0.7/32"), t)
    });
    let n = session_of(&node);
    assert_eq!(
        (n["announced"].as_u64(), n["withdrawn"].as_u64()),
        (Some(1), Some(1)),
        "{n}"
    );
}

struct Bird {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Bird {
    /// BIRD on 127.0.0.4:`port`, AS 65001, connecting to the node at 127.0.0.1:`node_port`;
    /// the discard next hops are blackhole static routes, as on a real router.
    fn start(port: u16, node_port: u16) -> Bird {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bird.conf"),
            format!(
                r#"router id 192.0.2.4;
protocol device {{ }}
protocol static discard4 {{ ipv4; route 192.0.2.1/32 blackhole; }}
protocol static discard6 {{ ipv6; route 100::1/128 blackhole; }}
protocol bgp sentrypeer {{
  local 127.0.0.4 port {port} as 65001;
  neighbor 127.0.0.1 port {node_port} as 65000;
  multihop;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
  ipv4 {{ import all; export none; gateway recursive; }};
  ipv6 {{ import all; export none; gateway recursive; }};
}}
"#
            ),
        )
        .unwrap();
        let mut b = Bird {
            daemon: Daemon { child: None },
            dir,
        };
        b.restart();
        b
    }

    fn restart(&mut self) {
        self.daemon.stop();
        let p = |f: &str| self.dir.path().join(f).to_str().unwrap().to_string();
        self.daemon = Daemon::spawn(
            Command::new("bird").args([
                "-f",
                "-c",
                &p("bird.conf"),
                "-s",
                &p("bird.ctl"),
                "-P",
                &p("bird.pid"),
            ]),
            &self.dir.path().join("bird.log"),
        );
        wait_for("BIRD answers on its control socket", || {
            let (ok, t) = self.try_cli(&["show", "status"]);
            (ok && t.contains("Daemon is up"), t)
        });
    }

    fn try_cli(&self, args: &[&str]) -> (bool, String) {
        let sock = self.dir.path().join("bird.ctl");
        let r = run_tool(
            Command::new("birdc")
                .args(["-s", sock.to_str().unwrap()])
                .args(args),
            CLI,
        );
        (r.status.success(), r.text())
    }

    fn cli(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_cli(args);
        assert!(ok, "birdc {args:?} failed: {text}");
        text
    }

    fn established(&self) -> (bool, String) {
        let t = self.cli(&["show", "protocols", "all", "sentrypeer"]);
        (t.contains("Established"), t)
    }

    /// The route to `net` in BIRD's table, or its "Network not found".
    fn route(&self, net: &str) -> String {
        self.try_cli(&["show", "route", net, "all"]).1
    }
}

#[test]
fn bird_connects_in_and_gets_host_routes_withdrawals_and_everything_after_a_restart() {
    if !available(
        have("bird") && have("birdc"),
        "BIRD 2 (apt-get install bird2)",
    ) {
        return;
    }
    let (port, node_port) = (free_port("127.0.0.4"), free_port("127.0.0.1"));
    // The node's own connections go to a closed port: BIRD's connection in is the one that
    // must work.
    let nowhere = free_port("127.0.0.4");
    let mut bird = Bird::start(port, node_port);
    let listen = format!("127.0.0.1:{node_port}");
    let neighbor = format!("127.0.0.4:{nowhere}");

    let dir = tempfile::tempdir().unwrap();
    let seen = now_ms() - 60_000;
    seed(dir.path(), &[("198.51.100.9", seen), ("2001:db8::9", seen)]);
    let mut node = start_node(dir, &feed_args(&neighbor, &["--bgp-listen", &listen]));
    wait_for("BIRD's session with the node Established", || {
        bird.established()
    });
    wait_for("the /32 in BIRD's table with its communities", || {
        let t = bird.route("198.51.100.9/32");
        let ok = t.contains("198.51.100.9/32")
            && t.contains("BGP.next_hop: 192.0.2.1")
            && t.contains("(65535,666)")
            && t.contains("(65535,65281)")
            && t.contains("(65000, 666, 1)")
            && t.contains("BGP.as_path: 65000");
        (ok, t)
    });
    wait_for("the /128 in BIRD's table", || {
        let t = bird.route("2001:db8::9/128");
        (
            t.contains("2001:db8::9/128") && t.contains("BGP.next_hop: 100::1"),
            t,
        )
    });
    let n = session_of(&node);
    assert_eq!(
        (n["state"].as_str(), n["routes"].as_u64()),
        (Some("established"), Some(2)),
        "{n}"
    );

    bird.restart();
    wait_for("BIRD Established again after its restart", || {
        bird.established()
    });
    wait_for("both routes in BIRD's table after its restart", || {
        let v4 = bird.route("198.51.100.9/32");
        let v6 = bird.route("2001:db8::9/128");
        (
            v4.contains("198.51.100.9/32") && v6.contains("2001:db8::9/128"),
            format!("{v4}\n{v6}"),
        )
    });
    assert!(session_of(&node)["flaps"].as_u64() >= Some(1));

    assert!(node.signal("TERM").success());
    wait_for("BIRD records the node's Cease", || {
        let t = bird.cli(&["show", "protocols", "all", "sentrypeer"]);
        (t.contains("Administrative shutdown"), t)
    });
    let t = bird.route("198.51.100.9/32");
    assert!(!t.contains("198.51.100.9/32"), "{t}");

    // With a 3 s TTL, an address seen (as the database has it) 2 s from now is listed for
    // about 5 s: announced once BIRD is in, then withdrawn when the listing expires.
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), &[("198.51.100.10", now_ms() + 2_000)]);
    let node = start_node(
        dir,
        &feed_args(&neighbor, &["--bgp-listen", &listen, "--actor-ttl", "3s"]),
    );
    wait_for("the short-lived /32 in BIRD's table", || {
        let t = bird.route("198.51.100.10/32");
        (t.contains("198.51.100.10/32"), t)
    });
    wait_for(
        "the /32 withdrawn from BIRD when the listing expires",
        || {
            let t = bird.route("198.51.100.10/32");
            (!t.contains("198.51.100.10/32"), t)
        },
    );
    assert_eq!(session_of(&node)["withdrawn"], 1);
}

#[test]
fn bad_bgp_settings_exit_2_naming_the_option() {
    for (args, option) in [
        (vec!["--bgp-neighbor", "127.0.0.1:1179"], "--bgp-local-as"),
        (
            vec![
                "--bgp-neighbor",
                "127.0.0.1:1179",
                "--bgp-local-as",
                "65000",
                "--bgp-peer-as",
                "65001",
            ],
            "--bgp-next-hop",
        ),
        (
            vec![
                "--bgp-neighbor",
                "127.0.0.1:1179",
                "--bgp-local-as",
                "65000",
                "--bgp-peer-as",
                "65001",
                "--bgp-next-hop",
                "192.0.2.1",
                "--bgp-community",
                "blackhole",
            ],
            "--bgp-community",
        ),
        (vec!["--bgp-local-as", "65000"], "--bgp-neighbor"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = run_tool(
            Command::new(bin())
                .current_dir(dir.path())
                .env("XDG_CONFIG_HOME", dir.path())
                .args(["-f", "x.db", "--udp-listen", "127.0.0.1:0", "-N"])
                .args(&args),
            Duration::from_secs(20),
        );
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", r.text());
        assert!(r.stderr.contains(option), "{args:?}: {}", r.stderr);
    }
    // And from the environment, the variable's option is named too.
    let dir = tempfile::tempdir().unwrap();
    let r = run_tool(
        Command::new(bin())
            .current_dir(dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("SENTRYPEER_BGP_NEIGHBOR", "127.0.0.1:1179")
            .env("SENTRYPEER_BGP_LOCAL_AS", "65000")
            .env("SENTRYPEER_BGP_PEER_AS", "65001")
            .env("SENTRYPEER_BGP_NEXT_HOP", "192.0.2.1")
            .env("SENTRYPEER_BGP_MAX_ROUTES", "none")
            .args(["-f", "x.db", "--udp-listen", "127.0.0.1:0", "-N"]),
        Duration::from_secs(20),
    );
    assert_eq!(r.status.code(), Some(2), "{}", r.text());
    assert!(r.stderr.contains("--bgp-max-routes"), "{}", r.stderr);
}
