//! What the commands print: events one per line (readable, or the server's
//! JSON with `--json`), and a progress bar on standard error when it is a
//! terminal.

use std::io::{self, IsTerminal, Write};

use anyhow::Result;
use serde_json::Value;

/// Prints one stored event (an item of a read, poll, receive or stream).
pub(crate) fn event(out: &mut impl Write, item: &Value, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{item}")?;
        return Ok(());
    }
    // Store events are placed by stream and version (and global position);
    // topic events by partition and offset.
    let place = match item["stream"].as_str() {
        Some(stream) => format!(
            "{stream}@{}#{}",
            item["version"].as_u64().unwrap_or_default(),
            item["position"].as_u64().unwrap_or_default()
        ),
        None => format!(
            "{}@{}",
            item["partition"].as_u64().unwrap_or_default(),
            item["offset"].as_u64().unwrap_or_default()
        ),
    };
    let lease = item["lease"]
        .as_str()
        .map(|l| format!(" lease={l} attempt={}", item["attempt"]))
        .unwrap_or_default();
    if let Some(e) = item.get("event") {
        let data = match (&e["data"], &e["data_base64"]) {
            (Value::String(s), _) => s.clone(),
            (Value::Null, Value::String(b)) => format!("base64:{b}"),
            (Value::Null, _) => String::new(),
            (d, _) => d.to_string(),
        };
        writeln!(
            out,
            "{place}\t{}\t{}\t{data}{lease}",
            e["type"].as_str().unwrap_or_default(),
            e["id"].as_str().unwrap_or_default(),
        )?;
    } else {
        let r = &item["record"];
        writeln!(
            out,
            "{place}\t(raw record)\tkey={}\tvalue={}{lease}",
            r["key"].as_str().unwrap_or("null"),
            r["value"].as_str().unwrap_or("null"),
        )?;
    }
    Ok(())
}

/// A one-line progress bar on standard error, drawn only on a terminal.
pub(crate) struct Progress {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    shown: bool,
}

/// Width of the bar, in characters.
const BAR_WIDTH: u64 = 30;

impl Progress {
    pub(crate) fn new(what: &'static str, total: Option<u64>) -> Progress {
        Progress {
            what,
            total,
            done: 0,
            shown: io::stderr().is_terminal(),
        }
    }

    pub(crate) fn advance(&mut self, by: u64) {
        self.done += by;
        if !self.shown {
            return;
        }
        let line = match self.total {
            Some(total) if total > 0 => {
                let filled = (self.done.min(total) * BAR_WIDTH) / total;
                format!(
                    "\r[{}{}] {}/{} {}",
                    "#".repeat(filled as usize),
                    " ".repeat((BAR_WIDTH - filled) as usize),
                    self.done,
                    total,
                    self.what
                )
            }
            _ => format!("\r{} {}", self.done, self.what),
        };
        let _ = write!(io::stderr(), "{line}");
        let _ = io::stderr().flush();
    }

    pub(crate) fn finish(&self) {
        if self.shown && self.done > 0 {
            let _ = writeln!(io::stderr());
        }
    }
}
