//! A real OpenTelemetry Collector (built from the Go module proxy by the
//! test command: its OTLP receiver and file exporter) on a free loopback
//! port, and the spans it received, flattened from OTLP JSON. Shared by the
//! server's tests and the toolkit's (`#[path]`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long spans get to reach the collector's file.
const SPANS_WAIT: Duration = Duration::from_secs(60);

/// One exported span, flattened from OTLP JSON.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    pub(crate) service: String,
    pub(crate) name: String,
    /// OTLP's enum: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub(crate) kind: u64,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: String,
    pub(crate) attributes: BTreeMap<String, Value>,
    /// (trace id, span id) of each link.
    pub(crate) links: Vec<(String, String)>,
}

impl Span {
    pub(crate) fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
}

/// A Collector on a free loopback port writing every span it receives to a
/// file. Killed when dropped.
pub(crate) struct Collector {
    child: Child,
    pub(crate) port: u16,
    spans: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    pub(crate) fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spans = dir.path().join("spans.jsonl");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
                spans.display()
            ),
        )
        .unwrap();
        let child = Command::new("tidings-otelcol")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tidings-otelcol is not installed: run ./scripts/test, which builds it");
        let deadline = Instant::now() + SPANS_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the collector did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector {
            child,
            port,
            spans,
            _dir: dir,
        }
    }

    /// The base URL an OTLP/HTTP exporter is given.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub(crate) fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let batch: Value = serde_json::from_str(line).unwrap();
            for resource in batch["resourceSpans"].as_array().into_iter().flatten() {
                let service = attributes(&resource["resource"]["attributes"])
                    .get("service.name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for s in scope["spans"].as_array().into_iter().flatten() {
                        let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                        out.push(Span {
                            service: service.clone(),
                            name: text("name"),
                            kind: s["kind"].as_u64().unwrap_or(0),
                            trace_id: text("traceId"),
                            span_id: text("spanId"),
                            parent_span_id: text("parentSpanId"),
                            attributes: attributes(&s["attributes"]),
                            links: s["links"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|l| {
                                    (
                                        l["traceId"].as_str().unwrap_or_default().to_owned(),
                                        l["spanId"].as_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits until a span named `name` of `service` arrives, and answers
    /// every span received by then.
    pub(crate) fn until(&self, service: &str, name: &str) -> Vec<Span> {
        let deadline = Instant::now() + SPANS_WAIT;
        loop {
            let spans = self.spans();
            if spans.iter().any(|s| s.service == service && s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} of {service:?} arrived; received: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OTLP JSON attributes as a map of their values (`{"stringValue": ...}`
/// and the like unwrapped to the JSON value).
fn attributes(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let value = a["value"]
                .as_object()
                .and_then(|v| v.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            (a["key"].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect()
}
