//! Metadata (with topic auto-creation) and CreateTopics.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_broker::TopicSpec;

use crate::errors::Failure;
use crate::{Shared, NODE_ID};
use tidings_auth::acl::{Operation, ResourceType};

/// The cluster id every Metadata answer carries.
pub(crate) const CLUSTER_ID: &str = "tidings";

fn name_of(topic: &TopicName) -> &str {
    topic.0.as_str()
}

/// Creates `name` with `spec` off the async threads (it writes and syncs files).
/// A topic created meanwhile by someone else counts as created.
async fn create(shared: &Shared, name: &str, spec: TopicSpec) -> Result<(), Failure> {
    let broker = std::sync::Arc::clone(&shared.broker);
    let owned = name.to_owned();
    let created = tokio::task::spawn_blocking(move || broker.create_topic(&owned, spec))
        .await
        .map_err(|e| Failure::new(ResponseError::UnknownServerError, e.to_string()))?;
    match created {
        Ok(_) => {
            tracing::info!(topic = name, "topic created through the Kafka listener");
            Ok(())
        }
        Err(e) => Err(Failure::from(e)),
    }
}

/// Every partition of a topic, led by this node. Fields a version lacks stay at
/// their defaults, which the codec requires.
fn partitions_of(count: u32, version: i16) -> Vec<MetadataResponsePartition> {
    (0..count)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(p).expect("partition counts are bounded"))
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect()
}

/// Every topic the principal may describe, or the ones asked for: one it
/// may not describe is answered TOPIC_AUTHORIZATION_FAILED, and one that
/// does not exist is created only when auto-creation is on and the
/// principal may create it.
pub(crate) async fn metadata(
    shared: &Shared,
    request: MetadataRequest,
    version: i16,
    access: &crate::access::Access,
) -> MetadataResponse {
    // Version 0 asks for every topic with an empty list; later versions with null.
    let wanted: Option<Vec<TopicName>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list.into_iter().filter_map(|t| t.name).collect()),
    };
    let topics = match wanted {
        None => shared
            .broker
            .topic_names()
            .into_iter()
            .filter(|(name, _)| access.sees(ResourceType::Topic, name.as_str()))
            .map(|(name, partitions)| {
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                    .with_partitions(partitions_of(partitions, version))
            })
            .collect(),
        Some(names) => {
            let auto_create = request.allow_auto_topic_creation && shared.config.auto_create_topics;
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                if !access.may(ResourceType::Topic, name_of(&name), Operation::Describe) {
                    out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(name))
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                    );
                    continue;
                }
                let exists = shared.broker.partition_count(name_of(&name)).is_some();
                if !exists && auto_create && !access.may_create_topic(name_of(&name)) {
                    // As Kafka: a topic the principal may not create.
                    out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(name))
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                    );
                    continue;
                }
                out.push(topic_metadata(shared, name, auto_create, version).await);
            }
            out
        }
    };
    let host = shared.advertised.host.clone();
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(StrBytes::from_string(host))
            .with_port(i32::from(shared.advertised.port))])
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(NODE_ID);
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    response
}

async fn topic_metadata(
    shared: &Shared,
    name: TopicName,
    auto_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let answer = |code: Option<ResponseError>, partitions: u32| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(code.map_or(0, |c| c.code()))
            .with_partitions(partitions_of(partitions, version))
    };
    if let Some(count) = shared.broker.partition_count(name_of(&name)) {
        return answer(None, count);
    }
    if !auto_create {
        return answer(Some(ResponseError::UnknownTopicOrPartition), 0);
    }
    let spec = TopicSpec::with_partitions(shared.config.default_partitions);
    match create(shared, name_of(&name), spec).await {
        Ok(())
        | Err(Failure {
            code: ResponseError::TopicAlreadyExists,
            ..
        }) => {
            let count = shared.broker.partition_count(name_of(&name)).unwrap_or(0);
            answer(None, count)
        }
        Err(f) => {
            tracing::debug!(topic = name_of(&name), error = %f.message, "topic not auto-created");
            answer(Some(f.code), 0)
        }
    }
}

/// A manual replica assignment is taken as Kafka takes it, when it can hold
/// on one node: partitions 0..n, each with this node as its only replica
/// (and no partition count or replication factor beside it). The partition
/// count it gives.
fn single_node_assignment(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<u32, Failure> {
    let refuse = |why: String| Err(Failure::new(ResponseError::InvalidReplicaAssignment, why));
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err(Failure::new(
            ResponseError::InvalidRequest,
            "with a replica assignment, the partition count and replication factor must be -1",
        ));
    }
    // Clients send the assignment as a map: in any order.
    let mut assignments: Vec<_> = topic.assignments.iter().collect();
    assignments.sort_by_key(|a| a.partition_index);
    for (i, a) in assignments.into_iter().enumerate() {
        if usize::try_from(a.partition_index).ok() != Some(i) {
            return refuse(format!(
                "partition {} assigned: the assignment must name each of partitions 0..{} once",
                a.partition_index,
                topic.assignments.len()
            ));
        }
        if a.broker_ids != [BrokerId(NODE_ID)] {
            return refuse(format!(
                "partition {i} on brokers {:?}: this is a single node, broker {NODE_ID}, with one replica",
                a.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>()
            ));
        }
    }
    u32::try_from(topic.assignments.len()).map_err(|_| {
        Failure::new(
            ResponseError::InvalidReplicaAssignment,
            "too many partitions",
        )
    })
}

pub(crate) async fn create_topics(
    shared: &Shared,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        let result = async {
            let mut spec = TopicSpec::with_partitions(shared.config.default_partitions);
            if topic.num_partitions != -1 {
                spec.log.partitions = u32::try_from(topic.num_partitions)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Failure::new(
                            ResponseError::InvalidPartitions,
                            format!("{} partitions: must be at least 1", topic.num_partitions),
                        )
                    })?;
            }
            if !matches!(topic.replication_factor, -1 | 1) {
                return Err(Failure::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "replication factor {}: this is a single node, so 1 (or -1 for the default)",
                        topic.replication_factor
                    ),
                ));
            }
            if !topic.assignments.is_empty() {
                spec.log.partitions = single_node_assignment(&topic)?;
            }
            for config in &topic.configs {
                // A config set to null in CreateTopics means its default.
                crate::configs::set_topic_config(
                    &mut spec,
                    config.name.as_str(),
                    config.value.as_ref().map(StrBytes::as_str),
                )
                .map_err(|m| Failure::new(ResponseError::InvalidConfig, m))?;
            }
            if shared.broker.partition_count(name_of(&name)).is_some() {
                return Err(Failure::new(
                    ResponseError::TopicAlreadyExists,
                    format!("topic {} already exists", name_of(&name)),
                ));
            }
            if !request.validate_only {
                create(shared, name_of(&name), spec.clone()).await?;
            }
            Ok(spec)
        }
        .await;
        let mut out = CreatableTopicResult::default().with_name(name);
        match result {
            Ok(spec) => {
                if version >= 5 {
                    out = out
                        .with_num_partitions(i32::try_from(spec.log.partitions).unwrap_or(i32::MAX))
                        .with_replication_factor(1)
                        .with_configs(Some(describe_configs(&spec)));
                }
            }
            Err(f) => {
                out = out
                    .with_error_code(f.code.code())
                    .with_error_message(Some(StrBytes::from_string(f.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(out);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn describe_configs(spec: &TopicSpec) -> Vec<CreatableTopicConfigs> {
    crate::configs::topic_configs(spec)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(c.name))
                .with_value(Some(StrBytes::from_string(c.value)))
                .with_read_only(c.read_only)
                .with_config_source(c.source as i8)
        })
        .collect()
}
