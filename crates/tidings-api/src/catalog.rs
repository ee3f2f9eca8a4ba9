//! The event catalog: `GET /v1/catalog`, built from the schema registry and
//! from what the server's topics hold (each event type with its counts, first
//! and last seen, sources; the groups consuming each topic), with the drift
//! between the two. [`asyncapi`] renders it as an AsyncAPI 3.0 document and
//! [`eventcatalog`] as an EventCatalog folder; both are pure functions, so the
//! server, the CLI and tests render the same thing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// `GET /v1/catalog`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// When it was made, in ms since the epoch.
    pub generated_ms: i64,
    /// Whether every stored record was counted (false while a scan of large
    /// topics is still under way; `unscanned` says how much is left).
    pub complete: bool,
    /// Every topic.
    pub topics: Vec<CatalogTopic>,
    /// Registered subjects no topic's events resolve to.
    pub unused_subjects: Vec<String>,
    /// Where what runs and what is documented disagree.
    pub drift: Vec<Drift>,
}

/// One topic of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogTopic {
    /// The topic.
    pub name: String,
    /// `off` or `validate`.
    pub schema_validation: String,
    /// Records stored but not counted yet.
    pub unscanned: u64,
    /// The schema of subject `<topic>-value`, if registered.
    pub value_schema: Option<CatalogSchema>,
    /// What it holds, by event type.
    pub events: Vec<CatalogEvent>,
    /// The groups consuming it.
    pub consumers: Vec<CatalogConsumer>,
}

/// One event type a topic holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogEvent {
    /// The CloudEvent type; `null` for records that are not CloudEvents.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// How many the topic holds.
    pub count: u64,
    /// Append time of the first, ms since the epoch.
    pub first_seen_ms: i64,
    /// Append time of the last.
    pub last_seen_ms: i64,
    /// The sources that published it (the first 16).
    pub sources: Vec<String>,
    /// Whether more sources published it than are listed.
    pub more_sources: bool,
    /// The `dataschema`s its events named.
    pub dataschemas: Vec<String>,
    /// The schema registered for it: subject named as its type, else the
    /// topic's `<topic>-value`.
    pub schema: Option<CatalogSchema>,
}

/// A registered schema as the catalog shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogSchema {
    /// The subject.
    pub subject: String,
    /// Its live versions.
    pub versions: Vec<u32>,
    /// The latest version's number.
    pub version: u32,
    /// The latest version's schema id.
    pub id: u32,
    /// The latest version's schema.
    pub schema: Value,
}

/// A group consuming a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogConsumer {
    /// The group.
    pub group: String,
    /// `stream` or `queue`.
    pub mode: String,
}

/// One disagreement between what runs and what is documented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// `type_without_schema`: a type is published and no schema documents
    /// it; `consumer_of_undocumented_type`: a group reads a topic holding such
    /// a type; `schema_without_events`: a subject is registered and no topic
    /// holds its events.
    pub kind: String,
    /// The topic, where there is one.
    #[serde(default)]
    pub topic: Option<String>,
    /// The event type, where there is one.
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
    /// The group, where there is one.
    #[serde(default)]
    pub group: Option<String>,
    /// The subject, where there is one.
    #[serde(default)]
    pub subject: Option<String>,
    /// In words.
    pub detail: String,
}

impl Catalog {
    /// Lists the drift of the catalog's topics and unused subjects.
    pub fn find_drift(&mut self) {
        let mut drift = Vec::new();
        for t in &self.topics {
            let undocumented: Vec<&CatalogEvent> =
                t.events.iter().filter(|e| e.schema.is_none()).collect();
            for e in &undocumented {
                let name =
                    e.ty.as_deref()
                        .unwrap_or("records that are not CloudEvents");
                drift.push(Drift {
                    kind: "type_without_schema".into(),
                    topic: Some(t.name.clone()),
                    ty: e.ty.clone(),
                    group: None,
                    subject: None,
                    detail: format!(
                        "topic {} holds {} events of {name} and no schema documents them (register one under subject {:?} or {:?})",
                        t.name,
                        e.count,
                        e.ty.as_deref().unwrap_or("-"),
                        format!("{}-value", t.name)
                    ),
                });
            }
            for c in &t.consumers {
                for e in &undocumented {
                    let name =
                        e.ty.as_deref()
                            .unwrap_or("records that are not CloudEvents");
                    drift.push(Drift {
                        kind: "consumer_of_undocumented_type".into(),
                        topic: Some(t.name.clone()),
                        ty: e.ty.clone(),
                        group: Some(c.group.clone()),
                        subject: None,
                        detail: format!(
                            "group {} reads topic {}, which holds {name} with no schema",
                            c.group, t.name
                        ),
                    });
                }
            }
        }
        for subject in &self.unused_subjects {
            drift.push(Drift {
                kind: "schema_without_events".into(),
                topic: None,
                ty: None,
                group: None,
                subject: Some(subject.clone()),
                detail: format!("subject {subject} is registered and no topic holds its events"),
            });
        }
        self.drift = drift;
    }
}

/// An id AsyncAPI and EventCatalog accept (`[A-Za-z0-9._-]`), from any name.
pub fn catalog_id(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "_".into()
    } else {
        id
    }
}

/// The message id of an event type (records that are not CloudEvents are
/// `<topic>.records`).
fn message_id(topic: &str, e: &CatalogEvent) -> String {
    match &e.ty {
        Some(t) => catalog_id(t),
        None => format!("{}.records", catalog_id(topic)),
    }
}

/// A payload in AsyncAPI's multi-format form: JSON Schema, by its draft.
fn payload(schema: &Value) -> Value {
    let draft = match schema.get("$schema").and_then(Value::as_str) {
        Some(s) if s.contains("2020-12") => "application/schema+json;version=2020-12",
        Some(s) if s.contains("2019-09") => "application/schema+json;version=2019-09",
        Some(s) if s.contains("draft-04") => "application/schema+json;version=draft-04",
        Some(s) if s.contains("draft-06") => "application/schema+json;version=draft-06",
        _ => "application/schema+json;version=draft-07",
    };
    json!({"schemaFormat": draft, "schema": schema})
}

/// The catalog as an AsyncAPI 3.0 document: a channel per topic with the
/// messages its events are, a `send` operation per topic and a `receive`
/// operation per consuming group, and each message's payload schema from the
/// registry. `servers` are (name, host, protocol), such as
/// `("kafka", "127.0.0.1:9092", "kafka")`.
pub fn asyncapi(catalog: &Catalog, servers: &[(&str, &str, &str)]) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for t in &catalog.topics {
        let channel = catalog_id(&t.name);
        let mut channel_messages = Map::new();
        for e in &t.events {
            let id = message_id(&t.name, e);
            let name =
                e.ty.clone()
                    .unwrap_or_else(|| format!("{} records", t.name));
            let mut message = json!({
                "name": name,
                "title": name,
                "summary": format!("{} stored in {}, first {} and last {} (ms since the epoch); from {}.",
                    e.count, t.name, e.first_seen_ms, e.last_seen_ms,
                    if e.sources.is_empty() { "no CloudEvents source".to_owned() } else { e.sources.join(", ") }),
                "contentType": "application/json",
                "x-tidings-count": e.count,
                "x-tidings-first-seen-ms": e.first_seen_ms,
                "x-tidings-last-seen-ms": e.last_seen_ms,
                "x-tidings-sources": e.sources,
            });
            if let Some(s) = &e.schema {
                message["payload"] = payload(&s.schema);
                message["x-tidings-subject"] = json!(s.subject);
                message["x-tidings-schema-id"] = json!(s.id);
                message["x-tidings-schema-version"] = json!(s.version);
            }
            if let Some(ty) = &e.ty {
                message["headers"] = json!({
                    "type": "object",
                    "description": "CloudEvents attributes in the Kafka binding's headers (HTTP: ce- headers).",
                    "properties": {"ce_type": {"type": "string", "const": ty}, "ce_source": {"type": "string"}, "ce_id": {"type": "string"}}
                });
            }
            messages.insert(id.clone(), message);
            channel_messages.insert(
                id.clone(),
                json!({"$ref": format!("#/components/messages/{id}")}),
            );
        }
        let refs: Vec<Value> = channel_messages
            .keys()
            .map(|id| json!({"$ref": format!("#/channels/{channel}/messages/{id}")}))
            .collect();
        channels.insert(
            channel.clone(),
            json!({
                "address": t.name,
                "title": t.name,
                "description": format!("Topic {} (schema validation {}).", t.name, t.schema_validation),
                "messages": channel_messages,
            }),
        );
        operations.insert(
            format!("publish.{channel}"),
            json!({
                "action": "send",
                "title": format!("Publish to {}", t.name),
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": refs,
            }),
        );
        for c in &t.consumers {
            operations.insert(
                format!("{}.consumes.{channel}", catalog_id(&c.group)),
                json!({
                    "action": "receive",
                    "title": format!("{} group {} reads {}", c.mode, c.group, t.name),
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "messages": refs,
                }),
            );
        }
    }
    let mut doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tidings event catalog",
            "version": catalog.generated_ms.to_string(),
            "description": "Generated by Tidings from its schema registry and from what its topics hold.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    });
    if !servers.is_empty() {
        let mut s = Map::new();
        for (name, host, protocol) in servers {
            s.insert(
                (*name).to_owned(),
                json!({"host": host, "protocol": protocol}),
            );
        }
        doc["servers"] = Value::Object(s);
    }
    doc
}

/// An event type as one topic holds it.
type Seen<'a> = (&'a CatalogTopic, &'a CatalogEvent);

fn frontmatter(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("---\n");
    for (k, v) in fields {
        // JSON is valid YAML: every value is written as JSON.
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str("---\n");
    out
}

/// The catalog as an EventCatalog folder: `(path, contents)` of each file —
/// `events/<type>/` with its page and its latest schema,
/// `services/<source or group>/` with what each sends and receives,
/// `channels/<topic>/`.
pub fn eventcatalog(catalog: &Catalog) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut sends: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut receives: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut events: BTreeMap<String, (String, Vec<Seen<'_>>)> = BTreeMap::new();
    for t in &catalog.topics {
        for e in &t.events {
            let id = message_id(&t.name, e);
            let name =
                e.ty.clone()
                    .unwrap_or_else(|| format!("{} records", t.name));
            events
                .entry(id.clone())
                .or_insert_with(|| (name, Vec::new()))
                .1
                .push((t, e));
            for s in &e.sources {
                sends.entry(s.clone()).or_default().insert(id.clone());
            }
            for c in &t.consumers {
                receives
                    .entry(c.group.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        files.push((
            format!("channels/{}/index.mdx", catalog_id(&t.name)),
            format!(
                "{}\nTopic `{}`, schema validation `{}`. Consumed by: {}.\n",
                frontmatter(&[
                    ("id", json!(catalog_id(&t.name))),
                    ("name", json!(t.name)),
                    ("version", json!("1")),
                    ("address", json!(t.name)),
                    ("summary", json!(format!("Tidings topic {}", t.name))),
                ]),
                t.name,
                t.schema_validation,
                if t.consumers.is_empty() {
                    "no group".to_owned()
                } else {
                    t.consumers
                        .iter()
                        .map(|c| format!("{} ({})", c.group, c.mode))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    for (id, (name, seen)) in &events {
        let schema = seen.iter().find_map(|(_, e)| e.schema.as_ref());
        let version = schema.map_or("0".to_owned(), |s| s.version.to_string());
        let mut fields = vec![
            ("id", json!(id)),
            ("name", json!(name)),
            ("version", json!(version)),
            (
                "summary",
                json!(match schema {
                    Some(s) => format!("Documented by subject {} (schema {}).", s.subject, s.id),
                    None => "No schema is registered for this event.".to_owned(),
                }),
            ),
        ];
        if schema.is_some() {
            fields.push(("schemaPath", json!("schema.json")));
        } else {
            fields.push(("badges", json!([{"content": "undocumented", "backgroundColor": "red", "textColor": "white"}])));
        }
        let mut body = frontmatter(&fields);
        body.push_str("\n| topic | count | first seen (ms) | last seen (ms) | sources |\n|---|---|---|---|---|\n");
        for (t, e) in seen {
            body.push_str(&format!(
                "| {} | {} | {} | {} | {}{} |\n",
                t.name,
                e.count,
                e.first_seen_ms,
                e.last_seen_ms,
                e.sources.join(", "),
                if e.more_sources { ", …" } else { "" }
            ));
        }
        files.push((format!("events/{id}/index.mdx"), body));
        if let Some(s) = schema {
            let text = serde_json::to_string_pretty(&s.schema).expect("JSON");
            files.push((format!("events/{id}/schema.json"), text));
        }
    }
    let services: BTreeSet<&String> = sends.keys().chain(receives.keys()).collect();
    for service in services {
        let list = |m: &BTreeMap<String, BTreeSet<String>>| -> Value {
            m.get(service)
                .map(|ids| ids.iter().map(|id| json!({"id": id})).collect())
                .unwrap_or_else(|| json!([]))
        };
        files.push((
            format!("services/{}/index.mdx", catalog_id(service)),
            format!(
                "{}\n`{service}`, as seen by Tidings: the events it publishes (CloudEvents source) and those its group reads.\n",
                frontmatter(&[
                    ("id", json!(catalog_id(service))),
                    ("name", json!(service)),
                    ("version", json!("1")),
                    ("summary", json!(format!("{service}, seen by Tidings"))),
                    ("sends", list(&sends)),
                    ("receives", list(&receives)),
                ])
            ),
        ));
    }
    files
}
