//! What a request may do: Kafka's authorization on every API, decided by
//! the one authorizer (`tidings_auth`) the HTTP API asks too, with Kafka's
//! error codes — TOPIC_AUTHORIZATION_FAILED per topic or partition,
//! GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED — and, as in
//! Kafka, a listing shows only what the principal may describe.

use std::net::IpAddr;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_auth::{Gate, Principal};

use crate::errors::Failure;

/// The one resource of type `Cluster`, as Kafka names it.
pub(crate) const CLUSTER: &str = "kafka-cluster";

/// Who asks, from where, and the gate that decides.
pub(crate) struct Access {
    gate: Option<Arc<Gate>>,
    principal: Principal,
    host: IpAddr,
}

impl Access {
    pub(crate) fn new(gate: Option<Arc<Gate>>, principal: Principal, host: IpAddr) -> Access {
        Access {
            gate,
            principal,
            host,
        }
    }

    /// Who asks.
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    fn allowed(&self, resource_type: ResourceType, name: &str, operation: Operation) -> bool {
        self.gate.as_ref().is_none_or(|g| {
            g.authorize(&self.principal, self.host, operation, resource_type, name)
                .allowed()
        })
    }

    /// Whether the principal may do `operation` to the resource; a refusal
    /// is counted and logged.
    pub(crate) fn may(
        &self,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        let allowed = self.allowed(resource_type, name, operation);
        if !allowed {
            tidings_telemetry::denied("kafka", resource_name(resource_type));
            tracing::debug!(principal = %self.principal, ?operation, ?resource_type, name, "Kafka request refused by the permissions");
        }
        allowed
    }

    /// Whether the principal may see the resource in a listing (not
    /// counted: a listing is not a refused request).
    pub(crate) fn sees(&self, resource_type: ResourceType, name: &str) -> bool {
        self.allowed(resource_type, name, Operation::Describe)
    }

    /// Creating a topic: `Create` on the cluster, or on the topic.
    pub(crate) fn may_create_topic(&self, name: &str) -> bool {
        self.allowed(ResourceType::Cluster, CLUSTER, Operation::Create)
            || self.may(ResourceType::Topic, name, Operation::Create)
    }

    /// An idempotent producer's id: `IdempotentWrite` on the cluster, or
    /// `Write` on some topic, as Kafka decides it.
    pub(crate) fn may_be_idempotent(&self) -> bool {
        let Some(gate) = &self.gate else { return true };
        let allowed = self.allowed(ResourceType::Cluster, CLUSTER, Operation::IdempotentWrite)
            || gate.allows_some(
                &self.principal,
                self.host,
                Operation::Write,
                ResourceType::Topic,
            );
        if !allowed {
            tidings_telemetry::denied("kafka", "cluster");
        }
        allowed
    }

    /// `operation` on the group, or GROUP_AUTHORIZATION_FAILED.
    pub(crate) fn group(&self, name: &str, operation: Operation) -> Result<(), Failure> {
        if self.may(ResourceType::Group, name, operation) {
            return Ok(());
        }
        Err(self.refusal(
            ResponseError::GroupAuthorizationFailed,
            "group",
            name,
            operation,
        ))
    }

    /// `operation` on the cluster, or CLUSTER_AUTHORIZATION_FAILED.
    pub(crate) fn cluster(&self, operation: Operation) -> Result<(), Failure> {
        if self.may(ResourceType::Cluster, CLUSTER, operation) {
            return Ok(());
        }
        Err(self.refusal(
            ResponseError::ClusterAuthorizationFailed,
            "cluster",
            CLUSTER,
            operation,
        ))
    }

    fn refusal(
        &self,
        code: ResponseError,
        what: &str,
        name: &str,
        operation: Operation,
    ) -> Failure {
        Failure::new(
            code,
            format!("{} may not {operation:?} {what} {name:?}", self.principal),
        )
    }
}

fn resource_name(resource_type: ResourceType) -> &'static str {
    match resource_type {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::Stream => "stream",
        ResourceType::Cluster => "cluster",
    }
}

/// The per-API decisions: each takes the decoded request, keeps in it what
/// may go on, and answers the refused parts in Kafka's shape, to be merged
/// into the handler's answer (clients match answers by name, not order).
pub(crate) mod decide {
    use kafka_protocol::messages::{self as m, GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;
    use tidings_auth::acl::{Operation, ResourceType};

    use super::Access;

    const TOPIC: i16 = ResponseError::TopicAuthorizationFailed.code();
    const GROUP: i16 = ResponseError::GroupAuthorizationFailed.code();

    fn topic_allowed(access: &Access, name: &TopicName, operation: Operation) -> bool {
        access.may(ResourceType::Topic, name.0.as_str(), operation)
    }

    /// Produce: `Write` on each topic.
    pub(crate) fn produce(
        access: &Access,
        request: &mut m::ProduceRequest,
    ) -> Vec<m::produce_response::TopicProduceResponse> {
        use m::produce_response::{PartitionProduceResponse, TopicProduceResponse};
        let (kept, refused) = std::mem::take(&mut request.topic_data)
            .into_iter()
            .partition(|t| topic_allowed(access, &t.name, Operation::Write));
        request.topic_data = kept;
        refused
            .into_iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| {
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_error_code(TOPIC)
                                    .with_base_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// Fetch: `Read` on each topic.
    pub(crate) fn fetch(
        access: &Access,
        request: &mut m::FetchRequest,
    ) -> Vec<m::fetch_response::FetchableTopicResponse> {
        use m::fetch_response::{FetchableTopicResponse, PartitionData};
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| topic_allowed(access, &t.topic, Operation::Read));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(TOPIC)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// ListOffsets: `Describe` on each topic.
    pub(crate) fn list_offsets(
        access: &Access,
        request: &mut m::ListOffsetsRequest,
    ) -> Vec<m::list_offsets_response::ListOffsetsTopicResponse> {
        use m::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| topic_allowed(access, &t.name, Operation::Describe));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(TOPIC)
                                    .with_timestamp(-1)
                                    .with_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// CreateTopics: `Create` on the cluster or on each topic.
    pub(crate) fn create_topics(
        access: &Access,
        request: &mut m::CreateTopicsRequest,
    ) -> Vec<m::create_topics_response::CreatableTopicResult> {
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| access.may_create_topic(t.name.0.as_str()));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                m::create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            })
            .collect()
    }

    /// DeleteTopics: `Delete` on each topic (by name, in either layout).
    pub(crate) fn delete_topics(
        access: &Access,
        request: &mut m::DeleteTopicsRequest,
    ) -> Vec<m::delete_topics_response::DeletableTopicResult> {
        let refusal = |name: TopicName| {
            m::delete_topics_response::DeletableTopicResult::default()
                .with_name(Some(name))
                .with_error_code(TOPIC)
        };
        let (kept, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topic_names)
            .into_iter()
            .partition(|t| topic_allowed(access, t, Operation::Delete));
        request.topic_names = kept;
        let mut out: Vec<_> = refused.into_iter().map(refusal).collect();
        let (kept, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| {
                t.name
                    .as_ref()
                    .is_none_or(|n| topic_allowed(access, n, Operation::Delete))
            });
        request.topics = kept;
        out.extend(refused.into_iter().filter_map(|t| t.name).map(refusal));
        out
    }

    /// CreatePartitions: `Alter` on each topic.
    pub(crate) fn create_partitions(
        access: &Access,
        request: &mut m::CreatePartitionsRequest,
    ) -> Vec<m::create_partitions_response::CreatePartitionsTopicResult> {
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| topic_allowed(access, &t.name, Operation::Alter));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                m::create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC)
            })
            .collect()
    }

    /// Kafka's resource types in config requests: 2 a topic, 4 a broker.
    fn config_allowed(
        access: &Access,
        resource_type: i8,
        name: &StrBytes,
        op: Operation,
    ) -> Option<i16> {
        match resource_type {
            2 => (!access.may(ResourceType::Topic, name.as_str(), op)).then_some(TOPIC),
            4 => (!access.may(ResourceType::Cluster, super::CLUSTER, op))
                .then_some(ResponseError::ClusterAuthorizationFailed.code()),
            _ => None,
        }
    }

    /// DescribeConfigs: `DescribeConfigs` on each topic, or the cluster for
    /// a broker.
    pub(crate) fn describe_configs(
        access: &Access,
        request: &mut m::DescribeConfigsRequest,
    ) -> Vec<m::describe_configs_response::DescribeConfigsResult> {
        let mut out = Vec::new();
        request.resources.retain(|r| {
            match config_allowed(
                access,
                r.resource_type,
                &r.resource_name,
                Operation::DescribeConfigs,
            ) {
                None => true,
                Some(code) => {
                    out.push(
                        m::describe_configs_response::DescribeConfigsResult::default()
                            .with_error_code(code)
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone()),
                    );
                    false
                }
            }
        });
        out
    }

    /// IncrementalAlterConfigs: `AlterConfigs` on each topic, or the
    /// cluster for a broker.
    pub(crate) fn alter_configs(
        access: &Access,
        request: &mut m::IncrementalAlterConfigsRequest,
    ) -> Vec<m::incremental_alter_configs_response::AlterConfigsResourceResponse> {
        let mut out = Vec::new();
        request.resources.retain(|r| {
            match config_allowed(access, r.resource_type, &r.resource_name, Operation::AlterConfigs) {
                None => true,
                Some(code) => {
                    out.push(
                        m::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_error_code(code)
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone()),
                    );
                    false
                }
            }
        });
        out
    }

    fn group_allowed(access: &Access, group: &GroupId, operation: Operation) -> bool {
        access.may(ResourceType::Group, group.0.as_str(), operation)
    }

    /// DescribeGroups: `Describe` on each group.
    pub(crate) fn describe_groups(
        access: &Access,
        request: &mut m::DescribeGroupsRequest,
    ) -> Vec<m::describe_groups_response::DescribedGroup> {
        let (kept, refused) = std::mem::take(&mut request.groups)
            .into_iter()
            .partition(|g| group_allowed(access, g, Operation::Describe));
        request.groups = kept;
        refused
            .into_iter()
            .map(|g| {
                m::describe_groups_response::DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(GROUP)
            })
            .collect()
    }

    /// DeleteGroups: `Delete` on each group.
    pub(crate) fn delete_groups(
        access: &Access,
        request: &mut m::DeleteGroupsRequest,
    ) -> Vec<m::delete_groups_response::DeletableGroupResult> {
        let (kept, refused) = std::mem::take(&mut request.groups_names)
            .into_iter()
            .partition(|g| group_allowed(access, g, Operation::Delete));
        request.groups_names = kept;
        refused
            .into_iter()
            .map(|g| {
                m::delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(GROUP)
            })
            .collect()
    }

    /// OffsetFetch (the group already allowed): `Describe` on each topic
    /// named; a request for every topic is filtered after.
    pub(crate) fn offset_fetch(
        access: &Access,
        request: &mut m::OffsetFetchRequest,
    ) -> Vec<m::offset_fetch_response::OffsetFetchResponseTopic> {
        use m::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
        let Some(topics) = request.topics.take() else {
            return Vec::new();
        };
        let (kept, refused): (Vec<_>, Vec<_>) = topics
            .into_iter()
            .partition(|t| topic_allowed(access, &t.name, Operation::Describe));
        request.topics = Some(kept);
        refused
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(-1)
                                    .with_error_code(TOPIC)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// OffsetDelete (the group already allowed): `Read` on each topic.
    pub(crate) fn offset_delete(
        access: &Access,
        request: &mut m::OffsetDeleteRequest,
    ) -> Vec<m::offset_delete_response::OffsetDeleteResponseTopic> {
        use m::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| topic_allowed(access, &t.name, Operation::Read));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(TOPIC)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// OffsetCommit: `Read` on the group (else the whole request is
    /// refused) and on each topic.
    pub(crate) fn offset_commit(
        access: &Access,
        request: &mut m::OffsetCommitRequest,
    ) -> Vec<m::offset_commit_response::OffsetCommitResponseTopic> {
        use m::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
        let whole = !group_allowed(access, &request.group_id, Operation::Read);
        let (kept, refused) = std::mem::take(&mut request.topics)
            .into_iter()
            .partition(|t| !whole && topic_allowed(access, &t.name, Operation::Read));
        request.topics = kept;
        refused
            .into_iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(if whole { GROUP } else { TOPIC })
                            })
                            .collect(),
                    )
            })
            .collect()
    }
}
