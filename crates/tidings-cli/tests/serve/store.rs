//! The event store over HTTP: expected versions, reads, `$all` and categories, a
//! live subscription, and persistence across a restart.

use serde_json::{json, Value};

use crate::streams::open;
use crate::support::{call, get, Server};

fn append(
    server: &Server,
    stream: &str,
    expected: &str,
    events: &[Value],
) -> crate::support::Answer {
    let body = Value::Array(events.to_vec()).to_string();
    call(
        "POST",
        &server.url(&format!("/v1/streams/{stream}/events")),
        &[
            ("content-type", "application/cloudevents-batch+json"),
            ("tidings-expected-version", expected),
        ],
        body.as_bytes(),
    )
}

fn event(ty: &str, id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/shop", "type": ty, "data": {"id": id}})
}

#[test]
fn streams_append_with_expected_versions_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    let first = append(
        &server,
        "order-1",
        "no_stream",
        &[event("order.placed", "e1"), event("order.paid", "e2")],
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(
        (
            first.json["first_version"].as_u64(),
            first.json["last_version"].as_u64()
        ),
        (Some(0), Some(1))
    );

    let conflict = append(&server, "order-1", "0", &[event("order.shipped", "e3")]);
    assert_eq!(
        (conflict.status, conflict.code()),
        (409, "wrong_expected_version"),
        "{}",
        conflict.text
    );
    assert!(
        conflict.json["message"]
            .as_str()
            .unwrap()
            .contains("version 1"),
        "{}",
        conflict.text
    );
    let again = append(
        &server,
        "order-1",
        "no_stream",
        &[event("order.placed", "e1"), event("order.paid", "e2")],
    );
    assert_eq!(
        (again.status, &again.json),
        (200, &first.json),
        "repeating an append is idempotent"
    );

    // Binary mode with the expected version as a query parameter.
    let binary = call(
        "POST",
        &server.url("/v1/streams/order-1/events?expected_version=1"),
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "e3"),
            ("ce-source", "/shop"),
            ("ce-type", "order.shipped"),
            ("content-type", "application/json"),
        ],
        br#"{"carrier":"post"}"#,
    );
    assert_eq!(
        (binary.status, binary.json["last_version"].as_u64()),
        (200, Some(2)),
        "{}",
        binary.text
    );
    let user = append(&server, "user-7", "any", &[event("user.joined", "u1")]);
    assert_eq!(user.status, 200);

    for (bad, code) in [
        ("banana", "invalid_expected_version"),
        ("-1", "invalid_expected_version"),
    ] {
        let answer = append(&server, "order-1", bad, &[event("x", "bad")]);
        assert_eq!((answer.status, answer.code()), (400, code), "{bad}");
    }
    let answer = append(&server, "$all", "any", &[event("x", "bad")]);
    assert_eq!((answer.status, answer.code()), (400, "invalid_stream"));

    let check = |server: &Server| {
        let read = get(&server.url("/v1/streams/order-1/events"));
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.json["version"], 2);
        let types: Vec<&str> = read.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["order.placed", "order.paid", "order.shipped"]);
        let back = get(&server.url("/v1/streams/order-1/events?direction=backward&limit=1"));
        assert_eq!(back.json["events"][0]["version"], 2);
        let all = get(&server.url("/v1/store/events"));
        assert_eq!(all.json["events"].as_array().unwrap().len(), 4);
        let users = get(&server.url("/v1/store/events?category=user"));
        assert_eq!(users.json["events"][0]["stream"], "user-7");
        assert_eq!(users.json["next"], all.json["next"]);
        let info = get(&server.url("/v1/streams/order-1"));
        assert_eq!(
            (
                info.json["version"].as_u64(),
                info.json["category"].as_str()
            ),
            (Some(2), Some("order"))
        );
    };
    check(&server);
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    check(&server);

    let delete = call(
        "DELETE",
        &server.url("/v1/streams/order-1?expected_version=2"),
        &[],
        b"",
    );
    assert_eq!(delete.status, 204, "{}", delete.text);
    let info = get(&server.url("/v1/streams/order-1"));
    assert_eq!(
        (info.json["version"].clone(), info.json["deleted"].clone()),
        (Value::Null, json!(true))
    );
}

#[test]
fn a_store_subscription_catches_up_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        append(&server, "cart-1", "any", &[event("cart.added", "c1")]).status,
        200
    );
    assert_eq!(
        append(&server, "order-1", "any", &[event("order.placed", "o1")]).status,
        200
    );

    let mut sub = open("GET", &server.url("/v1/store/events?category=cart")).unwrap();
    assert_eq!(sub.next()["event"]["id"], "c1");
    assert_eq!(
        append(&server, "order-2", "any", &[event("order.placed", "o2")]).status,
        200
    );
    assert_eq!(
        append(&server, "cart-2", "any", &[event("cart.added", "c2")]).status,
        200
    );
    let live = sub.next();
    assert_eq!(
        (live["event"]["id"].as_str(), live["stream"].as_str()),
        (Some("c2"), Some("cart-2"))
    );
    assert_eq!(live["position"], 3);
}
