//! The WebHook deliverer: POSTs the events waiting in the durable outbox (`store::outbox`) to
//! the endpoint and deletes each only after a 2xx. It never sees the pipeline: the sqlite
//! output's writer queues each event in the outbox in the same transaction as its `honey` row,
//! then wakes this task. So a slow or absent endpoint slows nothing but itself, and an
//! undelivered event waits in the database across restarts.
//!
//! Delivery: up to `MAX_IN_FLIGHT` requests at once, one event per request (upstream's shape)
//! or a JSON array in batch mode. 408, 429, 5xx, 401/403 (the credentials, not the event, are
//! wrong) and transport errors are retried: the whole deliverer pauses with exponential backoff
//! and jitter, or for the `Retry-After` the endpoint asked for, then probes with one request
//! until one succeeds. Any other status dead-letters the request's events with the status and
//! an excerpt of the answer. Delivery is at least once: a crash between the 2xx and the
//! deletion sends those events again. A request task that panics has its events retried like
//! a failed request. The dead letters are kept to `--webhook-dead-letter-cap`: beyond it the
//! oldest are deleted (and counted), so an endpoint refusing for weeks fills no disk.
//!
//! Authorization: none, a static header value, or an OAuth 2 client-credentials bearer token
//! fetched as upstream does, cached until shortly before it expires (at most a day; a lifetime
//! not stated, zero or negative counts as a day too), and fetched again once when the endpoint
//! answers 401 or 403 (some gateways answer a revoked or expired token with 403).
//!
//! One file per job: `endpoint` posts a body and sorts the answer (it holds the
//! Authorization), `token` keeps the OAuth 2 token, `retry` is the arithmetic of backoff and
//! `Retry-After`, `deliverer` is the loop that reads the outbox, keeps requests in flight and
//! records what became of each event. This file is what the rest of the crate sees: the
//! `Deliverer` the app spawns, why it could not start, and the endpoint's name for logs.
//!
//! Depends on `store::outbox` for the tables, `metrics::WebhookStats` for what it reports and
//! the `config` types it is built from; never on `app`, the pipeline or the other outputs.

mod config;
pub use config::*;

#[cfg(feature = "webhook")]
mod deliverer;
#[cfg(feature = "webhook")]
mod endpoint;
#[cfg(feature = "webhook")]
mod retry;
#[cfg(feature = "webhook")]
mod token;

#[cfg(feature = "webhook")]
use std::sync::atomic::Ordering;
#[cfg(feature = "webhook")]
use std::sync::{Arc, Mutex};
#[cfg(feature = "webhook")]
use std::time::Duration;

#[cfg(feature = "webhook")]
use rusqlite::Connection;
#[cfg(feature = "webhook")]
use tokio::sync::mpsc;

#[cfg(feature = "webhook")]
use crate::metrics::WebhookStats;
#[cfg(feature = "webhook")]
use crate::store::outbox;

#[cfg(feature = "webhook")]
use deliverer::State;
#[cfg(feature = "webhook")]
use endpoint::Endpoint;
#[cfg(feature = "webhook")]
pub use endpoint::endpoint_name;

#[cfg(feature = "webhook")]
/// Requests in flight at once: hides an endpoint's latency (eight 2-second requests still move
/// 4 events/s; a local endpoint takes thousands) without looking like a flood to it.
pub const MAX_IN_FLIGHT: usize = 8;
#[cfg(feature = "webhook")]
/// After the writer stops (shutdown), how long delivery of what is due may go on. What is left
/// stays in the outbox for the next start.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[cfg(feature = "webhook")]
/// The deliverer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the outbox: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("the WebHook Authorization value is not a valid header value")]
    Authorization,
}

#[cfg(feature = "webhook")]
/// A task ready to run: `run` until the writer is gone and the outbox drained (or the grace
/// period is over).
pub struct Deliverer {
    db: Arc<Mutex<Connection>>,
    endpoint: Arc<Endpoint>,
    stats: Arc<WebhookStats>,
    batch: usize,
    max_backoff: Duration,
    dead_letter_cap: u64,
}

#[cfg(feature = "webhook")]
impl Deliverer {
    /// Opens the deliverer's own connection to the database and builds the HTTP client.
    pub fn new(
        config: &WebhookConfig,
        db_file: &std::path::Path,
        stats: Arc<WebhookStats>,
    ) -> Result<Deliverer, StartError> {
        let conn = outbox::open(db_file)?;
        stats
            .outbox_depth
            .store(outbox::depth(&conn)?, Ordering::Relaxed);
        let endpoint = Endpoint::new(config, stats.clone())?;
        Ok(Deliverer {
            db: Arc::new(Mutex::new(conn)),
            endpoint: Arc::new(endpoint),
            stats,
            batch: config.batch.max(1),
            max_backoff: config.max_backoff,
            dead_letter_cap: config.dead_letter_cap.max(1),
        })
    }

    /// Delivers until `wake` closes (the writer has stopped), then for at most `DRAIN_GRACE`.
    pub async fn run(self, wake: mpsc::Receiver<()>) {
        let mut s = State::new(self, wake);
        s.run().await;
    }
}

#[cfg(feature = "webhook")]
/// How long shutdown waits for the deliverer: its own drain grace plus a margin for a busy
/// database. Undelivered events stay in the outbox either way.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[cfg(feature = "webhook")]
impl super::OutputConfig for WebhookConfig {
    fn name(&self) -> &'static str {
        "webhook"
    }

    /// Fed by the outbox the database writer fills, not by the pipeline.
    fn queue(&self) -> Option<super::QueuePolicy> {
        None
    }

    /// Opens the outbox and builds the client, then attaches the outbox to the database writer:
    /// from here on every event written is queued for delivery in the same transaction.
    fn build(
        &self,
        cx: &mut super::BuildContext<'_>,
    ) -> Result<Box<dyn super::Output>, super::BuildError> {
        let stats = Arc::new(WebhookStats::new(self.outbox_cap));
        let deliverer = Deliverer::new(self, cx.db_file, stats.clone()).map_err(|e| match e {
            StartError::Authorization => super::BuildError::Config(
                crate::settings::ConfigError::new("SENTRYPEER_WEBHOOK_AUTHORIZATION", "***", e),
            ),
            e => super::BuildError::Other(format!("cannot start the WebHook: {e}")),
        })?;
        let writer = cx.writer.as_mut().ok_or_else(|| {
            super::BuildError::Other("the WebHook must be built before the database output".into())
        })?;
        let (wake, woken) = mpsc::channel(1);
        writer.queue_for_webhook(crate::store::OutboxWriter {
            cap: self.outbox_cap,
            wake,
            stats: stats.clone(),
        });
        let endpoint = endpoint_name(&self.url);
        tracing::info!(%endpoint, batch = self.batch, outbox_cap = self.outbox_cap, queued = stats.outbox_depth.load(Ordering::Relaxed), "WebHook enabled.");
        cx.webhook_stats = Some(stats);
        Ok(Box::new(Running {
            deliverer,
            woken,
            endpoint,
        }))
    }
}

#[cfg(feature = "webhook")]
/// The deliverer with the writer's wake-ups, ready to spawn.
struct Running {
    deliverer: Deliverer,
    woken: mpsc::Receiver<()>,
    endpoint: String,
}

#[cfg(feature = "webhook")]
impl super::Output for Running {
    fn start(
        self: Box<Self>,
        _queue: Option<crate::pipeline::OutputQueue>,
    ) -> std::io::Result<super::Running> {
        use tracing::Instrument;
        let endpoint = self.endpoint;
        let task = tokio::spawn(
            self.deliverer
                .run(self.woken)
                .instrument(tracing::info_span!("webhook", %endpoint)),
        );
        Ok(super::Running::Task {
            task,
            grace: STOP_GRACE,
        })
    }
}
