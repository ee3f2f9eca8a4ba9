//! The changes the dashboard makes: create and delete a topic, publish a
//! test event, reset a stream group's offsets, redrive and purge a queue's
//! dead letters; and the audit page that lists them.
//!
//! Every change is a form posted from the dashboard's own pages
//! ([`super::same_origin`]), refused in read-only mode, and checked against
//! the principal's permissions as the API's route for it is. What deletes
//! or moves data is previewed first (`GET .../reset`, `.../redrive`,
//! `.../purge`, `.../delete`: what would change, and a form to do it), and
//! what cannot be undone asks for the resource's name to be typed. Each
//! change, done or failed, is written to the audit log before the answer
//! says how it ended.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tidings_api::ErrorCode;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_broker::{RedriveTarget, TopicSpec};
use tidings_types::CloudEvent;

use super::audit::Record;
use super::format::{count, When};
use super::{html, same_origin, Chrome};
use crate::{blocking, wire, Api, ApiError};

/// Partitions a topic created from the dashboard may have at most; the
/// broker's own bound applies too.
const FORM_PARTITIONS_MAX: u32 = 1024;

/// The page that says how a change ended.
#[derive(Template)]
#[template(path = "ui/done.html")]
struct DonePage {
    chrome: Chrome,
    heading: String,
    outcome: String,
    failed: bool,
    audit_missing: Option<String>,
    next: (String, String),
}

/// Checks a posted change may be made at all: from the dashboard's pages,
/// not in read-only mode, with the form parsed.
fn form<T: serde::de::DeserializeOwned>(
    chrome: &Chrome,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    same_origin(headers)?;
    if chrome.read_only {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the dashboard is read-only (--ui-read-only): it changes nothing",
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::invalid_request(format!("the form did not parse: {e}")))
}

/// [`form`], of a change the principal may make: `operation` on the
/// resource, offered only outside read-only mode.
fn posted<T: serde::de::DeserializeOwned>(
    chrome: &Chrome,
    headers: &HeaderMap,
    body: &[u8],
    resource: ResourceType,
    name: &str,
    operation: Operation,
) -> Result<T, ApiError> {
    let f = form(chrome, headers, body)?;
    if !chrome.may_change(resource, name, operation) {
        return Err(chrome.refusal(resource, name, operation));
    }
    Ok(f)
}

/// Records a change and answers with how it ended.
async fn finish(
    api: &Api,
    chrome: Chrome,
    action: &str,
    target: String,
    detail: String,
    result: Result<String, ApiError>,
    next: (String, String),
) -> Response {
    let (failed, outcome) = match &result {
        Ok(done) => (false, format!("done: {done}")),
        Err(e) => (true, format!("failed: {}", e.message())),
    };
    let record = Record {
        time_ms: api.broker().clock().now().0,
        principal: chrome.principal.clone(),
        action: action.to_owned(),
        target: target.clone(),
        detail: detail.clone(),
        outcome: outcome.clone(),
    };
    let a = api.clone();
    let written = tokio::task::spawn_blocking(move || a.inner.audit.append(&record))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    tracing::info!(principal = %chrome.principal, action, target = %target, detail = %detail, outcome = %outcome, "dashboard change");
    let audit_missing = written.err().inspect(|why| {
        tracing::error!(reason = %why, "a dashboard change is missing from the audit log");
    });
    let status = result.as_ref().err().map(ApiError::status);
    let mut response = html(&DonePage {
        heading: format!("{action}: {target}"),
        outcome,
        failed,
        audit_missing,
        next,
        chrome,
    });
    if let Some(status) = status {
        *response.status_mut() = status;
    }
    response
}

#[derive(serde::Deserialize)]
struct CreateTopicForm {
    name: String,
    #[serde(default)]
    partitions: String,
}

/// `POST /ui/topics`: creates a topic.
pub(crate) async fn create_topic(
    State(api): State<Api>,
    chrome: Chrome,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: CreateTopicForm = match form(&chrome, &headers, &body) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let name = f.name.trim().to_owned();
    if !chrome.may_create_topic(&name) {
        return chrome.refuse(ResourceType::Topic, &name, Operation::Create);
    }
    let partitions = if f.partitions.trim().is_empty() {
        Ok(1)
    } else {
        match f.partitions.trim().parse::<u32>() {
            Ok(n) if (1..=FORM_PARTITIONS_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_request(format!(
                "partitions {:?}: give 1..={FORM_PARTITIONS_MAX}",
                f.partitions
            ))),
        }
    };
    let broker = Arc::clone(api.broker());
    let n = name.clone();
    let result = match partitions {
        Ok(p) => {
            blocking(move || {
                let created = broker.create_topic(&n, TopicSpec::with_partitions(p))?;
                Ok(format!(
                    "created with {} partition{}",
                    created.spec.log.partitions,
                    if created.spec.log.partitions == 1 {
                        ""
                    } else {
                        "s"
                    }
                ))
            })
            .await
        }
        Err(e) => Err(e),
    };
    let next = if result.is_ok() {
        (format!("/ui/topics/{name}"), format!("Topic {name}"))
    } else {
        ("/ui/topics".to_owned(), "Topics".to_owned())
    };
    finish(
        &api,
        chrome,
        "create topic",
        format!("topic {name}"),
        format!("partitions {}", f.partitions.trim()),
        result,
        next,
    )
    .await
}

#[derive(serde::Deserialize)]
struct SettingsForm {
    #[serde(default)]
    partitions: String,
    #[serde(default)]
    retention_ms: String,
    #[serde(default)]
    retention_bytes: String,
    #[serde(default)]
    dedup_window_ms: String,
    #[serde(default)]
    fsync: String,
    #[serde(default)]
    schema_validation: String,
}

/// A number field of the settings form: empty leaves it, `none` turns it off.
fn setting(name: &str, text: &str) -> Result<Option<Option<u64>>, ApiError> {
    match text.trim() {
        "" => Ok(None),
        "none" => Ok(Some(None)),
        t => t.parse::<u64>().map(|n| Some(Some(n))).map_err(|_| {
            ApiError::invalid_request(format!(
                "{name} {t:?}: give a number, none to turn it off, or nothing to leave it"
            ))
        }),
    }
}

/// `POST /ui/topics/{topic}/settings`: changes a topic's settings, as
/// `PATCH /v1/topics/{topic}` does (`AlterConfigs`, and `Alter` to add
/// partitions).
pub(crate) async fn alter_topic(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: SettingsForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Topic,
        &name,
        Operation::AlterConfigs,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    if !f.partitions.trim().is_empty()
        && !chrome.may_change(ResourceType::Topic, &name, Operation::Alter)
    {
        return chrome.refuse(ResourceType::Topic, &name, Operation::Alter);
    }
    let settings = (|| {
        Ok::<_, ApiError>(tidings_api::TopicSettings {
            partitions: setting("partitions", &f.partitions)?
                .flatten()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            retention_ms: setting("retention_ms", &f.retention_ms)?,
            retention_bytes: setting("retention_bytes", &f.retention_bytes)?,
            dedup_window_ms: setting("dedup_window_ms", &f.dedup_window_ms)?,
            fsync: Some(f.fsync.trim().to_owned()).filter(|s| !s.is_empty()),
            schema_validation: Some(f.schema_validation.trim().to_owned())
                .filter(|s| !s.is_empty()),
            segment_bytes: None,
        })
    })();
    let detail = format!(
        "partitions {:?}, retention_ms {:?}, retention_bytes {:?}, dedup_window_ms {:?}, fsync {:?}, schema_validation {:?}",
        f.partitions.trim(),
        f.retention_ms.trim(),
        f.retention_bytes.trim(),
        f.dedup_window_ms.trim(),
        f.fsync.trim(),
        f.schema_validation.trim()
    );
    let result = match settings.and_then(|s| crate::topics::changes(&s)) {
        Err(e) => Err(e),
        Ok(changes) => {
            let broker = Arc::clone(api.broker());
            let n = name.clone();
            blocking(move || {
                let t = broker.alter_topic(&n, changes)?;
                Ok(format!(
                    "now {} partitions, fsync {}, schema validation {}",
                    t.spec.log.partitions,
                    t.spec.log.fsync,
                    t.spec.schema_validation.as_str()
                ))
            })
            .await
        }
    };
    finish(
        &api,
        chrome,
        "change topic settings",
        format!("topic {name}"),
        detail,
        result,
        (format!("/ui/topics/{name}"), format!("Topic {name}")),
    )
    .await
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    heading: String,
    /// What will happen, line by line.
    consequences: Vec<String>,
    action: String,
    /// Hidden fields the form posts.
    fields: Vec<(String, String)>,
    /// The name to type, when the change cannot be undone.
    type_to_confirm: Option<String>,
    button: String,
    back: (String, String),
    curl: String,
}

/// `GET /ui/topics/{topic}/delete`: what deleting the topic drops.
pub(crate) async fn delete_topic_preview(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
) -> Response {
    if !chrome.may_change(ResourceType::Topic, &name, Operation::Delete) {
        return chrome.refuse(ResourceType::Topic, &name, Operation::Delete);
    }
    let t = match api.broker().describe_topic(&name) {
        Ok(t) => t,
        Err(e) => return chrome.error(e.into()),
    };
    let events: u64 = t
        .partitions
        .iter()
        .map(|p| p.high_watermark.0.saturating_sub(p.log_start.0))
        .sum();
    let bytes: u64 = t.partitions.iter().map(|p| p.size_bytes).sum();
    let consequences = vec![
        format!(
            "Its {} events ({}) in {} partitions are deleted from disk.",
            count(events),
            super::format::bytes(bytes),
            t.partitions.len()
        ),
        "Stream groups keep their offsets of it; queue groups on it stop receiving.".to_owned(),
        "This cannot be undone.".to_owned(),
    ];
    let curl = format!(
        "curl -s -XDELETE '{}/v1/topics/{name}'",
        chrome.context.http_base()
    );
    html(&ConfirmPage {
        heading: format!("Delete topic {name}?"),
        consequences,
        action: format!("/ui/topics/{name}/delete"),
        fields: Vec::new(),
        type_to_confirm: Some(name.clone()),
        button: "Delete the topic".to_owned(),
        back: (format!("/ui/topics/{name}"), format!("Keep {name}")),
        curl,
        chrome,
    })
}

#[derive(serde::Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

/// The confirmation typed must be the resource's name.
fn confirmed(typed: &str, name: &str) -> Result<(), ApiError> {
    if typed.trim() == name {
        Ok(())
    } else {
        Err(ApiError::invalid_request(format!(
            "type {name:?} to confirm; {typed:?} was typed"
        )))
    }
}

/// `POST /ui/topics/{topic}/delete`.
pub(crate) async fn delete_topic(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: ConfirmForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Topic,
        &name,
        Operation::Delete,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let result = match confirmed(&f.confirm, &name) {
        Ok(()) => {
            let broker = Arc::clone(api.broker());
            let n = name.clone();
            blocking(move || {
                broker.delete_topic(&n)?;
                Ok("deleted".to_owned())
            })
            .await
        }
        Err(e) => Err(e),
    };
    let next = if result.is_ok() {
        ("/ui/topics".to_owned(), "Topics".to_owned())
    } else {
        (format!("/ui/topics/{name}"), format!("Topic {name}"))
    };
    finish(
        &api,
        chrome,
        "delete topic",
        format!("topic {name}"),
        String::new(),
        result,
        next,
    )
    .await
}

#[derive(serde::Deserialize)]
struct PublishForm {
    #[serde(rename = "type")]
    ty: String,
    source: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    data: String,
}

/// `POST /ui/topics/{topic}/events`: publishes one event, as a producer
/// would (dedup, the topic's schema check and all).
pub(crate) async fn publish(
    State(api): State<Api>,
    chrome: Chrome,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: PublishForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Topic,
        &topic,
        Operation::Write,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let mut event = CloudEvent::new(f.source.trim(), f.ty.trim()).with_id(id.clone());
    if !f.subject.trim().is_empty() {
        event = event.with_subject(f.subject.trim());
    }
    if !f.key.trim().is_empty() {
        event = event.with_partitionkey(f.key.trim());
    }
    let data = f.data.trim();
    if !data.is_empty() {
        let media = if serde_json::from_str::<serde_json::Value>(data).is_ok() {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        event = event.with_data(media, data.as_bytes().to_vec());
    }
    let result = match event.validate() {
        Ok(()) => api
            .broker()
            .publish(&topic, event)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(ApiError::from(e)),
    };
    let next = match &result {
        Ok(p) => (
            format!("/ui/topics/{topic}/events/{}/{}", p.partition.0, p.offset.0),
            "The event".to_owned(),
        ),
        Err(_) => (
            format!("/ui/topics/{topic}/events"),
            format!("Events of {topic}"),
        ),
    };
    let result = result.map(|p| format!("event {id} appended at {}:{}", p.partition.0, p.offset.0));
    finish(
        &api,
        chrome,
        "publish",
        format!("topic {topic}"),
        format!("type {}, source {}", f.ty.trim(), f.source.trim()),
        result,
        next,
    )
    .await
}

#[derive(serde::Deserialize)]
pub(crate) struct ResetQuery {
    #[serde(default)]
    to: String,
}

#[derive(Template)]
#[template(path = "ui/reset.html")]
struct ResetPage {
    chrome: Chrome,
    group: String,
    to: String,
    members: usize,
    rows: Vec<ResetRow>,
    moved: String,
    curl: String,
}

struct ResetRow {
    topic: String,
    partition: u32,
    before: String,
    after: String,
    change: String,
}

/// `GET /ui/groups/{group}/reset?to=`: where each committed offset would
/// move, before anything moves.
pub(crate) async fn reset_preview(
    State(api): State<Api>,
    chrome: Chrome,
    Path(group): Path<String>,
    Query(q): Query<ResetQuery>,
) -> Response {
    if !chrome.may_change(ResourceType::Group, &group, Operation::Alter) {
        return chrome.refuse(ResourceType::Group, &group, Operation::Alter);
    }
    let broker = Arc::clone(api.broker());
    let d = match broker.describe_group(&group) {
        Ok(d) => d,
        Err(e) => return chrome.error(e.into()),
    };
    let to = if q.to.trim().is_empty() {
        "earliest".to_owned()
    } else {
        q.to.trim().to_owned()
    };
    let start = match wire::parse_start(Some(&to)) {
        Ok(s) => s,
        Err(e) => return chrome.error(e),
    };
    let mut rows = Vec::new();
    let mut moved: i128 = 0;
    for p in &d.partitions {
        let after = match broker.position(p.topic.as_str(), p.partition, start) {
            Ok(o) => o,
            Err(e) => return chrome.error(e.into()),
        };
        let before = p.committed;
        let delta = i128::from(after.0) - i128::from(before.map_or(0, |o| o.0));
        moved += delta;
        rows.push(ResetRow {
            topic: p.topic.to_string(),
            partition: p.partition.0,
            before: before.map_or_else(|| "none".to_owned(), |o| count(o.0)),
            after: count(after.0),
            change: match delta {
                0 => "unchanged".to_owned(),
                d if d > 0 => format!("skips {}", count(d.unsigned_abs() as u64)),
                d => format!("replays {}", count(d.unsigned_abs() as u64)),
            },
        });
    }
    let moved = match moved {
        0 => "No committed offset moves.".to_owned(),
        m if m > 0 => format!(
            "The group would skip {} events.",
            count(m.unsigned_abs() as u64)
        ),
        m => format!(
            "The group would read {} events again.",
            count(m.unsigned_abs() as u64)
        ),
    };
    html(&ResetPage {
        curl: format!(
            "curl -s -XPOST '{}/v1/groups/{group}/reset' -H 'content-type: application/json' -d '{}'",
            chrome.context.http_base(),
            serde_json::json!({ "to": to })
        ),
        members: d.members.len(),
        group,
        to,
        rows,
        moved,
        chrome,
    })
}

#[derive(serde::Deserialize)]
struct ResetForm {
    to: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /ui/groups/{group}/reset`.
pub(crate) async fn reset(
    State(api): State<Api>,
    chrome: Chrome,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: ResetForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Group,
        &group,
        Operation::Alter,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let result = match (
        confirmed(&f.confirm, &group),
        wire::parse_start(Some(f.to.trim())),
    ) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(to)) => {
            let broker = Arc::clone(api.broker());
            let g = group.clone();
            blocking(move || {
                broker.reset_offsets(&g, to)?;
                let d = broker.describe_group(&g)?;
                let positions: BTreeMap<String, u64> = d
                    .partitions
                    .iter()
                    .filter_map(|p| {
                        p.committed
                            .map(|o| (format!("{}/{}", p.topic, p.partition.0), o.0))
                    })
                    .collect();
                Ok(format!("committed offsets now {positions:?}"))
            })
            .await
        }
    };
    finish(
        &api,
        chrome,
        "reset offsets",
        format!("group {group}"),
        format!("to {}", f.to.trim()),
        result,
        (format!("/ui/groups/{group}"), format!("Group {group}")),
    )
    .await
}

#[derive(serde::Deserialize)]
pub(crate) struct RedriveQuery {
    #[serde(default)]
    max: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    error: String,
}

/// What a redrive form asks: how many at most, and where to.
fn redrive_of(max: &str, to: &str) -> Result<(Option<usize>, Option<String>), ApiError> {
    let max = match max.trim() {
        "" => None,
        m => match m.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::invalid_request(format!(
                    "max {m:?}: give a number of at least 1, or nothing for all"
                )))
            }
        },
    };
    let to = Some(to.trim()).filter(|t| !t.is_empty()).map(str::to_owned);
    Ok((max, to))
}

/// `GET /ui/queues/{queue}/redrive?max=&to=`: how many dead letters a
/// redrive would send, and where.
pub(crate) async fn redrive_preview(
    State(api): State<Api>,
    chrome: Chrome,
    Path(queue): Path<String>,
    Query(q): Query<RedriveQuery>,
) -> Response {
    if !chrome.may_change(ResourceType::Group, &queue, Operation::Alter) {
        return chrome.refuse(ResourceType::Group, &queue, Operation::Alter);
    }
    let (max, to) = match redrive_of(&q.max, &q.to) {
        Ok(r) => r,
        Err(e) => return chrome.error(e),
    };
    if let Some(topic) = &to {
        if let Err(e) = chrome
            .access
            .require(ResourceType::Topic, topic, Operation::Write)
        {
            return chrome.error(e);
        }
        if let Err(e) = api.broker().describe_topic(topic) {
            return chrome.error(e.into());
        }
    }
    let stats = match api.broker().queue_stats(&queue).await {
        Ok(s) => s,
        Err(e) => return chrome.error(e.into()),
    };
    let error = q.error.clone();
    // With an error: how many dead letters carry it (among the oldest
    // 10 000, which the queue's page groups).
    let eligible = if error.is_empty() {
        stats.dead_letters
    } else {
        match super::queues::read_dead_letters(&api, &queue).await {
            Ok((letters, _)) => letters.iter().filter(|l| l.error == error).count() as u64,
            Err(e) => return chrome.error(e),
        }
    };
    let n = max.map_or(eligible, |m| (m as u64).min(eligible));
    let which = if error.is_empty() {
        format!("its {} dead letters", count(stats.dead_letters))
    } else {
        format!(
            "the {} dead letters with the error {error:?} ({} in all)",
            count(eligible),
            count(stats.dead_letters)
        )
    };
    let mut consequences = vec![format!(
        "{} of {which}, oldest first, {}.",
        count(n),
        match &to {
            None => format!("are delivered again to {queue} alone (through its retry lane), with fresh attempts"),
            Some(t) => format!("are published to topic {t}, for every consumer of it"),
        }
    )];
    if n >= 1000 {
        consequences.push(format!(
            "That is {} events at once: consumers see a burst.",
            count(n)
        ));
    }
    consequences
        .push("They leave the dead letters once they are durable where they went.".to_owned());
    let mut fields = vec![("max".to_owned(), q.max.trim().to_owned())];
    if let Some(t) = &to {
        fields.push(("to".to_owned(), t.clone()));
    }
    if !error.is_empty() {
        fields.push(("error".to_owned(), error.clone()));
    }
    let mut body = serde_json::Map::new();
    if let Some(m) = max {
        body.insert("max".into(), m.into());
    }
    if let Some(t) = &to {
        body.insert("to".into(), t.clone().into());
    }
    if !error.is_empty() {
        body.insert("error".into(), error.clone().into());
    }
    html(&ConfirmPage {
        heading: format!("Redrive dead letters of {queue}?"),
        consequences,
        action: format!("/ui/queues/{queue}/redrive"),
        fields,
        type_to_confirm: None,
        button: format!("Redrive {}", count(n)),
        back: (format!("/ui/queues/{queue}#dead-letters"), format!("Back to {queue}")),
        curl: format!(
            "curl -s -XPOST '{}/v1/queues/{queue}/dead-letters/redrive' -H 'content-type: application/json' -d '{}'",
            chrome.context.http_base(),
            serde_json::Value::Object(body)
        ),
        chrome,
    })
}

#[derive(serde::Deserialize)]
struct RedriveForm {
    #[serde(default)]
    max: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    error: String,
}

/// `POST /ui/queues/{queue}/redrive`.
pub(crate) async fn redrive(
    State(api): State<Api>,
    chrome: Chrome,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: RedriveForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Group,
        &queue,
        Operation::Alter,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let result = match redrive_of(&f.max, &f.to) {
        Err(e) => Err(e),
        Ok((max, to)) => {
            let writable = match &to {
                Some(t) => chrome
                    .access
                    .require(ResourceType::Topic, t, Operation::Write),
                None => Ok(()),
            };
            match writable {
                Err(e) => Err(e),
                Ok(()) => api
                    .broker()
                    .redrive_dead_letters_with(
                        &queue,
                        to.clone()
                            .map_or(RedriveTarget::Group, RedriveTarget::Topic),
                        max.unwrap_or(usize::MAX),
                        Some(f.error.as_str()).filter(|e| !e.is_empty()),
                    )
                    .await
                    .map(|n| format!("{} redriven", count(n as u64)))
                    .map_err(ApiError::from),
            }
        }
    };
    finish(
        &api,
        chrome,
        "redrive dead letters",
        format!("queue {queue}"),
        format!(
            "max {}, to {}{}",
            if f.max.trim().is_empty() {
                "all"
            } else {
                f.max.trim()
            },
            if f.to.trim().is_empty() {
                "the group"
            } else {
                f.to.trim()
            },
            if f.error.is_empty() {
                String::new()
            } else {
                format!(", only with the error {:?}", f.error)
            }
        ),
        result,
        (
            format!("/ui/queues/{queue}#dead-letters"),
            format!("Queue {queue}"),
        ),
    )
    .await
}

/// `GET /ui/queues/{queue}/purge`: what purging drops.
pub(crate) async fn purge_preview(
    State(api): State<Api>,
    chrome: Chrome,
    Path(queue): Path<String>,
) -> Response {
    if !chrome.may_change(ResourceType::Group, &queue, Operation::Alter) {
        return chrome.refuse(ResourceType::Group, &queue, Operation::Alter);
    }
    let stats = match api.broker().queue_stats(&queue).await {
        Ok(s) => s,
        Err(e) => return chrome.error(e.into()),
    };
    html(&ConfirmPage {
        heading: format!("Purge the dead letters of {queue}?"),
        consequences: vec![
            format!(
                "Its {} dead letters are dropped: nothing will deliver them again.",
                count(stats.dead_letters)
            ),
            "This cannot be undone.".to_owned(),
        ],
        action: format!("/ui/queues/{queue}/purge"),
        fields: Vec::new(),
        type_to_confirm: Some(queue.clone()),
        button: "Purge the dead letters".to_owned(),
        back: (
            format!("/ui/queues/{queue}#dead-letters"),
            "Keep them".to_owned(),
        ),
        curl: format!(
            "curl -s -XDELETE '{}/v1/queues/{queue}/dead-letters'",
            chrome.context.http_base()
        ),
        chrome,
    })
}

/// `POST /ui/queues/{queue}/purge`.
pub(crate) async fn purge(
    State(api): State<Api>,
    chrome: Chrome,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f: ConfirmForm = match posted(
        &chrome,
        &headers,
        &body,
        ResourceType::Group,
        &queue,
        Operation::Alter,
    ) {
        Ok(f) => f,
        Err(e) => return chrome.error(e),
    };
    let result = match confirmed(&f.confirm, &queue) {
        Ok(()) => api
            .broker()
            .purge_dead_letters(&queue)
            .await
            .map(|n| format!("{} purged", count(n)))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    finish(
        &api,
        chrome,
        "purge dead letters",
        format!("queue {queue}"),
        String::new(),
        result,
        (
            format!("/ui/queues/{queue}#dead-letters"),
            format!("Queue {queue}"),
        ),
    )
    .await
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    problem: Option<String>,
}

struct AuditRow {
    when: When,
    principal: String,
    action: String,
    target: String,
    detail: String,
    outcome: String,
    failed: bool,
}

/// `GET /ui/audit`: the changes made from the dashboard, newest first. Who
/// may describe the server (`Cluster` `kafka-cluster`) may read it.
pub(crate) async fn audit(State(api): State<Api>, chrome: Chrome) -> Response {
    if let Err(e) = chrome.access.require(
        ResourceType::Cluster,
        crate::access::CLUSTER,
        Operation::Describe,
    ) {
        return chrome.error(e);
    }
    let a = api.clone();
    let read = tokio::task::spawn_blocking(move || a.inner.audit.newest())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let (records, problem) = match read {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let rows = records
        .into_iter()
        .map(|r| AuditRow {
            when: When::of(tidings_types::TimestampMs(r.time_ms)),
            failed: r.outcome.starts_with("failed"),
            principal: r.principal,
            action: r.action,
            target: r.target,
            detail: r.detail,
            outcome: r.outcome,
        })
        .collect();
    html(&AuditPage {
        rows,
        problem,
        chrome,
    })
}
