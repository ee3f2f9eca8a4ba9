//! The CloudEvents JSON event format (`application/cloudevents+json`) and its batch
//! format (`application/cloudevents-batch+json`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

mod read;
mod write;

use super::{
    check_extension_name, format_time, is_json_media_type, media_essence, parse_time, CloudEvent,
    EventError, ExtensionValue, EVENT_DATA_BYTES_MAX, SPEC_VERSION,
};

/// Media type of one event in the JSON format.
pub const JSON_FORMAT_MEDIA_TYPE: &str = "application/cloudevents+json";
/// Media type of a batch of events in the JSON batch format.
pub const JSON_BATCH_MEDIA_TYPE: &str = "application/cloudevents-batch+json";

impl CloudEvent {
    /// The event in the JSON event format, as a JSON value.
    pub fn to_json_value(&self) -> Result<Value, EventError> {
        self.validate()?;
        let mut m = Map::new();
        m.insert("specversion".into(), SPEC_VERSION.into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("source".into(), self.source.clone().into());
        m.insert("type".into(), self.ty.clone().into());
        if let Some(t) = self.time {
            m.insert("time".into(), format_time(t).into());
        }
        for (name, value) in [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ] {
            if let Some(v) = value {
                m.insert(name.into(), v.clone().into());
            }
        }
        for (name, value) in &self.extensions {
            let v = match value {
                ExtensionValue::String(s) => Value::String(s.clone()),
                ExtensionValue::Integer(i) => Value::from(*i),
                ExtensionValue::Boolean(b) => Value::Bool(*b),
            };
            m.insert(name.clone(), v);
        }
        if let Some(data) = &self.data {
            let ct = self.datacontenttype.as_deref();
            let as_json = is_json_media_type(ct)
                .then(|| serde_json::from_slice::<Value>(data).ok())
                .flatten();
            let as_text = (!is_json_media_type(ct) && is_text_media_type(ct))
                .then(|| std::str::from_utf8(data).ok())
                .flatten();
            match (as_json, as_text) {
                (Some(v), _) => m.insert("data".into(), v),
                (None, Some(s)) => m.insert("data".into(), s.into()),
                // Bytes that are not what the content type says, or binary media
                // types: Base64, which keeps every byte.
                (None, None) => m.insert("data_base64".into(), BASE64.encode(data).into()),
            };
        }
        Ok(Value::Object(m))
    }

    /// The event in the JSON event format.
    pub fn to_json(&self) -> Result<Vec<u8>, EventError> {
        self.validate()?;
        Ok(write::event(self))
    }

    /// Reads an event in the JSON event format. `data` in a JSON media type
    /// is kept as the text wrote it; an attribute named twice is an error.
    pub fn from_json(bytes: &[u8]) -> Result<CloudEvent, EventError> {
        read::event(bytes)
    }

    /// Reads an event from a JSON value in the JSON event format.
    pub fn from_json_value(value: Value) -> Result<CloudEvent, EventError> {
        let Value::Object(mut m) = value else {
            return Err(EventError::Json("an event must be a JSON object".into()));
        };
        match m.remove("specversion") {
            None | Some(Value::Null) => return Err(EventError::MissingAttribute("specversion")),
            Some(Value::String(v)) if v == SPEC_VERSION => {}
            Some(other) => return Err(EventError::SpecVersion(display(&other))),
        }
        let id = required(&mut m, "id")?;
        let source = required(&mut m, "source")?;
        let ty = required(&mut m, "type")?;
        let time = optional(&mut m, "time")?
            .map(|t| parse_time(&t))
            .transpose()?;
        let datacontenttype = optional(&mut m, "datacontenttype")?;
        let dataschema = optional(&mut m, "dataschema")?;
        let subject = optional(&mut m, "subject")?;
        let data = match (m.remove("data"), m.remove("data_base64")) {
            (Some(_), Some(_)) => {
                return Err(EventError::Json(
                    "both 'data' and 'data_base64' are present".into(),
                ))
            }
            (None, Some(Value::String(b64))) => Some(
                BASE64
                    .decode(b64.as_bytes())
                    .map_err(|e| EventError::Json(format!("'data_base64' is not Base64: {e}")))?,
            ),
            (None, Some(_)) => {
                return Err(EventError::Json("'data_base64' must be a string".into()))
            }
            (Some(v), None) if is_json_media_type(datacontenttype.as_deref()) => {
                Some(serde_json::to_vec(&v).expect("a JSON value serializes"))
            }
            (Some(Value::String(s)), None) => Some(s.into_bytes()),
            (Some(_), None) => {
                return Err(EventError::Json(
                    "'data' must be a string when datacontenttype is not JSON".into(),
                ))
            }
            (None, None) => None,
        };
        if data
            .as_ref()
            .is_some_and(|d| d.len() > EVENT_DATA_BYTES_MAX)
        {
            return Err(EventError::DataTooLarge(data.map_or(0, |d| d.len())));
        }
        let mut extensions = std::collections::BTreeMap::new();
        for (name, value) in m {
            check_extension_name(&name)?;
            let v = match value {
                Value::Null => continue,
                Value::String(s) => ExtensionValue::String(s),
                Value::Bool(b) => ExtensionValue::Boolean(b),
                Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    Some(i) => ExtensionValue::Integer(i),
                    None => {
                        return Err(EventError::InvalidAttribute {
                            name,
                            reason: format!("{n} is not a 32-bit integer"),
                        })
                    }
                },
                other => {
                    return Err(EventError::InvalidAttribute {
                        name,
                        reason: format!("{} values are not allowed for attributes", kind(&other)),
                    })
                }
            };
            extensions.insert(name, v);
        }
        let event = CloudEvent {
            id,
            source,
            ty,
            time,
            datacontenttype,
            dataschema,
            subject,
            extensions,
            data: data.map(Into::into),
        };
        event.validate()?;
        Ok(event)
    }

    /// Several events in the JSON batch format.
    pub fn batch_to_json(events: &[CloudEvent]) -> Result<Vec<u8>, EventError> {
        for event in events {
            event.validate()?;
        }
        Ok(write::batch(events))
    }

    /// Reads events in the JSON batch format, as [`CloudEvent::from_json`]
    /// reads each.
    pub fn batch_from_json(bytes: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
        read::batch(bytes)
    }
}

fn is_text_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = media_essence(ct);
    essence.starts_with("text/") || essence.ends_with("/xml") || essence.ends_with("+xml")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn required(m: &mut Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    match m.remove(name) {
        None | Some(Value::Null) => Err(EventError::MissingAttribute(name)),
        Some(Value::String(s)) if s.is_empty() => Err(EventError::EmptyAttribute(name)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(EventError::InvalidAttribute {
            name: name.into(),
            reason: format!("must be a string, not a {}", kind(&other)),
        }),
    }
}

fn optional(m: &mut Map<String, Value>, name: &'static str) -> Result<Option<String>, EventError> {
    match m.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::InvalidAttribute {
            name: name.into(),
            reason: format!("must be a string, not a {}", kind(&other)),
        }),
    }
}
