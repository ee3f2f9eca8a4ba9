//! Reading the JSON event and batch formats straight from the bytes.
//!
//! The text is read once: each member's value is kept as its raw JSON text
//! (borrowed from the input, no `serde_json::Value` tree and no map), and is
//! interpreted when the whole object has been read — what `data` means
//! depends on `datacontenttype`, which may come after it. Strings without
//! escapes are borrowed; `data` in a JSON media type is kept byte for byte as
//! the sender wrote it (key order, number spelling and all), so a consumer
//! reads what the producer sent.
//!
//! An event that names an attribute twice is refused: which one it meant is
//! not knowable, and JSON parsers differ on it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::super::{
    check_extension_name, is_json_media_type, parse_time, CloudEvent, EventError, ExtensionValue,
    EVENT_DATA_BYTES_MAX, EXTENSIONS_MAX, SPEC_VERSION,
};

/// Reads one event in the JSON event format.
pub(super) fn event(bytes: &[u8]) -> Result<CloudEvent, EventError> {
    let members: Members<'_> = serde_json::from_slice(bytes).map_err(json_error)?;
    members.into_event()
}

/// Reads events in the JSON batch format.
pub(super) fn batch(bytes: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let Batch(members) = serde_json::from_slice(bytes).map_err(json_error)?;
    members.into_iter().map(Members::into_event).collect()
}

fn json_error(e: serde_json::Error) -> EventError {
    EventError::Json(e.to_string())
}

/// The members of one event object, each value as its JSON text.
#[derive(Default)]
struct Members<'a> {
    specversion: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
    ty: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    datacontenttype: Option<&'a RawValue>,
    dataschema: Option<&'a RawValue>,
    subject: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    data_base64: Option<&'a RawValue>,
    /// Extension members, `null` ones included (they count as absent).
    extensions: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// Most extension members an event object may have, `null` ones included;
/// [`EXTENSIONS_MAX`] of them may have values. A bound on what one event's
/// reading keeps, so that the count of too many is still told exactly.
const EXTENSION_MEMBERS_MAX: usize = 4 * EXTENSIONS_MAX;

impl<'a> Members<'a> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'a RawValue>> {
        Some(match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "time" => &mut self.time,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            "subject" => &mut self.subject,
            "data" => &mut self.data,
            "data_base64" => &mut self.data_base64,
            _ => return None,
        })
    }

    fn into_event(self) -> Result<CloudEvent, EventError> {
        match self.specversion.map(Text::of) {
            None | Some(Text::Null) => return Err(EventError::MissingAttribute("specversion")),
            Some(Text::Str(v)) if v == SPEC_VERSION => {}
            Some(Text::Str(v)) => return Err(EventError::SpecVersion(v.into_owned())),
            Some(other) => return Err(EventError::SpecVersion(other.raw().to_owned())),
        }
        let id = required(self.id, "id")?;
        let source = required(self.source, "source")?;
        let ty = required(self.ty, "type")?;
        let time = optional(self.time, "time")?
            .map(|t| parse_time(&t))
            .transpose()?;
        let datacontenttype = optional(self.datacontenttype, "datacontenttype")?;
        let dataschema = optional(self.dataschema, "dataschema")?;
        let subject = optional(self.subject, "subject")?;
        let data = data(self.data, self.data_base64, datacontenttype.as_deref())?;
        let with_values = self
            .extensions
            .iter()
            .filter(|(_, raw)| raw.get() != "null")
            .count();
        if with_values > EXTENSIONS_MAX {
            return Err(EventError::TooManyExtensions(with_values));
        }
        let mut extensions = BTreeMap::new();
        for (name, raw) in self.extensions {
            check_extension_name(&name)?;
            let value = match Text::of(raw) {
                Text::Null => continue,
                Text::Str(s) => ExtensionValue::String(s.into_owned()),
                Text::Bool(b) => ExtensionValue::Boolean(b),
                Text::Number(n) => match serde_json::from_str::<serde_json::Number>(n)
                    .ok()
                    .and_then(|n| n.as_i64())
                    .and_then(|i| i32::try_from(i).ok())
                {
                    Some(i) => ExtensionValue::Integer(i),
                    None => {
                        return Err(EventError::InvalidAttribute {
                            name: name.into_owned(),
                            reason: format!("{n} is not a 32-bit integer"),
                        })
                    }
                },
                other => {
                    return Err(EventError::InvalidAttribute {
                        name: name.into_owned(),
                        reason: format!("{} values are not allowed for attributes", other.kind()),
                    })
                }
            };
            extensions.insert(name.into_owned(), value);
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
}

/// The event's data from its `data` or `data_base64` member.
fn data(
    data: Option<&RawValue>,
    data_base64: Option<&RawValue>,
    datacontenttype: Option<&str>,
) -> Result<Option<Vec<u8>>, EventError> {
    let data =
        match (data, data_base64) {
            (Some(_), Some(_)) => {
                return Err(EventError::Json(
                    "both 'data' and 'data_base64' are present".into(),
                ))
            }
            (None, Some(raw)) => match Text::of(raw) {
                Text::Str(b64) => {
                    // Checked before decoding: padded Base64 is 4 characters
                    // for every 3 bytes.
                    let padding = b64.bytes().rev().take_while(|&c| c == b'=').count();
                    let decoded_len = (b64.len() / 4 * 3).saturating_sub(padding);
                    if decoded_len > EVENT_DATA_BYTES_MAX {
                        return Err(EventError::DataTooLarge(decoded_len));
                    }
                    Some(BASE64.decode(b64.as_bytes()).map_err(|e| {
                        EventError::Json(format!("'data_base64' is not Base64: {e}"))
                    })?)
                }
                _ => return Err(EventError::Json("'data_base64' must be a string".into())),
            },
            // The JSON value is the data, as the sender wrote it.
            (Some(raw), None) if is_json_media_type(datacontenttype) => {
                Some(raw.get().as_bytes().to_vec())
            }
            (Some(raw), None) => match Text::of(raw) {
                Text::Str(s) => Some(s.into_owned().into_bytes()),
                _ => {
                    return Err(EventError::Json(
                        "'data' must be a string when datacontenttype is not JSON".into(),
                    ))
                }
            },
            (None, None) => None,
        };
    match data {
        Some(d) if d.len() > EVENT_DATA_BYTES_MAX => Err(EventError::DataTooLarge(d.len())),
        d => Ok(d),
    }
}

fn required(raw: Option<&RawValue>, name: &'static str) -> Result<String, EventError> {
    match raw.map(Text::of) {
        None | Some(Text::Null) => Err(EventError::MissingAttribute(name)),
        Some(Text::Str(s)) if s.is_empty() => Err(EventError::EmptyAttribute(name)),
        Some(Text::Str(s)) => Ok(s.into_owned()),
        Some(other) => Err(not_a_string(name, &other)),
    }
}

fn optional(raw: Option<&RawValue>, name: &'static str) -> Result<Option<String>, EventError> {
    match raw.map(Text::of) {
        None | Some(Text::Null) => Ok(None),
        Some(Text::Str(s)) => Ok(Some(s.into_owned())),
        Some(other) => Err(not_a_string(name, &other)),
    }
}

fn not_a_string(name: &str, value: &Text<'_>) -> EventError {
    EventError::InvalidAttribute {
        name: name.into(),
        reason: format!("must be a string, not a {}", value.kind()),
    }
}

/// A member's value, told apart by the first byte of its JSON text (which
/// the parser has checked is one whole JSON value).
enum Text<'a> {
    Null,
    Bool(bool),
    /// A number's text.
    Number(&'a str),
    Str(Cow<'a, str>),
    Array(&'a str),
    Object(&'a str),
}

impl<'a> Text<'a> {
    fn of(raw: &'a RawValue) -> Text<'a> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => Text::Null,
            Some(b't') => Text::Bool(true),
            Some(b'f') => Text::Bool(false),
            Some(b'[') => Text::Array(text),
            Some(b'{') => Text::Object(text),
            Some(b'"') => Text::Str(unquote(text)),
            _ => Text::Number(text),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Text::Null => "null",
            Text::Bool(_) => "boolean",
            Text::Number(_) => "number",
            Text::Str(_) => "string",
            Text::Array(_) => "array",
            Text::Object(_) => "object",
        }
    }

    /// The JSON text of a value that is not a string.
    fn raw(&self) -> &str {
        match self {
            Text::Null => "null",
            Text::Bool(true) => "true",
            Text::Bool(false) => "false",
            Text::Number(t) | Text::Array(t) | Text::Object(t) => t,
            Text::Str(s) => s,
        }
    }
}

/// A JSON string's value: borrowed when it has no escapes (the parser has
/// checked it is a valid string, so without a backslash its text between the
/// quotes is its value), else unescaped.
fn unquote(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(&text[1..text.len() - 1]);
    }
    Cow::Owned(serde_json::from_str(text).expect("the parser checked this string"))
}

/// One event object, read member by member.
impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
    type Value = Members<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event: a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
        let mut members = Members::default();
        while let Some(Name(name)) = map.next_key::<Name<'a>>()? {
            let value: &'a RawValue = map.next_value()?;
            // The raw scan lets through an escape that is no character (a
            // lone surrogate, `\udc24`), which reading the string's value
            // later refuses: a string with escapes is read here, where the
            // refusal is the event's error.
            let text = value.get();
            if text.starts_with('"') && text.contains('\\') {
                if let Err(e) = serde_json::from_str::<String>(text) {
                    return Err(de::Error::custom(format_args!(
                        "the attribute '{name}' is not a valid JSON string: {e}"
                    )));
                }
            }
            // Whether a specification attribute was named before.
            let known = members
                .slot(&name)
                .map(|slot| slot.replace(value).is_some());
            let repeated = match known {
                Some(repeated) => repeated,
                None if members.extensions.iter().any(|(n, _)| *n == name) => true,
                None if members.extensions.len() == EXTENSION_MEMBERS_MAX => {
                    return Err(de::Error::custom(format_args!(
                        "an event has more than {EXTENSION_MEMBERS_MAX} extension members"
                    )))
                }
                None => {
                    members.extensions.push((name.clone(), value));
                    false
                }
            };
            if repeated {
                return Err(de::Error::custom(format_args!(
                    "the attribute '{name}' appears twice in one event"
                )));
            }
        }
        Ok(members)
    }
}

/// A member name, borrowed when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A batch: a JSON array of event objects.
struct Batch<'a>(Vec<Members<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Batch<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Batch<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch: a JSON array of events")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Batch<'a>, S::Error> {
                let mut members = Vec::new();
                while let Some(m) = seq.next_element::<Members<'a>>()? {
                    members.push(m);
                }
                Ok(Batch(members))
            }
        }
        deserializer.deserialize_seq(V(std::marker::PhantomData))
    }
}
