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
        "[ -~]{1,40}",
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
