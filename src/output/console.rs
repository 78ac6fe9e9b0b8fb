//! `-v`: one readable line per event on standard output.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::pipeline::OutputQueue;

pub fn spawn(queue: OutputQueue) -> std::io::Result<JoinHandle<()>> {
    super::spawn_blocking_output(queue, (), |_, batch: &[Arc<Event>]| {
        let mut out = std::io::stdout().lock();
        for e in batch {
            writeln!(out, "{}", line(e)).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    })
}

pub fn line(e: &Event) -> String {
    format!(
        "{} {} {} {} -> {} {} {:?} agent={:?}",
        e.timestamp,
        e.collected_method.as_str(),
        e.transport,
        e.source,
        e.destination,
        super::syslog::sanitize(&e.method),
        e.called_number,
        e.user_agent,
    )
}
