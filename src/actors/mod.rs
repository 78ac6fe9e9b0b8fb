//! Who is a bad actor right now: the one place that decides. An actor is an address or a dialled
//! number with what is known of it (first and last seen, how often, seen here or reported by which
//! peer authors); it is **listed** while unexpired, not allowlisted, not one of this node's own
//! addresses, and either seen by this node or corroborated by peers. Lookups, lists, exports and
//! every enforcing consumer read this answer and its change sequence; none re-derives the rule.
//!
//! This module is pure: the rule and its parameters. `store::actors` keeps the facts and the
//! verdicts in the database, the writer applies the rule as it writes, and readers only compare
//! the stored expiry with the clock (and the allowlist, which may have changed since).

pub mod allow;
pub mod config;
pub mod export;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use allow::{AllowList, Cidr};

/// How long an actor stays listed after it was last seen, by default: SentryPeer's own measure of
/// how long such data is of use.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Distinct peer authors whose reports list an actor this node has not seen itself, by default.
pub const DEFAULT_CORROBORATION: u32 = 2;

/// Kinds of actor, as stored (`kind` columns) and named in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ip,
    Number,
}

/// How long a listing lasts after the last sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Listed for good once seen: upstream's all-time behaviour.
    Forever,
    For(Duration),
}

impl Ttl {
    /// Parses `7d`, `12h`, `90m`, `30s`, a bare number of seconds, or `forever`.
    pub fn parse(text: &str) -> Result<Ttl, DurationError> {
        if text.trim().eq_ignore_ascii_case("forever") {
            return Ok(Ttl::Forever);
        }
        let d = parse_duration(text)?;
        if d.is_zero() {
            return Err(DurationError::Zero);
        }
        Ok(Ttl::For(d))
    }

    /// The expiry of a sighting at `seen_ms` (milliseconds since the epoch).
    pub fn expiry(self, seen_ms: i64) -> i64 {
        match self {
            Ttl::Forever => i64::MAX,
            Ttl::For(d) => seen_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// How far an expiry must move before the move is a change consumers are told about: a
    /// hundredth of the TTL, at least a second. A kernel set or a BGP feed is then refreshed
    /// about a hundred times per TTL for an actor seen all the time, not on every probe, and
    /// lets an element lapse at most 1% of the TTL early (it comes back on the next sighting).
    pub fn extension_slack_ms(self) -> i64 {
        match self {
            Ttl::Forever => i64::MAX,
            Ttl::For(d) => (d.as_millis() / 100).clamp(1000, i64::MAX as u128) as i64,
        }
    }
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("expected a number with a unit s, m, h or d (for example 7d, 12h, 30s)")]
    Malformed,
    #[error("must be more than zero")]
    Zero,
    #[error("too long")]
    TooLong,
}

/// The longest duration accepted: a hundred years, far beyond any use, far from overflow.
const MAX_DURATION_SECS: u64 = 100 * 365 * 24 * 3600;

/// Parses `7d`, `12h`, `90m`, `30s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| DurationError::Malformed)?;
    let unit_secs = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(DurationError::Malformed),
    };
    let secs = n.checked_mul(unit_secs).ok_or(DurationError::TooLong)?;
    if secs > MAX_DURATION_SECS {
        return Err(DurationError::TooLong);
    }
    Ok(Duration::from_secs(secs))
}

/// The most digits a dialled number has; longer runs of digits are not numbers anyone dials
/// (E.164 numbers have at most 15 digits, dial strings with prefixes a few more).
pub const MAX_NUMBER_DIGITS: usize = 64;

/// Whether a called value is a dialled number (`\+?[0-9]+`, 1 to [`MAX_NUMBER_DIGITS`] digits,
/// leading zeros kept): what the number lists, lookups and exports hold. SIP user names
/// (`admin`, `100a`) and `NOT_FOUND` are recorded but are not numbers. `store::numbers` has the
/// same rule in SQL.
#[must_use]
pub fn is_dialled_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty()
        && digits.len() <= MAX_NUMBER_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The listing rule's parameters. Shared by the writer (which applies them) and readers (which
/// re-check the allowlist, so a reload takes effect before the writer has re-evaluated).
#[derive(Debug)]
pub struct Rules {
    pub ttl: Ttl,
    /// Distinct peer authors needed to list an actor this node has not seen.
    pub corroboration: u32,
    /// Peer authors whose single report lists an actor.
    pub trusted: HashSet<String>,
    allow: RwLock<Arc<AllowList>>,
    /// Bumped by every new allowlist, so the writer notices a reload and re-evaluates.
    allow_generation: std::sync::atomic::AtomicU64,
    /// Addresses of this node (its specific listen addresses, and the addresses probes were sent
    /// to): never listed, so a forged probe cannot make the node block itself.
    own: RwLock<HashSet<IpAddr>>,
}

impl Default for Rules {
    /// The defaults: a 7-day TTL, two peer authors, no trusted peers, no allowlist.
    fn default() -> Rules {
        Rules::new(
            Ttl::For(DEFAULT_TTL),
            DEFAULT_CORROBORATION,
            HashSet::new(),
            AllowList::default(),
        )
    }
}

/// The most own addresses remembered (a host has a handful; a bound keeps a stream of forged
/// destination addresses, impossible as that is, from growing the set).
const MAX_OWN_ADDRESSES: usize = 256;

impl Rules {
    pub fn new(ttl: Ttl, corroboration: u32, trusted: HashSet<String>, allow: AllowList) -> Rules {
        Rules {
            ttl,
            corroboration: corroboration.max(1),
            trusted,
            allow: RwLock::new(Arc::new(allow)),
            allow_generation: std::sync::atomic::AtomicU64::new(0),
            own: RwLock::new(HashSet::new()),
        }
    }

    /// What the stored verdicts depend on, as text: when it differs from the fingerprint the
    /// database was last written under, every actor is re-evaluated.
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut trusted: Vec<&String> = self.trusted.iter().collect();
        trusted.sort();
        let mut h = std::hash::DefaultHasher::new();
        trusted.hash(&mut h);
        self.allow().ranges().hash(&mut h);
        let ttl = match self.ttl {
            Ttl::Forever => "forever".to_string(),
            Ttl::For(d) => format!("{}s", d.as_secs()),
        };
        format!(
            "ttl={ttl};corroboration={};h={:016x}",
            self.corroboration,
            h.finish()
        )
    }

    /// The allowlist in force.
    pub fn allow(&self) -> Arc<AllowList> {
        self.allow.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new allowlist in force (a reloaded `--allow-file`).
    pub fn set_allow(&self, allow: AllowList) {
        *self.allow.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(allow);
        self.allow_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many times the allowlist was replaced.
    pub fn allow_generation(&self) -> u64 {
        self.allow_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Notes an address of this node's; true if it was new. Loopback addresses are not noted: a
    /// probe over loopback comes from this host itself (a test, a local scan), cannot be forged
    /// from outside, and is recorded like any other.
    pub fn note_own(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() {
            return false;
        }
        if self
            .own
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
        {
            return false;
        }
        let mut own = self.own.write().unwrap_or_else(|e| e.into_inner());
        own.len() < MAX_OWN_ADDRESSES && own.insert(ip)
    }

    pub fn is_own(&self, ip: IpAddr) -> bool {
        self.own
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip.to_canonical())
    }

    /// Whether an address may never be listed, whatever was seen of it.
    pub fn excluded(&self, ip: IpAddr) -> bool {
        self.allow().contains(ip) || self.is_own(ip)
    }

    /// Whether a peer author's report counts alone.
    pub fn is_trusted(&self, author: &str) -> bool {
        self.trusted.contains(author)
    }

    /// The expiry of an actor's listing from what is known of it, or `None` when it is not
    /// listed. `corroborated_ms` is the time from which peers' reports list it (see
    /// [`corroborated_since`]).
    pub fn listed_until(&self, facts: Facts) -> Option<i64> {
        if facts.excluded {
            return None;
        }
        let seen = match (facts.local_last_ms, facts.corroborated_ms) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(self.ttl.expiry(seen))
    }

    /// From which report time peers' reports list an actor: the newest report of a trusted
    /// author, or the `corroboration`-th newest of distinct authors (so that the listing ends
    /// exactly when fewer than `corroboration` of them remain within the TTL).
    /// `reports` holds each author's latest report time.
    pub fn corroborated_since<'a>(
        &self,
        reports: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Option<i64> {
        let mut trusted: Option<i64> = None;
        let mut times: Vec<i64> = Vec::new();
        for (author, at) in reports {
            if self.is_trusted(author) {
                trusted = Some(trusted.map_or(at, |t| t.max(at)));
            }
            times.push(at);
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        let nth = times.get(self.corroboration as usize - 1).copied();
        match (trusted, nth) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the rule needs to know of one actor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Allowlisted or this node's own: never listed.
    pub excluded: bool,
    /// When this node last saw it (ms since the epoch), if ever.
    pub local_last_ms: Option<i64>,
    /// When peers' reports came to list it, if they do.
    pub corroborated_ms: Option<i64>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(n: u32, trusted: &[&str]) -> Rules {
        Rules::new(
            Ttl::For(Duration::from_secs(100)),
            n,
            trusted.iter().map(|s| s.to_string()).collect(),
            AllowList::default(),
        )
    }

    #[test]
    fn durations_take_the_usual_units_and_forever() {
        assert_eq!(Ttl::parse("7d"), Ok(Ttl::For(Duration::from_secs(604_800))));
        assert_eq!(Ttl::parse("12h"), Ok(Ttl::For(Duration::from_secs(43_200))));
        assert_eq!(Ttl::parse("90m"), Ok(Ttl::For(Duration::from_secs(5_400))));
        assert_eq!(Ttl::parse("2s"), Ok(Ttl::For(Duration::from_secs(2))));
        assert_eq!(Ttl::parse("45"), Ok(Ttl::For(Duration::from_secs(45))));
        assert_eq!(Ttl::parse(" Forever "), Ok(Ttl::Forever));
        assert_eq!(Ttl::parse("0s"), Err(DurationError::Zero));
        assert_eq!(Ttl::parse("7w"), Err(DurationError::Malformed));
        assert_eq!(Ttl::parse("d"), Err(DurationError::Malformed));
        assert_eq!(Ttl::parse("-1d"), Err(DurationError::Malformed));
        assert_eq!(
            Ttl::parse("99999999999999999999d"),
            Err(DurationError::Malformed)
        );
        assert_eq!(Ttl::parse("999999999d"), Err(DurationError::TooLong));
    }

    #[test]
    fn expiry_is_last_seen_plus_the_ttl_and_forever_never_ends() {
        assert_eq!(Ttl::For(Duration::from_secs(2)).expiry(1_000), 3_000);
        assert_eq!(Ttl::Forever.expiry(1_000), i64::MAX);
        assert_eq!(
            Ttl::For(Duration::from_secs(7 * 86_400)).extension_slack_ms(),
            6_048_000
        );
        assert_eq!(Ttl::For(Duration::from_secs(2)).extension_slack_ms(), 1_000);
    }

    #[test]
    fn dialled_numbers_are_digits_with_an_optional_plus() {
        for yes in ["100", "+442012345678", "0044123", "9"] {
            assert!(is_dialled_number(yes), "{yes}");
        }
        for no in ["", "+", "admin", "100a", "NOT_FOUND", "++1", "1 2", "１２"] {
            assert!(!is_dialled_number(no), "{no}");
        }
    }

    #[test]
    fn a_local_sighting_lists_and_exclusion_always_wins() {
        let r = rules(2, &[]);
        let seen = Facts {
            local_last_ms: Some(5_000),
            ..Facts::default()
        };
        assert_eq!(r.listed_until(seen), Some(105_000));
        assert_eq!(
            r.listed_until(Facts {
                excluded: true,
                ..seen
            }),
            None
        );
        assert_eq!(r.listed_until(Facts::default()), None);
    }

    #[test]
    fn peers_list_an_actor_only_when_enough_distinct_authors_or_a_trusted_one_report_it() {
        let r = rules(2, &["trusted"]);
        assert_eq!(r.corroborated_since([("a", 10)]), None);
        assert_eq!(r.corroborated_since([("a", 10), ("b", 30)]), Some(10));
        // Listed until the second-newest report lapses.
        assert_eq!(
            r.corroborated_since([("a", 10), ("b", 30), ("c", 20)]),
            Some(20)
        );
        assert_eq!(r.corroborated_since([("trusted", 7)]), Some(7));
        assert_eq!(
            r.corroborated_since([("trusted", 7), ("a", 50), ("b", 40)]),
            Some(40)
        );
        let one = rules(1, &[]);
        assert_eq!(one.corroborated_since([("a", 10)]), Some(10));
    }

    #[test]
    fn own_addresses_are_remembered_but_loopback_is_not() {
        let r = rules(2, &[]);
        assert!(r.note_own("198.51.100.1".parse().unwrap()));
        assert!(!r.note_own("198.51.100.1".parse().unwrap()));
        assert!(r.excluded("::ffff:198.51.100.1".parse().unwrap()));
        assert!(!r.note_own("127.0.0.1".parse().unwrap()));
        assert!(!r.excluded("127.0.0.1".parse().unwrap()));
        r.set_allow(AllowList::new([Cidr::parse("203.0.113.0/24").unwrap()]));
        assert!(r.excluded("203.0.113.77".parse().unwrap()));
    }
}
