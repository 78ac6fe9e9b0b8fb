//! The routes to announce: every listed address with the time its listing ends, of which the
//! `max` that stay listed longest are announced and the rest held back (counted). Pure: fed
//! by `feed` from the bad-actor set, read by every session.
//!
//! Each change to what is announced gets a version; a short log of recent changes lets a
//! session catch up with a diff, and one that fell further behind compares its whole
//! announced set with [`Table::announced`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

/// Changes kept for sessions catching up; one further behind compares whole sets.
const LOG_CAP: usize = 262_144;

/// One change: at `version`, `ip` became announced (`true`) or withdrawn.
pub type Change = (u64, IpAddr, bool);

#[derive(Debug)]
pub struct Table {
    max: usize,
    /// Every listed address known, with its listing's end (ms since the epoch).
    until: HashMap<IpAddr, i64>,
    announced: BTreeSet<(i64, IpAddr)>,
    /// Listed, but beyond `max`: the soonest to expire are held back.
    held: BTreeSet<(i64, IpAddr)>,
    version: u64,
    log: VecDeque<Change>,
}

impl Table {
    pub fn new(max: usize) -> Table {
        Table {
            max,
            until: HashMap::new(),
            announced: BTreeSet::new(),
            held: BTreeSet::new(),
            version: 0,
            log: VecDeque::new(),
        }
    }

    /// The version of the last change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Addresses listed now (announced or held back).
    pub fn listed(&self) -> usize {
        self.until.len()
    }

    /// Listed addresses not announced because of the limit.
    pub fn held_back(&self) -> usize {
        self.held.len()
    }

    pub fn announced_len(&self) -> usize {
        self.announced.len()
    }

    pub fn is_announced(&self, ip: IpAddr) -> bool {
        self.until
            .get(&ip)
            .is_some_and(|u| self.announced.contains(&(*u, ip)))
    }

    /// Every address announced now.
    pub fn announced(&self) -> Vec<IpAddr> {
        self.announced.iter().map(|(_, ip)| *ip).collect()
    }

    fn record(&mut self, ip: IpAddr, up: bool) {
        self.version += 1;
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back((self.version, ip, up));
    }

    /// Sets an address's listing: until when it is listed, or `None` when it is not.
    pub fn set(&mut self, ip: IpAddr, until: Option<i64>) {
        if let Some(old) = self.until.get(&ip).copied() {
            if Some(old) == until {
                return;
            }
            self.remove(ip, old);
        }
        if let Some(u) = until {
            self.insert(ip, u);
        }
    }

    fn remove(&mut self, ip: IpAddr, until: i64) {
        self.until.remove(&ip);
        if self.held.remove(&(until, ip)) {
            return;
        }
        if self.announced.remove(&(until, ip)) {
            // Whether the same address comes straight back (a moved expiry) is the caller's
            // next step; until then it is withdrawn.
            self.record(ip, false);
            if let Some(next) = self.held.pop_last() {
                self.announced.insert(next);
                self.record(next.1, true);
            }
        }
    }

    fn insert(&mut self, ip: IpAddr, until: i64) {
        self.until.insert(ip, until);
        if self.max == 0 {
            self.held.insert((until, ip));
            return;
        }
        if self.announced.len() < self.max {
            self.announced.insert((until, ip));
            self.record(ip, true);
            return;
        }
        // Full: it displaces the soonest to expire if it lasts longer.
        let first = *self.announced.first().expect("max > 0 and full");
        if (until, ip) > first {
            self.announced.pop_first();
            self.held.insert(first);
            self.record(first.1, false);
            self.announced.insert((until, ip));
            self.record(ip, true);
        } else {
            self.held.insert((until, ip));
        }
    }

    /// Ends the listings whose time is up at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let mut due: Vec<(i64, IpAddr)> = self
            .held
            .iter()
            .take_while(|(u, _)| *u <= now_ms)
            .copied()
            .collect();
        due.extend(
            self.announced
                .iter()
                .take_while(|(u, _)| *u <= now_ms)
                .copied(),
        );
        for (u, ip) in &due {
            self.remove(*ip, *u);
        }
        due.len()
    }

    /// Every listed address, for re-checking against a changed allowlist.
    pub fn listed_addresses(&self) -> Vec<IpAddr> {
        self.until.keys().copied().collect()
    }

    /// What changed after `version`, folded to each address's last state, or `None` when the
    /// log no longer reaches back that far.
    pub fn changes_since(&self, version: u64) -> Option<Vec<(IpAddr, bool)>> {
        if version >= self.version {
            return Some(Vec::new());
        }
        let oldest = self.log.front().map_or(self.version + 1, |c| c.0);
        if version + 1 < oldest {
            return None;
        }
        let mut last: HashMap<IpAddr, bool> = HashMap::new();
        let mut order = Vec::new();
        for (v, ip, up) in self.log.iter().rev() {
            if *v <= version {
                break;
            }
            if !last.contains_key(ip) {
                last.insert(*ip, *up);
                order.push(*ip);
            }
        }
        order.reverse();
        Some(order.into_iter().map(|ip| (ip, last[&ip])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, n])
    }

    #[test]
    fn listing_announces_and_ending_withdraws() {
        let mut t = Table::new(10);
        t.set(ip(1), Some(1_000));
        t.set(ip(2), Some(2_000));
        assert_eq!(t.announced_len(), 2);
        assert_eq!(t.changes_since(0).unwrap(), [(ip(1), true), (ip(2), true)]);
        let v = t.version();
        t.set(ip(1), None);
        assert_eq!(t.changes_since(v).unwrap(), [(ip(1), false)]);
        assert_eq!(t.expire(1_999), 0);
        assert_eq!(t.expire(2_000), 1);
        assert_eq!(t.listed(), 0);
        // Setting what is already so changes nothing.
        let v = t.version();
        t.set(ip(3), None);
        assert_eq!(t.version(), v);
    }

    #[test]
    fn a_moved_expiry_folds_to_announced() {
        let mut t = Table::new(10);
        t.set(ip(1), Some(1_000));
        let v = t.version();
        t.set(ip(1), Some(5_000));
        assert_eq!(t.changes_since(v).unwrap(), [(ip(1), true)]);
        assert!(t.is_announced(ip(1)));
        assert_eq!(t.expire(1_000), 0);
    }

    #[test]
    fn beyond_the_limit_the_soonest_to_expire_are_held_back() {
        let mut t = Table::new(2);
        t.set(ip(1), Some(1_000));
        t.set(ip(2), Some(2_000));
        t.set(ip(3), Some(3_000));
        assert_eq!((t.announced_len(), t.held_back(), t.listed()), (2, 1, 3));
        assert!(!t.is_announced(ip(1)) && t.is_announced(ip(3)));
        t.set(ip(4), Some(500));
        assert!(!t.is_announced(ip(4)));
        assert_eq!(t.held_back(), 2);
        // A slot frees: the longest-lasting held one takes it.
        let v = t.version();
        t.set(ip(3), None);
        assert!(t.is_announced(ip(1)));
        assert_eq!(t.changes_since(v).unwrap(), [(ip(3), false), (ip(1), true)]);
        let mut none = Table::new(0);
        none.set(ip(1), Some(1));
        assert_eq!((none.announced_len(), none.held_back()), (0, 1));
    }

    #[test]
    fn a_session_too_far_behind_is_told_to_compare_sets() {
        let mut t = Table::new(LOG_CAP + 10);
        for i in 0..(LOG_CAP as u32 + 5) {
            t.set(IpAddr::from(i.to_be_bytes()), Some(1_000));
        }
        assert!(t.changes_since(0).is_none());
        assert_eq!(t.changes_since(t.version() - 3).unwrap().len(), 3);
        assert_eq!(t.announced().len(), LOG_CAP + 5);
    }
}
