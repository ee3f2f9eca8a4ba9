//! The OpenAPI document and the wire types describe the same JSON: every
//! type, filled in completely, serializes to exactly the members its schema
//! lists, and reads back to itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tidings_api::*;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(schema: &str, sample: T) {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let schema_json = &doc["components"]["schemas"][schema];
    let documented: BTreeSet<String> = schema_json["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has properties"))
        .keys()
        .cloned()
        .collect();
    let value = serde_json::to_value(&sample).unwrap();
    let written: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    assert_eq!(written, documented, "members of {schema}");
    for required in schema_json["required"].as_array().into_iter().flatten() {
        assert!(
            written.contains(required.as_str().unwrap()),
            "{schema} writes {required}"
        );
    }
    let back: T = serde_json::from_value(value).unwrap();
    assert_eq!(back, sample, "{schema} reads back");
}

fn stored() -> StoredEvent {
    StoredEvent {
        event: Some(json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t"})),
        offset: 7,
        partition: 1,
        record: Some(RawRecord {
            headers: vec![RawHeader {
                key: "k".into(),
                value: Some("dg==".into()),
            }],
            key: Some("a2V5".into()),
            value: None,
        }),
        timestamp_ms: 1_700_000_000_000,
    }
}

fn recorded() -> RecordedEvent {
    RecordedEvent {
        event: json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}),
        position: 3,
        recorded_ms: 1_700_000_000_000,
        stream: "order-1".into(),
        version: 0,
    }
}

fn topic() -> Topic {
    Topic {
        name: "orders".into(),
        config: TopicConfig {
            partitions: 3,
            fsync: "always".into(),
            segment_bytes: 1 << 20,
            retention_ms: Some(1000),
            retention_bytes: None,
            dedup_window_ms: Some(120_000),
            schema_validation: "validate".into(),
        },
        partitions: vec![PartitionState {
            partition: 0,
            log_start: 0,
            high_watermark: 4,
            size_bytes: 400,
        }],
        published_events: 4,
        published_bytes: 40,
        dedup_evicted: 0,
    }
}

fn group() -> Group {
    Group {
        group: "g".into(),
        topics: vec!["orders".into()],
        generation: 2,
        members: vec![GroupMember {
            member: "m".into(),
            client: "tidings-http".into(),
            assignment: BTreeMap::from([("orders".into(), vec![0, 1])]),
        }],
        partitions: vec![PartitionLag {
            topic: "orders".into(),
            partition: 0,
            committed: Some(3),
            high_watermark: 5,
            lag: 2,
        }],
        lag: 2,
    }
}

fn queue() -> Queue {
    Queue {
        name: "workers".into(),
        topic: "jobs".into(),
        dead_letter_topic: "jobs.workers.dlq".into(),
        config: QueueConfig {
            ack_timeout_ms: 30_000,
            backoff_factor: 2,
            backoff_initial_ms: 1000,
            backoff_max_ms: 60_000,
            key_ordering: false,
            max_deliveries: 5,
        },
        partitions: vec![QueuePartition {
            ack_floor: 1,
            high_watermark: 3,
            in_flight: 1,
            lag: 2,
            partition: 0,
            retrying: 0,
        }],
        lag: 2,
        in_flight: 1,
        redriven: 0,
        dead_letters: 0,
        counters: QueueCounters {
            acked: 1,
            dead_lettered: 0,
            delivered: 2,
            expired: 0,
            nacked: 0,
            redelivered: 0,
            redriven: 0,
            released: 1,
        },
    }
}

fn settings() -> TopicSettings {
    TopicSettings {
        partitions: Some(2),
        fsync: Some("never".into()),
        segment_bytes: Some(1 << 20),
        retention_ms: Some(None),
        retention_bytes: Some(Some(1 << 30)),
        dedup_window_ms: Some(Some(1000)),
        schema_validation: Some("off".into()),
    }
}

#[test]
fn topics() {
    check("Topic", topic());
    check("TopicConfig", topic().config);
    check("PartitionState", topic().partitions[0].clone());
    check(
        "TopicList",
        TopicList {
            topics: vec![topic()],
        },
    );
    check("TopicSettings", settings());
    let create = CreateTopic {
        name: "orders".into(),
        settings: settings(),
    };
    let value = serde_json::to_value(&create).unwrap();
    let read = CreateTopic::from_object(value.as_object().unwrap().clone()).unwrap();
    assert_eq!(read, create);
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let documented: BTreeSet<&String> = doc["components"]["schemas"]["CreateTopic"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let written: BTreeSet<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(written, documented);
}

#[test]
fn events() {
    check("StoredEvent", stored());
    check("RawRecord", stored().record.unwrap());
    check(
        "PublishedEvent",
        PublishedEvent {
            id: Some("a".into()),
            partition: 0,
            offset: 1,
            duplicate: false,
        },
    );
    check(
        "PublishEntry",
        PublishEntry {
            event: stored().event,
            record: stored().record,
        },
    );
    check(
        "ServerLimits",
        ServerLimits {
            body_bytes_max: 1,
            batch_events_max: 2,
            read_events_max: 3,
            long_poll_wait_max_ms: 4,
        },
    );
    check(
        "PublishAnswer",
        PublishAnswer {
            topic: "orders".into(),
            events: vec![],
        },
    );
    check(
        "ReadAnswer",
        ReadAnswer {
            events: vec![stored()],
            next: BTreeMap::from([(0, 8)]),
        },
    );
}

#[test]
fn groups() {
    check("Group", group());
    check("GroupMember", group().members[0].clone());
    check("PartitionLag", group().partitions[0].clone());
    check(
        "GroupList",
        GroupList {
            groups: vec![group()],
        },
    );
    check(
        "JoinRequest",
        JoinRequest {
            topic: "orders".into(),
            from: Some("earliest".into()),
            session_timeout_ms: Some(1000),
        },
    );
    check(
        "JoinAnswer",
        JoinAnswer {
            group: "g".into(),
            member: "m".into(),
        },
    );
    check(
        "PollAnswer",
        PollAnswer {
            assignment: vec![0],
            events: vec![stored()],
            generation: 1,
            next: BTreeMap::from([(0, 8)]),
        },
    );
    check(
        "CommitRequest",
        CommitRequest {
            offsets: BTreeMap::from([(0, 8)]),
        },
    );
    check(
        "ResetRequest",
        ResetRequest {
            to: "earliest".into(),
        },
    );
    check("HeartbeatAnswer", HeartbeatAnswer { generation: 3 });
}

#[test]
fn queues() {
    check("Queue", queue());
    check("QueueConfig", queue().config);
    check("QueuePartition", queue().partitions[0].clone());
    check("QueueCounters", queue().counters);
    check(
        "QueueList",
        QueueList {
            queues: vec![queue()],
        },
    );
    check(
        "CreateQueue",
        CreateQueue {
            name: "workers".into(),
            topic: "jobs".into(),
            ack_timeout_ms: Some(1),
            max_deliveries: Some(2),
            backoff_initial_ms: Some(3),
            backoff_factor: Some(4),
            backoff_max_ms: Some(5),
            key_ordering: Some(true),
            from: Some("latest".into()),
        },
    );
    let delivery = Delivery {
        attempt: 1,
        lease: "0.1.2".into(),
        entry: stored(),
    };
    check("Delivery", delivery.clone());
    check(
        "ReceiveAnswer",
        ReceiveAnswer {
            deliveries: vec![delivery],
        },
    );
    let letter = DeadLetter {
        attempts: 5,
        error: "boom".into(),
        source_offset: 3,
        source_partition: 0,
        entry: stored(),
    };
    check("DeadLetter", letter.clone());
    check(
        "DeadLetterList",
        DeadLetterList {
            dead_letters: vec![letter],
        },
    );
    check(
        "AckBatchRequest",
        AckBatchRequest {
            leases: vec!["0.1.2".into()],
        },
    );
    check(
        "AckBatchResponse",
        AckBatchResponse {
            acked: 1,
            failed: vec![AckFailure {
                error_code: "unknown_lease".into(),
                lease: "9.9.9".into(),
                message: "lease \"9.9.9\" is unknown to this group".into(),
            }],
        },
    );
    check(
        "NackRequest",
        NackRequest {
            delay_ms: Some(10),
            error: Some("busy".into()),
        },
    );
    check(
        "RejectRequest",
        RejectRequest {
            reason: Some("poison".into()),
        },
    );
    check(
        "RedriveRequest",
        RedriveRequest {
            max: Some(10),
            to: Some("jobs".into()),
            error: Some("card declined".into()),
        },
    );
    check("RedriveAnswer", RedriveAnswer { redriven: 1 });
    check("PurgeAnswer", PurgeAnswer { purged: 2 });
    check("ExtendRequest", ExtendRequest { timeout_ms: 60_000 });
    check(
        "ExtendAnswer",
        ExtendAnswer {
            deadline_ms: 1_700_000_000_000,
            lease: "0.1.2".into(),
        },
    );
    check(
        "DeleteQueueAnswer",
        DeleteQueueAnswer {
            dead_letters_dropped: 3,
        },
    );
}

#[test]
fn store() {
    check("RecordedEvent", recorded());
    check(
        "AppendAnswer",
        AppendAnswer {
            stream: "order-1".into(),
            first_version: 0,
            last_version: 1,
            first_position: 4,
            last_position: 5,
        },
    );
    check(
        "StreamReadAnswer",
        StreamReadAnswer {
            events: vec![recorded()],
            stream: "order-1".into(),
            version: Some(1),
        },
    );
    let metadata = StreamMetadata {
        max_count: Some(10),
        max_age: Some(1000),
    };
    check("StreamMetadata", metadata.clone());
    check(
        "Stream",
        Stream {
            category: "order".into(),
            deleted: false,
            metadata,
            stream: "order-1".into(),
            version: Some(1),
        },
    );
    check(
        "StoreReadAnswer",
        StoreReadAnswer {
            events: vec![recorded()],
            next: 6,
        },
    );
}

#[test]
fn health_and_errors() {
    check(
        "Health",
        Health {
            status: "ok".into(),
        },
    );
    check(
        "Error",
        ErrorBody {
            error_code: "unknown_topic".into(),
            message: "topic orders does not exist".into(),
        },
    );
}

#[test]
fn sagas() {
    let transition = SagaTransition {
        version: 2,
        input: "event payment.failed p-1".into(),
        status: "compensating".into(),
        note: Some("the payment failed".into()),
        at_ms: 1_700_000_000_000,
    };
    check("SagaTransition", transition.clone());
    let timeout = SagaTimeout {
        name: "payment-deadline".into(),
        due_ms: 1_700_000_600_000,
    };
    check("SagaTimeout", timeout.clone());
    let compensation = SagaCompensation {
        name: "release-stock".into(),
        data: json!({"order": "o-17"}),
    };
    check("SagaCompensation", compensation.clone());
    check(
        "SagaInstance",
        SagaInstance {
            saga: "checkout".into(),
            key: "o-17".into(),
            status: "compensating".into(),
            state: json!({"paid": false}),
            version: 2,
            correlation: "c-1".into(),
            started_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_100,
            history: vec![transition],
            timeouts: vec![timeout],
            compensations: vec![compensation],
        },
    );
    let summary = SagaInstanceSummary {
        key: "o-17".into(),
        status: "running".into(),
        version: 1,
        updated_ms: 1_700_000_000_100,
    };
    check("SagaInstanceSummary", summary.clone());
    check(
        "SagaInstanceList",
        SagaInstanceList {
            saga: "checkout".into(),
            instances: vec![summary],
        },
    );
}

#[test]
fn catalog() {
    let schema = CatalogSchema {
        subject: "order.placed".into(),
        versions: vec![1, 2],
        version: 2,
        id: 3,
        schema: json!({"type": "object"}),
    };
    let mut catalog = Catalog {
        generated_ms: 1_700_000_000_000,
        complete: true,
        topics: vec![CatalogTopic {
            name: "orders".into(),
            schema_validation: "validate".into(),
            unscanned: 0,
            value_schema: None,
            events: vec![
                CatalogEvent {
                    ty: Some("order.placed".into()),
                    count: 2,
                    first_seen_ms: 1,
                    last_seen_ms: 2,
                    sources: vec!["/shop".into()],
                    more_sources: false,
                    dataschemas: vec![],
                    schema: Some(schema.clone()),
                },
                CatalogEvent {
                    ty: None,
                    count: 1,
                    first_seen_ms: 3,
                    last_seen_ms: 3,
                    sources: vec![],
                    more_sources: false,
                    dataschemas: vec![],
                    schema: None,
                },
            ],
            consumers: vec![CatalogConsumer {
                group: "billing".into(),
                mode: "queue".into(),
            }],
        }],
        unused_subjects: vec!["old".into()],
        drift: vec![],
    };
    catalog.find_drift();
    let kinds: Vec<&str> = catalog.drift.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "type_without_schema",
            "consumer_of_undocumented_type",
            "schema_without_events"
        ]
    );
    check("CatalogSchema", schema);
    check("CatalogConsumer", catalog.topics[0].consumers[0].clone());
    check("CatalogEvent", catalog.topics[0].events[0].clone());
    check("CatalogTopic", catalog.topics[0].clone());
    check("Drift", catalog.drift[0].clone());
    check("Catalog", catalog);
}
