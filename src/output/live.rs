//! The live feed: events, as the JSON log writes them, published as ready-made server-sent
//! event frames to a bounded broadcast channel that the API's `/live` stream (the dashboard)
//! subscribes to. Publishing never waits: a subscriber that falls more than
//! [`LIVE_CHANNEL_FRAMES`] behind loses the oldest and is told how many, so a slow browser
//! cannot slow ingest. The feed carries at most [`LIVE_EVENTS_PER_SECOND`] events (a person
//! cannot read more; a flood is counted, `event: dropped`), so what the watchers cost does
//! not grow with the attack. Each frame is formatted once, whoever watches. Nothing is
//! serialised while nobody is watching.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::{BuildContext, BuildError, Output, OutputConfig, QueuePolicy, Running};
use crate::event::Event;
use crate::pipeline::OutputQueue;

/// Frames a subscriber may fall behind before it loses the oldest: ten seconds of a busy
/// feed, while a browser that is rendering catches up.
pub const LIVE_CHANNEL_FRAMES: usize = 1024;
/// The most events the feed carries a second (a burst of as many, then this rate).
pub const LIVE_EVENTS_PER_SECOND: u32 = 100;
/// How often, at most, the feed says how many events it skipped.
const DROPPED_NOTICE_EVERY: Duration = Duration::from_secs(1);
/// The events the feed's queue holds; when nobody watches it is drained at once.
const LIVE_QUEUE_EVENTS: usize = 4096;
/// The most of a SIP message the feed carries, in bytes: enough to read, small to send to
/// every subscriber.
pub const LIVE_MESSAGE_BYTES: usize = 2048;
/// Events taken from the queue at once.
const LIVE_BATCH: usize = 512;
/// The task has nothing to save: it stops at once when joined.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// On whenever the API is: the dashboard's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig;

/// The sending side, which the API subscribes to: whole `text/event-stream` frames.
pub type LiveSender = broadcast::Sender<Bytes>;

impl OutputConfig for LiveConfig {
    fn name(&self) -> &'static str {
        "live"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(LIVE_QUEUE_EVENTS))
    }

    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let (tx, _) = broadcast::channel(LIVE_CHANNEL_FRAMES);
        cx.live = Some(tx.clone());
        Ok(Box::new(Live { tx }))
    }
}

struct Live {
    tx: LiveSender,
}

impl Output for Live {
    fn start(self: Box<Self>, queue: Option<OutputQueue>) -> std::io::Result<Running> {
        let queue = queue.ok_or_else(|| std::io::Error::other("the live feed needs a queue"))?;
        let task = tokio::spawn(publish(queue, self.tx));
        Ok(Running::Task {
            task,
            grace: STOP_GRACE,
        })
    }
}

async fn publish(mut queue: OutputQueue, tx: LiveSender) {
    let stats = queue.stats.clone();
    let mut batch = Vec::with_capacity(LIVE_BATCH);
    let rate = f64::from(LIVE_EVENTS_PER_SECOND);
    let mut tokens = rate;
    let mut refilled = Instant::now();
    let mut skipped = 0u64;
    let mut noticed = Instant::now();
    loop {
        // Wake at least once a notice period, to tell of skipped events after a burst ends.
        let got = match tokio::time::timeout(
            DROPPED_NOTICE_EVERY,
            queue.recv_many(&mut batch, LIVE_BATCH),
        )
        .await
        {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => 0,
        };
        let watched = tx.receiver_count() > 0;
        tokens = (tokens + refilled.elapsed().as_secs_f64() * rate).min(rate);
        refilled = Instant::now();
        for e in &batch {
            if !watched {
                continue;
            }
            if tokens >= 1.0 {
                tokens -= 1.0;
                // No subscriber left between the check and the send is not an error.
                let _ = tx.send(frame("probe", &feed_line(e)));
            } else {
                skipped += 1;
            }
        }
        if skipped > 0 && noticed.elapsed() >= DROPPED_NOTICE_EVERY {
            let _ = tx.send(frame("dropped", &skipped.to_string()));
            skipped = 0;
            noticed = Instant::now();
        }
        stats.wrote(got);
        batch.clear();
    }
}

/// A server-sent event frame. `data` is one line (compact JSON or a number).
pub fn frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// One event as the feed sends it: the JSON log object, its SIP message cut to
/// [`LIVE_MESSAGE_BYTES`] (at a character boundary).
pub fn feed_line(e: &Event) -> String {
    let mut j = e.to_json();
    let mut end = j.sip_message.len().min(LIVE_MESSAGE_BYTES);
    while !j.sip_message.is_char_boundary(end) {
        end -= 1;
    }
    j.sip_message = j.sip_message.get(..end).unwrap_or("");
    serde_json::to_string(&j).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_event_of_one_data_line() {
        let mut e = crate::event::tests::sample();
        e.message = "OPTIONS sip:x SIP/2.0\r\nUser-Agent: a\n\ndata: forged\r\n".into();
        let f = frame("probe", &feed_line(&e));
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.starts_with("event: probe\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 3, "{text}");
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let mut e = crate::event::tests::sample();
        e.message = "é".repeat(LIVE_MESSAGE_BYTES);
        let v: serde_json::Value = serde_json::from_str(&feed_line(&e)).unwrap();
        let m = v["sip_message"].as_str().unwrap();
        assert!(m.len() <= LIVE_MESSAGE_BYTES && m.len() >= LIVE_MESSAGE_BYTES - 1);
        assert_eq!(v["sip_user_agent"], e.user_agent);
    }
}
