//! Topic administration: create, list, describe, alter, delete.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use tidings_broker::{FsyncPolicy, TopicChanges, TopicDescription, TopicSpec};

use crate::{blocking, body, Api, ApiError, PathJson};

/// A topic's configuration as JSON. Durations are whole milliseconds; `null`
/// turns a retention limit or the dedup window off.
#[derive(Serialize)]
pub(crate) struct ConfigJson {
    partitions: u32,
    fsync: String,
    segment_bytes: u64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    dedup_window_ms: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct PartitionJson {
    partition: u32,
    log_start: u64,
    high_watermark: u64,
    size_bytes: u64,
}

#[derive(Serialize)]
pub(crate) struct TopicJson {
    name: String,
    config: ConfigJson,
    partitions: Vec<PartitionJson>,
    published_events: u64,
    published_bytes: u64,
    dedup_evicted: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&TopicDescription> for TopicJson {
    fn from(d: &TopicDescription) -> TopicJson {
        TopicJson {
            name: d.name.to_string(),
            config: ConfigJson {
                partitions: d.spec.partitions,
                fsync: d.spec.fsync.to_string(),
                segment_bytes: d.spec.segment_bytes,
                retention_ms: d.spec.retention_age.map(ms),
                retention_bytes: d.spec.retention_bytes,
                dedup_window_ms: d.spec.dedup_window.map(ms),
            },
            partitions: d
                .partitions
                .iter()
                .map(|p| PartitionJson {
                    partition: p.partition.0,
                    log_start: p.log_start.0,
                    high_watermark: p.high_watermark.0,
                    size_bytes: p.size_bytes,
                })
                .collect(),
            published_events: d.published,
            published_bytes: d.published_bytes,
            dedup_evicted: d.dedup_evicted,
        }
    }
}

/// Absent (`None`), `null` (`Some(None)`) or a value (`Some(Some(v))`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The settings a create or an alteration may carry; absent ones keep their
/// default (create) or current value (alter).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    partitions: Option<u32>,
    fsync: Option<String>,
    segment_bytes: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    retention_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    retention_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    dedup_window_ms: Option<Option<u64>>,
}

impl Settings {
    /// The settings of a JSON object; an unknown field or a value of the wrong
    /// type is refused with what and where.
    fn parse(fields: serde_json::Map<String, serde_json::Value>) -> Result<Settings, ApiError> {
        serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
            ApiError::bad_request("invalid_topic", format!("invalid topic settings: {e}"))
        })
    }

    fn fsync(&self) -> Result<Option<FsyncPolicy>, ApiError> {
        self.fsync
            .as_deref()
            .map(|f| {
                f.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_topic",
                        format!("fsync={f:?}: expected always, never or interval:<ms>"),
                    )
                })
            })
            .transpose()
    }

    fn changes(&self) -> Result<TopicChanges, ApiError> {
        let millis = |v: Option<Option<u64>>| v.map(|v| v.map(Duration::from_millis));
        Ok(TopicChanges {
            partitions: self.partitions,
            fsync: self.fsync()?,
            segment_bytes: self.segment_bytes,
            retention_age: millis(self.retention_ms),
            retention_bytes: self.retention_bytes,
            dedup_window: millis(self.dedup_window_ms),
        })
    }
}

#[derive(Serialize)]
struct TopicList {
    topics: Vec<TopicJson>,
}

/// `GET /v1/topics`.
pub(crate) async fn list(State(api): State<Api>) -> Json<impl Serialize> {
    let topics = api.broker().list_topics();
    Json(TopicList {
        topics: topics.iter().map(TopicJson::from).collect(),
    })
}

/// `POST /v1/topics`.
pub(crate) async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    // `name` and the settings share one object; the settings are parsed on their
    // own so an unknown field is refused.
    let mut fields: serde_json::Map<String, serde_json::Value> =
        body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let name = match fields.remove("name") {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_topic",
                "name must be a string",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_topic",
                "the topic needs a name",
            ))
        }
    };
    let changes = Settings::parse(fields)?.changes()?;
    let defaults = TopicSpec::default();
    let spec = TopicSpec {
        partitions: changes.partitions.unwrap_or(defaults.partitions),
        fsync: changes.fsync.unwrap_or(defaults.fsync),
        segment_bytes: changes.segment_bytes.unwrap_or(defaults.segment_bytes),
        retention_age: changes.retention_age.unwrap_or(defaults.retention_age),
        retention_bytes: changes.retention_bytes.unwrap_or(defaults.retention_bytes),
        dedup_window: changes.dedup_window.unwrap_or(defaults.dedup_window),
    };
    let broker = std::sync::Arc::clone(api.broker());
    let created = blocking(move || Ok(broker.create_topic(&name, spec)?)).await?;
    tracing::info!(topic = %created.name, partitions = created.spec.partitions, "topic created");
    Ok((StatusCode::CREATED, Json(TopicJson::from(&created))).into_response())
}

/// `GET /v1/topics/{topic}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
) -> Result<Json<TopicJson>, ApiError> {
    Ok(Json(TopicJson::from(&api.broker().describe_topic(&topic)?)))
}

/// `PATCH /v1/topics/{topic}`.
pub(crate) async fn alter(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<TopicJson>, ApiError> {
    api.broker().describe_topic(&topic)?;
    let fields = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let changes = Settings::parse(fields)?.changes()?;
    let broker = std::sync::Arc::clone(api.broker());
    let altered = blocking(move || Ok(broker.alter_topic(&topic, changes)?)).await?;
    tracing::info!(topic = %altered.name, "topic altered");
    Ok(Json(TopicJson::from(&altered)))
}

/// `DELETE /v1/topics/{topic}`.
pub(crate) async fn delete(
    State(api): State<Api>,
    PathJson(topic): PathJson<String>,
) -> Result<StatusCode, ApiError> {
    let broker = std::sync::Arc::clone(api.broker());
    let name = topic.clone();
    blocking(move || Ok(broker.delete_topic(&name)?)).await?;
    tracing::info!(topic = %topic, "topic deleted");
    Ok(StatusCode::NO_CONTENT)
}
