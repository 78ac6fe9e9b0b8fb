//! A token bucket per source address for UDP replies, so a spoofed source cannot turn the node
//! into a reflector. TCP and TLS need none: the handshake proves the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Replies per second one source can draw on, sustained.
const REPLIES_PER_SECOND: f64 = 100.0;
/// Replies one source can draw on at once (a sipvicious burst, or an INVITE's two answers).
const BURST: f64 = 200.0;
/// Sources tracked at once; past this, idle buckets are forgotten (bounded memory under a
/// spoofed-source flood).
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct ReplyLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl ReplyLimiter {
    /// Takes `n` tokens for `ip` if it has them.
    pub fn allow(&self, ip: IpAddr, n: usize, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| refill(*b, now).tokens < BURST);
            if buckets.len() >= MAX_SOURCES {
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        *b = refill(*b, now);
        let need = n as f64;
        if b.tokens >= need {
            b.tokens -= need;
            true
        } else {
            false
        }
    }
}

fn refill(b: Bucket, now: Instant) -> Bucket {
    let secs = now.saturating_duration_since(b.at).as_secs_f64();
    Bucket {
        tokens: (b.tokens + secs * REPLIES_PER_SECOND).min(BURST),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_the_sustained_rate() {
        let l = ReplyLimiter::default();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            (0..300).filter(|_| l.allow(ip, 1, t0)).count(),
            BURST as usize
        );
        assert!(l.allow(ip, 10, t0 + Duration::from_millis(100)));
        assert!(!l.allow(ip, 1, t0 + Duration::from_millis(100)));
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert!(l.allow(other, 1, t0));
    }

    #[test]
    fn memory_stays_bounded_under_a_spoofed_flood() {
        let l = ReplyLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            l.allow(IpAddr::from(i.to_be_bytes()), 1, t0);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_SOURCES);
    }
}
