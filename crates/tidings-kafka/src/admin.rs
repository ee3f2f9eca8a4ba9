//! The admin APIs tools and test suites call for topics, configs and the
//! cluster: DeleteTopics, CreatePartitions, DescribeConfigs,
//! IncrementalAlterConfigs and DescribeCluster.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_broker::{TopicChanges, TopicSpec};

use crate::configs::{self, Config};
use crate::errors::Failure;
use crate::topics::CLUSTER_ID;
use crate::{Shared, NODE_ID};

/// Kafka's resource types (`ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Runs a broker admin call off the async threads (they write and sync files).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::new(ResponseError::UnknownServerError, e.to_string()))?
}

/// DeleteTopics: each topic and its data. v6 may name topics by id, which
/// Tidings does not give out: those are UNKNOWN_TOPIC_ID.
pub(crate) async fn delete_topics(
    shared: &Arc<Shared>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let names: Vec<Option<TopicName>> = if version >= 6 {
        request.topics.into_iter().map(|t| t.name).collect()
    } else {
        request.topic_names.into_iter().map(Some).collect()
    };
    let mut responses = Vec::with_capacity(names.len());
    for name in names {
        let result = match &name {
            None => Err(Failure::new(
                ResponseError::UnknownTopicId,
                "topics are named, not numbered, here",
            )),
            Some(name) => {
                let broker = Arc::clone(&shared.broker);
                let topic = name.0.as_str().to_owned();
                blocking(move || broker.delete_topic(&topic).map_err(Failure::from)).await
            }
        };
        let mut out = DeletableTopicResult::default().with_name(name.clone());
        match result {
            Ok(()) => {
                let name = name.as_ref().map_or("", |n| n.0.as_str());
                tracing::info!(topic = name, "topic deleted through the Kafka listener");
            }
            Err(f) => {
                out.error_code = f.code.code();
                if version >= 5 {
                    out.error_message = Some(text(f.message));
                }
            }
        }
        responses.push(out);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// CreatePartitions: a topic grows to `count` partitions (never shrinks).
pub(crate) async fn create_partitions(
    shared: &Arc<Shared>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_owned();
        let result = async {
            if topic.assignments.is_some() {
                return Err(Failure::new(
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported on a single node",
                ));
            }
            let current = shared.broker.partition_count(&name).ok_or_else(|| {
                Failure::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name} does not exist"),
                )
            })?;
            let count = u32::try_from(topic.count).unwrap_or(0);
            if count <= current {
                return Err(Failure::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic {name} has {current} partitions; {} is not more",
                        topic.count
                    ),
                ));
            }
            if request.validate_only {
                return Ok(());
            }
            let broker = Arc::clone(&shared.broker);
            let changes = TopicChanges {
                partitions: Some(count),
                ..TopicChanges::default()
            };
            let topic_name = name.clone();
            blocking(move || {
                broker
                    .alter_topic(&topic_name, changes)
                    .map(|_| ())
                    .map_err(|e| {
                        let f = Failure::from(e);
                        match f.code {
                            ResponseError::InvalidConfig => {
                                Failure::new(ResponseError::InvalidPartitions, f.message)
                            }
                            _ => f,
                        }
                    })
            })
            .await
        }
        .await;
        let mut out = CreatePartitionsTopicResult::default().with_name(topic.name);
        if let Err(f) = result {
            out.error_code = f.code.code();
            out.error_message = Some(text(f.message));
        } else if !request.validate_only {
            tracing::info!(topic = %name, partitions = topic.count, "partitions added through the Kafka listener");
        }
        results.push(out);
    }
    CreatePartitionsResponse::default().with_results(results)
}

fn describe_entries(
    configs: Vec<Config>,
    keys: Option<&[StrBytes]>,
    version: i16,
    documentation: bool,
) -> Vec<DescribeConfigsResourceResult> {
    configs
        .into_iter()
        .filter(|c| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name)))
        .map(|c| {
            let mut out = DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(c.name))
                .with_value(Some(text(c.value)))
                .with_read_only(c.read_only)
                .with_config_source(c.source as i8);
            if version >= 3 {
                out.config_type = c.kind as i8;
                if documentation {
                    out.documentation = Some(StrBytes::from_static_str(c.doc));
                }
            }
            out
        })
        .collect()
}

/// DescribeConfigs: a topic's configs, or the server's (broker "1", or the
/// empty name for the default broker configs).
pub(crate) fn describe_configs(
    shared: &Shared,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let keys = r.configuration_keys.as_deref();
            let found: Result<Vec<Config>, Failure> = match r.resource_type {
                RESOURCE_TOPIC => shared
                    .broker
                    .describe_topic(name)
                    .map(|d| configs::topic_configs(&d.spec))
                    .map_err(Failure::from),
                RESOURCE_BROKER if name.is_empty() || name == NODE_ID.to_string() => {
                    Ok(configs::broker_configs(shared))
                }
                RESOURCE_BROKER => Err(Failure::new(
                    ResponseError::InvalidRequest,
                    format!("there is one broker here, {NODE_ID}, not {name}"),
                )),
                other => Err(Failure::new(
                    ResponseError::InvalidRequest,
                    format!("configs of resource type {other} are not offered; topics (2) and the broker (4) are"),
                )),
            };
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match found {
                Ok(configs) => out.with_configs(describe_entries(
                    configs,
                    keys,
                    version,
                    request.include_documentation,
                )),
                Err(f) => out
                    .with_error_code(f.code.code())
                    .with_error_message(Some(text(f.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Kafka's `AlterConfigOp.OpType`.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The changes that take a topic from `current` to `wanted`.
fn changes_between(current: &TopicSpec, wanted: &TopicSpec) -> TopicChanges {
    let (c, w) = (&current.log, &wanted.log);
    TopicChanges {
        partitions: None,
        fsync: (c.fsync != w.fsync).then_some(w.fsync),
        segment_bytes: (c.segment_bytes != w.segment_bytes).then_some(w.segment_bytes),
        retention_age: (c.retention_age != w.retention_age).then_some(w.retention_age),
        retention_bytes: (c.retention_bytes != w.retention_bytes).then_some(w.retention_bytes),
        dedup_window: (current.dedup_window != wanted.dedup_window).then_some(wanted.dedup_window),
        segment_age: (c.segment_age != w.segment_age).then_some(w.segment_age),
        index_interval_bytes: (c.index_interval_bytes != w.index_interval_bytes)
            .then_some(w.index_interval_bytes),
        schema_validation: (current.schema_validation != wanted.schema_validation)
            .then_some(wanted.schema_validation),
    }
}

/// IncrementalAlterConfigs: SET and DELETE (back to the default) of a topic's
/// configs, all of a resource or none. The server's configs are set when it
/// starts, not here.
pub(crate) async fn incremental_alter_configs(
    shared: &Arc<Shared>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        let name = r.resource_name.as_str().to_owned();
        let result = async {
            match r.resource_type {
                RESOURCE_TOPIC => {}
                RESOURCE_BROKER => {
                    return Err(Failure::new(
                        ResponseError::InvalidRequest,
                        "the server's configs are set when it starts (flags, environment, configuration file)",
                    ))
                }
                other => {
                    return Err(Failure::new(
                        ResponseError::InvalidRequest,
                        format!("configs of resource type {other} are not offered"),
                    ))
                }
            }
            let current = shared
                .broker
                .describe_topic(&name)
                .map_err(Failure::from)?
                .spec;
            let mut wanted = current.clone();
            for c in &r.configs {
                let key = c.name.as_str();
                let value = match c.config_operation {
                    OP_SET => Some(c.value.as_ref().map_or("", |v| v.as_str())),
                    OP_DELETE => None,
                    op => {
                        return Err(Failure::new(
                            ResponseError::InvalidConfig,
                            format!("{key}: operation {op} applies to list configs, and no topic config here is a list"),
                        ))
                    }
                };
                configs::set_topic_config(&mut wanted, key, value)
                    .map_err(|m| Failure::new(ResponseError::InvalidConfig, m))?;
            }
            let changes = changes_between(&current, &wanted);
            let broker = Arc::clone(&shared.broker);
            let topic = name.clone();
            let validate_only = request.validate_only;
            blocking(move || {
                if validate_only {
                    return Ok(());
                }
                broker
                    .alter_topic(&topic, changes)
                    .map(|_| ())
                    .map_err(Failure::from)
            })
            .await
        }
        .await;
        let mut out = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        match result {
            Ok(()) if !request.validate_only => {
                tracing::info!(topic = %name, "topic configs altered through the Kafka listener");
            }
            Ok(()) => {}
            Err(f) => {
                out.error_code = f.code.code();
                out.error_message = Some(text(f.message));
            }
        }
        responses.push(out);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// DescribeCluster: one broker, which is also the controller.
pub(crate) fn describe_cluster(
    shared: &Shared,
    _request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(NODE_ID))
        .with_endpoint_type(1)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(text(shared.advertised.host.clone()))
            .with_port(i32::from(shared.advertised.port))])
}
