//! `--nftables` and `--nftables-set-only`: the table `inet sentrypeer`, its sets
//! `bad_actors_v4` and `bad_actors_v6` (`flags timeout`, each element timing out when its
//! listing ends), and, unless set-only, the chain `input` hooked at priority -10 that drops
//! traffic from them. Every batch is one `nft -f -` script, which nft applies as one
//! transaction: all of it or none.
//!
//! The table stays when the node stops (the kernel expires its elements);
//! `sentrypeer nftables flush` removes it.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Backend, Changes, Element, KernelSet, Tool};
use crate::actors::export::{NFT_SET_V4, NFT_SET_V6, NFT_TABLE};
use crate::output::{
    BuildContext, BuildError, OUTPUT_QUEUE_EVENTS, OnThread, Output, OutputConfig, QueuePolicy,
};

/// The chain the node owns in its table (set-only removes it).
pub const NFT_CHAIN: &str = "input";
/// Its priority on the input hook: before the usual filter chains (0), so a blocked address is
/// dropped whatever they accept.
pub const NFT_CHAIN_PRIORITY: i32 = -10;
/// Elements per `add element` statement: nft parses long statements far faster than many
/// short ones.
const ELEMENTS_PER_STATEMENT: usize = 512;
/// The longest timeout given to an element (ten years); a longer listing is refreshed by the
/// periodic whole rewrite long before then.
const MAX_TIMEOUT_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// `--nftables` (with the dropping chain) or `--nftables-set-only` (the sets alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NftablesConfig {
    /// Keep the chain that drops listed addresses.
    pub chain: bool,
}

impl NftablesConfig {
    fn option(&self) -> &'static str {
        if self.chain {
            "--nftables"
        } else {
            "--nftables-set-only"
        }
    }
}

impl OutputConfig for NftablesConfig {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        // Local events only: a peer's report lists an address only once the store finds it
        // corroborated, and the change feed brings that.
        Some(QueuePolicy {
            events: OUTPUT_QUEUE_EVENTS,
            local_only: true,
        })
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let option = self.option();
        let tool = Tool::locate("nft", "nftables").map_err(|e| super::missing(option, "on", e))?;
        let nft = Nft::open(tool, self.chain).map_err(|e| super::probe_error(option, "on", &e))?;
        let stats = std::sync::Arc::new(crate::metrics::KernelSetStats::new("nftables"));
        Ok(Box::new(OnThread(KernelSet::new(nft, cx, stats))))
    }
}

/// The nft tool, checked and the table set up.
pub(crate) struct Nft {
    tool: Tool,
    chain: bool,
}

impl Nft {
    /// Checks that nft may change the ruleset, and creates the table, sets and (or,
    /// set-only, removes) the chain.
    pub(crate) fn open(tool: Tool, chain: bool) -> Result<Nft, String> {
        tool.run(&["list", "tables"], b"")?;
        let nft = Nft { tool, chain };
        nft.run(&setup(chain))?;
        Ok(nft)
    }

    fn run(&self, script: &str) -> Result<(), String> {
        self.tool.run(&["-f", "-"], script.as_bytes()).map(|_| ())
    }
}

impl Backend for Nft {
    fn load(&mut self, elements: &[Element]) -> Result<(), String> {
        self.run(&load(self.chain, elements))
    }

    fn apply(&mut self, changes: &Changes) -> Result<(), String> {
        self.run(&apply(changes))
    }
}

/// The table, its sets, and the chain (or its removal): each line idempotent.
pub(crate) fn setup(chain: bool) -> String {
    let mut s = format!(
        "add table inet {NFT_TABLE}\n\
         add set inet {NFT_TABLE} {NFT_SET_V4} {{ type ipv4_addr; flags timeout; }}\n\
         add set inet {NFT_TABLE} {NFT_SET_V6} {{ type ipv6_addr; flags timeout; }}\n"
    );
    if chain {
        let _ = write!(
            s,
            "add chain inet {NFT_TABLE} {NFT_CHAIN} {{ type filter hook input priority {NFT_CHAIN_PRIORITY}; policy accept; }}\n\
             flush chain inet {NFT_TABLE} {NFT_CHAIN}\n\
             add rule inet {NFT_TABLE} {NFT_CHAIN} ip saddr @{NFT_SET_V4} counter drop\n\
             add rule inet {NFT_TABLE} {NFT_CHAIN} ip6 saddr @{NFT_SET_V6} counter drop\n"
        );
    } else {
        // Set-only: a chain left by an earlier run with --nftables must not go on dropping.
        let _ = write!(
            s,
            "add chain inet {NFT_TABLE} {NFT_CHAIN}\n\
             flush chain inet {NFT_TABLE} {NFT_CHAIN}\n\
             delete chain inet {NFT_TABLE} {NFT_CHAIN}\n"
        );
    }
    s
}

/// One transaction that leaves the sets holding exactly `elements`.
pub(crate) fn load(chain: bool, elements: &[Element]) -> String {
    let mut s = setup(chain);
    for set in [NFT_SET_V4, NFT_SET_V6] {
        let _ = writeln!(s, "flush set inet {NFT_TABLE} {set}");
    }
    add_statements(&mut s, elements.iter().map(|e| (e.ip, Some(e.timeout_ms))));
    s
}

/// One transaction applying a batch. nft's `add element` leaves an existing element's timeout
/// as it was (before Linux 6.10), and `delete element` fails the whole transaction if the
/// kernel has expired the element meanwhile; adding it first with a short timeout makes the
/// delete certain, and adding it again after gives it its new timeout.
pub(crate) fn apply(c: &Changes) -> String {
    let mut s = String::new();
    let taken_out = c
        .replace
        .iter()
        .map(|e| e.ip)
        .chain(c.remove.iter().copied());
    let short: Vec<IpAddr> = taken_out.collect();
    if !short.is_empty() {
        add_statements(&mut s, short.iter().map(|ip| (*ip, None)));
        for (set, v4) in [(NFT_SET_V4, true), (NFT_SET_V6, false)] {
            for chunk in family(&short, v4).chunks(ELEMENTS_PER_STATEMENT) {
                let list: Vec<String> = chunk.iter().map(|ip| ip.to_string()).collect();
                let _ = writeln!(
                    s,
                    "delete element inet {NFT_TABLE} {set} {{ {} }}",
                    list.join(", ")
                );
            }
        }
    }
    add_statements(
        &mut s,
        c.add
            .iter()
            .chain(c.replace.iter())
            .map(|e| (e.ip, Some(e.timeout_ms))),
    );
    s
}

fn family(ips: &[IpAddr], v4: bool) -> Vec<IpAddr> {
    ips.iter()
        .copied()
        .filter(|ip| ip.is_ipv4() == v4)
        .collect()
}

/// `add element` statements, per family, [`ELEMENTS_PER_STATEMENT`] at a time. A timeout of
/// `None` is the short one that precedes a delete; `Some(None)` is no timeout at all.
fn add_statements(s: &mut String, elements: impl Iterator<Item = (IpAddr, Option<Option<u64>>)>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (ip, timeout) in elements {
        let element = match timeout {
            None => format!("{ip} timeout 1s"),
            Some(None) => ip.to_string(),
            Some(Some(ms)) => format!("{ip} timeout {}", duration(ms.clamp(1, MAX_TIMEOUT_MS))),
        };
        if ip.is_ipv4() {
            v4.push(element);
        } else {
            v6.push(element);
        }
    }
    for (set, list) in [(NFT_SET_V4, v4), (NFT_SET_V6, v6)] {
        for chunk in list.chunks(ELEMENTS_PER_STATEMENT) {
            let _ = writeln!(
                s,
                "add element inet {NFT_TABLE} {set} {{ {} }}",
                chunk.join(", ")
            );
        }
    }
}

/// A time in nft's units (`7d2h3m4s5ms`): nft refuses a large count of one unit (a week in
/// milliseconds is "value too large").
fn duration(ms: u64) -> String {
    let mut out = String::new();
    let mut left = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if left >= size {
            let _ = write!(out, "{}{unit}", left / size);
            left %= size;
        }
    }
    if left > 0 || out.is_empty() {
        let _ = write!(out, "{left}ms");
    }
    out
}

/// `sentrypeer nftables flush`: deletes the table, its sets and chain (and nothing if it is
/// not there).
pub fn flush_table() -> Result<(), String> {
    let tool = Tool::locate("nft", "nftables")?;
    let script = format!("add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    tool.run(&["-f", "-"], script.as_bytes()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ip: &str, ms: Option<u64>) -> Element {
        Element {
            ip: ip.parse().unwrap(),
            timeout_ms: ms,
        }
    }

    #[test]
    fn setup_owns_the_chain_or_removes_it() {
        let with = setup(true);
        assert!(with.contains(
            "add chain inet sentrypeer input { type filter hook input priority -10; policy accept; }"
        ));
        assert!(with.contains("ip saddr @bad_actors_v4 counter drop"));
        assert!(with.contains("ip6 saddr @bad_actors_v6 counter drop"));
        assert!(
            with.contains(
                "add set inet sentrypeer bad_actors_v4 { type ipv4_addr; flags timeout; }"
            )
        );
        let without = setup(false);
        assert!(without.contains("delete chain inet sentrypeer input"));
        assert!(!without.contains("drop"));
    }

    #[test]
    fn a_load_flushes_and_fills_both_families_in_one_script() {
        let s = load(
            true,
            &[
                e("192.0.2.1", Some(1500)),
                e("2001:db8::1", None),
                e("192.0.2.2", Some(0)),
            ],
        );
        let flush = s.find("flush set inet sentrypeer bad_actors_v4").unwrap();
        let add = s
            .find("add element inet sentrypeer bad_actors_v4 { 192.0.2.1 timeout 1s500ms, 192.0.2.2 timeout 1ms }")
            .unwrap();
        assert!(flush < add, "{s}");
        assert!(
            s.contains("add element inet sentrypeer bad_actors_v6 { 2001:db8::1 }"),
            "{s}"
        );
        let many: Vec<Element> = (0..1200u32)
            .map(|i| Element {
                ip: IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                timeout_ms: Some(1000),
            })
            .collect();
        let s = load(false, &many);
        assert_eq!(s.matches("add element").count(), 3, "512 + 512 + 176");
    }

    #[test]
    fn timeouts_are_written_in_nfts_units() {
        assert_eq!(duration(604_701_051), "6d23h58m21s51ms");
        assert_eq!(duration(3_600_000), "1h");
        assert_eq!(duration(61_001), "1m1s1ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(0), "0ms");
    }

    #[test]
    fn a_batch_replaces_and_removes_with_certain_deletes() {
        let s = apply(&Changes {
            add: vec![e("192.0.2.1", Some(5000))],
            replace: vec![e("192.0.2.2", Some(9000))],
            remove: vec!["2001:db8::9".parse().unwrap()],
        });
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines,
            [
                "add element inet sentrypeer bad_actors_v4 { 192.0.2.2 timeout 1s }",
                "add element inet sentrypeer bad_actors_v6 { 2001:db8::9 timeout 1s }",
                "delete element inet sentrypeer bad_actors_v4 { 192.0.2.2 }",
                "delete element inet sentrypeer bad_actors_v6 { 2001:db8::9 }",
                "add element inet sentrypeer bad_actors_v4 { 192.0.2.1 timeout 5s, 192.0.2.2 timeout 9s }",
            ]
        );
        assert_eq!(apply(&Changes::default()), "");
    }
}
