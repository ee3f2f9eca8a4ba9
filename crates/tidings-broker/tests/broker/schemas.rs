//! Topics that validate: every event and raw record is resolved to its
//! schema in the registry and checked before anything of its batch is
//! appended; the setting survives a reopen.

use std::sync::Arc;

use serde_json::json;
use tidings_broker::{Broker, Payload, PublishError, SchemaValidation, TopicChanges, TopicSpec};
use tidings_log::Record;
use tidings_schema::{Registry, Rejection, SchemaInput, SchemaType};
use tidings_types::{CloudEvent, TimestampMs};

use crate::support::{options, Harness};

fn order_schema() -> SchemaInput {
    SchemaInput {
        schema_type: SchemaType::Json,
        schema: json!({"type": "object", "properties": {"id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}}, "required": ["id", "amount"]}).to_string(),
    }
}

fn order(id: &str, data: serde_json::Value) -> CloudEvent {
    CloudEvent::new("shop/orders", "order.placed")
        .with_id(id)
        .with_json(&data)
        .unwrap()
}

fn open(h: &Harness, registry: &Arc<Registry>) -> Broker {
    let mut o = options(&h.clock);
    o.registry = Some(Arc::clone(registry));
    Broker::open(h.dir.path(), o).unwrap()
}

fn rejected(r: Result<impl std::fmt::Debug, PublishError>) -> (usize, Rejection) {
    match r {
        Err(PublishError::SchemaRejected { index, rejection }) => (index, rejection),
        other => panic!("expected a schema rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_event_appends_nothing_and_names_the_path() {
    let mut h = Harness::new();
    h.broker.take().unwrap().close().unwrap();
    let registry = Arc::new(Registry::open(h.dir.path()).unwrap());
    let broker = open(&h, &registry);
    let spec = TopicSpec {
        schema_validation: SchemaValidation::Validate,
        ..TopicSpec::with_partitions(1)
    };
    broker.create_topic("orders", spec).unwrap();
    // No schema yet: refused, saying where to register one.
    let (_, why) = rejected(
        broker
            .publish("orders", order("o-0", json!({"id": "o-0", "amount": 1})))
            .await,
    );
    assert!(
        matches!(&why, Rejection::NoSchema(m) if m.contains("\"order.placed\"") && m.contains("\"orders-value\"")),
        "{why}"
    );

    registry.register("order.placed", &order_schema()).unwrap();
    broker
        .publish("orders", order("o-1", json!({"id": "o-1", "amount": 5})))
        .await
        .unwrap();
    let batch = vec![
        order("o-2", json!({"id": "o-2", "amount": 2})),
        order("o-3", json!({"id": "o-3", "amount": -1})),
    ];
    let (index, why) = rejected(broker.publish_batch("orders", batch).await);
    assert_eq!(index, 1);
    assert_eq!(why.path(), Some("/amount"), "{why}");
    assert!(why.to_string().contains("subject order.placed"), "{why}");
    let (_, why) = rejected(
        broker
            .publish("orders", order("o-4", json!({"id": "o-4"})))
            .await,
    );
    assert!(why.to_string().contains("amount"), "{why}");
    let not_json = CloudEvent::new("shop/orders", "order.placed").with_data("text/plain", "hello");
    assert!(matches!(
        rejected(broker.publish("orders", not_json).await).1,
        Rejection::NotJson(_)
    ));
    // Only the one good event is in the topic.
    assert_eq!(
        broker.describe_topic("orders").unwrap().partitions[0]
            .high_watermark
            .0,
        1
    );

    // A raw record framed with a schema id is checked by that schema; one
    // without framing by <topic>-value, which has none.
    let id = registry.latest("order.placed").unwrap().id;
    let framed = |v: serde_json::Value| {
        Payload::Raw(Record::from_value(
            tidings_schema::wire::frame(id, v.to_string().as_bytes()),
            TimestampMs(0),
        ))
    };
    broker
        .publish_payloads("orders", vec![framed(json!({"id": "r", "amount": 0}))])
        .await
        .unwrap();
    let (index, _) = rejected(
        broker
            .publish_payloads(
                "orders",
                vec![
                    framed(json!({"id": "r", "amount": 0})),
                    framed(json!({"amount": "x"})),
                ],
            )
            .await,
    );
    assert_eq!(index, 1);
    let plain = Payload::Raw(Record::from_value(
        json!({"id": "r"}).to_string(),
        TimestampMs(0),
    ));
    let (_, why) = rejected(broker.publish_payloads("orders", vec![plain]).await);
    assert!(
        matches!(&why, Rejection::NoSchema(m) if m.contains("orders-value")),
        "{why}"
    );
    // A dataschema naming this registry's schema picks it over the type's.
    let other = registry
        .register(
            "strict",
            &SchemaInput {
                schema_type: SchemaType::Json,
                schema: json!({"type": "object", "required": ["sku"]}).to_string(),
            },
        )
        .unwrap();
    let named = order("o-5", json!({"id": "o-5", "amount": 1})).with_dataschema(format!(
        "http://127.0.0.1:8080/registry/schemas/ids/{}",
        other.schema.id
    ));
    let (_, why) = rejected(broker.publish("orders", named).await);
    assert!(why.to_string().contains("sku"), "{why}");
    assert_eq!(
        broker.describe_topic("orders").unwrap().partitions[0]
            .high_watermark
            .0,
        2
    );

    // The setting survives a reopen, and turning it off lets anything through.
    broker.close().unwrap();
    drop(broker);
    let broker = open(&h, &registry);
    assert_eq!(
        broker
            .describe_topic("orders")
            .unwrap()
            .spec
            .schema_validation,
        SchemaValidation::Validate
    );
    rejected(broker.publish("orders", order("o-6", json!({}))).await);
    broker
        .alter_topic(
            "orders",
            TopicChanges {
                schema_validation: Some(SchemaValidation::Off),
                ..TopicChanges::default()
            },
        )
        .unwrap();
    broker
        .publish("orders", order("o-7", json!({})))
        .await
        .unwrap();
    broker.close().unwrap();
    drop(broker);
    let broker = open(&h, &registry);
    assert_eq!(
        broker
            .describe_topic("orders")
            .unwrap()
            .spec
            .schema_validation,
        SchemaValidation::Off
    );
    broker.close().unwrap();
}

#[test]
fn a_broker_without_a_registry_refuses_to_validate() {
    let h = Harness::new();
    let spec = TopicSpec {
        schema_validation: SchemaValidation::Validate,
        ..TopicSpec::default()
    };
    let e = h.b().create_topic("t", spec).unwrap_err();
    assert!(e.to_string().contains("schema registry"), "{e}");
    h.b().create_topic("t", TopicSpec::default()).unwrap();
    let changes = TopicChanges {
        schema_validation: Some(SchemaValidation::Validate),
        ..TopicChanges::default()
    };
    assert!(h.b().alter_topic("t", changes).is_err());
}
