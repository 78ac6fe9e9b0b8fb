//! Writes events to the database: one thread, one connection, one transaction per batch.
//! A failing batch is retried (a locked or full disk may recover) before it is counted as failed.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::Event;
use crate::pipeline::OutputQueue;
use crate::store::Writer;

/// Attempts per batch before it is given up and counted as failed.
const WRITE_ATTEMPTS: u32 = 8;
/// First pause between attempts; doubles each time (about 25 s in all).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

pub fn spawn(writer: Writer, queue: OutputQueue) -> std::io::Result<JoinHandle<()>> {
    super::spawn_blocking_output(queue, writer, |writer, batch: &[Arc<Event>]| {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            match writer.write_batch(batch) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "Database write failed; retrying.");
                    #[allow(clippy::disallowed_methods)] // this output owns its thread
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })
}
