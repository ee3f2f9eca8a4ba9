//! `GET /v1/catalog` and `GET /v1/catalog/asyncapi`: the event catalog, from
//! the schema registry and from what the topics hold (the broker's scan, run
//! to catch up before answering, within a budget), with the groups consuming
//! each topic and the drift between what runs and what is documented.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use tidings_api::{Catalog, CatalogConsumer, CatalogEvent, CatalogSchema, CatalogTopic};
use tidings_schema::{Registry, VersionRef};

use crate::{blocking, Api, ApiError};

/// Bytes of stored records one catalog request may scan to catch up; past
/// it, the answer says `complete: false` and how much is left.
const SCAN_BYTES_PER_REQUEST: usize = 64 * 1024 * 1024;

fn schema_of(registry: Option<&Registry>, subject: &str) -> Option<CatalogSchema> {
    let registry = registry?;
    let latest = registry.version(subject, VersionRef::Latest, false).ok()?;
    Some(CatalogSchema {
        subject: subject.to_owned(),
        versions: registry.versions(subject, false, false).unwrap_or_default(),
        version: latest.version,
        id: latest.schema.id,
        schema: latest.schema.compiled.value().clone(),
    })
}

/// The catalog as it is now.
pub(crate) async fn build(api: &Api) -> Result<Catalog, ApiError> {
    let broker = std::sync::Arc::clone(api.broker());
    // The groups consuming each topic.
    let mut consumers: BTreeMap<String, Vec<CatalogConsumer>> = BTreeMap::new();
    for group in broker.list_groups() {
        if let Ok(d) = broker.describe_group(&group) {
            for topic in d.topics {
                consumers
                    .entry(topic.to_string())
                    .or_default()
                    .push(CatalogConsumer {
                        group: group.clone(),
                        mode: "stream".into(),
                    });
            }
        }
    }
    for group in broker.list_queue_groups() {
        if let Ok(stats) = broker.queue_stats(&group).await {
            consumers
                .entry(stats.topic.to_string())
                .or_default()
                .push(CatalogConsumer {
                    group,
                    mode: "queue".into(),
                });
        }
    }
    let registry = api.registry().cloned();
    let generated_ms = broker.clock().now().0;
    blocking(move || {
        let complete = broker.scan_catalog(SCAN_BYTES_PER_REQUEST);
        let registry = registry.as_deref();
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut topics = Vec::new();
        for seen in broker.catalog() {
            let name = seen.topic.to_string();
            let value_subject = format!("{name}-value");
            let value_schema = schema_of(registry, &value_subject);
            if value_schema.is_some() {
                used.insert(value_subject.clone());
            }
            let events = seen
                .types
                .into_iter()
                .map(|t| {
                    let schema =
                        t.ty.as_deref()
                            .and_then(|ty| schema_of(registry, ty))
                            .or_else(|| value_schema.clone());
                    if let Some(s) = &schema {
                        used.insert(s.subject.clone());
                    }
                    CatalogEvent {
                        ty: t.ty,
                        count: t.count,
                        first_seen_ms: t.first_ms,
                        last_seen_ms: t.last_ms,
                        sources: t.sources.into_iter().collect(),
                        more_sources: t.more_sources,
                        dataschemas: t.dataschemas.into_iter().collect(),
                        schema,
                    }
                })
                .collect();
            let spec = broker
                .describe_topic(&name)
                .map(|d| d.spec.schema_validation);
            topics.push(CatalogTopic {
                schema_validation: spec.map_or("off", |v| v.as_str()).to_owned(),
                unscanned: seen.unscanned,
                value_schema,
                events,
                consumers: consumers.remove(&name).unwrap_or_default(),
                name,
            });
        }
        let unused_subjects = registry
            .map(|r| {
                r.live_subjects()
                    .into_iter()
                    .map(|(s, _)| s)
                    .filter(|s| !used.contains(s))
                    .collect()
            })
            .unwrap_or_default();
        let mut catalog = Catalog {
            generated_ms,
            complete,
            topics,
            unused_subjects,
            drift: Vec::new(),
        };
        catalog.find_drift();
        Ok(catalog)
    })
    .await
}

/// `GET /v1/catalog`.
pub(crate) async fn get(State(api): State<Api>) -> Result<Json<Catalog>, ApiError> {
    Ok(Json(build(&api).await?))
}

/// `GET /v1/catalog/asyncapi`: the catalog as an AsyncAPI 3.0 document, with
/// this server (as the request reached it) for its HTTP API.
pub(crate) async fn asyncapi(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let catalog = build(&api).await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let servers: Vec<(&str, &str, &str)> = host
        .as_deref()
        .map(|h| vec![("tidings-http", h, "http")])
        .unwrap_or_default();
    Ok(Json(tidings_api::asyncapi(&catalog, &servers)))
}
