//! The syslog line fail2ban matches: `Source IP: <ip>, Method: <method>, Agent: <user agent>`,
//! facility USER, level NOTICE, ident `sentrypeer[pid]`, sent to the local syslog socket.
//!
//! The user agent is the attacker's text: control characters (line breaks included) become `?`
//! and any `Source IP` inside it is defused, so it can never forge a second address for fail2ban.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::pipeline::OutputQueue;

/// `<PRI>` for facility USER (1) and severity NOTICE (5): 1 * 8 + 5.
const PRI_USER_NOTICE: u8 = 13;
/// How long one line may wait for the syslog daemon.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);
/// The longest user agent written to syslog; the database keeps it whole.
const MAX_AGENT_CHARS: usize = 256;

pub struct Syslog {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    pid: u32,
}

impl Syslog {
    /// Connects to the syslog socket; a missing socket is retried at each batch.
    pub fn new(path: &Path) -> Self {
        let mut s = Self {
            path: path.to_path_buf(),
            socket: None,
            pid: std::process::id(),
        };
        if let Err(e) = s.connect() {
            tracing::warn!(path = %path.display(), error = %e, "Syslog socket not reachable yet; will retry.");
        }
        s
    }

    fn connect(&mut self) -> std::io::Result<&UnixDatagram> {
        if self.socket.is_none() {
            let socket = UnixDatagram::unbound()?;
            socket.connect(&self.path)?;
            // A stalled syslog daemon must not stall this output (or shutdown) for long.
            socket.set_write_timeout(Some(SEND_TIMEOUT))?;
            self.socket = Some(socket);
        }
        self.socket
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no socket"))
    }

    fn write_batch(&mut self, batch: &[Arc<Event>]) -> std::io::Result<()> {
        let pid = self.pid;
        let socket = self.connect()?;
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

pub fn spawn(syslog: Syslog, queue: OutputQueue) -> std::io::Result<JoinHandle<()>> {
    super::spawn_blocking_output(queue, syslog, |s, batch: &[Arc<Event>]| {
        s.write_batch(batch).map_err(|e| e.to_string())
    })
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
}
