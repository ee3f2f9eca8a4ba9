//! CloudEvents decoding in each format Tidings reads: the JSON event format
//! (one event, and a batch), HTTP binary mode (`ce-*` headers and a body)
//! and the Kafka binding (`ce_*` record headers, the value as data). An
//! event that decodes encodes in the same binding without an error and
//! decodes back equal.

use bytes::Bytes;
use tidings_types::{CloudEvent, KafkaMessage};

/// Reads a `len:u8` prefixed name and a `len:u16` (little-endian) prefixed
/// value off `data`; `None` at a zero-length name or the end.
fn header<'a>(data: &mut &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let (&name_len, rest) = data.split_first()?;
    if name_len == 0 {
        *data = rest;
        return None;
    }
    let name = rest.get(..usize::from(name_len))?;
    let rest = &rest[name.len()..];
    let value_len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
    let rest = &rest[2..];
    let value = &rest[..value_len.min(rest.len())];
    *data = &rest[value.len()..];
    Some((name, value))
}

/// The first byte chooses the binding: 0 an event in JSON, 1 a JSON batch,
/// 2 HTTP binary mode (headers as `len:u8 name len:u16 value`, ended by a
/// zero, then the body), 3 a Kafka record (`flags:u8` — 1 a key, 2 a value
/// — then `len:u16 key` when there is one, headers as for HTTP, then the
/// value).
pub fn cloudevents(data: &[u8]) {
    let Some((&binding, mut rest)) = data.split_first() else {
        return;
    };
    match binding % 4 {
        0 => {
            if let Ok(event) = CloudEvent::from_json(rest) {
                let json = event.to_json().expect("a decoded event encodes");
                let again = CloudEvent::from_json(&json).expect("what we encode decodes");
                assert_eq!(again, event, "JSON round trip");
            }
        }
        1 => {
            if let Ok(events) = CloudEvent::batch_from_json(rest) {
                let json = CloudEvent::batch_to_json(&events).expect("a decoded batch encodes");
                let again = CloudEvent::batch_from_json(&json).expect("what we encode decodes");
                assert_eq!(again, events, "JSON batch round trip");
            }
        }
        2 => {
            let mut headers = Vec::new();
            while let Some((name, value)) = header(&mut rest) {
                if let Ok(name) = std::str::from_utf8(name) {
                    headers.push((name, value));
                }
            }
            let body = Bytes::copy_from_slice(rest);
            if let Ok(event) = CloudEvent::from_http_binary(headers, body) {
                let headers = event
                    .to_http_binary_headers()
                    .expect("a decoded event has headers");
                let body = event
                    .to_kafka()
                    .expect("a decoded event has a Kafka form")
                    .value
                    .unwrap_or_default();
                let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
                let again =
                    CloudEvent::from_http_binary(pairs, body).expect("what we encode decodes");
                assert_eq!(again, typed(event), "HTTP binary round trip");
            }
        }
        _ => {
            let Some((&flags, tail)) = rest.split_first() else {
                return;
            };
            rest = tail;
            let mut key = None;
            if flags & 1 == 1 {
                let Some(len) = rest.get(..2) else { return };
                let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                let bytes = &rest[2..][..len.min(rest.len() - 2)];
                key = Some(Bytes::copy_from_slice(bytes));
                rest = &rest[2 + bytes.len()..];
            }
            let mut headers = Vec::new();
            while let Some((name, value)) = header(&mut rest) {
                if let Ok(name) = std::str::from_utf8(name) {
                    headers.push((name.to_owned(), Bytes::copy_from_slice(value)));
                }
            }
            let value = (flags & 2 == 2).then(|| Bytes::copy_from_slice(rest));
            let message = KafkaMessage {
                key,
                value,
                headers,
            };
            if let Ok(event) = CloudEvent::from_kafka(&message) {
                let encoded = event.to_kafka().expect("a decoded event encodes");
                let again = CloudEvent::from_kafka(&encoded).expect("what we encode decodes");
                assert_eq!(again, typed(event), "Kafka binding round trip");
            }
        }
    }
}

/// `event` with the type its data has by the JSON format's rule made
/// explicit, as the bindings write it: data without a declared type is
/// `application/json` when it is JSON, and stays untyped otherwise.
fn typed(event: CloudEvent) -> CloudEvent {
    match (event.datacontenttype(), event.data()) {
        (None, Some(data)) if serde_json::from_slice::<serde_json::Value>(data).is_ok() => {
            let data = Bytes::copy_from_slice(data);
            event.with_data("application/json", data)
        }
        _ => event,
    }
}

/// An order's events in each binding.
pub fn seeds() -> Vec<Vec<u8>> {
    let placed = CloudEvent::new("/shop/orders", "order.placed")
        .with_subject("o-17")
        .with_partitionkey("o-17")
        .with_correlationid("checkout-42")
        .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .with_json(&serde_like_order())
        .expect("JSON data");
    let failed = CloudEvent::new("/billing", "payment.failed")
        .with_data(
            "application/octet-stream",
            Bytes::from_static(b"\x00\x01card declined"),
        )
        .with_extension("attempt", 3)
        .expect("an extension");
    let mut out = Vec::new();
    for event in [&placed, &failed] {
        out.push([&[0u8][..], &event.to_json().expect("JSON")].concat());
    }
    out.push(
        [
            &[1u8][..],
            &CloudEvent::batch_to_json(&[placed.clone(), failed.clone()]).expect("batch"),
        ]
        .concat(),
    );
    for event in [&placed, &failed] {
        let mut http = vec![2u8];
        for (name, value) in event.to_http_binary_headers().expect("headers") {
            push_header(&mut http, name.as_bytes(), value.as_bytes());
        }
        http.push(0);
        let message = event.to_kafka().expect("Kafka form");
        http.extend_from_slice(message.value.as_deref().unwrap_or_default());
        out.push(http);

        let mut kafka = vec![3u8, 1 | u8::from(message.value.is_some()) << 1];
        let key = message.key.clone().unwrap_or_default();
        kafka.extend_from_slice(&u16::try_from(key.len()).expect("short").to_le_bytes());
        kafka.extend_from_slice(&key);
        for (name, value) in &message.headers {
            push_header(&mut kafka, name.as_bytes(), value);
        }
        kafka.push(0);
        kafka.extend_from_slice(message.value.as_deref().unwrap_or_default());
        out.push(kafka);
    }
    out
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(u8::try_from(name.len()).expect("a short name"));
    out.extend_from_slice(name);
    out.extend_from_slice(&u16::try_from(value.len()).expect("short").to_le_bytes());
    out.extend_from_slice(value);
}

/// An order's data as JSON text, without a JSON library in this crate.
fn serde_like_order() -> std::collections::BTreeMap<&'static str, &'static str> {
    [("order", "o-17"), ("total", "42.50"), ("currency", "EUR")]
        .into_iter()
        .collect()
}
