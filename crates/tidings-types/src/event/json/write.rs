//! Writing the JSON event and batch formats straight to bytes, without a
//! `serde_json::Value` of each event. Members are written in the order the
//! specification lists them, then extensions by name, then the data.
//!
//! The data goes as [`CloudEvent::to_json_value`] puts it: in a JSON media
//! type (or none) and valid JSON, as the JSON value itself (here its text as
//! stored); in a text media type and valid UTF-8, as a string; otherwise in
//! `data_base64`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use super::super::{
    format_time_into, is_json_media_type, CloudEvent, ExtensionValue, SPEC_VERSION,
    TIME_TEXT_BYTES_MAX,
};
use super::is_text_media_type;

/// One validated event in the JSON event format.
pub(super) fn event(event: &CloudEvent) -> Vec<u8> {
    serde_json::to_vec(&Format(event)).expect("an event serializes")
}

/// Validated events in the JSON batch format.
pub(super) fn batch(events: &[CloudEvent]) -> Vec<u8> {
    serde_json::to_vec(&BatchFormat(events)).expect("events serialize")
}

struct Format<'a>(&'a CloudEvent);

struct BatchFormat<'a>(&'a [CloudEvent]);

impl Serialize for BatchFormat<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&Format(event))?;
        }
        seq.end()
    }
}

impl Serialize for Format<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("source", &e.source)?;
        map.serialize_entry("type", &e.ty)?;
        if let Some(t) = e.time {
            let mut buf = [0u8; TIME_TEXT_BYTES_MAX];
            let len = format_time_into(t, &mut buf);
            let text = std::str::from_utf8(&buf[..len]).expect("RFC 3339 text is ASCII");
            map.serialize_entry("time", text)?;
        }
        for (name, value) in [
            ("datacontenttype", &e.datacontenttype),
            ("dataschema", &e.dataschema),
            ("subject", &e.subject),
        ] {
            if let Some(v) = value {
                map.serialize_entry(name, v)?;
            }
        }
        for (name, value) in &e.extensions {
            match value {
                ExtensionValue::String(s) => map.serialize_entry(name, s)?,
                ExtensionValue::Integer(i) => map.serialize_entry(name, i)?,
                ExtensionValue::Boolean(b) => map.serialize_entry(name, b)?,
            }
        }
        if let Some(data) = &e.data {
            let ct = e.datacontenttype.as_deref();
            if is_json_media_type(ct) {
                if let Ok(json) = serde_json::from_slice::<&RawValue>(data) {
                    map.serialize_entry("data", json)?;
                    return map.end();
                }
            } else if is_text_media_type(ct) {
                if let Ok(text) = std::str::from_utf8(data) {
                    map.serialize_entry("data", text)?;
                    return map.end();
                }
            }
            // Bytes that are not what the content type says, or binary
            // media types: Base64, which keeps every byte.
            map.serialize_entry("data_base64", &BASE64.encode(data))?;
        }
        map.end()
    }
}
