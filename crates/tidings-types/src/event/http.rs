//! The CloudEvents HTTP protocol binding, binary content mode.
//!
//! Every attribute but `data` travels in a `ce-<name>` header (names are
//! case-insensitive), `datacontenttype` in `Content-Type`, and the body is the
//! data. Header values are percent-encoded where they hold bytes outside printable
//! ASCII, a space, a double quote or a percent sign; reading decodes them. The
//! structured and batched modes are the JSON event format of [`super::json`],
//! chosen by the request's `Content-Type`.

use bytes::Bytes;

use super::{CloudEvent, EventError, KafkaMessage, SPEC_VERSION};

const PREFIX: &str = "ce-";

impl CloudEvent {
    /// Reads an event sent in HTTP binary mode from the request's headers (name
    /// and raw value, in any case and order) and body.
    pub fn from_http_binary<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        body: Bytes,
    ) -> Result<CloudEvent, EventError> {
        // The Kafka binding carries the same attributes under another prefix;
        // translating the names lets one reader check both.
        let mut message = KafkaMessage {
            key: None,
            value: (!body.is_empty()).then_some(body),
            headers: Vec::new(),
        };
        let mut specversion = None;
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if name == "content-type" {
                message.headers.push((name, Bytes::copy_from_slice(value)));
            } else if let Some(attribute) = name.strip_prefix(PREFIX) {
                let value =
                    percent_decode(value).map_err(|reason| EventError::InvalidAttribute {
                        name: attribute.to_owned(),
                        reason,
                    })?;
                if attribute == "specversion" {
                    specversion = Some(value.clone());
                }
                message
                    .headers
                    .push((format!("ce_{attribute}"), Bytes::from(value)));
            }
        }
        match specversion {
            None => {
                return Err(EventError::NotAnEvent(
                    "no ce-specversion header: binary mode needs the ce-* headers".into(),
                ))
            }
            Some(v) if v != SPEC_VERSION => return Err(EventError::SpecVersion(v)),
            Some(_) => {}
        }
        CloudEvent::from_kafka(&message)
    }

    /// The event's `ce-*` headers for HTTP binary mode, values percent-encoded
    /// where the binding requires it, with `Content-Type` last when the event
    /// declares one. The body is [`CloudEvent::data`].
    pub fn to_http_binary_headers(&self) -> Result<Vec<(String, String)>, EventError> {
        let message = self.to_kafka()?;
        Ok(message
            .headers
            .into_iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(&value).into_owned();
                match name.strip_prefix("ce_") {
                    Some(attribute) => (format!("{PREFIX}{attribute}"), percent_encode(&value)),
                    None => (name, value),
                }
            })
            .collect())
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(value: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "header value is not UTF-8 after percent-decoding".into())
}

/// Escapes what the binding says must not appear raw in a header value.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static [u8])> {
        pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
    }

    /// The binary-mode example of the HTTP binding specification, §3.1.3.
    #[test]
    fn reads_the_specification_example() {
        let event = CloudEvent::from_http_binary(
            headers(&[
                ("ce-specversion", "1.0"),
                ("ce-type", "com.example.someevent"),
                ("ce-time", "2018-04-05T03:56:24Z"),
                ("ce-id", "1234-1234-1234"),
                ("ce-source", "/mycontext/subcontext"),
                ("Content-Type", "application/json; charset=utf-8"),
                ("Content-Length", "nnnn"),
            ]),
            Bytes::from_static(b"{\"a\":1}"),
        )
        .unwrap();
        assert_eq!(event.id(), "1234-1234-1234");
        assert_eq!(event.ty(), "com.example.someevent");
        assert_eq!(event.source(), "/mycontext/subcontext");
        assert_eq!(
            event.datacontenttype(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            event.time_rfc3339().as_deref(),
            Some("2018-04-05T03:56:24Z")
        );
        assert_eq!(event.data().map(|d| &d[..]), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn round_trips_with_percent_encoding() {
        let event = CloudEvent::new("/orders", "order.placed")
            .with_subject("a \"quoted\" 100% ünïcode subject")
            .with_correlationid("c-1")
            .with_data("text/plain", "hello");
        let encoded = event.to_http_binary_headers().unwrap();
        let subject = &encoded.iter().find(|(k, _)| k == "ce-subject").unwrap().1;
        assert!(subject.is_ascii() && !subject.contains(' ') && !subject.contains('"'));
        let pairs: Vec<(&str, &[u8])> = encoded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let back = CloudEvent::from_http_binary(pairs, Bytes::from_static(b"hello")).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn says_what_is_missing_or_wrong() {
        let err = |pairs: &[(&'static str, &'static str)]| {
            CloudEvent::from_http_binary(headers(pairs), Bytes::new()).unwrap_err()
        };
        assert!(matches!(err(&[("ce-id", "1")]), EventError::NotAnEvent(_)));
        assert_eq!(
            err(&[("ce-specversion", "0.3"), ("ce-id", "1")]),
            EventError::SpecVersion("0.3".into())
        );
        assert_eq!(
            err(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")]),
            EventError::MissingAttribute("source")
        );
        assert!(matches!(
            err(&[("ce-specversion", "1.0"), ("ce-id", "%G1")]),
            EventError::InvalidAttribute { .. }
        ));
        assert!(matches!(
            err(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                ("ce-Bad_Name", "x")
            ]),
            EventError::ExtensionName(_)
        ));
    }
}
