//! The CloudEvents envelope against the examples of the JSON event format and the
//! Kafka protocol binding, plus round trips and every kind of invalid input.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};
use tidings_types::{CloudEvent, EventError, ExtensionValue, KafkaMessage};

/// Reads `example`, writes it back, and checks the result equals `expected`.
fn check_json_round_trip(example: Value, expected: Value) -> CloudEvent {
    let event = CloudEvent::from_json(example.to_string().as_bytes()).unwrap();
    assert_eq!(event.to_json_value().unwrap(), expected);
    let again = CloudEvent::from_json(&event.to_json().unwrap()).unwrap();
    assert_eq!(again, event);
    event
}

#[test]
fn spec_example_with_binary_data() {
    let example = json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "A234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/vnd.apache.thrift.binary",
        "data_base64": "AAECAwQF/w=="
    });
    let event = check_json_round_trip(example.clone(), example);
    assert_eq!(event.data().unwrap().as_ref(), &[0, 1, 2, 3, 4, 5, 255]);
    assert_eq!(
        event.extension("comexampleothervalue"),
        Some(&ExtensionValue::Integer(5))
    );
}

#[test]
fn spec_example_with_xml_string_data_and_an_unset_extension() {
    let example = json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "B234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "unsetextension": null,
        "datacontenttype": "application/xml",
        "data": "<much wow=\"xml\"/>"
    });
    let mut expected = example.clone();
    expected.as_object_mut().unwrap().remove("unsetextension");
    let event = check_json_round_trip(example, expected);
    assert_eq!(event.data().unwrap().as_ref(), b"<much wow=\"xml\"/>");
    assert_eq!(event.extension("unsetextension"), None);
}

#[test]
fn spec_example_with_json_object_data() {
    let example = json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "subject": null,
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/json",
        "data": { "appinfoA": "abc", "appinfoB": 123, "appinfoC": true }
    });
    let mut expected = example.clone();
    expected.as_object_mut().unwrap().remove("subject");
    let event = check_json_round_trip(example, expected);
    let data: Value = event.json().unwrap();
    assert_eq!(data["appinfoB"], 123);
}

#[test]
fn spec_example_with_a_json_string_and_no_content_type() {
    let example = json!({
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "D234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "data": "I'm just a string"
    });
    let event = check_json_round_trip(example.clone(), example);
    // As the format says, the data is the JSON text, quotes included ...
    assert_eq!(event.data().unwrap().as_ref(), b"\"I'm just a string\"");
    // ... and a binding states the implied content type explicitly.
    let msg = event.to_kafka().unwrap();
    assert!(msg
        .headers
        .contains(&("content-type".into(), Bytes::from("application/json"))));
}

#[test]
fn binary_data_without_a_content_type_is_not_labelled_json() {
    // HTTP binary mode without a Content-Type: the body is bytes of no
    // declared type, and a binding must not declare one for it.
    let headers = [
        ("ce-specversion", &b"1.0"[..]),
        ("ce-id", b"1"),
        ("ce-source", b"/billing"),
        ("ce-type", b"payment.failed"),
    ];
    // Bytes of no declared type, and bytes that only look like JSON (found
    // by the cloudevents fuzzer): invalid UTF-8 inside a string, a lone
    // surrogate escape.
    for body in [
        &b"\x00\x01card declined"[..],
        b"{\"total\x8b\":1}",
        br#"{"total":"\ud800"}"#,
    ] {
        let event = CloudEvent::from_http_binary(headers, Bytes::copy_from_slice(body)).unwrap();
        assert_eq!(event.datacontenttype(), None);
        let msg = event.to_kafka().unwrap();
        assert!(
            msg.headers.iter().all(|(name, _)| name != "content-type"),
            "{body:?}: {:?}",
            msg.headers
        );
        assert_eq!(CloudEvent::from_kafka(&msg).unwrap(), event);
    }
}

#[test]
fn a_lone_surrogate_escape_is_refused_not_a_panic() {
    // Found by the cloudevents fuzzer: the raw scan let it through and
    // reading the string's value panicked.
    let text = br#"{"specversion":"1.0","id":"a\udc24b","source":"/s","type":"t"}"#;
    let err = CloudEvent::from_json(text).unwrap_err().to_string();
    assert!(
        err.contains("'id'") && err.contains("valid JSON string"),
        "{err}"
    );
    // A surrogate pair is a character, and reads.
    let text = br#"{"specversion":"1.0","id":"a\ud83d\ude00b","source":"/s","type":"t"}"#;
    assert_eq!(CloudEvent::from_json(text).unwrap().id(), "a\u{1F600}b");
}

#[test]
fn spec_batch_example_round_trips() {
    let batch = json!([
        {
            "specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext/4",
            "id": "B234-1234-1234", "time": "2018-04-05T17:31:00Z",
            "datacontenttype": "application/vnd.apache.thrift.binary", "data_base64": "AAEC"
        },
        {
            "specversion": "1.0", "type": "com.example.someotherevent", "source": "/mycontext/9",
            "id": "C234-1234-1234", "time": "2018-04-05T17:31:05Z",
            "datacontenttype": "application/json", "data": { "appinfoA": "abc" }
        }
    ]);
    let events = CloudEvent::batch_from_json(batch.to_string().as_bytes()).unwrap();
    assert_eq!(events.len(), 2);
    let written: Value =
        serde_json::from_slice(&CloudEvent::batch_to_json(&events).unwrap()).unwrap();
    assert_eq!(written, batch);
    assert!(CloudEvent::batch_from_json(b"[]").unwrap().is_empty());
}

fn header<'a>(msg: &'a KafkaMessage, name: &str) -> Option<&'a str> {
    msg.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

#[test]
fn kafka_binding_binary_example_round_trips() {
    let msg = KafkaMessage {
        key: Some(Bytes::from("mykey")),
        value: Some(Bytes::from_static(&[0x02, 0x06, 0x61, 0x62, 0x63])),
        headers: vec![
            ("ce_specversion".into(), Bytes::from("1.0")),
            ("ce_type".into(), Bytes::from("com.example.someevent")),
            ("ce_source".into(), Bytes::from("/mycontext/subcontext")),
            ("ce_id".into(), Bytes::from("1234-1234-1234")),
            ("ce_time".into(), Bytes::from("2018-04-05T03:56:24Z")),
            ("content-type".into(), Bytes::from("application/avro")),
        ],
    };
    let event = CloudEvent::from_kafka(&msg).unwrap();
    assert_eq!(event.ty(), "com.example.someevent");
    assert_eq!(event.source(), "/mycontext/subcontext");
    assert_eq!(event.datacontenttype(), Some("application/avro"));
    assert_eq!(
        event.time_rfc3339().as_deref(),
        Some("2018-04-05T03:56:24Z")
    );
    // The record key comes back as the partition key, and goes out as the key.
    assert_eq!(event.partitionkey(), Some("mykey"));
    let out = event.to_kafka().unwrap();
    assert_eq!(out.key, msg.key);
    assert_eq!(out.value, msg.value);
    for (k, v) in &msg.headers {
        assert_eq!(
            header(&out, k),
            Some(std::str::from_utf8(v).unwrap()),
            "{k}"
        );
    }
    assert_eq!(header(&out, "ce_partitionkey"), Some("mykey"));
    assert_eq!(CloudEvent::from_kafka(&out).unwrap(), event);
}

#[test]
fn kafka_binding_structured_example_reads() {
    let value = json!({
        "specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext/subcontext",
        "id": "1234-1234-1234", "time": "2018-04-05T03:56:24Z",
        "datacontenttype": "application/xml", "data": "<a/>"
    });
    let msg = KafkaMessage {
        key: Some(Bytes::from("mykey")),
        value: Some(Bytes::from(value.to_string())),
        headers: vec![(
            "content-type".into(),
            Bytes::from("application/cloudevents+json; charset=UTF-8"),
        )],
    };
    let event = CloudEvent::from_kafka(&msg).unwrap();
    assert_eq!(event.id(), "1234-1234-1234");
    assert_eq!(event.data().unwrap().as_ref(), b"<a/>");
}

#[test]
fn events_cross_json_and_kafka_without_loss() {
    let event = CloudEvent::new("/orders", "order.placed")
        .with_subject("o-17")
        .with_dataschema("https://example.com/schemas/order-placed.json")
        .with_json(&json!({"orderId": "o-17", "total": 99}))
        .unwrap()
        .with_partitionkey("o-17")
        .with_correlationid("flow-1")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_extension("sequence", "42")
        .unwrap();
    let via_json = CloudEvent::from_json(&event.to_json().unwrap()).unwrap();
    assert_eq!(via_json, event);
    let via_kafka = CloudEvent::from_kafka(&event.to_kafka().unwrap()).unwrap();
    assert_eq!(via_kafka, event);
    // Binary mode carries strings: typed extension values come back as strings.
    let typed = event.clone().with_extension("retries", 3).unwrap();
    let back = CloudEvent::from_kafka(&typed.to_kafka().unwrap()).unwrap();
    assert_eq!(
        back.extension("retries"),
        Some(&ExtensionValue::String("3".into()))
    );
}

#[test]
fn a_plain_kafka_record_is_not_an_event() {
    let msg = KafkaMessage {
        key: None,
        value: Some(Bytes::from("raw")),
        headers: vec![],
    };
    assert!(matches!(
        CloudEvent::from_kafka(&msg),
        Err(EventError::NotAnEvent(_))
    ));
}

fn check_invalid(value: Value, expected: EventError) {
    assert_eq!(
        CloudEvent::from_json(value.to_string().as_bytes()),
        Err(expected),
        "{value}"
    );
}

#[test]
fn invalid_json_events_get_specific_errors() {
    let base = || json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let without = |name: &str| {
        let mut v = base();
        v.as_object_mut().unwrap().remove(name);
        v
    };
    let with = |name: &str, value: Value| {
        let mut v = base();
        v.as_object_mut().unwrap().insert(name.into(), value);
        v
    };
    check_invalid(without("id"), EventError::MissingAttribute("id"));
    check_invalid(without("source"), EventError::MissingAttribute("source"));
    check_invalid(without("type"), EventError::MissingAttribute("type"));
    check_invalid(
        without("specversion"),
        EventError::MissingAttribute("specversion"),
    );
    check_invalid(
        with("specversion", json!("0.3")),
        EventError::SpecVersion("0.3".into()),
    );
    check_invalid(with("id", json!("")), EventError::EmptyAttribute("id"));
    check_invalid(
        with("Bad-Name", json!("x")),
        EventError::ExtensionName("Bad-Name".into()),
    );
    check_invalid(
        with("ratio", json!(0.5)),
        EventError::InvalidAttribute {
            name: "ratio".into(),
            reason: "0.5 is not a 32-bit integer".into(),
        },
    );
    check_invalid(
        with("big", json!(1u64 << 40)),
        EventError::InvalidAttribute {
            name: "big".into(),
            reason: format!("{} is not a 32-bit integer", 1u64 << 40),
        },
    );
    let long = "x".repeat(tidings_types::ATTRIBUTE_BYTES_MAX + 1);
    check_invalid(
        with("subject", json!(long)),
        EventError::AttributeTooLong {
            name: "subject".into(),
            len: long.len(),
        },
    );
    assert!(matches!(
        CloudEvent::from_json(with("time", json!("yesterday")).to_string().as_bytes()),
        Err(EventError::InvalidAttribute { name, .. }) if name == "time"
    ));
    let mut both = with("data", json!(1));
    both.as_object_mut()
        .unwrap()
        .insert("data_base64".into(), json!("AA=="));
    assert!(matches!(
        CloudEvent::from_json(both.to_string().as_bytes()),
        Err(EventError::Json(_))
    ));
    let mut xml = with("datacontenttype", json!("application/xml"));
    xml.as_object_mut()
        .unwrap()
        .insert("data".into(), json!({"not": "a string"}));
    assert!(matches!(
        CloudEvent::from_json(xml.to_string().as_bytes()),
        Err(EventError::Json(_))
    ));
    assert!(matches!(
        CloudEvent::from_json(b"[1]"),
        Err(EventError::Json(_))
    ));
    assert!(matches!(
        CloudEvent::from_json(b"{not json"),
        Err(EventError::Json(_))
    ));
    assert!(matches!(
        CloudEvent::batch_from_json(b"{}"),
        Err(EventError::Json(_))
    ));
}

#[test]
fn invalid_kafka_events_get_specific_errors() {
    let headers = |pairs: &[(&str, &str)]| KafkaMessage {
        key: None,
        value: None,
        headers: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
            .collect(),
    };
    let ok = [
        ("ce_specversion", "1.0"),
        ("ce_id", "1"),
        ("ce_source", "/s"),
        ("ce_type", "t"),
    ];
    assert!(CloudEvent::from_kafka(&headers(&ok)).is_ok());
    assert_eq!(
        CloudEvent::from_kafka(&headers(&ok[..3])),
        Err(EventError::MissingAttribute("type"))
    );
    let mut v = ok.to_vec();
    v[0] = ("ce_specversion", "2.0");
    assert_eq!(
        CloudEvent::from_kafka(&headers(&v)),
        Err(EventError::SpecVersion("2.0".into()))
    );
    let mut v = ok.to_vec();
    v.push(("ce_Bad", "x"));
    assert_eq!(
        CloudEvent::from_kafka(&headers(&v)),
        Err(EventError::ExtensionName("Bad".into()))
    );
    let mut msg = headers(&ok);
    msg.headers
        .push(("ce_subject".into(), Bytes::from_static(&[0xff, 0xfe])));
    assert!(matches!(
        CloudEvent::from_kafka(&msg),
        Err(EventError::InvalidAttribute { .. })
    ));
    let mut avro = headers(&ok);
    avro.headers.push((
        "content-type".into(),
        Bytes::from("application/cloudevents+avro"),
    ));
    assert!(matches!(
        CloudEvent::from_kafka(&avro),
        Err(EventError::NotAnEvent(_))
    ));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct OrderPlaced {
    order_id: String,
    total: u64,
}

#[test]
fn typed_payloads_round_trip_and_mismatches_are_errors() {
    let e = CloudEvent::new("/orders", "order.placed")
        .with_json(&OrderPlaced {
            order_id: "o-1".into(),
            total: 5,
        })
        .unwrap();
    assert_eq!(e.datacontenttype(), Some("application/json"));
    assert_eq!(
        e.json::<OrderPlaced>().unwrap(),
        OrderPlaced {
            order_id: "o-1".into(),
            total: 5
        }
    );
    assert!(matches!(e.json::<Vec<u8>>(), Err(EventError::Data(_))));
}

fn arb_event() -> impl Strategy<Value = CloudEvent> {
    let ext = prop::collection::btree_map("[a-z][a-z0-9]{0,15}", "[ -~]{0,30}", 0..5);
    (
        "(/[A-Za-z0-9._~-]{1,12}){1,3}|urn:[a-z]{1,8}:[A-Za-z0-9-]{1,20}|https://[a-z]{1,10}\\.example/[a-z0-9]{0,10}",
        "[a-z]{1,10}\\.[a-z]{1,10}",
        prop::option::of("[ -~]{0,40}"),
        ext,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/octet-stream",
            "application/xml",
        ]),
        any::<u16>(),
    )
        .prop_map(|(source, ty, subject, ext, data, ct, secs)| {
            let time =
                tidings_types::OffsetDateTime::from_unix_timestamp(1_600_000_000 + i64::from(secs))
                    .unwrap();
            let mut e = CloudEvent::new(source, ty).with_time(Some(time));
            if let Some(s) = subject {
                e = e.with_subject(s);
            }
            for (k, v) in ext {
                if let Ok(next) = e.clone().with_extension(&k, v) {
                    e = next;
                }
            }
            if let Some(d) = data {
                let d = if ct == "application/json" {
                    serde_json::to_vec(&d).unwrap()
                } else {
                    d
                };
                e = e.with_data(ct, d);
            }
            e
        })
}

proptest! {
    #[test]
    fn any_event_survives_json_and_kafka(event in arb_event()) {
        let via_json = CloudEvent::from_json(&event.to_json().unwrap()).unwrap();
        prop_assert_eq!(&via_json, &event);
        let via_kafka = CloudEvent::from_kafka(&event.to_kafka().unwrap()).unwrap();
        prop_assert_eq!(&via_kafka, &event);
    }
}

/// JSON text of an event built from the parts proptest picked: each member
/// absent or one of a few values of every JSON kind, valid and not.
fn arb_event_object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    // Mostly valid values, so that most events read and both readers'
    // events are compared too, not only their errors.
    let mostly = |good: Vec<Option<Value>>, bad: Vec<Option<Value>>| {
        prop_oneof![
            12 => prop::sample::select(good),
            1 => prop::sample::select(bad),
        ]
    };
    let strings = || {
        mostly(
            vec![
                Some(json!("x")),
                Some(json!("with \"escapes\" \\ and \u{e9}")),
            ],
            vec![
                None,
                Some(json!("")),
                Some(Value::Null),
                Some(json!(5)),
                Some(json!(true)),
                Some(json!({"a": 1})),
                Some(json!([1])),
            ],
        )
    };
    // A source is a URI-reference: escapes in JSON, but percent-encoding in
    // the URI.
    let sources = || {
        mostly(
            vec![Some(json!("x")), Some(json!("/orders/a%20b?q=1&r=%22#f"))],
            vec![
                None,
                Some(json!("")),
                Some(Value::Null),
                Some(json!(5)),
                Some(json!("not a uri \u{e9}")),
            ],
        )
    };
    let optional = |good: Vec<Value>, bad: Vec<Value>| {
        let mut good: Vec<Option<Value>> = good.into_iter().map(Some).collect();
        good.push(None);
        mostly(good, bad.into_iter().map(Some).collect())
    };
    let extension = (
        prop_oneof![
            8 => prop::sample::select(vec!["ext".to_owned(), "a1".to_owned(), "partitionkey".to_owned()]),
            1 => prop::sample::select(vec!["Bad-Name".to_owned(), "x".repeat(70)]),
        ],
        prop::sample::select(vec![
            Value::Null,
            json!("s"),
            json!("s"),
            json!(1),
            json!(1),
            json!(-2147483648),
            json!(0.5),
            json!(1u64 << 40),
            json!(true),
            json!([1]),
            json!({"a": 1}),
        ]),
    );
    (
        mostly(
            vec![Some(json!("1.0"))],
            vec![
                None,
                Some(json!("0.3")),
                Some(Value::Null),
                Some(json!(1)),
                Some(json!(["1.0"])),
            ],
        ),
        (strings(), sources(), strings(), strings()),
        optional(
            vec![
                json!("2018-04-05T17:31:00Z"),
                json!("2018-04-05T17:31:00.123456+02:00"),
                Value::Null,
            ],
            vec![json!("yesterday"), json!(3)],
        ),
        optional(
            vec![
                json!("application/json"),
                json!("Application/JSON; charset=utf-8"),
                json!("application/cloudevents+json"),
                json!("text/plain"),
                json!("application/xml"),
                json!("application/octet-stream"),
                Value::Null,
            ],
            vec![json!(7)],
        ),
        // Data and data_base64 each present half the time: both present
        // is an error, which a quarter of the events then are.
        prop::option::of(prop::sample::select(vec![
            json!("plain text"),
            json!("esc\"aped"),
            json!(12),
            json!(12.5),
            json!({"b": 1, "a": [true, null, "x"]}),
            json!([]),
            json!(false),
            Value::Null,
        ])),
        prop::option::of(prop::sample::select(vec![
            json!("AAECAwQF/w=="),
            json!(""),
            json!("!!"),
            json!(5),
            Value::Null,
        ])),
        prop::collection::vec(extension, 0..4),
    )
        .prop_map(
            |(spec, (id, source, ty, subject), time, ct, data, b64, ext)| {
                let mut m = serde_json::Map::new();
                for (name, value) in [
                    ("specversion", spec),
                    ("id", id),
                    ("source", source),
                    ("type", ty),
                    ("subject", subject),
                    ("time", time),
                    ("datacontenttype", ct),
                    ("data", data),
                    ("data_base64", b64),
                ] {
                    if let Some(v) = value {
                        m.insert(name.into(), v);
                    }
                }
                for (name, value) in ext {
                    m.insert(name, value);
                }
                m
            },
        )
}

/// The reader that works on the bytes decides every event as reading it
/// into a `serde_json::Value` first does (`from_json_value`, the reader
/// before it and the one the CLI still uses): the same event, or the same
/// error. An eighth of the cases at least must read, so that events are
/// compared and not only errors.
#[test]
fn reading_bytes_and_reading_a_json_value_agree() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    let read = std::cell::Cell::new(0usize);
    runner
        .run(&arb_event_object(), |object| {
            let value = Value::Object(object);
            let text = value.to_string();
            let from_bytes = CloudEvent::from_json(text.as_bytes());
            let from_value = CloudEvent::from_json_value(value.clone());
            match (&from_bytes, &from_value) {
                (Ok(a), Ok(b)) => {
                    // JSON data is kept as written by one and re-serialized
                    // by the other: the events agree as JSON values.
                    prop_assert_eq!(a.to_json_value().unwrap(), b.to_json_value().unwrap());
                    read.set(read.get() + 1);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b, "{}", text),
                _ => prop_assert!(false, "{text}: {from_bytes:?} against {from_value:?}"),
            }
            // In a batch, each event is read the same way.
            let batch = format!("[{text},{text}]");
            match (CloudEvent::batch_from_json(batch.as_bytes()), from_bytes) {
                (Ok(events), Ok(event)) => prop_assert_eq!(events, vec![event.clone(), event]),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "{batch}: {a:?} against {b:?}"),
            }
            Ok(())
        })
        .unwrap();
    assert!(read.get() >= 250, "only {} of 2000 events read", read.get());
}

proptest! {
    /// Writing straight to bytes gives the JSON `to_json_value` gives.
    #[test]
    fn writing_bytes_and_writing_a_json_value_agree(event in arb_event()) {
        let written: Value = serde_json::from_slice(&event.to_json().unwrap()).unwrap();
        prop_assert_eq!(written, event.to_json_value().unwrap());
        let batch: Value =
            serde_json::from_slice(&CloudEvent::batch_to_json(&[event.clone(), event.clone()]).unwrap())
                .unwrap();
        prop_assert_eq!(batch, json!([event.to_json_value().unwrap(), event.to_json_value().unwrap()]));
    }
}

#[test]
fn an_attribute_named_twice_is_refused() {
    for text in [
        r#"{"specversion":"1.0","id":"a","id":"b","source":"/s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","data":1,"data":2}"#,
        r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","ext":"x","ext":null}"#,
    ] {
        let Err(EventError::Json(message)) = CloudEvent::from_json(text.as_bytes()) else {
            panic!("{text} was read");
        };
        assert!(message.contains("appears twice in one event"), "{message}");
        let batch = format!("[{text}]");
        assert!(
            matches!(CloudEvent::batch_from_json(batch.as_bytes()), Err(EventError::Json(m)) if m.contains("appears twice"))
        );
    }
}

#[test]
fn json_data_is_kept_as_the_sender_wrote_it() {
    // Key order, spacing and a number no float holds: the data a consumer
    // reads is the text the producer sent.
    let data = r#"{"z": 1, "a": 12345678901234567890123456789, "n": 1.50}"#;
    let text =
        format!(r#"{{"specversion":"1.0","id":"a","source":"/s","type":"t","data": {data} }}"#);
    let event = CloudEvent::from_json(text.as_bytes()).unwrap();
    assert_eq!(event.data().unwrap().as_ref(), data.as_bytes());
    // And it is written back the same way.
    let written = String::from_utf8(event.to_json().unwrap()).unwrap();
    assert!(
        written.ends_with(&format!(r#""data":{data}}}"#)),
        "{written}"
    );
}

#[test]
fn event_and_batch_shapes_get_specific_errors() {
    let message = |r: Result<Vec<CloudEvent>, EventError>| match r {
        Err(EventError::Json(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(message(CloudEvent::batch_from_json(b"{}"))
        .contains("expected a batch: a JSON array of events"));
    assert!(
        message(CloudEvent::batch_from_json(b"[1]")).contains("expected an event: a JSON object")
    );
    assert!(message(CloudEvent::batch_from_json(b"[{}] x")).contains("trailing characters"));
    assert!(matches!(
        CloudEvent::batch_from_json(br#"[{"specversion":"1.0","id":"a","source":"/s"}]"#),
        Err(EventError::MissingAttribute("type"))
    ));
    // Too many extensions are counted, null ones left out, ...
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("specversion", "1.0"),
        ("id", "a"),
        ("source", "/s"),
        ("type", "t"),
    ] {
        m.insert(k.into(), json!(v));
    }
    for i in 0..tidings_types::EXTENSIONS_MAX + 2 {
        m.insert(format!("e{i}"), json!(i));
        m.insert(format!("n{i}"), Value::Null);
    }
    assert_eq!(
        CloudEvent::from_json(Value::Object(m.clone()).to_string().as_bytes()),
        Err(EventError::TooManyExtensions(
            tidings_types::EXTENSIONS_MAX + 2
        ))
    );
    // ... and past a bound, reading stops.
    for i in 0..4 * tidings_types::EXTENSIONS_MAX {
        m.insert(format!("m{i}"), Value::Null);
    }
    let Err(EventError::Json(message)) =
        CloudEvent::from_json(Value::Object(m).to_string().as_bytes())
    else {
        panic!("read");
    };
    assert!(message.contains("extension members"), "{message}");
}

#[test]
fn oversized_base64_data_is_refused_before_it_is_decoded() {
    let triples = tidings_types::EVENT_DATA_BYTES_MAX / 3 + 1;
    let b64 = "A".repeat(triples * 4);
    let text =
        json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t", "data_base64": b64});
    assert_eq!(
        CloudEvent::from_json(text.to_string().as_bytes()),
        Err(EventError::DataTooLarge(triples * 3))
    );
}
