//! One file per output. Each consumes its queue until it closes (the pipeline's senders are
//! gone), writes in batches as its medium allows, then flushes and returns: no output needs to
//! be told to stop.

pub mod console;
pub mod json_log;
pub mod sqlite;
pub mod syslog;
#[cfg(feature = "webhook")]
pub mod webhook;

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::pipeline::OutputQueue;

/// The most events an output takes from its queue at once.
pub const MAX_BATCH: usize = 4096;

/// Runs a blocking output on its own thread: `write` gets each batch as it comes, `finish`
/// runs once the queue has closed and drained.
pub fn spawn_blocking_output<S, W>(
    mut queue: OutputQueue,
    mut sink: S,
    write: W,
) -> std::io::Result<JoinHandle<()>>
where
    S: Send + 'static,
    W: Fn(&mut S, &[Arc<Event>]) -> Result<(), String> + Send + 'static,
{
    let name = queue.stats.name;
    std::thread::Builder::new().name(format!("output-{name}")).spawn(move || {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Warn when an output starts failing and when it recovers, not for every batch.
        let mut failing = false;
        while queue.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            match write(&mut sink, &batch) {
                Ok(()) => {
                    queue.stats.wrote(batch.len());
                    if std::mem::take(&mut failing) {
                        tracing::info!(output = name, "Output writing again.");
                    }
                }
                Err(error) => {
                    queue.stats.failed(batch.len());
                    if std::mem::replace(&mut failing, true) {
                        tracing::debug!(output = name, %error, events = batch.len(), "Output failed to write a batch.");
                    } else {
                        tracing::warn!(output = name, %error, events = batch.len(), "Output failing; counting failed events until it recovers.");
                    }
                }
            }
            batch.clear();
        }
        tracing::debug!(output = name, "Output drained and closed.");
    })
}
