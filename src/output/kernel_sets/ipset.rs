//! `--ipset NAME`: ipset `hash:ip` sets NAME (IPv4) and NAME6 (IPv6) with timeouts, for
//! iptables users, who match them in their own rules
//! (`iptables -I INPUT -m set --match-set NAME src -j DROP`). The node never adds iptables
//! rules itself. Every batch is one `ipset restore -exist` run; a whole rewrite fills
//! temporary sets and swaps them in, so a rule never sees a half-filled set.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Backend, Changes, Element, KernelSet, Tool};
use crate::output::{
    BuildContext, BuildError, OUTPUT_QUEUE_EVENTS, OnThread, Output, OutputConfig, QueuePolicy,
};
use crate::settings::ConfigError;

/// ipset's longest name (31 characters) less the `6_tmp` the IPv6 set's temporary twin adds.
const MAX_NAME_CHARS: usize = 26;
/// ipset's longest timeout, in seconds; a longer listing is refreshed by the periodic whole
/// rewrite long before it lapses.
const MAX_TIMEOUT_SECS: u64 = 2_147_483;
/// Elements each set may hold (ipset's default, 65,536, is too small for a busy node).
const MAXELEM: u64 = 4 * 1024 * 1024;
/// What a temporary set, swapped in by a whole rewrite, is called after its set.
const TMP_SUFFIX: &str = "_tmp";

/// `--ipset NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetConfig {
    /// The IPv4 set; the IPv6 set is this with a `6`.
    pub name: String,
}

impl IpsetConfig {
    /// Checks a set name: what ipset accepts, short enough for its IPv6 and temporary twins,
    /// and nothing that could be read as more than a name in a script.
    pub fn new(name: &str) -> Result<IpsetConfig, ConfigError> {
        let name = name.trim();
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_CHARS
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(IpsetConfig {
                name: name.to_string(),
            })
        } else {
            Err(ConfigError::new(
                "--ipset",
                name,
                format!(
                    "expected a set name of 1 to {MAX_NAME_CHARS} letters, digits, '_', '-' or '.'"
                ),
            ))
        }
    }
}

impl OutputConfig for IpsetConfig {
    fn name(&self) -> &'static str {
        "ipset"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy {
            events: OUTPUT_QUEUE_EVENTS,
            local_only: true,
        })
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let tool =
            Tool::locate("ipset", "ipset").map_err(|e| super::missing("--ipset", &self.name, e))?;
        let ipset = Ipset::open(tool, &self.name)
            .map_err(|e| super::probe_error("--ipset", &self.name, &e))?;
        let stats = std::sync::Arc::new(crate::metrics::KernelSetStats::new("ipset"));
        Ok(Box::new(OnThread(KernelSet::new(ipset, cx, stats))))
    }
}

/// The ipset tool, checked, and the sets' names.
pub(crate) struct Ipset {
    tool: Tool,
    v4: String,
    v6: String,
}

impl Ipset {
    /// Checks that ipset may change sets, and creates NAME and NAME6.
    pub(crate) fn open(tool: Tool, name: &str) -> Result<Ipset, String> {
        tool.run(&["list", "-n"], b"")?;
        let ipset = Ipset {
            tool,
            v4: name.to_string(),
            v6: format!("{name}6"),
        };
        ipset.ensure()?;
        Ok(ipset)
    }

    fn restore(&self, script: &str) -> Result<(), String> {
        self.tool
            .run(&["restore", "-exist"], script.as_bytes())
            .map(|_| ())
    }

    /// Creates the sets if missing. A set already there with other settings (another
    /// `maxelem`, the default timeout an export file gives) is kept if it is a `hash:ip` set
    /// with timeouts of the right family.
    fn ensure(&self) -> Result<(), String> {
        for (set, family) in [(&self.v4, "inet"), (&self.v6, "inet6")] {
            if let Err(e) = self.restore(&create(set, family)) {
                let header = self
                    .tool
                    .run(&["list", "-t", set], b"")
                    .map_err(|_| e.clone())?;
                if !compatible(&header, family) {
                    return Err(format!(
                        "{e} (set {set} exists and is not a hash:ip set of family {family} with \
                         timeouts: remove it with `ipset destroy {set}` or choose another name)"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Backend for Ipset {
    fn load(&mut self, elements: &[Element]) -> Result<(), String> {
        self.ensure()?;
        // A temporary set left by an interrupted rewrite goes first (it may not exist).
        for set in [&self.v4, &self.v6] {
            let _ = self
                .tool
                .run(&["destroy", &format!("{set}{TMP_SUFFIX}")], b"");
        }
        self.restore(&load(&self.v4, &self.v6, elements))
    }

    fn apply(&mut self, changes: &Changes) -> Result<(), String> {
        self.restore(&apply(&self.v4, &self.v6, changes))
    }
}

fn create(set: &str, family: &str) -> String {
    format!("create {set} hash:ip family {family} timeout 0 maxelem {MAXELEM}\n")
}

/// Whether `ipset list -t` describes a set this output can fill.
fn compatible(header: &str, family: &str) -> bool {
    header.lines().any(|l| l.trim() == "Type: hash:ip")
        && header.lines().any(|l| {
            l.starts_with("Header:")
                && l.contains(&format!("family {family} "))
                && l.contains(" timeout ")
        })
}

fn timeout_secs(ms: Option<u64>) -> u64 {
    // ipset counts whole seconds; 0 is no timeout at all.
    ms.map_or(0, |ms| ms.div_ceil(1000).clamp(1, MAX_TIMEOUT_SECS))
}

fn set_for<'a>(ip: &IpAddr, v4: &'a str, v6: &'a str) -> &'a str {
    if ip.is_ipv4() { v4 } else { v6 }
}

/// Fills temporary twins of both sets and swaps them in: the sets change in one step each.
pub(crate) fn load(v4: &str, v6: &str, elements: &[Element]) -> String {
    let mut s = String::new();
    for (set, family) in [(v4, "inet"), (v6, "inet6")] {
        s.push_str(&create(&format!("{set}{TMP_SUFFIX}"), family));
    }
    for e in elements {
        let set = set_for(&e.ip, v4, v6);
        let _ = writeln!(
            s,
            "add {set}{TMP_SUFFIX} {} timeout {}",
            e.ip,
            timeout_secs(e.timeout_ms)
        );
    }
    for set in [v4, v6] {
        let _ = writeln!(s, "swap {set}{TMP_SUFFIX} {set}\ndestroy {set}{TMP_SUFFIX}");
    }
    s
}

/// One `ipset restore -exist` batch: with `-exist`, `add` gives an existing entry its new
/// timeout and `del` of a missing entry is no error.
pub(crate) fn apply(v4: &str, v6: &str, c: &Changes) -> String {
    let mut s = String::new();
    for e in c.add.iter().chain(c.replace.iter()) {
        let _ = writeln!(
            s,
            "add {} {} timeout {}",
            set_for(&e.ip, v4, v6),
            e.ip,
            timeout_secs(e.timeout_ms)
        );
    }
    for ip in &c.remove {
        let _ = writeln!(s, "del {} {ip}", set_for(ip, v4, v6));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_are_checked() {
        assert_eq!(IpsetConfig::new("sentrypeer").unwrap().name, "sentrypeer");
        assert_eq!(
            IpsetConfig::new(" bad.actors_1-x ").unwrap().name,
            "bad.actors_1-x"
        );
        for bad in ["", "-x", "a b", "a;b", "x\ny", &"n".repeat(27)] {
            let e = IpsetConfig::new(bad).unwrap_err();
            assert_eq!(e.option, "--ipset", "{bad}");
        }
    }

    #[test]
    fn a_load_swaps_filled_twins_in() {
        let s = load(
            "sp",
            "sp6",
            &[
                Element {
                    ip: "192.0.2.1".parse().unwrap(),
                    timeout_ms: Some(1500),
                },
                Element {
                    ip: "2001:db8::1".parse().unwrap(),
                    timeout_ms: None,
                },
            ],
        );
        assert_eq!(
            s,
            "create sp_tmp hash:ip family inet timeout 0 maxelem 4194304\n\
             create sp6_tmp hash:ip family inet6 timeout 0 maxelem 4194304\n\
             add sp_tmp 192.0.2.1 timeout 2\n\
             add sp6_tmp 2001:db8::1 timeout 0\n\
             swap sp_tmp sp\ndestroy sp_tmp\n\
             swap sp6_tmp sp6\ndestroy sp6_tmp\n"
        );
    }

    #[test]
    fn a_batch_adds_with_timeouts_and_deletes() {
        let s = apply(
            "sp",
            "sp6",
            &Changes {
                add: vec![Element {
                    ip: "192.0.2.1".parse().unwrap(),
                    timeout_ms: Some(u64::MAX),
                }],
                replace: vec![Element {
                    ip: "2001:db8::2".parse().unwrap(),
                    timeout_ms: Some(1),
                }],
                remove: vec!["192.0.2.3".parse().unwrap()],
            },
        );
        assert_eq!(
            s,
            "add sp 192.0.2.1 timeout 2147483\nadd sp6 2001:db8::2 timeout 1\ndel sp 192.0.2.3\n"
        );
    }

    #[test]
    fn an_existing_set_is_accepted_when_it_can_hold_the_elements() {
        let header = "Name: sp\nType: hash:ip\nRevision: 6\nHeader: family inet hashsize 1024 maxelem 65536 timeout 604800 bucketsize 12 initval 0x1\n";
        assert!(compatible(header, "inet"));
        assert!(!compatible(header, "inet6"));
        assert!(!compatible(&header.replace(" timeout 604800", ""), "inet"));
        assert!(!compatible(&header.replace("hash:ip", "hash:net"), "inet"));
    }
}
