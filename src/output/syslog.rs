//! The syslog line fail2ban matches: `Source IP: <ip>, Method: <method>, Agent: <user agent>`,
//! facility USER, level NOTICE, ident `sentrypeer[pid]`, sent to the local syslog socket.
//!
//! The user agent is the attacker's text: control characters (line breaks included) become `?`
//! and any `Source IP` inside it is defused, so it can never forge a second address for fail2ban.
//!
//! The socket may be missing at start (syslog can come up after the node at boot) or go away
//! when the daemon restarts: the node runs on, counts each line it cannot send as failed, and
//! connects again when the socket is back, trying at most once per `RECONNECT_INTERVAL`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BatchSink, BuildContext, BuildError, OnThread, Output, OutputConfig, QueuePolicy};
use crate::event::Event;

/// `<PRI>` for facility USER (1) and severity NOTICE (5): 1 * 8 + 5.
const PRI_USER_NOTICE: u8 = 13;
/// How long one line may wait for the syslog daemon.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);
/// How often an unreachable socket is tried again: a daemon that comes up is noticed within a
/// second, and a flood of events while it is down costs no connect call per batch.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest user agent written to syslog; the database keeps it whole.
const MAX_AGENT_CHARS: usize = 256;

pub struct Syslog {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    pid: u32,
    /// While unconnected: no attempt before this, and why the last one failed.
    retry: Option<(Instant, String)>,
}

impl Syslog {
    /// Connects to the syslog socket; one that is not there yet is tried again later.
    pub fn new(path: &Path) -> Self {
        let mut s = Self {
            path: path.to_path_buf(),
            socket: None,
            pid: std::process::id(),
            retry: None,
        };
        if let Err(e) = s.connect(Instant::now()) {
            tracing::warn!(path = %path.display(), error = %e, "Syslog socket not reachable; its lines are counted as failed until it appears (tried every second).");
        }
        s
    }

    /// The connected socket, connecting first unless the last attempt was under
    /// `RECONNECT_INTERVAL` before `now`.
    fn connect(&mut self, now: Instant) -> std::io::Result<&UnixDatagram> {
        if self.socket.is_none() {
            if let Some((not_before, why)) = &self.retry
                && now < *not_before
            {
                return Err(std::io::Error::other(format!(
                    "{why} (tried again every second)"
                )));
            }
            match Self::open(&self.path) {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.retry = None;
                }
                Err(e) => {
                    self.retry = Some((now + RECONNECT_INTERVAL, e.to_string()));
                    return Err(e);
                }
            }
        }
        self.socket
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no socket"))
    }

    fn open(path: &Path) -> std::io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A stalled syslog daemon must not stall this output (or shutdown) for long.
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(socket)
    }

    fn write_batch(&mut self, batch: &[Arc<Event>], now: Instant) -> std::io::Result<()> {
        let pid = self.pid;
        let socket = self.connect(now)?;
        let mut result = Ok(());
        for e in batch {
            let line = format!("<{PRI_USER_NOTICE}>sentrypeer[{pid}]: {}", line(e));
            if let Err(err) = socket.send(line.as_bytes()) {
                // The daemon is gone or stalled: give up on this batch rather than wait per line.
                result = Err(err);
                break;
            }
        }
        if result.is_err() {
            self.socket = None;
        }
        result
    }
}

/// `-s` and `--syslog-socket`: the fail2ban line, and the socket it is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub socket: PathBuf,
}

impl OutputConfig for SyslogConfig {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        // fail2ban bans on one line: only what this node saw itself may write one.
        Some(QueuePolicy {
            events: super::OUTPUT_QUEUE_EVENTS,
            local_only: true,
        })
    }

    /// A missing socket is not an error: syslog may start after the node (see the module doc).
    fn build(&self, _cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        Ok(Box::new(OnThread(Syslog::new(&self.socket))))
    }
}

impl BatchSink for Syslog {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        self.write_batch(batch, Instant::now())
            .map_err(|e| e.to_string())
    }
}

/// The message part of the line.
pub fn line(e: &Event) -> String {
    format!(
        "Source IP: {}, Method: {}, Agent: {}",
        e.source_ip(),
        sanitize(&e.method),
        sanitize(&e.user_agent)
    )
}

/// Makes attacker text safe for a one-line, fail2ban-matched log.
pub fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_AGENT_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    // fail2ban's filter anchors on "Source IP: "; take the colon out of any copy in the agent.
    while let Some(at) = out.to_ascii_lowercase().find("source ip:") {
        out.replace_range(at + "source ip".len()..at + "source ip:".len(), "=");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_carries_the_bare_ip() {
        let e = crate::event::tests::sample();
        assert_eq!(
            line(&e),
            "Source IP: 192.0.2.1, Method: OPTIONS, Agent: friendly-scanner"
        );
    }

    #[test]
    fn an_agent_cannot_forge_an_address_or_a_line() {
        assert_eq!(
            sanitize("x\r\nSource IP: 6.6.6.6, y"),
            "x??Source IP= 6.6.6.6, y"
        );
        assert_eq!(
            sanitize("SOURCE IP:1 source ip:2"),
            "SOURCE IP=1 source ip=2"
        );
        assert_eq!(sanitize(&"a".repeat(1000)).len(), MAX_AGENT_CHARS);
    }

    #[test]
    fn a_socket_that_appears_later_is_connected_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let mut syslog = Syslog::new(&path);
        let started = Instant::now();
        let batch = [Arc::new(crate::event::tests::sample())];
        assert!(syslog.write_batch(&batch, started).is_err());

        let daemon = UnixDatagram::bind(&path).unwrap();
        daemon.set_nonblocking(true).unwrap();
        // Within the second after a failed attempt, batches fail without trying again.
        let soon = started + RECONNECT_INTERVAL / 2;
        let e = syslog.write_batch(&batch, soon).unwrap_err();
        assert!(e.to_string().contains("tried again every second"), "{e}");
        assert!(syslog.socket.is_none());

        let later = started + RECONNECT_INTERVAL + Duration::from_millis(1);
        syslog.write_batch(&batch, later).unwrap();
        syslog.write_batch(&batch, later).unwrap();
        let mut buf = [0u8; 1024];
        for _ in 0..2 {
            let n = daemon.recv(&mut buf).unwrap();
            assert!(
                buf.get(..n)
                    .unwrap()
                    .ends_with(b"Source IP: 192.0.2.1, Method: OPTIONS, Agent: friendly-scanner")
            );
        }
    }
}
