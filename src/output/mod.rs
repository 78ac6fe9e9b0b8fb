//! Outputs: everything that consumes what the node records. One boundary for all of them:
//!
//! - an output's settings are a type beside it that implements [`OutputConfig`]: its name, the
//!   queue it wants, and `build`, which does all fallible setup (open a file, connect, check a
//!   URL) so that a bad setting stops the node at startup with the option named;
//! - the built [`Output`] is started on its queue and returns a [`Running`] handle; whether it
//!   runs on a thread or a task is its own business;
//! - it consumes its queue until the queue closes (the pipeline's senders are gone), writes in
//!   batches as its medium allows, then flushes and returns: no output is told to stop.
//!
//! `app` starts the configured outputs in one loop, in the order the configuration lists them,
//! and shutdown joins them in the reverse order (the WebHook, fed by the database writer, is
//! listed first so that it is joined after the writer).
//!
//! Outputs never import `app`; what they share with the rest of the node comes in the
//! [`BuildContext`].

pub mod console;
pub mod json_log;
pub mod kernel_sets;
pub mod live;
pub mod sqlite;
pub mod syslog;
pub mod webhook;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::event::Event;
use crate::metrics::{Counters, WebhookStats};
use crate::pipeline::OutputQueue;
use crate::settings::ConfigError;

/// The most events an output takes from its queue at once.
pub const MAX_BATCH: usize = 4096;

/// Events the database queue holds: over a second at 50,000 probes/s, so a checkpoint or a
/// cold page cache does not cost a probe. The pipeline also bounds every queue in bytes (320 B
/// an event on average: 20 MiB here, about 25,000 typical probes), so a flood of large messages
/// cannot take more memory.
pub const DATABASE_QUEUE_EVENTS: usize = 65_536;
/// Events the other outputs' queues hold.
pub const OUTPUT_QUEUE_EVENTS: usize = 16_384;

/// What an output asks of the pipeline: a queue of this many events (and the byte budget that
/// goes with it). When full, the pipeline drops the newest event for this output only and
/// counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    pub events: usize,
    /// Only events this node captured: an output that acts on what it writes (the fail2ban
    /// line) must never act on a peer's claim.
    pub local_only: bool,
}

impl QueuePolicy {
    /// A queue of `events` for every event, local or from peers.
    pub const fn every(events: usize) -> QueuePolicy {
        QueuePolicy {
            events,
            local_only: false,
        }
    }
}

/// What the rest of the node offers an output while it is built.
pub struct BuildContext<'a> {
    pub node_id: Uuid,
    pub db_file: &'a Path,
    pub counters: Arc<Counters>,
    /// The database's one writer, until the sqlite output takes it. Outputs fed through the
    /// database (the WebHook's outbox) attach to it before, which is why they are listed first.
    pub writer: Option<crate::store::Writer>,
    /// The WebHook's numbers, for the API, when a WebHook is configured.
    pub webhook_stats: Option<Arc<WebhookStats>>,
    /// What to do on SIGHUP (reopen a log file, reread a list), collected from the outputs.
    pub on_hangup: Vec<Box<dyn Fn() + Send + Sync>>,
    /// Who is listed: the rule consumers of the bad-actor set read by.
    pub rules: Arc<crate::actors::Rules>,
    /// The BGP feed's numbers, for the API, when the feed is configured.
    pub bgp_stats: Option<Arc<crate::bgp::BgpStats>>,
    /// Cancelled when the node starts to shut down. An output's queue closes only later, and
    /// at once on a node without intake (`-R`): an output that serves others for as long as
    /// the node runs (the BGP feed's sessions) ends on this instead.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The kernel sets' numbers, for the API, from the kernel-set outputs configured.
    pub kernel_sets: Vec<Arc<crate::metrics::KernelSetStats>>,
    /// The live feed, for the API's `/live` stream, when the API is on.
    pub live: Option<live::LiveSender>,
}

/// Why an output could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A bad setting: exit 2, naming the option.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else: exit 1.
    #[error("{0}")]
    Other(String),
}

/// An output's settings: resolved from the command line, environment and config file beside
/// the output, and turned into the running thing by one fallible `build`.
pub trait OutputConfig {
    /// The output's name in counters, logs and `/health-check`.
    fn name(&self) -> &'static str;
    /// Its queue from the pipeline, or `None` for an output fed otherwise (the WebHook reads the
    /// outbox the database writer fills).
    fn queue(&self) -> Option<QueuePolicy>;
    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError>;
}

/// A built output, ready to run from its queue.
pub trait Output: Send {
    /// Starts consuming `queue` (`None` when the config asked for none). Must run inside the
    /// node's tokio runtime.
    fn start(self: Box<Self>, queue: Option<OutputQueue>) -> std::io::Result<Running>;
}

/// A started output, which shutdown waits for.
pub enum Running {
    /// A thread that ends when its queue closes and it has drained.
    Thread(std::thread::JoinHandle<()>),
    /// A task that ends on its own, given at most `grace` once joining starts; what it has not
    /// done by then it must be able to leave for the next start (the WebHook's outbox).
    Task {
        task: tokio::task::JoinHandle<()>,
        grace: Duration,
    },
}

impl Running {
    /// Waits for the output to finish. A thread is joined on a thread of its own, never on the
    /// blocking pool, which a client's list may be holding.
    pub async fn join(self, name: &'static str) {
        match self {
            Running::Thread(handle) => {
                let (done, joined) = tokio::sync::oneshot::channel();
                let spawned = std::thread::Builder::new()
                    .name(format!("join-{name}"))
                    .spawn(move || {
                        let _ = handle.join();
                        let _ = done.send(());
                    });
                if spawned.is_ok() {
                    let _ = joined.await;
                } else {
                    tracing::warn!(output = name, "Cannot start a thread to join an output.");
                }
            }
            Running::Task { task, grace } => {
                let abort = task.abort_handle();
                if tokio::time::timeout(grace, task).await.is_err() {
                    abort.abort();
                    tracing::warn!(
                        output = name,
                        "Output did not stop in time; what it held stays for the next start."
                    );
                }
            }
        }
    }
}

/// An output that writes batches on a thread of its own (a file, a socket, the database).
pub trait BatchSink: Send + 'static {
    /// Writes one batch; an error counts the batch as failed.
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String>;
    /// Upkeep the sink needs even when no events come (expiring listings), and how often.
    fn tick_every(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self) {}
    /// Told before each batch how many events wait behind it: a sink may put off work that
    /// costs less done once for many batches (the database's summaries) while it is behind.
    fn behind(&mut self, _waiting: u64) {}
    /// While events keep coming, the least time between two batches: the batch after one
    /// written this recently waits that long to fill, so a stream of events makes fewer,
    /// bigger batches (a database commit costs per batch as well as per event). An event
    /// after a quiet spell is written at once.
    fn batch_gap(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// The most events it takes from its queue at once.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
    /// Work put off while events kept coming (the database's summaries), due this soon if no
    /// batch comes first; then [`BatchSink::catch_up`] is called. Only for a sink with a tick.
    fn due_in(&self) -> Option<Duration> {
        None
    }
    fn catch_up(&mut self) {}
}

/// A [`BatchSink`] as an [`Output`]: run on its own thread.
pub struct OnThread<S>(pub S);

impl<S: BatchSink> Output for OnThread<S> {
    fn start(self: Box<Self>, queue: Option<OutputQueue>) -> std::io::Result<Running> {
        let queue = queue.ok_or_else(|| std::io::Error::other("a thread output needs a queue"))?;
        spawn_thread(queue, self.0)
    }
}

/// Runs a [`BatchSink`] on its own thread until its queue closes and drains.
pub fn spawn_thread<S: BatchSink>(mut queue: OutputQueue, mut sink: S) -> std::io::Result<Running> {
    let name = queue.stats.name;
    let runtime = tokio::runtime::Handle::current();
    let handle = std::thread::Builder::new()
        .name(format!("output-{name}"))
        .spawn(move || {
            let max_batch = sink.max_batch();
            let mut batch = Vec::with_capacity(max_batch);
            // Warn when an output starts failing and when it recovers, not for every batch.
            let mut failing = false;
            let every = sink.tick_every();
            let mut last_tick = std::time::Instant::now();
            let gap = sink.batch_gap();
            let mut last_batch: Option<std::time::Instant> = None;
            loop {
                let got = match every {
                    None => queue.blocking_recv_many(&mut batch, max_batch),
                    Some(every) => {
                        let tick_in = every.saturating_sub(last_tick.elapsed());
                        let due = sink.due_in().filter(|due| *due < tick_in);
                        let wait = due.unwrap_or(tick_in);
                        match queue.blocking_recv_many_for(&runtime, &mut batch, max_batch, wait) {
                            Some(n) => n,
                            None if due.is_some() => {
                                sink.catch_up();
                                continue;
                            }
                            None => {
                                sink.tick();
                                last_tick = std::time::Instant::now();
                                continue;
                            }
                        }
                    }
                };
                if got == 0 {
                    break;
                }
                if let Some(due) = last_batch.map(|at| at + gap) {
                    // Fill the batch until the gap is over (or the queue closes: the next
                    // receive then ends the loop).
                    loop {
                        let left = due.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() || batch.len() >= max_batch {
                            break;
                        }
                        let room = max_batch - batch.len();
                        match queue.blocking_recv_many_for(&runtime, &mut batch, room, left) {
                            Some(0) | None => break,
                            Some(_) => {}
                        }
                    }
                }
                sink.behind(queue.stats.depth());
                match sink.write(&batch) {
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
                queue.release(&batch);
                batch.clear();
                last_batch = Some(std::time::Instant::now());
                if every.is_some_and(|every| last_tick.elapsed() >= every) {
                    sink.tick();
                    last_tick = std::time::Instant::now();
                }
            }
            tracing::debug!(output = name, "Output drained and closed.");
        })?;
    Ok(Running::Thread(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for a thread output to drain and end (its pipeline dropped).
    async fn joined(running: Running) {
        let Running::Thread(thread) = running else {
            panic!("a thread output")
        };
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }

    /// Hands the size of each batch it is given to the test.
    struct Sizes(std::sync::mpsc::Sender<usize>, Duration);

    impl BatchSink for Sizes {
        fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
            self.0.send(batch.len()).map_err(|e| e.to_string())
        }
        fn batch_gap(&self) -> Duration {
            self.1
        }
    }

    /// Puts off work with each batch, due at once; tells the test when it catches up.
    struct PutsOff {
        owed: bool,
        caught_up: std::sync::mpsc::Sender<()>,
    }

    impl BatchSink for PutsOff {
        fn write(&mut self, _: &[Arc<Event>]) -> Result<(), String> {
            self.owed = true;
            Ok(())
        }
        fn tick_every(&self) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
        fn due_in(&self) -> Option<Duration> {
            self.owed.then_some(Duration::ZERO)
        }
        fn catch_up(&mut self) {
            self.owed = false;
            self.caught_up.send(()).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_put_off_is_done_when_due_though_no_batch_and_no_tick_comes() {
        let mut b = crate::pipeline::PipelineBuilder::default();
        let queue = b.output("puts-off", 100);
        let (pipeline, _) = b.build();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = PutsOff {
            owed: false,
            caught_up: tx,
        };
        let running = spawn_thread(queue, sink).unwrap();
        pipeline.publish(crate::event::tests::sample());
        // The tick is an hour away: only the work's own deadline wakes the output.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "once done, it is not done again without a batch"
        );
        drop(pipeline);
        joined(running).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_that_come_within_the_gap_after_a_batch_are_written_together() {
        let mut b = crate::pipeline::PipelineBuilder::default();
        let queue = b.output("sizes", 100);
        let stats = queue.stats.clone();
        let (pipeline, _) = b.build();
        let (tx, rx) = std::sync::mpsc::channel();
        let running = spawn_thread(queue, Sizes(tx, Duration::from_millis(300))).unwrap();
        let next = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
        pipeline.publish(crate::event::tests::sample());
        assert_eq!(next(), 1, "the first event is written at once");
        // Once the output has taken the second event (it then waits for the gap to end),
        // two more come.
        pipeline.publish(crate::event::tests::sample());
        while stats.depth() > 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..2 {
            pipeline.publish(crate::event::tests::sample());
        }
        assert_eq!(next(), 3, "the next three wait for the gap and go together");
        drop(pipeline);
        joined(running).await;
    }
}
