//! Schemas at publish, from the toolkit: a topic that validates refuses with
//! the typed [`Error::SchemaRejected`] on the embedded engine and on a
//! server, and a [`SchemaCheck`] refuses in the producer, before anything is
//! sent, whatever the backend.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidings::embedded::Embedded;
use tidings::schemas::SchemaCheck;
use tidings::{Backend, CloudEvent, Error, Publisher};
use tidings_api::{CreateTopic, SchemaRequest, TopicSettings};
use tidings_broker::{Broker, BrokerOptions, SchemaValidation, TopicSpec};
use tidings_schema::{Registry, SchemaInput, SchemaType};

use crate::support::ServerProcess;

fn payment_schema() -> serde_json::Value {
    json!({"type": "object", "properties": {"order": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0}}, "required": ["order", "amount"]})
}

fn payment(id: &str, amount: serde_json::Value) -> CloudEvent {
    CloudEvent::new("/payments", "payment.completed")
        .with_id(id)
        .with_json(&json!({"order": "o-1", "amount": amount}))
        .unwrap()
}

fn rejected<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::SchemaRejected(m)) => m,
        other => panic!("expected Error::SchemaRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_validating_topic_refuses_with_a_typed_error_on_the_embedded_engine_and_a_server() {
    // Embedded: the broker holds the registry.
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(dir.path()).unwrap());
    let options = BrokerOptions {
        registry: Some(Arc::clone(&registry)),
        ..BrokerOptions::default()
    };
    let broker = Arc::new(Broker::open(dir.path(), options).unwrap());
    let spec = TopicSpec {
        schema_validation: SchemaValidation::Validate,
        ..TopicSpec::with_partitions(1)
    };
    broker.create_topic("payments", spec).unwrap();
    let input = SchemaInput {
        schema_type: SchemaType::Json,
        schema: payment_schema().to_string(),
    };
    registry.register("payment.completed", &input).unwrap();
    let publisher = Publisher::new(Arc::new(Embedded::with_broker(Arc::clone(&broker))));
    publisher
        .publish("payments", payment("p-1", json!(5)))
        .await
        .unwrap();
    let m = rejected(
        publisher
            .publish("payments", payment("p-2", json!(0)))
            .await,
    );
    assert!(m.contains("/amount"), "{m}");

    // A server: the same refusal through its HTTP API.
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), None);
    let url = format!("http://{}", server.http);
    let client = tidings_client::Client::new(&url).unwrap();
    let create = CreateTopic {
        name: "payments".into(),
        settings: TopicSettings {
            schema_validation: Some("validate".into()),
            ..TopicSettings::default()
        },
    };
    client.create_topic(&create).await.unwrap();
    let request = SchemaRequest {
        schema: payment_schema().to_string(),
        schema_type: Some("JSON".into()),
        references: Vec::new(),
    };
    client
        .register_schema("payment.completed", &request)
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(tidings::server::Server::connect(&url).unwrap());
    let publisher = Publisher::new(backend);
    publisher
        .publish("payments", payment("p-1", json!(5)))
        .await
        .unwrap();
    let m = rejected(
        publisher
            .publish("payments", payment("p-2", json!("ten")))
            .await,
    );
    assert!(m.contains("/amount"), "{m}");
}

#[tokio::test]
async fn the_publisher_checks_in_the_producer_before_anything_is_sent() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), None);
    let url = format!("http://{}", server.http);
    let client = tidings_client::Client::new(&url).unwrap();

    // The events go to an embedded engine whose topic does not validate;
    // the check asks the server's registry.
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Embedded::open(dir.path()).await.unwrap());
    let check = SchemaCheck::server(&url)
        .unwrap()
        .with_refresh(Duration::ZERO);
    let publisher =
        Publisher::new(Arc::clone(&engine) as Arc<dyn Backend>).with_hook(Arc::new(check));

    // No schema yet: refused, saying where to register one.
    let m = rejected(
        publisher
            .publish("payments", payment("p-0", json!(5)))
            .await,
    );
    assert!(m.contains("payment.completed"), "{m}");
    let request = SchemaRequest {
        schema: payment_schema().to_string(),
        schema_type: Some("JSON".into()),
        references: Vec::new(),
    };
    let id = client
        .register_schema("payment.completed", &request)
        .await
        .unwrap()
        .id;
    publisher
        .publish("payments", payment("p-1", json!(5)))
        .await
        .unwrap();
    // A batch with one bad event sends nothing.
    let batch = vec![payment("p-2", json!(1)), payment("p-3", json!(-1))];
    let m = rejected(publisher.publish_all("payments", batch).await);
    assert!(m.contains("p-3") && m.contains("/amount"), "{m}");
    let stored = engine.broker().describe_topic("payments").unwrap();
    assert_eq!(
        stored
            .partitions
            .iter()
            .map(|p| p.high_watermark.0)
            .sum::<u64>(),
        1
    );
    // A dataschema naming a schema the server does not hold is refused.
    let named = payment("p-4", json!(1))
        .with_dataschema(format!("{url}/registry/schemas/ids/{}", id + 100));
    let m = rejected(publisher.publish("payments", named).await);
    assert!(m.contains("does not hold"), "{m}");

    // In the process, against a registry directly: the same answers.
    let registry = Arc::new(Registry::open(dir.path()).unwrap());
    let local = SchemaCheck::registry(Arc::clone(&registry));
    assert!(local
        .check("payments", &payment("p-5", json!(1)))
        .await
        .is_err());
    registry
        .register(
            "payments-value",
            &SchemaInput {
                schema_type: SchemaType::Json,
                schema: payment_schema().to_string(),
            },
        )
        .unwrap();
    local
        .check("payments", &payment("p-5", json!(1)))
        .await
        .unwrap();
    rejected(local.check("payments", &payment("p-6", json!(0))).await);
}
