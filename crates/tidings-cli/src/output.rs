//! What the commands print, through one [`Output`]: answers as the server's
//! JSON (`--json`, for scripts) or as readable lines; events one per line;
//! and a progress bar on standard error when it is a terminal.

use std::io::{self, IsTerminal, Write};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use tidings_api::{Delivery, RawRecord, RecordedEvent, StoredEvent};

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Readable lines.
    Text,
    /// The server's JSON, one object per line.
    Json,
}

/// Where a command's results go.
pub(crate) struct Output<W: Write> {
    out: W,
    mode: Mode,
}

/// A value as JSON text, members in name order: how the server's JSON has
/// always been printed.
pub(crate) fn json(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

impl<W: Write> Output<W> {
    pub(crate) fn new(out: W, mode: Mode) -> Output<W> {
        Output { out, mode }
    }

    /// An answer: its JSON, or the lines `human` makes of it.
    pub(crate) fn answer<T: Serialize>(
        &mut self,
        answer: &T,
        human: impl FnOnce(&T) -> String,
    ) -> Result<()> {
        match self.mode {
            Mode::Json => writeln!(self.out, "{}", json(answer))?,
            Mode::Text => writeln!(self.out, "{}", human(answer))?,
        }
        Ok(())
    }

    /// A line printed only with `--json`.
    pub(crate) fn json_line(&mut self, value: &impl Serialize) -> Result<()> {
        if self.mode == Mode::Json {
            writeln!(self.out, "{}", json(value))?;
        }
        Ok(())
    }

    /// A line printed only without `--json`.
    pub(crate) fn text_line(&mut self, line: &str) -> Result<()> {
        if self.mode == Mode::Text {
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    /// One stored event: its JSON, or `<place>\t<type>\t<id>\t<data>` (a raw
    /// record shows its key and value instead), with the lease of a delivery.
    pub(crate) fn event(&mut self, item: &impl EventLine) -> Result<()> {
        if self.mode == Mode::Json {
            writeln!(self.out, "{}", json(item))?;
            return Ok(());
        }
        let place = item.place();
        let lease = item
            .lease()
            .map(|(lease, attempt)| format!(" lease={lease} attempt={attempt}"))
            .unwrap_or_default();
        match (item.event(), item.record()) {
            (Some(e), _) => {
                let data = match (&e["data"], &e["data_base64"]) {
                    (Value::String(s), _) => s.clone(),
                    (Value::Null, Value::String(b)) => format!("base64:{b}"),
                    (Value::Null, _) => String::new(),
                    (d, _) => d.to_string(),
                };
                writeln!(
                    self.out,
                    "{place}\t{}\t{}\t{data}{lease}",
                    e["type"].as_str().unwrap_or_default(),
                    e["id"].as_str().unwrap_or_default(),
                )?;
            }
            (None, record) => {
                let field = |f: fn(&RawRecord) -> &Option<String>| {
                    record
                        .and_then(|r| f(r).as_deref())
                        .map_or_else(|| "(none)".to_owned(), raw_text)
                };
                writeln!(
                    self.out,
                    "{place}\t(raw record)\tkey={}\tvalue={}{lease}",
                    field(|r| &r.key),
                    field(|r| &r.value),
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// A raw record's key or value (base64 in the API) as text when it is UTF-8
/// without control characters, else as `base64:<the base64>`.
fn raw_text(b64: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64);
    match bytes.ok().and_then(|b| String::from_utf8(b).ok()) {
        Some(text) if !text.chars().any(|c| c.is_control() && c != '\t') => text,
        _ => format!("base64:{b64}"),
    }
}

/// What an event line shows of an item of a read, poll, receive or stream.
pub(crate) trait EventLine: Serialize {
    /// `<partition>@<offset>`, or `<stream>@<version>#<position>` in the store.
    fn place(&self) -> String;
    /// The CloudEvent in the JSON format, when there is one.
    fn event(&self) -> Option<&Value>;
    /// The raw record, when there is no event.
    fn record(&self) -> Option<&RawRecord> {
        None
    }
    /// A delivery's lease and attempt.
    fn lease(&self) -> Option<(&str, u32)> {
        None
    }
}

impl EventLine for StoredEvent {
    fn place(&self) -> String {
        format!("{}@{}", self.partition, self.offset)
    }
    fn event(&self) -> Option<&Value> {
        self.event.as_ref()
    }
    fn record(&self) -> Option<&RawRecord> {
        self.record.as_ref()
    }
}

impl EventLine for Delivery {
    fn place(&self) -> String {
        self.entry.place()
    }
    fn event(&self) -> Option<&Value> {
        self.entry.event()
    }
    fn record(&self) -> Option<&RawRecord> {
        self.entry.record()
    }
    fn lease(&self) -> Option<(&str, u32)> {
        Some((&self.lease, self.attempt))
    }
}

impl EventLine for RecordedEvent {
    fn place(&self) -> String {
        format!("{}@{}#{}", self.stream, self.version, self.position)
    }
    fn event(&self) -> Option<&Value> {
        Some(&self.event)
    }
}

/// A string attribute of a stored event's CloudEvent; empty for a raw record
/// or an attribute it lacks.
pub(crate) fn attribute(entry: &StoredEvent, name: &str) -> String {
    entry
        .event
        .as_ref()
        .and_then(|e| e[name].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A CloudEvent's attributes, one per line (`  name: value`), data last as
/// text, JSON or base64.
pub(crate) fn event_details(event: &Value) -> String {
    let Some(attributes) = event.as_object() else {
        return String::new();
    };
    let mut text = String::new();
    for (name, value) in attributes {
        if name == "data" || name == "data_base64" {
            continue;
        }
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!("\n  {name}: {value}"));
    }
    match (&event["data"], &event["data_base64"]) {
        (Value::String(s), _) => text.push_str(&format!("\n  data: {s}")),
        (Value::Null, Value::String(b)) => text.push_str(&format!("\n  data: base64:{b}")),
        (Value::Null, _) => text.push_str("\n  no data"),
        (d, _) => text.push_str(&format!("\n  data: {d}")),
    }
    text
}

/// `1 event`, `2 events`, `1 entry`, `3 entries`: a count with its noun.
pub(crate) fn plural(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(mode: Mode, print: impl FnOnce(&mut Output<&mut Vec<u8>>)) -> String {
        let mut bytes = Vec::new();
        print(&mut Output::new(&mut bytes, mode));
        String::from_utf8(bytes).unwrap()
    }

    fn stored(data: Value) -> StoredEvent {
        StoredEvent {
            event: Some(json!({"type": "order.placed", "id": "o-1", "data": data})),
            offset: 4,
            partition: 1,
            record: None,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn events_print_their_place_type_id_and_data() {
        let text = lines(Mode::Text, |o| {
            o.event(&stored(json!("plain"))).unwrap();
            o.event(&stored(json!({"total": 5}))).unwrap();
            o.event(&Delivery {
                attempt: 2,
                lease: "1.4.9".into(),
                entry: stored(json!("x")),
            })
            .unwrap();
            o.event(&StoredEvent {
                event: None,
                record: Some(RawRecord {
                    headers: vec![],
                    key: Some("a2V5".into()),
                    value: None,
                }),
                ..stored(Value::Null)
            })
            .unwrap();
            o.event(&StoredEvent {
                event: None,
                record: Some(RawRecord {
                    headers: vec![],
                    key: None,
                    // Not UTF-8: 0xff 0xfe.
                    value: Some("//4=".into()),
                }),
                ..stored(Value::Null)
            })
            .unwrap();
        });
        assert_eq!(
            text,
            "1@4\torder.placed\to-1\tplain\n\
             1@4\torder.placed\to-1\t{\"total\":5}\n\
             1@4\torder.placed\to-1\tx lease=1.4.9 attempt=2\n\
             1@4\t(raw record)\tkey=key\tvalue=(none)\n\
             1@4\t(raw record)\tkey=(none)\tvalue=base64://4=\n"
        );
    }

    #[test]
    fn counts_read_in_plain_words() {
        assert_eq!(plural(1, "event"), "1 event");
        assert_eq!(plural(0, "event"), "0 events");
        assert_eq!(plural(2, "entry"), "2 entries");
        assert_eq!(plural(2, "key"), "2 keys");
    }

    #[test]
    fn json_mode_prints_members_in_name_order() {
        let text = lines(Mode::Json, |o| {
            o.answer(&json!({"b": 1, "a": 2}), |_| "text".into())
                .unwrap();
            o.text_line("only for people").unwrap();
        });
        assert_eq!(text, "{\"a\":2,\"b\":1}\n");
    }
}
