//! The event catalog of `tidings serve`: what the topics hold by type, the
//! registry's schemas, the groups reading, and the drift; rendered as an
//! AsyncAPI 3.0 document the AsyncAPI project's own parser accepts, and as an
//! EventCatalog folder.

use serde_json::{json, Value};

use crate::support::{call, create_topic, get, node, post_json, tidings, Server};

fn publish(server: &Server, events: Value) {
    let r = call(
        "POST",
        &server.url("/v1/topics/orders/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        events.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

fn event(id: &str, ty: &str, source: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "data": {"id": id, "total": 10}})
}

fn register(server: &Server, subject: &str, schema: Value) {
    let r = call(
        "POST",
        &server.url(&format!("/registry/subjects/{subject}/versions")),
        &[("content-type", "application/vnd.schemaregistry.v1+json")],
        json!({"schema": schema.to_string(), "schemaType": "JSON"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn the_catalog_lists_types_schemas_consumers_and_drift_and_renders_for_asyncapi_and_eventcatalog() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 2}));
    let placed = json!({"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "number"}}, "required": ["id", "total"]});
    register(&server, "order.placed", placed.clone());
    register(&server, "invoice.sent", json!({"type": "object"}));
    publish(
        &server,
        json!([
            event("o-1", "order.placed", "/shop"),
            event("o-2", "order.placed", "/shop"),
            event("o-3", "order.placed", "/shop"),
            event("c-1", "order.cancelled", "/shop"),
            event("c-2", "order.cancelled", "/admin"),
        ]),
    );
    let q = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "billing", "topic": "orders"}),
    );
    assert!(q.status < 300, "{}", q.text);

    let c = get(&server.url("/v1/catalog"));
    assert_eq!(c.status, 200, "{}", c.text);
    let c = c.json;
    assert_eq!(c["complete"], true, "{c}");
    let orders = &c["topics"][0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["unscanned"], 0);
    assert_eq!(
        orders["consumers"],
        json!([{"group": "billing", "mode": "queue"}])
    );
    let by_type = |ty: &str| {
        orders["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == ty)
            .cloned()
            .unwrap()
    };
    let p = by_type("order.placed");
    assert_eq!(
        (p["count"].as_u64(), p["sources"].clone()),
        (Some(3), json!(["/shop"])),
        "{p}"
    );
    assert_eq!(p["schema"]["subject"], "order.placed");
    assert_eq!(p["schema"]["schema"], placed);
    assert!(p["first_seen_ms"].as_i64().unwrap() <= p["last_seen_ms"].as_i64().unwrap());
    let x = by_type("order.cancelled");
    assert_eq!(
        (
            x["count"].as_u64(),
            x["sources"].clone(),
            x["schema"].clone()
        ),
        (Some(2), json!(["/admin", "/shop"]), Value::Null),
        "{x}"
    );
    let drift: Vec<(String, String)> = c["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["type"]
                    .as_str()
                    .or(d["subject"].as_str())
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        drift,
        [
            ("type_without_schema".into(), "order.cancelled".into()),
            (
                "consumer_of_undocumented_type".into(),
                "order.cancelled".into()
            ),
            ("schema_without_events".into(), "invoice.sent".into()),
        ],
        "{c}"
    );

    // The CLI writes the AsyncAPI document and the EventCatalog folder.
    let out = tempfile::tempdir().unwrap();
    let doc = out.path().join("asyncapi.json");
    let folder = out.path().join("eventcatalog");
    let run = tidings(
        &server,
        &[
            "catalog",
            "--asyncapi",
            doc.to_str().unwrap(),
            "--eventcatalog",
            folder.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("order.cancelled  2 events  no schema") && text.contains("drift:"),
        "{text}"
    );
    let page = std::fs::read_to_string(folder.join("events/order.placed/index.mdx")).unwrap();
    assert!(
        page.starts_with("---\nid: \"order.placed\"\n")
            && page.contains("schemaPath: \"schema.json\""),
        "{page}"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("events/order.placed/schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema, placed);
    let shop = std::fs::read_to_string(folder.join("services/_shop/index.mdx")).unwrap();
    assert!(
        shop.contains(r#"sends: [{"id":"order.cancelled"},{"id":"order.placed"}]"#),
        "{shop}"
    );
    let billing = std::fs::read_to_string(folder.join("services/billing/index.mdx")).unwrap();
    assert!(
        billing.contains(r#"receives: [{"id":"order.cancelled"},{"id":"order.placed"}]"#),
        "{billing}"
    );
    assert!(folder.join("channels/orders/index.mdx").exists());

    // The AsyncAPI project's parser takes the document without an error.
    // The AsyncAPI project's parser on the document; its one JSON line.
    let parsed = node("asyncapi_parse.js", &[doc.to_str().unwrap()], &server);
    assert_eq!(parsed["parsed"], true, "{parsed}");
    assert_eq!(parsed["errors"], json!([]), "{parsed}");
    assert_eq!(parsed["version"], "3.0.0");
    assert_eq!(
        parsed["channels"],
        json!([
            {"id": "orders", "address": "orders", "messages": ["order.cancelled", "order.placed"]},
            // The queue group's dead-letter topic is a topic too.
            {"id": "orders.billing.dlq", "address": "orders.billing.dlq", "messages": []}
        ]),
        "{parsed}"
    );
    assert_eq!(
        parsed["operations"],
        json!([
            {"id": "billing.consumes.orders", "action": "receive"},
            {"id": "publish.orders", "action": "send"},
            {"id": "publish.orders.billing.dlq", "action": "send"}
        ]),
        "{parsed}"
    );
    assert_eq!(
        parsed["payloads"]["order.placed"],
        json!({"type": "object", "required": ["id", "total"]}),
        "{parsed}"
    );

    // After a restart the counts come back from what is stored.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    let again = get(&server.url("/v1/catalog")).json;
    let orders = &again["topics"][0];
    let counts: Vec<u64> = orders["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 5, "{again}");
}
