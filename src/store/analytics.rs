//! Analytics: probes counted as they are written, in per-minute and per-hour buckets keyed by
//! dimension (all probes, user agent, SIP method, country, source network, autonomous system)
//! and value, with counts and first and last sightings. A window's answer reads buckets, never
//! `honey`, so it costs the same over a million events as over ten.
//!
//! The writer aggregates each batch in memory first, so a batch is one upsert per distinct
//! (bucket, dimension, value), not one per event. Values are attacker strings: each is cut to
//! [`MAX_VALUE_CHARS`], and a bucket holds at most [`MAX_VALUES_PER_BUCKET`] distinct values
//! per dimension; the rest are counted under [`OTHER`].

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::IpAddr;

use rusqlite::{Connection, OptionalExtension, params};

/// The tables, one per bucket size. A window's series reads minutes (1 h, 24 h) or hours (7 d,
/// 30 d) of all probes, one row a bucket; its top values read minutes (1 h), hours (24 h, 7 d)
/// or days (30 d), so that no answer reads more than 168 buckets of at most
/// [`MAX_VALUES_PER_BUCKET`] values each, however the probes are spread.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sentrypeer_stats_minute (dim INTEGER NOT NULL, bucket INTEGER NOT NULL,
  value TEXT NOT NULL, seen_count INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
  PRIMARY KEY (dim, bucket, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sentrypeer_stats_hour (dim INTEGER NOT NULL, bucket INTEGER NOT NULL,
  value TEXT NOT NULL, seen_count INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
  PRIMARY KEY (dim, bucket, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sentrypeer_stats_day (dim INTEGER NOT NULL, bucket INTEGER NOT NULL,
  value TEXT NOT NULL, seen_count INTEGER NOT NULL, first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
  PRIMARY KEY (dim, bucket, value)) WITHOUT ROWID;
";

/// The longest value kept, in characters; a longer user agent is cut (and still counted).
pub const MAX_VALUE_CHARS: usize = 128;
/// Distinct values one bucket keeps per dimension: a scanner rotating its user agent per probe
/// costs at most this many rows a minute, not one per probe.
pub const MAX_VALUES_PER_BUCKET: usize = 500;
/// What values beyond [`MAX_VALUES_PER_BUCKET`] are counted as.
pub const OTHER: &str = "other";
/// The country of an address when no GeoIP database is given or the address is not in it.
pub const UNKNOWN: &str = "unknown";

/// How long buckets are kept: minutes for the longest minute window and a day more, hours and
/// days for the longest window and a day more.
const MINUTES_KEPT: i64 = 2 * 24 * 60;
const HOURS_KEPT: i64 = 31 * 24;
const DAYS_KEPT: i64 = 31;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What a bucket counts probes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Every probe, under the empty value: the time series.
    Probes = 0,
    UserAgent = 1,
    Method = 2,
    Country = 3,
    /// The source's /24 (IPv4) or /48 (IPv6).
    Network = 4,
    /// The source's autonomous system, `AS<number> <organisation>` (with an ASN database).
    Asn = 5,
    /// The source address.
    SourceIp = 6,
    /// The called number (or user), as recorded.
    Number = 7,
}

const DIMS: [Dim; 8] = [
    Dim::Probes,
    Dim::UserAgent,
    Dim::Method,
    Dim::Country,
    Dim::Network,
    Dim::Asn,
    Dim::SourceIp,
    Dim::Number,
];

/// Bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Grain {
    Minute,
    Hour,
    Day,
}

const GRAINS: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

impl Grain {
    fn table(self) -> &'static str {
        match self {
            Grain::Minute => "sentrypeer_stats_minute",
            Grain::Hour => "sentrypeer_stats_hour",
            Grain::Day => "sentrypeer_stats_day",
        }
    }

    /// Adds to a bucket's count (a constant: the writer runs it for every distinct value of
    /// every batch).
    fn upsert_sql(self) -> &'static str {
        macro_rules! upsert {
            ($t:literal) => {
                concat!(
                    "INSERT INTO ",
                    $t,
                    " (dim, bucket, value, seen_count, first_ms, last_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(dim, bucket, value) DO UPDATE SET
                       seen_count = seen_count + excluded.seen_count,
                       first_ms = min(first_ms, excluded.first_ms),
                       last_ms = max(last_ms, excluded.last_ms)"
                )
            };
        }
        match self {
            Grain::Minute => upsert!("sentrypeer_stats_minute"),
            Grain::Hour => upsert!("sentrypeer_stats_hour"),
            Grain::Day => upsert!("sentrypeer_stats_day"),
        }
    }

    fn ms(self) -> i64 {
        match self {
            Grain::Minute => MINUTE_MS,
            Grain::Hour => HOUR_MS,
            Grain::Day => DAY_MS,
        }
    }
}

/// A window the API answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
    Month,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "1h" => Some(Window::Hour),
            "24h" | "1d" => Some(Window::Day),
            "7d" => Some(Window::Week),
            "30d" => Some(Window::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }

    /// The series' bucket size and length.
    fn series(self) -> (Grain, i64) {
        match self {
            Window::Hour => (Grain::Minute, 60),
            Window::Day => (Grain::Minute, 24 * 60),
            Window::Week => (Grain::Hour, 7 * 24),
            Window::Month => (Grain::Hour, 30 * 24),
        }
    }

    /// The top values' bucket size and how many buckets, the current one included.
    fn values(self) -> (Grain, i64) {
        match self {
            Window::Hour => (Grain::Minute, 60),
            Window::Day => (Grain::Hour, 24),
            Window::Week => (Grain::Hour, 7 * 24),
            Window::Month => (Grain::Day, 30),
        }
    }

    /// The step of the window's series, in seconds.
    pub fn step_seconds(self) -> i64 {
        self.series().0.ms() / 1000
    }

    /// When the window's series ending at `now_ms` starts (the start of its first bucket).
    pub fn start_ms(self, now_ms: i64) -> i64 {
        let (grain, n) = self.series();
        first_bucket(grain, n, now_ms) * grain.ms()
    }
}

/// The first of `n` buckets ending with the one holding `now_ms`.
fn first_bucket(grain: Grain, n: i64, now_ms: i64) -> i64 {
    now_ms.div_euclid(grain.ms()) - (n - 1)
}

/// Where a source address is, from a GeoIP database.
pub trait Locate: Send + Sync {
    /// The ISO 3166 code of the address's country, if known.
    fn country(&self, ip: IpAddr) -> Option<String>;
    /// The address's autonomous system as `AS<number> <organisation>`, if known.
    fn asn(&self, ip: IpAddr) -> Option<String>;
}

/// The /24 or /48 an address belongs to, as `network/len`.
pub fn network_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    }
}

/// A value as kept: cut to [`MAX_VALUE_CHARS`] characters.
fn bounded(v: &str) -> &str {
    match v.char_indices().nth(MAX_VALUE_CHARS) {
        Some((i, _)) => v.get(..i).unwrap_or(v),
        None => v,
    }
}

#[derive(Debug, Clone, Copy)]
struct Agg {
    count: i64,
    first_ms: i64,
    last_ms: i64,
}

impl Agg {
    fn merge(&mut self, other: &Agg) {
        self.count += other.count;
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }
}

/// One probe as the aggregator needs it.
pub struct Probe<'a> {
    pub ms: i64,
    pub source: IpAddr,
    pub user_agent: &'a str,
    pub method: &'a str,
    pub called_number: &'a str,
}

/// The writer's half: aggregates a batch, upserts it, prunes old buckets. Remembers which
/// values the recent buckets hold so that the cap is kept without reading them back.
#[derive(Default)]
pub struct Aggregator {
    known: HashMap<(Grain, Dim, i64), HashSet<String>>,
    newest: HashMap<Grain, i64>,
    last_prune_ms: i64,
    locate: Option<std::sync::Arc<dyn Locate>>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("buckets_known", &self.known.len())
            .field("locate", &self.locate.is_some())
            .finish()
    }
}

/// Buckets whose values are remembered: the newest few of each grain (older ones, from a
/// peer's catch-up, are read back from the table when touched).
const BUCKETS_REMEMBERED: i64 = 3;
/// How often old buckets are deleted.
const PRUNE_EVERY_MS: i64 = MINUTE_MS;

impl Aggregator {
    pub fn set_locate(&mut self, locate: Option<std::sync::Arc<dyn Locate>>) {
        self.locate = locate;
    }

    /// Adds a batch of probes to the buckets, in the caller's transaction: aggregated in
    /// memory first, so the batch costs one upsert per distinct (bucket, dimension, value).
    pub fn add(&mut self, tx: &Connection, probes: &[Probe<'_>]) -> rusqlite::Result<()> {
        // What each source address is counted under (a flood comes from few sources).
        let mut places: HashMap<IpAddr, (String, String, Option<String>, String)> = HashMap::new();
        for p in probes {
            places.entry(p.source).or_insert_with(|| {
                let loc = self.locate.as_deref();
                (
                    loc.and_then(|l| l.country(p.source))
                        .unwrap_or_else(|| UNKNOWN.to_string()),
                    network_of(p.source),
                    loc.and_then(|l| l.asn(p.source)),
                    p.source.to_string(),
                )
            });
        }
        // Counted per minute first; hours and days are sums of minutes, so each event costs a
        // third of the map work it would cost counted in every grain.
        // Sized for the usual batch (a number and a few shared values per probe): growing it
        // rehashes every key again.
        let mut minutes: HashMap<(Dim, i64, &str), Agg> = HashMap::with_capacity(probes.len() + 64);
        for p in probes {
            let Some((country, network, asn, ip)) = places.get(&p.source) else {
                continue;
            };
            let values = [
                Some((Dim::Probes, "")),
                Some((Dim::UserAgent, bounded(p.user_agent))),
                Some((Dim::Method, bounded(p.method))),
                Some((Dim::Country, bounded(country))),
                Some((Dim::Network, network.as_str())),
                asn.as_deref().map(|a| (Dim::Asn, bounded(a))),
                Some((Dim::SourceIp, ip.as_str())),
                Some((Dim::Number, bounded(p.called_number))),
            ];
            let minute = p.ms.div_euclid(Grain::Minute.ms());
            for &(dim, value) in values.iter().flatten() {
                minutes
                    .entry((dim, minute, value))
                    .or_insert(Agg {
                        count: 0,
                        first_ms: p.ms,
                        last_ms: p.ms,
                    })
                    .merge(&Agg {
                        count: 1,
                        first_ms: p.ms,
                        last_ms: p.ms,
                    });
            }
        }
        // Each minute's figures go into its bucket of every grain, where each distinct value is
        // admitted under the bucket's cap or folded into OTHER. A value seen in several minutes
        // of one hour is asked for again: `admit` answers the same for a value it has admitted.
        let mut admitted: HashMap<(Grain, Dim, i64, &str), Agg> =
            HashMap::with_capacity(minutes.len());
        for ((dim, minute, value), a) in minutes {
            for grain in GRAINS {
                let bucket = (minute * Grain::Minute.ms()).div_euclid(grain.ms());
                let value = if self.admit(tx, grain, dim, bucket, value)? {
                    value
                } else {
                    OTHER
                };
                admitted
                    .entry((grain, dim, bucket, value))
                    .and_modify(|b| b.merge(&a))
                    .or_insert(a);
            }
        }
        for ((grain, dim, bucket, value), a) in &admitted {
            tx.prepare_cached(grain.upsert_sql())?.execute(params![
                *dim as i64,
                bucket,
                value,
                a.count,
                a.first_ms,
                a.last_ms
            ])?;
        }
        self.forget_old();
        Ok(())
    }

    /// Whether a value is counted as itself in this bucket; not when the bucket already holds
    /// [`MAX_VALUES_PER_BUCKET`] others (it is then counted as [`OTHER`]).
    fn admit(
        &mut self,
        tx: &Connection,
        grain: Grain,
        dim: Dim,
        bucket: i64,
        value: &str,
    ) -> rusqlite::Result<bool> {
        let newest = self.newest.entry(grain).or_insert(bucket);
        *newest = (*newest).max(bucket);
        let known = match self.known.entry((grain, dim, bucket)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                // A bucket not in memory: what it already holds (at most the cap and OTHER).
                let mut have = HashSet::new();
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT value FROM {} WHERE dim = ?1 AND bucket = ?2",
                    grain.table()
                ))?;
                let mut rows = stmt.query(params![dim as i64, bucket])?;
                while let Some(r) = rows.next()? {
                    let v: String = r.get(0)?;
                    if v != OTHER {
                        have.insert(v);
                    }
                }
                v.insert(have)
            }
        };
        if value == OTHER || known.contains(value) {
            return Ok(true);
        }
        if known.len() < MAX_VALUES_PER_BUCKET {
            known.insert(value.to_string());
            return Ok(true);
        }
        Ok(false)
    }

    fn forget_old(&mut self) {
        let newest = self.newest.clone();
        self.known.retain(|(grain, _, bucket), _| {
            newest
                .get(grain)
                .is_some_and(|n| *bucket > n - BUCKETS_REMEMBERED)
        });
    }

    /// Deletes buckets past their keeping time, at most once a minute.
    pub fn prune(&mut self, conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
        if now_ms - self.last_prune_ms < PRUNE_EVERY_MS {
            return Ok(());
        }
        self.last_prune_ms = now_ms;
        for (grain, kept) in [
            (Grain::Minute, MINUTES_KEPT),
            (Grain::Hour, HOURS_KEPT),
            (Grain::Day, DAYS_KEPT),
        ] {
            let cutoff = now_ms.div_euclid(grain.ms()) - kept;
            for dim in DIMS {
                conn.prepare_cached(&format!(
                    "DELETE FROM {} WHERE dim = ?1 AND bucket < ?2",
                    grain.table()
                ))?
                .execute(params![dim as i64, cutoff])?;
            }
        }
        Ok(())
    }
}

/// One value's figures in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRow {
    pub value: String,
    pub count: i64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The top values of a dimension in a window, most probes first, and how many distinct values
/// the window holds.
pub fn top(
    conn: &Connection,
    dim: Dim,
    window: Window,
    now_ms: i64,
    limit: usize,
) -> rusqlite::Result<(Vec<ValueRow>, u64)> {
    let (grain, n) = window.values();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT value, sum(seen_count), min(first_ms), max(last_ms) FROM {}
         WHERE dim = ?1 AND bucket >= ?2 GROUP BY value",
        grain.table()
    ))?;
    let mut rows = stmt.query(params![dim as i64, first_bucket(grain, n, now_ms)])?;
    let mut all = Vec::new();
    while let Some(r) = rows.next()? {
        all.push(ValueRow {
            value: r.get(0)?,
            count: r.get(1)?,
            first_ms: r.get(2)?,
            last_ms: r.get(3)?,
        });
    }
    let distinct = all.len() as u64;
    all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    all.truncate(limit);
    Ok((all, distinct))
}

/// One value's rows in `n` buckets ending with the current one, oldest first: (bucket,
/// count, first, last). A point lookup per bucket, whatever else the buckets hold.
fn value_rows(
    conn: &Connection,
    grain: Grain,
    n: i64,
    dim: Dim,
    value: &str,
    now_ms: i64,
) -> rusqlite::Result<Vec<(i64, i64, i64, i64)>> {
    let first = first_bucket(grain, n, now_ms);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seen_count, first_ms, last_ms FROM {}
         WHERE dim = ?1 AND bucket = ?2 AND value = ?3",
        grain.table()
    ))?;
    let mut out = Vec::new();
    for bucket in first..first + n {
        let row = stmt
            .query_row(params![dim as i64, bucket, value], |r| {
                Ok((bucket, r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        out.extend(row);
    }
    Ok(out)
}

/// One value's figures in a window (over the buckets the top lists read), if it was seen in it.
pub fn one(
    conn: &Connection,
    dim: Dim,
    value: &str,
    window: Window,
    now_ms: i64,
) -> rusqlite::Result<Option<ValueRow>> {
    let (grain, n) = window.values();
    let rows = value_rows(conn, grain, n, dim, value, now_ms)?;
    Ok((!rows.is_empty()).then(|| ValueRow {
        value: value.to_string(),
        count: rows.iter().map(|r| r.1).sum(),
        first_ms: rows.iter().map(|r| r.2).min().unwrap_or(0),
        last_ms: rows.iter().map(|r| r.3).max().unwrap_or(0),
    }))
}

/// Probes per bucket over the window, oldest first, zeros included: of every probe, or of one
/// value of a dimension.
pub fn series(
    conn: &Connection,
    of: Option<(Dim, &str)>,
    window: Window,
    now_ms: i64,
) -> rusqlite::Result<Vec<i64>> {
    let (grain, n) = window.series();
    let first = first_bucket(grain, n, now_ms);
    let (dim, value) = of.unwrap_or((Dim::Probes, ""));
    let mut out = vec![0i64; usize::try_from(n).unwrap_or(0)];
    for (bucket, count, _, _) in value_rows(conn, grain, n, dim, value, now_ms)? {
        if let Some(slot) = usize::try_from(bucket - first)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            *slot += count;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    const T0: i64 = 1_800_000_000_000;

    fn probe(ms: i64, ip: &str, ua: &'static str) -> Probe<'static> {
        Probe {
            ms,
            source: ip.parse().unwrap(),
            user_agent: ua,
            method: "OPTIONS",
            called_number: "100",
        }
    }

    #[test]
    fn a_batch_is_counted_per_value_with_first_and_last_seen_and_a_series() {
        let c = conn();
        let mut a = Aggregator::default();
        a.add(
            &c,
            &[
                probe(T0, "192.0.2.1", "friendly-scanner"),
                probe(T0 + 61_000, "192.0.2.9", "friendly-scanner"),
                probe(T0 + 62_000, "2001:db8:1:2::1", "sipvicious"),
            ],
        )
        .unwrap();
        let now = T0 + 120_000;
        let (rows, distinct) = top(&c, Dim::UserAgent, Window::Hour, now, 10).unwrap();
        assert_eq!(distinct, 2);
        assert_eq!(
            rows[0],
            ValueRow {
                value: "friendly-scanner".into(),
                count: 2,
                first_ms: T0,
                last_ms: T0 + 61_000
            }
        );
        let (nets, _) = top(&c, Dim::Network, Window::Month, now, 10).unwrap();
        assert_eq!(nets[0].value, "192.0.2.0/24");
        assert_eq!(nets[0].count, 2);
        assert_eq!(nets[1].value, "2001:db8:1::/48");
        let s = series(&c, None, Window::Hour, now).unwrap();
        assert_eq!(s.len(), 60);
        assert_eq!(s.iter().sum::<i64>(), 3);
        assert_eq!(s[59], 0);
        let (countries, _) = top(&c, Dim::Country, Window::Day, now, 10).unwrap();
        assert_eq!(countries[0].value, UNKNOWN);
        let ua = one(&c, Dim::UserAgent, "sipvicious", Window::Week, now).unwrap();
        assert_eq!(ua.map(|r| r.count), Some(1));
        assert!(
            one(&c, Dim::UserAgent, "nobody", Window::Week, now)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn distinct_values_beyond_the_cap_count_as_other_and_long_ones_are_cut() {
        let c = conn();
        let mut a = Aggregator::default();
        let agents: Vec<String> = (0..MAX_VALUES_PER_BUCKET + 50)
            .map(|i| format!("{i}{}", "x".repeat(300)))
            .collect();
        let probes: Vec<Probe<'_>> = agents
            .iter()
            .map(|ua| Probe {
                ms: T0,
                source: "192.0.2.1".parse().unwrap(),
                user_agent: ua,
                method: "INVITE",
                called_number: "100",
            })
            .collect();
        a.add(&c, &probes).unwrap();
        // A fresh aggregator (a restart) reads what the bucket holds and keeps the cap.
        let mut b = Aggregator::default();
        b.add(&c, &[probe(T0, "192.0.2.1", "yet another")]).unwrap();
        let (rows, distinct) = top(&c, Dim::UserAgent, Window::Hour, T0, 1000).unwrap();
        assert_eq!(distinct as usize, MAX_VALUES_PER_BUCKET + 1);
        assert_eq!(rows[0].value, OTHER);
        assert_eq!(rows[0].count, 51);
        assert!(
            rows.iter()
                .all(|r| r.value.chars().count() <= MAX_VALUE_CHARS)
        );
    }

    #[test]
    fn old_buckets_are_pruned_and_windows_exclude_them() {
        let c = conn();
        let mut a = Aggregator::default();
        a.add(&c, &[probe(T0, "192.0.2.1", "a")]).unwrap();
        let later = T0 + 3 * 24 * HOUR_MS;
        assert_eq!(
            series(&c, None, Window::Day, later)
                .unwrap()
                .iter()
                .sum::<i64>(),
            0
        );
        assert_eq!(
            series(&c, None, Window::Week, later)
                .unwrap()
                .iter()
                .sum::<i64>(),
            1
        );
        a.prune(&c, later).unwrap();
        let minutes: i64 = c
            .query_row("SELECT count(*) FROM sentrypeer_stats_minute", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(minutes, 0);
        let hours: i64 = c
            .query_row("SELECT count(*) FROM sentrypeer_stats_hour", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(hours > 0);
    }
}
