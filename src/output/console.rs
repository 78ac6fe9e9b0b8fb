//! `-v`: one readable line per event on standard output. The smallest output, and the worked
//! example of the output boundary (see ARCHITECTURE.md, "How to add an output").

use std::io::Write;
use std::sync::Arc;

use super::{BatchSink, BuildContext, BuildError, OnThread, Output, OutputConfig, QueuePolicy};
use crate::event::Event;

/// `-v` (`SENTRYPEER_VERBOSE`): on or off, nothing else to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleConfig;

impl OutputConfig for ConsoleConfig {
    fn name(&self) -> &'static str {
        "console"
    }

    fn queue(&self) -> Option<QueuePolicy> {
        Some(QueuePolicy::every(super::OUTPUT_QUEUE_EVENTS))
    }

    fn build(&self, _cx: &mut BuildContext<'_>) -> Result<Box<dyn Output>, BuildError> {
        Ok(Box::new(OnThread(Console)))
    }
}

struct Console;

impl BatchSink for Console {
    fn write(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        for e in batch {
            writeln!(out, "{}", line(e)).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    }
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
