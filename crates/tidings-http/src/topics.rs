//! Topic administration: create, list, describe, alter, delete.

use crate::access::{Access, CLUSTER};
use std::time::Duration;
use tidings_auth::acl::{Operation, ResourceType};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidings_api::{
    CreateTopic, ErrorCode, PartitionState, Topic, TopicConfig, TopicList, TopicSettings,
};
use tidings_broker::{FsyncPolicy, SchemaValidation, TopicChanges, TopicDescription, TopicSpec};

use crate::extract::PathJson;
use crate::{blocking, body, Api, ApiError};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A topic as the API shows it.
fn topic(d: &TopicDescription) -> Topic {
    Topic {
        name: d.name.to_string(),
        config: TopicConfig {
            partitions: d.spec.log.partitions,
            fsync: d.spec.log.fsync.to_string(),
            segment_bytes: d.spec.log.segment_bytes,
            retention_ms: d.spec.log.retention_age.map(ms),
            retention_bytes: d.spec.log.retention_bytes,
            dedup_window_ms: d.spec.dedup_window.map(ms),
            schema_validation: d.spec.schema_validation.as_str().to_owned(),
        },
        partitions: d
            .partitions
            .iter()
            .map(|p| PartitionState {
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

fn invalid_topic(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidTopic, message)
}

/// The broker's changes for the settings a request carries.
pub(crate) fn changes(settings: &TopicSettings) -> Result<TopicChanges, ApiError> {
    let fsync = settings
        .fsync
        .as_deref()
        .map(|f| {
            f.parse::<FsyncPolicy>()
                .map_err(|e| invalid_topic(e.to_string()))
        })
        .transpose()?;
    if settings.dedup_window_ms == Some(Some(0)) {
        return Err(invalid_topic(format!(
            "dedup_window_ms is 0; give 1..={} ms, or null to turn dedup off",
            tidings_broker::DEDUP_WINDOW_MAX.as_millis()
        )));
    }
    let schema_validation = settings
        .schema_validation
        .as_deref()
        .map(|v| {
            SchemaValidation::parse(v).ok_or_else(|| {
                invalid_topic(format!("schema_validation is {v:?}; give off or validate"))
            })
        })
        .transpose()?;
    let millis = |v: Option<Option<u64>>| v.map(|v| v.map(Duration::from_millis));
    Ok(TopicChanges {
        partitions: settings.partitions,
        fsync,
        segment_bytes: settings.segment_bytes,
        retention_age: millis(settings.retention_ms),
        retention_bytes: settings.retention_bytes,
        dedup_window: millis(settings.dedup_window_ms),
        schema_validation,
        ..TopicChanges::default()
    })
}

/// `GET /v1/topics`: the topics the principal may describe.
pub(crate) async fn list(State(api): State<Api>, access: Access) -> Json<TopicList> {
    let topics = api.broker().list_topics();
    Json(TopicList {
        topics: topics
            .iter()
            .filter(|t| access.allows(ResourceType::Topic, t.name.as_str(), Operation::Describe))
            .map(topic)
            .collect(),
    })
}

/// `POST /v1/topics`.
/// A topic is created with `Create` on the server (every topic), or on it.
pub(crate) async fn create(
    State(api): State<Api>,
    access: Access,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let fields = body::parse(&headers, request, api.limits().body_bytes_max).await?;
    let CreateTopic { name, settings } = CreateTopic::from_object(fields).map_err(invalid_topic)?;
    if !access.allows(ResourceType::Cluster, CLUSTER, Operation::Create) {
        access.require(ResourceType::Topic, &name, Operation::Create)?;
    }
    let spec = TopicSpec::default().changed(&changes(&settings)?);
    let broker = std::sync::Arc::clone(api.broker());
    let created = blocking(move || Ok(broker.create_topic(&name, spec)?)).await?;
    tracing::info!(topic = %created.name, partitions = created.spec.log.partitions, "topic created");
    Ok((StatusCode::CREATED, Json(topic(&created))).into_response())
}

/// `GET /v1/topics/{topic}`.
pub(crate) async fn describe(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<Json<Topic>, ApiError> {
    Ok(Json(topic(&api.broker().describe_topic(&name)?)))
}

/// `PATCH /v1/topics/{topic}`.
/// Needs `AlterConfigs` on the topic (checked before), and `Alter` too
/// when it adds partitions, as Kafka's CreatePartitions does.
pub(crate) async fn alter(
    State(api): State<Api>,
    access: Access,
    PathJson(name): PathJson<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Json<Topic>, ApiError> {
    api.broker().describe_topic(&name)?;
    let fields = body::parse_patch(&headers, request, api.limits().body_bytes_max).await?;
    let settings = TopicSettings::from_object(fields).map_err(invalid_topic)?;
    if settings.partitions.is_some() {
        access.require(ResourceType::Topic, &name, Operation::Alter)?;
    }
    let changes = changes(&settings)?;
    let broker = std::sync::Arc::clone(api.broker());
    let altered = blocking(move || Ok(broker.alter_topic(&name, changes)?)).await?;
    tracing::info!(topic = %altered.name, "topic altered");
    Ok(Json(topic(&altered)))
}

/// `DELETE /v1/topics/{topic}`.
pub(crate) async fn delete(
    State(api): State<Api>,
    PathJson(name): PathJson<String>,
) -> Result<StatusCode, ApiError> {
    let broker = std::sync::Arc::clone(api.broker());
    let topic = name.clone();
    blocking(move || Ok(broker.delete_topic(&topic)?)).await?;
    tracing::info!(topic = %name, "topic deleted");
    Ok(StatusCode::NO_CONTENT)
}
