//! The schema registry of `tidings serve` under `/registry`: Confluent's own
//! client and serializer against it and the Kafka listener, its answers and
//! errors in Confluent's shapes, and what it holds across a restart.

use serde_json::{json, Value};

use crate::support::{call, create_topic, get, python, Server};

const CT: (&str, &str) = ("content-type", "application/vnd.schemaregistry.v1+json");

fn send(method: &str, url: &str, body: &Value) -> crate::support::Answer {
    call(method, url, &[CT], body.to_string().as_bytes())
}

fn schema(s: Value) -> Value {
    json!({"schema": s.to_string(), "schemaType": "JSON"})
}

/// confluent-kafka-python's `SchemaRegistryClient`, `JSONSerializer` and
/// `JSONDeserializer` at their defaults: registration by the serializer,
/// framed records through the Kafka listener, the schema fetched by id on
/// the way back, compatibility checks, levels, versions and deletes.
#[test]
fn confluents_client_and_serializer_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(
        &server,
        json!({"name": "orders", "schema_validation": "validate"}),
    );
    let out = python(
        "confluent_registry.py",
        &[&server.addr.to_string(), &server.kafka_addr.to_string()],
        &server,
    );
    assert_eq!(out["produce_errors"], json!([]), "{out}");
    assert_eq!(out["delivered"], 3, "{out}");
    // Confluent's framing: magic 0, then schema id 1, big-endian.
    assert_eq!(out["first_bytes"], json!([0, 0, 0, 0, 1]), "{out}");
    assert_eq!(out["serializer_refused"], "SerializationError", "{out}");
    // The broker refused both bad values for good (not retriable), and the
    // read back below found only the three good orders.
    for refused in out["refused"].as_array().unwrap() {
        assert_eq!(refused["name"], "INVALID_RECORD", "{out}");
        assert_eq!(refused["retriable"], false, "{out}");
    }
    assert_eq!(out["refused"].as_array().unwrap().len(), 2, "{out}");
    // librdkafka shows only the code; the server's log has the reason.
    crate::support::eventually("the refusal names the failing property", || {
        let logs = server.logs();
        logs.contains("Kafka produce refused") && logs.contains("\"amount\" is a required property")
    });
    assert_eq!(
        out["latest"],
        json!({"version": 1, "schema_id": 1, "type": "JSON"}),
        "{out}"
    );
    assert_eq!(out["subjects"], json!(["orders-value"]), "{out}");
    assert_eq!(out["schema_by_id_equal"], true, "{out}");
    assert_eq!(out["read_back"], true, "{out}");
    // Adding an optional property to an open model is compatible here
    // (Confluent's registry says no); a required one is not, with the reason.
    assert_eq!(out["v2_compatible"], true, "{out}");
    assert_eq!(out["bad_compatible"], false, "{out}");
    assert_eq!(out["bad_register"]["status"], 409, "{out}");
    assert_eq!(out["bad_register"]["code"], 409, "{out}");
    let message = out["bad_register"]["message"].as_str().unwrap();
    assert!(
        message.contains("#/properties/currency: required_added"),
        "{message}"
    );
    assert_eq!(out["v2_id"], 2, "{out}");
    assert_eq!(out["versions"], json!([1, 2]), "{out}");
    assert_eq!(out["level"], "FULL", "{out}");
    assert_eq!(out["lookup_version"], 1, "{out}");
    assert_eq!(out["soft_deleted_version"], 2, "{out}");
    assert_eq!(out["versions_after_soft_delete"], json!([1]), "{out}");
    assert_eq!(out["deleted_version_read"], 40402, "{out}");
    assert_eq!(out["hard_deleted_version"], 2, "{out}");
    assert_eq!(out["deleted_subject_versions"], json!([1]), "{out}");
    assert_eq!(out["hard_deleted_subject_versions"], json!([1]), "{out}");
    assert_eq!(out["subjects_after"], json!([]), "{out}");
    assert_eq!(
        out["missing_subject"],
        json!({"status": 404, "code": 40401}),
        "{out}"
    );
}

/// Errors come in Confluent's shape with its codes; verbose checks explain
/// each incompatibility with its path and rule; flags are read in any case.
#[test]
fn answers_and_errors_are_confluents_and_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = |p: &str| server.url(&format!("/registry{p}"));
    let v1 = json!({"type": "object", "properties": {"status": {"enum": ["placed", "paid"]}}, "required": ["status"]});
    let r = send(
        "POST",
        &url("/subjects/order.placed/versions?normalize=False"),
        &schema(v1.clone()),
    );
    assert_eq!(
        (r.status, r.json.clone()),
        (200, json!({"id": 1})),
        "{}",
        r.text
    );
    assert_eq!(r.content_type, "application/vnd.schemaregistry.v1+json");

    let v2 = json!({"type": "object", "properties": {"status": {"enum": ["placed"]}}, "required": ["status"]});
    let r = send(
        "POST",
        &url("/compatibility/subjects/order.placed/versions/latest?verbose=True"),
        &schema(v2),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["is_compatible"], false, "{}", r.text);
    assert_eq!(
        r.json["incompatibilities"][0],
        json!({"version": 1, "direction": "backward", "path": "#/properties/status",
               "rule": "value_rejected", "detail": "the writer may send \"paid\", which the reader rejects"}),
        "{}",
        r.text
    );
    assert_eq!(
        r.json["messages"][0],
        "the new schema cannot read data written with version 1: #/properties/status: value_rejected: the writer may send \"paid\", which the reader rejects"
    );

    let cases: Vec<(&str, String, Value, u16, u32)> = vec![
        (
            "GET",
            url("/subjects/nope/versions"),
            Value::Null,
            404,
            40401,
        ),
        (
            "GET",
            url("/subjects/order.placed/versions/7"),
            Value::Null,
            404,
            40402,
        ),
        (
            "GET",
            url("/subjects/order.placed/versions/zero"),
            Value::Null,
            422,
            42202,
        ),
        ("GET", url("/schemas/ids/99"), Value::Null, 404, 40403),
        (
            "POST",
            url("/subjects/s/versions"),
            json!({"schema": "{\"type\": 5}", "schemaType": "JSON"}),
            422,
            42201,
        ),
        (
            "POST",
            url("/subjects/s/versions"),
            json!({"schema": "{not json", "schemaType": "JSON"}),
            422,
            42201,
        ),
        (
            "POST",
            url("/subjects/s/versions"),
            json!({"schema": "{}"}),
            422,
            42201,
        ),
        (
            "POST",
            url("/subjects/s/versions"),
            json!({"schema": "{}", "schemaType": "PROTOBUF"}),
            422,
            42201,
        ),
        (
            "POST",
            url("/subjects/s/versions"),
            json!({"nothing": 1}),
            422,
            42201,
        ),
        (
            "PUT",
            url("/config/s"),
            json!({"compatibility": "SIDEWAYS"}),
            422,
            42203,
        ),
        ("GET", url("/config/order.placed"), Value::Null, 404, 40408),
        (
            "DELETE",
            url("/subjects/order.placed?permanent=true"),
            Value::Null,
            404,
            40405,
        ),
        ("GET", url("/subjects?deleted=maybe"), Value::Null, 400, 400),
        ("GET", url("/no/such/route"), Value::Null, 404, 404),
    ];
    for (method, u, body, status, code) in cases {
        let r = if body.is_null() {
            call(method, &u, &[], b"")
        } else {
            send(method, &u, &body)
        };
        assert_eq!(
            (r.status, r.json["error_code"].as_u64()),
            (status, Some(code as u64)),
            "{method} {u}: {}",
            r.text
        );
        assert!(
            !r.json["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            r.text
        );
    }
    // The schema's text is answered as registered, and its types listed.
    let r = get(&url("/schemas/ids/1"));
    assert_eq!(r.json["schemaType"], "JSON");
    assert_eq!(
        serde_json::from_str::<Value>(r.json["schema"].as_str().unwrap()).unwrap(),
        v1
    );
    assert_eq!(get(&url("/schemas/types")).json, json!(["JSON"]));
    assert_eq!(
        get(&url("/config")).json,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        get(&url("/config/order.placed?defaultToGlobal=true")).json,
        json!({"compatibilityLevel": "BACKWARD"})
    );
}

/// What was registered survives a restart: ids, versions, levels and soft deletes.
#[test]
fn the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = |s: &Server, p: &str| s.url(&format!("/registry{p}"));
    for n in 0..3 {
        let mut props = serde_json::Map::new();
        for i in 0..=n {
            props.insert(format!("f{i}"), json!({"type": "string"}));
        }
        let r = send(
            "POST",
            &url(&server, "/subjects/a/versions"),
            &schema(json!({"type": "object", "properties": props})),
        );
        assert_eq!(r.json["id"], n + 1, "{}", r.text);
    }
    assert_eq!(
        send(
            "PUT",
            &url(&server, "/config/a"),
            &json!({"compatibility": "full_transitive"})
        )
        .status,
        200
    );
    assert_eq!(
        call("DELETE", &url(&server, "/subjects/a/versions/2"), &[], b"").json,
        json!(2)
    );
    assert!(server.terminate().success());

    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        get(&url(&server, "/subjects/a/versions")).json,
        json!([1, 3])
    );
    assert_eq!(
        get(&url(&server, "/subjects/a/versions?deleted=true")).json,
        json!([1, 2, 3])
    );
    assert_eq!(
        get(&url(&server, "/config/a")).json,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    assert_eq!(get(&url(&server, "/schemas/ids/2")).status, 200);
    assert_eq!(
        get(&url(&server, "/subjects/a/versions/latest")).json["id"],
        3
    );
}

fn publish(server: &Server, topic: &str, events: Value) -> crate::support::Answer {
    call(
        "POST",
        &server.url(&format!("/v1/topics/{topic}/events")),
        &[("content-type", "application/cloudevents-batch+json")],
        events.to_string().as_bytes(),
    )
}

fn payment(id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/payments", "type": "payment.completed", "data": data})
}

/// A topic that validates checks every HTTP publish before appending: a
/// batch with one bad event is refused whole with 400 `schema_rejected`
/// naming the event and the failing path; an event with no schema is refused
/// saying where to register one; the CLI turns the check off.
#[test]
fn http_publishes_to_a_validating_topic_are_checked_before_anything_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(
        &server,
        json!({"name": "payments", "schema_validation": "validate"}),
    );
    let described = get(&server.url("/v1/topics/payments"));
    assert_eq!(
        described.json["config"]["schema_validation"], "validate",
        "{}",
        described.text
    );

    let r = publish(
        &server,
        "payments",
        json!([payment("p-1", json!({"order": "o-1", "amount": 10}))]),
    );
    assert_eq!(
        (r.status, r.json["error_code"].as_str()),
        (400, Some("schema_rejected")),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("payment.completed") && r.text.contains("payments-value"),
        "{}",
        r.text
    );

    let schema = json!({"type": "object", "properties": {"order": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0}}, "required": ["order", "amount"]});
    let reg = send(
        "POST",
        &server.url("/registry/subjects/payment.completed/versions"),
        &json!({"schema": schema.to_string(), "schemaType": "JSON"}),
    );
    assert_eq!(reg.status, 200, "{}", reg.text);

    let good = publish(
        &server,
        "payments",
        json!([payment("p-1", json!({"order": "o-1", "amount": 10}))]),
    );
    assert_eq!(good.status, 200, "{}", good.text);
    let mixed = publish(
        &server,
        "payments",
        json!([
            payment("p-2", json!({"order": "o-2", "amount": 3})),
            payment("p-3", json!({"order": "o-3", "amount": 0}))
        ]),
    );
    assert_eq!(
        (mixed.status, mixed.json["error_code"].as_str()),
        (400, Some("schema_rejected")),
        "{}",
        mixed.text
    );
    let message = mixed.json["message"].as_str().unwrap();
    assert!(message.starts_with("event 1 "), "{message}");
    assert!(message.contains("/amount"), "{message}");
    let read = get(&server.url("/v1/topics/payments/events?from=earliest&limit=10"));
    let ids: Vec<&str> = read.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p-1"], "nothing of the refused batch was appended");

    let off = crate::support::tidings(
        &server,
        &["topics", "alter", "payments", "--schema-validation", "off"],
        "",
    );
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    let anything = publish(
        &server,
        "payments",
        json!([payment("p-4", json!("anything"))]),
    );
    assert_eq!(anything.status, 200, "{}", anything.text);
}
