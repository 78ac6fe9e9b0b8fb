//! The JSON log: one object per line with upstream's field names (T-Pot parses them).
//!
//! It owns the log file: opened at startup, and opened anew at the same path when asked
//! ([`Reopener::reopen`], on SIGHUP), so `logrotate` can move the file away and have the node
//! write a fresh one. A reopen never loses, repeats or splits a line: the output's thread finishes
//! the batch it is writing (flushed) in the old file and switches files only between batches.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{BatchSink, BuildContext, BuildError, OnThread, Output, OutputConfig, QueuePolicy};
use crate::event::Event;
use crate::settings::ConfigError;

/// Bytes buffered before a write to the file: a batch of a few hundred typical probes per
/// system call, flushed at the end of every batch anyway.
const BUFFER_BYTES: usize = 256 * 1024;

/// The open log file, as the output's thread holds it.
pub struct JsonLog {
    out: BufWriter<File>,
    reopen: Arc<Reopen>,
    /// The reopen generation `out` belongs to.
    generation: u64,
}

/// What a reopen request hands the output's thread.
#[derive(Debug)]
struct Reopen {
    path: PathBuf,
    /// Bumped, with `next` filled, by every successful reopen. The thread compares it with its
    /// own once per batch: one relaxed load, nothing per event. `next` is locked only when it
    /// changed, and the lock is what carries the new file across threads.
    generation: AtomicU64,
    next: Mutex<Option<File>>,
}

/// Asks the JSON log to reopen its file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reopener(Arc<Reopen>);

/// Opens (appending) the log file; fails at startup rather than on the first event.
pub fn open(path: &Path) -> std::io::Result<JsonLog> {
    Ok(JsonLog {
        out: BufWriter::with_capacity(BUFFER_BYTES, open_file(path)?),
        reopen: Arc::new(Reopen {
            path: path.to_path_buf(),
            generation: AtomicU64::new(0),
            next: Mutex::new(None),
        }),
        generation: 0,
    })
}

/// Appends, creating the file when it is missing (moved away by a rotation).
fn open_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `-j` / `-l PATH`: the JSON log and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonLogConfig {
    pub path: PathBuf,
}

impl OutputConfig for JsonLogConfig {
    fn name(&self) -> &'static str {
        "json_log"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(super::OUTPUT_QUEUE_EVENTS))
    }

    /// Opens the file now, so an unwritable path stops the node at startup; SIGHUP reopens it.
    fn build(&self, cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        let log = open(&self.path)
            .map_err(|e| ConfigError::new("-l (--json-log-file)", self.path.display(), e))?;
        let reopener = log.reopener();
        cx.on_hangup.push(Box::new(move || reopener.reopen()));
        Ok(Box::new(OnThread(log)))
    }
}

impl BatchSink for JsonLog {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        JsonLog::write(self, batch).map_err(|e| e.to_string())
    }
}

impl JsonLog {
    /// The handle that asks this log to reopen its file.
    pub fn reopener(&self) -> Reopener {
        Reopener(self.reopen.clone())
    }

    /// Writes one batch, to the newest file. The previous batch was flushed to the file it
    /// went to, so switching here never splits a line or leaves one behind. The batch was taken
    /// from the queue before this looks for a reopen, so an event that arrived after a reopen
    /// is always in a batch that sees it.
    fn write(&mut self, batch: &[Arc<Event>]) -> std::io::Result<()> {
        self.switch_if_reopened();
        write_batch(&mut self.out, batch)
    }

    fn switch_if_reopened(&mut self) {
        let now = self.reopen.generation.load(Ordering::Relaxed);
        if now == self.generation {
            return;
        }
        self.generation = now;
        let next = self
            .reopen
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(file) = next {
            // The old writer holds nothing after a flushed batch; dropping it closes the file.
            self.out = BufWriter::with_capacity(BUFFER_BYTES, file);
        }
    }
}

impl Reopener {
    /// Opens the log's path anew (creating the file if it was moved away); every batch the
    /// output starts from now on goes there. The batch being written, if any, ends in the old
    /// file. The thread waits for events while idle, so it closes the old file only when the
    /// next batch comes, which is fine: that batch, like every event arriving after this call,
    /// is written to the new file, and the old one gets nothing more.
    ///
    /// On failure (directory gone, permissions) it warns and changes nothing: the output keeps
    /// writing to the file it has, and the next request tries again.
    pub fn reopen(&self) {
        let path = self.0.path.display();
        match self.try_reopen() {
            Ok(()) => tracing::info!(%path, "Reopened the JSON log."),
            Err(error) => tracing::warn!(
                %path,
                %error,
                "Cannot reopen the JSON log; still writing to the file open before. SIGHUP to retry."
            ),
        }
    }

    fn try_reopen(&self) -> std::io::Result<()> {
        let file = open_file(&self.0.path)?;
        let mut next = self.0.next.lock().unwrap_or_else(PoisonError::into_inner);
        // A file from an earlier request the output has not taken yet is dropped unused: this
        // one is at the path now.
        *next = Some(file);
        self.0.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn write_batch(out: &mut impl Write, batch: &[Arc<Event>]) -> std::io::Result<()> {
    for e in batch {
        serde_json::to_writer(&mut *out, &e.to_json())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_line_with_upstreams_fields() {
        let mut out = Vec::new();
        let mut e = crate::event::tests::sample();
        e.message = "OPTIONS sip:100@x SIP/2.0\r\nUser-Agent: a\"b\r\n\r\n".into();
        write_batch(&mut out, &[Arc::new(e)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "app_name",
            "app_version",
            "event_timestamp",
            "event_uuid",
            "created_by_node_id",
            "collected_method",
            "transport_type",
            "source_ip",
            "destination_ip",
            "called_number",
            "sip_method",
            "sip_user_agent",
            "sip_message",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["source_ip"], "192.0.2.1:5060");
        assert_eq!(v["destination_ip"], "127.0.0.1:5060");
        assert_eq!(v["app_name"], "sentrypeer");
        assert_eq!(v["collected_method"], "passive");
        assert_eq!(v["transport_type"], "UDP");
        for forbidden in ["src_ip", "src_port", "dest_ip", "dest_port"] {
            assert!(v.get(forbidden).is_none());
        }
    }

    fn event(number: &str) -> Arc<Event> {
        let mut e = crate::event::tests::sample();
        e.called_number = number.into();
        Arc::new(e)
    }

    fn numbers(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["called_number"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn after_a_reopen_the_next_batch_goes_to_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = open(&path).unwrap();
        let reopener = log.reopener();
        log.write(&[event("1"), event("2")]).unwrap();
        std::fs::rename(&path, dir.path().join("log.json.1")).unwrap();
        log.write(&[event("3")]).unwrap();
        reopener.try_reopen().unwrap();
        assert!(
            path.exists(),
            "the new file is created by the reopen itself"
        );
        log.write(&[event("4")]).unwrap();
        log.write(&[event("5")]).unwrap();
        assert_eq!(numbers(&dir.path().join("log.json.1")), ["1", "2", "3"]);
        assert_eq!(numbers(&path), ["4", "5"]);
    }

    #[test]
    fn two_reopens_before_a_batch_switch_once_to_the_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut log = open(&path).unwrap();
        let reopener = log.reopener();
        log.write(&[event("1")]).unwrap();
        std::fs::rename(&path, dir.path().join("log.json.2")).unwrap();
        reopener.try_reopen().unwrap();
        std::fs::rename(&path, dir.path().join("log.json.1")).unwrap();
        reopener.try_reopen().unwrap();
        log.write(&[event("2")]).unwrap();
        log.write(&[event("3")]).unwrap();
        assert_eq!(numbers(&dir.path().join("log.json.2")), ["1"]);
        assert_eq!(
            numbers(&dir.path().join("log.json.1")),
            Vec::<String>::new()
        );
        assert_eq!(numbers(&path), ["2", "3"]);
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file_and_the_next_request_retries() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let path = logs.join("log.json");
        let mut log = open(&path).unwrap();
        let reopener = log.reopener();
        log.write(&[event("1")]).unwrap();
        // The directory is gone: the path cannot be opened.
        let moved = dir.path().join("moved");
        std::fs::rename(&logs, &moved).unwrap();
        assert!(reopener.try_reopen().is_err());
        log.write(&[event("2")]).unwrap();
        assert_eq!(numbers(&moved.join("log.json")), ["1", "2"]);
        std::fs::create_dir(&logs).unwrap();
        reopener.try_reopen().unwrap();
        log.write(&[event("3")]).unwrap();
        assert_eq!(numbers(&moved.join("log.json")), ["1", "2"]);
        assert_eq!(numbers(&path), ["3"]);
    }
}
