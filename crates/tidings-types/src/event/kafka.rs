//! The CloudEvents Kafka protocol binding.
//!
//! Binary mode: every attribute but `data` becomes a `ce_<name>` header holding its
//! string form, `datacontenttype` becomes the `content-type` header, the data is the
//! message value, and the message key is the `partitionkey` extension (which also
//! stays in its header, as the binding requires); reading, a UTF-8 key becomes the
//! `partitionkey` of an event without one. A message whose `content-type`
//! starts with `application/cloudevents` is in structured mode instead.

use bytes::Bytes;

use super::json::JSON_FORMAT_MEDIA_TYPE;
use super::{
    check_extension_name, format_time_into, media_essence, parse_time, CloudEvent, EventError,
    ExtensionValue, EXTENSION_NAME_BYTES_MAX, SPEC_VERSION, TIME_TEXT_BYTES_MAX,
};

/// The parts of a Kafka record that carry an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaMessage {
    /// The record key.
    pub key: Option<Bytes>,
    /// The record value.
    pub value: Option<Bytes>,
    /// The record headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

const PREFIX: &str = "ce_";
const CONTENT_TYPE: &str = "content-type";

impl CloudEvent {
    /// The event as a Kafka message in binary content mode.
    pub fn to_kafka(&self) -> Result<KafkaMessage, EventError> {
        self.validate()?;
        let mut headers = Vec::with_capacity(8 + self.extensions.len());
        self.for_each_kafka_header(|name, value| {
            let name = std::str::from_utf8(name).expect("header names are ASCII");
            headers.push((name.to_owned(), Bytes::copy_from_slice(value)));
        });
        Ok(KafkaMessage {
            key: self
                .partitionkey()
                .map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: self.data.clone(),
            headers,
        })
    }

    /// Calls `header` with the name and value of each header of the event in
    /// Kafka's binary content mode, in the order [`to_kafka`](Self::to_kafka)
    /// gives them, borrowing the event's own strings: nothing is allocated but
    /// the string form of a number or boolean extension. The record's key is
    /// [`partitionkey`](Self::partitionkey) and its value the data. For an
    /// event that passed [`validate`](Self::validate).
    pub fn for_each_kafka_header(&self, mut header: impl FnMut(&[u8], &[u8])) {
        header(b"ce_specversion", SPEC_VERSION.as_bytes());
        header(b"ce_id", self.id.as_bytes());
        header(b"ce_source", self.source.as_bytes());
        header(b"ce_type", self.ty.as_bytes());
        if let Some(t) = self.time {
            let mut buf = [0u8; TIME_TEXT_BYTES_MAX];
            let len = format_time_into(t, &mut buf);
            header(b"ce_time", &buf[..len]);
        }
        if let Some(v) = &self.dataschema {
            header(b"ce_dataschema", v.as_bytes());
        }
        if let Some(v) = &self.subject {
            header(b"ce_subject", v.as_bytes());
        }
        let mut name_buf = [0u8; PREFIX.len() + EXTENSION_NAME_BYTES_MAX];
        name_buf[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        for (name, value) in &self.extensions {
            let len = PREFIX.len() + name.len();
            name_buf[PREFIX.len()..len].copy_from_slice(name.as_bytes());
            match value {
                ExtensionValue::String(v) => header(&name_buf[..len], v.as_bytes()),
                other => header(&name_buf[..len], other.to_canonical_string().as_bytes()),
            }
        }
        // Data with no declared type is JSON by the JSON format's rule; say so
        // explicitly when the type would otherwise be lost — but only when
        // it is JSON: data that came in binary mode without a Content-Type
        // (any bytes) stays without one rather than being labelled wrongly.
        match (&self.datacontenttype, &self.data) {
            (Some(ct), _) => header(CONTENT_TYPE.as_bytes(), ct.as_bytes()),
            (None, Some(data)) if is_json(data) => {
                header(CONTENT_TYPE.as_bytes(), b"application/json");
            }
            (None, _) => {}
        }
    }

    /// Reads an event from a Kafka message in binary or structured content mode.
    ///
    /// A message without CloudEvents headers is not an event; callers show such
    /// records as raw bytes.
    pub fn from_kafka(msg: &KafkaMessage) -> Result<CloudEvent, EventError> {
        let header = |name: &str| -> Result<Option<String>, EventError> {
            match msg.headers.iter().rev().find(|(k, _)| k == name) {
                None => Ok(None),
                Some((_, v)) => String::from_utf8(v.to_vec()).map(Some).map_err(|_| {
                    EventError::InvalidAttribute {
                        name: name.to_owned(),
                        reason: "header value is not UTF-8".into(),
                    }
                }),
            }
        };
        let content_type = header(CONTENT_TYPE)?;
        if let Some(ct) = &content_type {
            let essence = media_essence(ct);
            if essence.starts_with("application/cloudevents") {
                if essence != JSON_FORMAT_MEDIA_TYPE {
                    return Err(EventError::NotAnEvent(format!(
                        "structured mode with format {essence} is not supported"
                    )));
                }
                let event = CloudEvent::from_json(msg.value.as_deref().unwrap_or_default())?;
                return Ok(key_as_partitionkey(event, msg));
            }
        }
        match header("ce_specversion")? {
            None => return Err(EventError::NotAnEvent("no ce_specversion header".into())),
            Some(v) if v != SPEC_VERSION => return Err(EventError::SpecVersion(v)),
            Some(_) => {}
        }
        let required = |name: &'static str| -> Result<String, EventError> {
            match header(&format!("{PREFIX}{name}"))? {
                None => Err(EventError::MissingAttribute(name)),
                Some(v) if v.is_empty() => Err(EventError::EmptyAttribute(name)),
                Some(v) => Ok(v),
            }
        };
        let mut event = CloudEvent {
            id: required("id")?,
            source: required("source")?,
            ty: required("type")?,
            time: header("ce_time")?.map(|t| parse_time(&t)).transpose()?,
            datacontenttype: content_type,
            dataschema: header("ce_dataschema")?,
            subject: header("ce_subject")?,
            extensions: Default::default(),
            data: msg.value.clone(),
        };
        const CORE: [&str; 7] = [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "dataschema",
            "subject",
        ];
        for (key, _) in &msg.headers {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            if CORE.contains(&name) {
                continue;
            }
            check_extension_name(name)?;
            let value = header(key)?.expect("the header is present");
            event
                .extensions
                .insert(name.to_owned(), ExtensionValue::String(value));
        }
        let event = key_as_partitionkey(event, msg);
        event.validate()?;
        Ok(event)
    }
}

/// Whether `data` is one JSON value, by the rule the JSON event format
/// writes `data` with (`to_json_value`): UTF-8 throughout, strings and
/// escapes valid. (`IgnoredAny` would let invalid UTF-8 inside a string and
/// lone surrogate escapes pass, and label such bytes JSON here but not
/// there.)
fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data).is_ok()
}

/// The reverse of the key mapping: a record key becomes the `partitionkey` of an
/// event that does not carry one, so events read back keep their key.
fn key_as_partitionkey(event: CloudEvent, msg: &KafkaMessage) -> CloudEvent {
    match (&msg.key, event.partitionkey()) {
        (Some(key), None) if !key.is_empty() => match std::str::from_utf8(key) {
            Ok(key) => event.with_partitionkey(key),
            Err(_) => event,
        },
        _ => event,
    }
}
