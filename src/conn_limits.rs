//! What every TCP server of the node (SIP over TCP and TLS, and the API) shares: accepting until
//! cancelled, and limits on open connections in total and per source, so that one host cannot
//! take every slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The next connection (with `TCP_NODELAY` set), or `None` once `cancel` fires. A failed accept
/// (out of file descriptors and the like) is logged and retried after a pause, not spun on.
pub async fn accept(
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = ?listener.local_addr().ok(), "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Connections open at once over the listeners sharing these limits, and from one source.
#[derive(Debug)]
pub struct ConnLimits {
    total: Arc<Semaphore>,
    per_source: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// The unit a source is counted in: one IPv4 address, or one IPv6 /64 (what one host or
/// subscriber is usually given), so a single host cannot take every slot with many addresses.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(octets.into())
        }
        v4 => v4,
    }
}

/// A claim on the limits; released on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl ConnLimits {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `ip`, or `None` when its source or everyone is at the limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = source_key(ip);
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut open = self.open.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(Slot {
            limits: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limits.open.lock() {
            if let Some(n) = open.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_limited_and_its_slots_come_back_on_drop() {
        let l = Arc::new(ConnLimits::new(10, 2));
        let a = l.admit(ip("192.0.2.1")).unwrap();
        let _b = l.admit(ip("192.0.2.1")).unwrap();
        assert!(l.admit(ip("192.0.2.1")).is_none());
        assert!(l.admit(ip("192.0.2.2")).is_some(), "another source is not");
        drop(a);
        assert!(l.admit(ip("192.0.2.1")).is_some());
        assert!(
            l.open.lock().unwrap().len() <= 2,
            "no entry outlives its slots"
        );
    }

    #[test]
    fn the_total_holds_over_all_sources() {
        let l = Arc::new(ConnLimits::new(3, 2));
        let held: Vec<_> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|s| l.admit(ip(s)).unwrap())
            .collect();
        assert!(l.admit(ip("192.0.2.4")).is_none());
        drop(held);
        assert!(l.admit(ip("192.0.2.4")).is_some());
    }

    #[test]
    fn an_ipv6_host_counts_per_64_and_a_mapped_ipv4_as_itself() {
        let l = Arc::new(ConnLimits::new(10, 1));
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(l.admit(ip("2001:db8:1:2:ffff::9")).is_none(), "same /64");
        assert!(l.admit(ip("2001:db8:1:3::1")).is_some(), "next /64");
        let _v4 = l.admit(ip("192.0.2.7")).unwrap();
        assert!(l.admit(ip("::ffff:192.0.2.7")).is_none());
    }
}
