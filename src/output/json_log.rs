//! The JSON log: one object per line with upstream's field names (T-Pot parses them).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::pipeline::OutputQueue;

/// Opens (appending) the log file; fails at startup rather than on the first event.
pub fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

pub fn spawn(out: BufWriter<File>, queue: OutputQueue) -> std::io::Result<JoinHandle<()>> {
    super::spawn_blocking_output(queue, out, |out, batch: &[Arc<Event>]| {
        write_batch(out, batch).map_err(|e| e.to_string())
    })
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
}
