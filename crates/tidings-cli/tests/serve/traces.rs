//! Traces across hops, received by a real OpenTelemetry Collector (built
//! from the Go module proxy by the test command: its OTLP receiver and file
//! exporter) and checked span by span: what `tidings serve --otlp-endpoint`
//! exports, and how it joins the spans of OpenTelemetry's own SDK for Python
//! producing and consuming through the Kafka listener.

use serde_json::{json, Value};

use crate::collector::{Collector, Span};
use crate::support::{call, create_topic, get, post_json, third_party, Server};

fn one<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} {name}: {spans:#?}");
    found[0]
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
#[cfg_attr(not(feature = "otlp"), ignore = "span export needs the otlp feature")]
fn an_http_publish_continues_its_caller_and_gives_the_event_its_context() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--otlp-endpoint", &collector.endpoint()]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let published = call(
        "POST",
        &server.url("/v1/topics/orders/events"),
        &[
            ("traceparent", caller.as_str()),
            ("ce-specversion", "1.0"),
            ("ce-id", "order-1"),
            ("ce-source", "/checkout"),
            ("ce-type", "order.placed"),
            ("ce-correlationid", "cart-7"),
            ("content-type", "application/json"),
        ],
        b"{\"total\": 42}",
    );
    assert_eq!(published.status, 200, "{}", published.text);

    let spans = collector.until("tidings", "publish orders");
    let request = one(&spans, "tidings", "POST /v1/topics/{topic}/events");
    assert_eq!(request.kind, 2, "a server span: {request:#?}");
    assert_eq!(
        (request.trace_id.as_str(), request.parent_span_id.as_str()),
        (CALLER_TRACE, CALLER_SPAN),
        "the request continues its caller's trace"
    );
    let publish = one(&spans, "tidings", "publish orders");
    assert_eq!(publish.kind, 4, "a producer span: {publish:#?}");
    assert_eq!(publish.trace_id, CALLER_TRACE);
    assert_eq!(publish.parent_span_id, request.span_id);
    for (key, value) in [
        ("messaging.system", json!("tidings")),
        ("messaging.operation.type", json!("send")),
        ("messaging.destination.name", json!("orders")),
        ("messaging.message.id", json!("order-1")),
        ("messaging.message.conversation_id", json!("cart-7")),
    ] {
        assert_eq!(publish.attribute(key), Some(&value), "{key}: {publish:#?}");
    }

    // The stored event carries the publish span's context: whoever handles
    // it next continues this trace.
    let read = get(&server.url("/v1/topics/orders/events?from=earliest&limit=1")).json;
    let traceparent = read["events"][0]["event"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        traceparent,
        format!("00-{CALLER_TRACE}-{}-01", publish.span_id),
        "{read}"
    );
}

#[test]
#[cfg_attr(not(feature = "otlp"), ignore = "span export needs the otlp feature")]
fn a_batch_links_to_the_context_each_event_brought() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--otlp-endpoint", &collector.endpoint()]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    let contexts = [
        ("11111111111111111111111111111111", "2222222222222222"),
        ("33333333333333333333333333333333", "4444444444444444"),
    ];
    let batch: Vec<Value> = contexts
        .iter()
        .enumerate()
        .map(|(n, (trace, span))| {
            json!({
                "specversion": "1.0", "id": format!("order-{n}"), "source": "/checkout",
                "type": "order.placed", "traceparent": format!("00-{trace}-{span}-01"),
            })
        })
        .collect();
    let published = call(
        "POST",
        &server.url("/v1/topics/orders/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        serde_json::to_string(&batch).unwrap().as_bytes(),
    );
    assert_eq!(published.status, 200, "{}", published.text);
    let spans = collector.until("tidings", "publish orders");
    let publish = one(&spans, "tidings", "publish orders");
    let links: Vec<(String, String)> = contexts
        .iter()
        .map(|(t, s)| ((*t).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(publish.links, links, "{publish:#?}");
    // OTLP JSON writes a 64-bit integer as a string.
    assert_eq!(
        publish.attribute("messaging.batch.message_count"),
        Some(&json!("2")),
        "{publish:#?}"
    );
    // Events that brought a context keep it.
    let read = get(&server.url("/v1/topics/orders/events?from=earliest&limit=2")).json;
    for (event, (trace, span)) in read["events"].as_array().unwrap().iter().zip(contexts) {
        assert_eq!(
            event["event"]["traceparent"],
            format!("00-{trace}-{span}-01")
        );
    }
}

#[test]
fn without_export_an_event_still_gets_a_context_at_its_first_hop() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    for n in 0..2 {
        let published = call(
            "POST",
            &server.url("/v1/topics/orders/events"),
            &[("content-type", "application/cloudevents+json")],
            json!({"specversion": "1.0", "id": format!("o-{n}"), "source": "/checkout", "type": "order.placed"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(published.status, 200, "{}", published.text);
    }
    let read = get(&server.url("/v1/topics/orders/events?from=earliest&limit=2")).json;
    let traces: Vec<String> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let tp = e["event"]["traceparent"].as_str().unwrap();
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!((parts[0], parts[3]), ("00", "01"), "{tp}");
            assert!(parts[1].len() == 32 && parts[1] != "0".repeat(32), "{tp}");
            parts[1].to_owned()
        })
        .collect();
    assert_ne!(traces[0], traces[1], "each publish starts its own trace");
}

/// OpenTelemetry's SDK for Python produces and consumes through the Kafka
/// listener: the producer's send span, Tidings' publish span and the
/// consumer's process span are one trace.
#[test]
#[cfg_attr(not(feature = "otlp"), ignore = "span export needs the otlp feature")]
fn a_kafka_producer_tidings_and_a_kafka_consumer_draw_one_trace() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--otlp-endpoint", &collector.endpoint()]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/otel_kafka_trace.py"
    );
    let out = third_party("python3")
        .arg(script)
        .arg(server.kafka_addr.to_string())
        .arg("orders")
        .arg(format!("{}/v1/traces", collector.endpoint()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["errors"], json!([]), "{said}");
    let trace = said["trace_id"].as_str().unwrap();

    let spans = collector.until("billing", "process orders");
    let send = spans
        .iter()
        .find(|s| s.service == "checkout" && s.kind == 4)
        .unwrap_or_else(|| panic!("no producer span of checkout: {spans:#?}"));
    assert_eq!(send.trace_id, trace);
    let spans = collector.until("tidings", "publish orders");
    let publish = one(&spans, "tidings", "publish orders");
    assert_eq!(
        (publish.trace_id.as_str(), publish.parent_span_id.as_str()),
        (trace, send.span_id.as_str()),
        "Tidings continues the producer's send span: {publish:#?}"
    );
    assert_eq!(
        publish.attribute("messaging.operation.type"),
        Some(&json!("send"))
    );
    let process = one(&spans, "billing", "process orders");
    assert_eq!(
        (process.trace_id.as_str(), process.parent_span_id.as_str()),
        (trace, send.span_id.as_str()),
        "the consumer continues from the record's header: {process:#?}"
    );
    // (Python's SDK sets the W3C level 2 random flag too: 03.)
    let header = said["traceparent"].as_str().unwrap();
    assert!(
        header.starts_with(&format!("00-{trace}-{}-", send.span_id)),
        "the record kept the producer's header: {header}"
    );
}

/// A queue delivery's hops after its publish: the receive links to the
/// event's trace, the reject is carried out under the request that sent it,
/// the dead-lettering continues the event's own trace, and the redrive
/// links to it; a consumer group's poll links to it too.
#[test]
#[cfg_attr(not(feature = "otlp"), ignore = "span export needs the otlp feature")]
fn a_delivery_is_received_settled_dead_lettered_and_redriven_in_its_trace() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--otlp-endpoint", &collector.endpoint()]);
    create_topic(&server, json!({"name": "orders", "partitions": 1}));
    let q = post_json(
        &server.url("/v1/queues"),
        &json!({"name": "billing", "topic": "orders"}),
    );
    assert!(q.status < 300, "{}", q.text);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let published = call(
        "POST",
        &server.url("/v1/topics/orders/events"),
        &[
            ("traceparent", caller.as_str()),
            ("content-type", "application/cloudevents+json"),
        ],
        json!({"specversion": "1.0", "id": "order-1", "source": "/checkout", "type": "order.placed"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(published.status, 200, "{}", published.text);
    let spans = collector.until("tidings", "publish orders");
    let publish = one(&spans, "tidings", "publish orders").clone();
    let event_context = vec![(CALLER_TRACE.to_owned(), publish.span_id.clone())];

    let received = post_json(&server.url("/v1/queues/billing/receive?max=1"), &json!({}));
    let lease = received.json["deliveries"][0]["lease"]
        .as_str()
        .unwrap_or_else(|| panic!("a delivery: {}", received.text))
        .to_owned();
    let rejected = call(
        "POST",
        &server.url(&format!("/v1/queues/billing/leases/{lease}/reject")),
        &[],
        b"",
    );
    assert_eq!(rejected.status, 204, "{}", rejected.text);
    let redriven = post_json(
        &server.url("/v1/queues/billing/dead-letters/redrive"),
        &json!({}),
    );
    assert_eq!(redriven.json["redriven"], 1, "{}", redriven.text);
    let joined = post_json(
        &server.url("/v1/groups/audit/members"),
        &json!({"topic": "orders"}),
    );
    let member = joined.json["member"]
        .as_str()
        .unwrap_or_else(|| panic!("a member: {}", joined.text))
        .to_owned();
    let polled = get(&server.url(&format!(
        "/v1/groups/audit/members/{member}/events?wait_ms=5000"
    )));
    assert_eq!(
        polled.json["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        polled.text
    );

    let spans = collector.until("tidings", "redrive orders.billing.dlq");
    let receives: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "receive orders")
        .collect();
    assert_eq!(receives.len(), 2, "the queue's and the group's: {spans:#?}");
    for (receive, group) in receives.iter().zip(["billing", "audit"]) {
        assert_eq!(receive.kind, 5, "a consumer span: {receive:#?}");
        assert_eq!(receive.links, event_context, "{receive:#?}");
        for (key, value) in [
            ("messaging.operation.type", json!("receive")),
            ("messaging.destination.name", json!("orders")),
            ("messaging.consumer.group.name", json!(group)),
            ("messaging.batch.message_count", json!("1")),
        ] {
            assert_eq!(receive.attribute(key), Some(&value), "{key}: {receive:#?}");
        }
    }

    let request = one(
        &spans,
        "tidings",
        "POST /v1/queues/{group}/leases/{lease}/reject",
    );
    let reject = one(&spans, "tidings", "reject orders");
    assert_eq!(reject.kind, 1, "carried out inside the server: {reject:#?}");
    assert_eq!(
        (reject.trace_id.as_str(), reject.parent_span_id.as_str()),
        (request.trace_id.as_str(), request.span_id.as_str()),
        "under the request that sent it"
    );
    assert_eq!(
        reject.attribute("messaging.operation.type"),
        Some(&json!("settle"))
    );

    let dead = one(&spans, "tidings", "dead_letter orders");
    assert_eq!(dead.kind, 4, "a producer span: {dead:#?}");
    assert_eq!(
        (dead.trace_id.as_str(), dead.parent_span_id.as_str()),
        (CALLER_TRACE, publish.span_id.as_str()),
        "the event's own trace shows where it ended"
    );
    assert_eq!(
        dead.attribute("messaging.destination.name"),
        Some(&json!("orders.billing.dlq"))
    );

    let redrive = one(&spans, "tidings", "redrive orders.billing.dlq");
    assert_eq!(redrive.kind, 4, "{redrive:#?}");
    assert_eq!(redrive.links, event_context, "{redrive:#?}");
}
