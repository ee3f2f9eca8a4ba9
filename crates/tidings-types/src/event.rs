//! The CloudEvents 1.0 envelope every event in Tidings travels in.
//!
//! An event has the required attributes `id`, `source`, `specversion` and `type`,
//! the optional `time`, `datacontenttype`, `dataschema` and `subject`, extension
//! attributes, and data: bytes described by `datacontenttype`. Tidings uses the
//! extensions `partitionkey` (CloudEvents Partitioning), `sequence`, `traceparent`
//! and `tracestate` (W3C trace context), `correlationid` and `causationid`.
//!
//! [`CloudEvent::new`] stamps a UUIDv7 id (the idempotency key) and the current
//! time. Conversions: the JSON event format ([`CloudEvent::to_json`],
//! [`CloudEvent::from_json`], and the batch format), the Kafka protocol binding
//! ([`CloudEvent::to_kafka`], [`CloudEvent::from_kafka`]) and the HTTP binding's
//! binary mode ([`CloudEvent::from_http_binary`],
//! [`CloudEvent::to_http_binary_headers`]). Every conversion
//! validates, and every failure is a specific [`EventError`].
//!
//! ```
//! use tidings_types::CloudEvent;
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct OrderPlaced { order_id: String, total: u64 }
//!
//! let placed = CloudEvent::new("/orders", "order.placed")
//!     .with_json(&OrderPlaced { order_id: "o-1".into(), total: 42 })?
//!     .with_partitionkey("o-1");
//! let paid = CloudEvent::new("/payments", "payment.completed").caused_by(&placed);
//! assert_eq!(paid.causationid(), Some(placed.id()));
//! assert_eq!(paid.correlationid(), Some(placed.id()));
//!
//! let json = placed.to_json()?;
//! let back = CloudEvent::from_json(&json)?;
//! assert_eq!(back.json::<OrderPlaced>()?.total, 42);
//! # Ok::<(), tidings_types::EventError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod http;
pub(crate) mod json;
mod kafka;

pub use kafka::KafkaMessage;

/// The only CloudEvents specification version Tidings reads and writes.
pub const SPEC_VERSION: &str = "1.0";

/// Longest value of any one attribute, in bytes.
pub const ATTRIBUTE_BYTES_MAX: usize = 4096;

/// Longest extension attribute name, in bytes. The specification recommends 20
/// characters at most; longer names from other systems are still accepted up to
/// this bound.
pub const EXTENSION_NAME_BYTES_MAX: usize = 64;

/// Most extension attributes on one event.
pub const EXTENSIONS_MAX: usize = 64;

/// Largest event data, in bytes.
pub const EVENT_DATA_BYTES_MAX: usize = 1024 * 1024;

/// Attribute names of the specification itself, which extensions may not take.
const RESERVED_NAMES: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
    "data_base64",
];

/// The value of an extension attribute, in the CloudEvents type system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionValue {
    /// A string (also URIs, timestamps and binary, in their string forms).
    String(String),
    /// A 32-bit signed integer.
    Integer(i32),
    /// A boolean.
    Boolean(bool),
}

impl ExtensionValue {
    /// The value's canonical string form, as protocol bindings carry it.
    pub fn to_canonical_string(&self) -> String {
        match self {
            ExtensionValue::String(s) => s.clone(),
            ExtensionValue::Integer(i) => i.to_string(),
            ExtensionValue::Boolean(b) => b.to_string(),
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ExtensionValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        ExtensionValue::String(s.to_owned())
    }
}

impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        ExtensionValue::String(s)
    }
}

impl From<i32> for ExtensionValue {
    fn from(i: i32) -> Self {
        ExtensionValue::Integer(i)
    }
}

impl From<bool> for ExtensionValue {
    fn from(b: bool) -> Self {
        ExtensionValue::Boolean(b)
    }
}

/// Why an event is not a valid CloudEvent, or cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute is absent.
    #[error("required attribute '{0}' is missing")]
    MissingAttribute(&'static str),
    /// A required attribute is present but empty.
    #[error("required attribute '{0}' is empty")]
    EmptyAttribute(&'static str),
    /// The specversion is not 1.0.
    #[error("specversion is {0:?}; only \"1.0\" is supported")]
    SpecVersion(String),
    /// An extension name breaks the naming rule.
    #[error("extension name {0:?} is invalid: names are 1 to {EXTENSION_NAME_BYTES_MAX} lower-case ASCII letters or digits and may not be a specification attribute name")]
    ExtensionName(String),
    /// Too many extensions.
    #[error("{0} extension attributes; the limit is {EXTENSIONS_MAX}")]
    TooManyExtensions(usize),
    /// An attribute value is longer than the limit.
    #[error("attribute '{name}' is {len} bytes; the limit is {ATTRIBUTE_BYTES_MAX}")]
    AttributeTooLong {
        /// The attribute.
        name: String,
        /// Its length.
        len: usize,
    },
    /// The data is larger than the limit.
    #[error("event data is {0} bytes; the limit is {EVENT_DATA_BYTES_MAX}")]
    DataTooLarge(usize),
    /// An attribute has a value of the wrong type or form.
    #[error("attribute '{name}' is invalid: {reason}")]
    InvalidAttribute {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The bytes are not a CloudEvent in the JSON event format.
    #[error("invalid CloudEvents JSON: {0}")]
    Json(String),
    /// The data cannot be read or written as the type asked for.
    #[error("event data is not the expected JSON: {0}")]
    Data(String),
    /// A Kafka message does not carry a CloudEvent.
    #[error("Kafka message is not a CloudEvent: {0}")]
    NotAnEvent(String),
}

impl EventError {
    /// What kind of failure this is: data over its limit is too large; anything
    /// else makes the event invalid.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            EventError::DataTooLarge(_) => crate::ErrorKind::TooLarge,
            _ => crate::ErrorKind::InvalidEvent,
        }
    }
}

/// A CloudEvents 1.0 event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEvent {
    id: String,
    source: String,
    ty: String,
    time: Option<OffsetDateTime>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    subject: Option<String>,
    extensions: BTreeMap<String, ExtensionValue>,
    data: Option<Bytes>,
}

impl CloudEvent {
    /// A new event from `source` of type `ty` (namespaced `domain.action`, such as
    /// `order.placed`), with a fresh UUIDv7 id and the current time.
    pub fn new(source: impl Into<String>, ty: impl Into<String>) -> CloudEvent {
        let now = std::time::SystemTime::now();
        CloudEvent {
            id: crate::uuid_v7_at(now).to_string(),
            source: source.into(),
            ty: ty.into(),
            time: Some(OffsetDateTime::from(now)),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// The event's id, unique per source; Tidings uses it as the idempotency key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The context in which the event happened (a URI reference).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The specification version: always [`SPEC_VERSION`].
    pub fn specversion(&self) -> &str {
        SPEC_VERSION
    }

    /// The event type, such as `order.placed`.
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// When the event happened.
    pub fn time(&self) -> Option<OffsetDateTime> {
        self.time
    }

    /// The media type of the data.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// A URI naming the schema the data adheres to.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    /// The subject of the event within its source.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The data, as bytes.
    pub fn data(&self) -> Option<&Bytes> {
        self.data.as_ref()
    }

    /// One extension attribute.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }

    /// Every extension attribute, by name.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &ExtensionValue)> {
        self.extensions.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn string_extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).and_then(ExtensionValue::as_str)
    }

    /// The `partitionkey` extension: events with the same key keep their order.
    pub fn partitionkey(&self) -> Option<&str> {
        self.string_extension("partitionkey")
    }

    /// The `correlationid` extension: shared by every event of one flow.
    pub fn correlationid(&self) -> Option<&str> {
        self.string_extension("correlationid")
    }

    /// The `causationid` extension: the id of the event this one reacts to.
    pub fn causationid(&self) -> Option<&str> {
        self.string_extension("causationid")
    }

    /// The `traceparent` extension (W3C trace context).
    pub fn traceparent(&self) -> Option<&str> {
        self.string_extension("traceparent")
    }

    /// The `tracestate` extension (W3C trace context).
    pub fn tracestate(&self) -> Option<&str> {
        self.string_extension("tracestate")
    }

    /// The `sequence` extension: the event's position in its producer's sequence.
    pub fn sequence(&self) -> Option<&str> {
        self.string_extension("sequence")
    }

    /// Replaces the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Replaces the time; `None` removes it.
    #[must_use]
    pub fn with_time(mut self, time: Option<OffsetDateTime>) -> Self {
        self.time = time;
        self
    }

    /// Sets the subject.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the data schema URI.
    #[must_use]
    pub fn with_dataschema(mut self, schema: impl Into<String>) -> Self {
        self.dataschema = Some(schema.into());
        self
    }

    /// Sets the data and its media type.
    #[must_use]
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self.data = Some(data.into());
        self
    }

    /// Sets the data to `payload` as JSON, with `datacontenttype` `application/json`.
    pub fn with_json<T: serde::Serialize + ?Sized>(self, payload: &T) -> Result<Self, EventError> {
        let bytes = serde_json::to_vec(payload).map_err(|e| EventError::Data(e.to_string()))?;
        Ok(self.with_data("application/json", bytes))
    }

    /// Reads the data as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, EventError> {
        let data = self.data.as_deref().unwrap_or(b"null");
        serde_json::from_slice(data).map_err(|e| EventError::Data(e.to_string()))
    }

    /// Sets an extension attribute, checking its name.
    pub fn with_extension(
        mut self,
        name: &str,
        value: impl Into<ExtensionValue>,
    ) -> Result<Self, EventError> {
        check_extension_name(name)?;
        self.extensions.insert(name.to_owned(), value.into());
        Ok(self)
    }

    fn with_known_extension(mut self, name: &str, value: String) -> Self {
        self.extensions
            .insert(name.to_owned(), ExtensionValue::String(value));
        self
    }

    /// Sets the `partitionkey` extension.
    #[must_use]
    pub fn with_partitionkey(self, key: impl Into<String>) -> Self {
        self.with_known_extension("partitionkey", key.into())
    }

    /// Sets the `correlationid` extension.
    #[must_use]
    pub fn with_correlationid(self, id: impl Into<String>) -> Self {
        self.with_known_extension("correlationid", id.into())
    }

    /// Sets the `traceparent` extension.
    #[must_use]
    pub fn with_traceparent(self, traceparent: impl Into<String>) -> Self {
        self.with_known_extension("traceparent", traceparent.into())
    }

    /// Sets the `traceparent` extension in place.
    pub fn set_traceparent(&mut self, traceparent: impl Into<String>) {
        self.extensions.insert(
            "traceparent".to_owned(),
            ExtensionValue::String(traceparent.into()),
        );
    }

    /// Marks this event as a reaction to `cause`: it joins the cause's correlation
    /// (the cause's `correlationid`, or the cause's id when it starts the flow) and
    /// records the cause's id as its `causationid`.
    #[must_use]
    pub fn caused_by(self, cause: &CloudEvent) -> Self {
        let correlation = cause.correlationid().unwrap_or(cause.id()).to_owned();
        self.with_known_extension("correlationid", correlation)
            .with_known_extension("causationid", cause.id.clone())
    }

    /// Checks the event against the specification and Tidings' limits.
    pub fn validate(&self) -> Result<(), EventError> {
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(EventError::EmptyAttribute(name));
            }
        }
        let optional = [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ];
        let attributes = [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ]
        .into_iter()
        .map(|(n, v)| (n, v.as_str()))
        .chain(
            optional
                .into_iter()
                .filter_map(|(n, v)| v.as_deref().map(|v| (n, v))),
        );
        for (name, value) in attributes {
            check_len(name, value)?;
        }
        // The specification's types: `source` is a URI-reference, `dataschema`
        // a URI (RFC 3986); anything else is refused here rather than stored
        // and served as an event no consumer's schema accepts.
        check_uri("source", &self.source, false)?;
        if let Some(schema) = &self.dataschema {
            check_uri("dataschema", schema, true)?;
        }
        if self.extensions.len() > EXTENSIONS_MAX {
            return Err(EventError::TooManyExtensions(self.extensions.len()));
        }
        for (name, value) in &self.extensions {
            check_extension_name(name)?;
            if let ExtensionValue::String(s) = value {
                check_len(name, s)?;
            }
        }
        if let Some(data) = &self.data {
            if data.len() > EVENT_DATA_BYTES_MAX {
                return Err(EventError::DataTooLarge(data.len()));
            }
        }
        Ok(())
    }

    /// The time in RFC 3339 form.
    pub fn time_rfc3339(&self) -> Option<String> {
        self.time.map(format_time)
    }
}

impl fmt::Display for CloudEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} from {}", self.ty, self.id, self.source)
    }
}

fn check_len(name: &str, value: &str) -> Result<(), EventError> {
    if value.len() > ATTRIBUTE_BYTES_MAX {
        return Err(EventError::AttributeTooLong {
            name: name.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

/// Checks `value` against RFC 3986: a URI-reference, or with `absolute` a
/// URI (a scheme first). Characters must be unreserved, delimiters or
/// percent-encoded octets; a scheme is a letter followed by letters, digits,
/// `+`, `-` or `.`; a relative reference's first segment has no `:`; square
/// brackets only enclose an IP literal host.
pub(crate) fn check_uri(name: &str, value: &str, absolute: bool) -> Result<(), EventError> {
    let invalid = |reason: String| EventError::InvalidAttribute {
        name: name.to_owned(),
        reason,
    };
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(invalid(format!(
                        "'%' at byte {i} does not start a percent-encoded octet"
                    )));
                }
                i += 3;
                continue;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => {
                let c = value[i..].chars().next().unwrap_or('?');
                return Err(invalid(format!(
                    "{c:?} at byte {i} is not allowed in a URI; percent-encode it"
                )));
            }
        }
        i += 1;
    }
    if value.matches('#').count() > 1 {
        return Err(invalid("more than one '#'".into()));
    }
    // The scheme, if any: what precedes the first ':' that comes before any
    // '/', '?' or '#'.
    let end = value.find(['/', '?', '#']).unwrap_or(value.len());
    let scheme = value[..end].find(':').map(|at| &value[..at]);
    match scheme {
        Some(scheme) => {
            let mut chars = scheme.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
            if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
                return Err(invalid(format!(
                    "{scheme:?} is not a URI scheme (and a relative reference's first segment may not hold ':')"
                )));
            }
        }
        None if absolute => {
            return Err(invalid(
                "a URI with a scheme is required, such as https://example.com/schema".into(),
            ));
        }
        None => {}
    }
    // Brackets only around the host of an authority: "//[...]".
    let after_scheme = scheme.map_or(value, |s| &value[s.len() + 1..]);
    let authority = after_scheme
        .strip_prefix("//")
        .map(|rest| &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]);
    let brackets_in_host = authority.is_some_and(|a| {
        let host = a.rsplit_once('@').map_or(a, |(_, h)| h);
        host.starts_with('[') && host.matches('[').count() == 1 && host.matches(']').count() == 1
    });
    let brackets = value.matches(['[', ']']).count();
    if brackets > 0 && !(brackets == 2 && brackets_in_host) {
        return Err(invalid(
            "'[' and ']' may only enclose an IP literal host".into(),
        ));
    }
    Ok(())
}

/// The naming rule: lower-case ASCII letters and digits, bounded length, and not a
/// name the specification defines.
pub fn check_extension_name(name: &str) -> Result<(), EventError> {
    let valid = !name.is_empty()
        && name.len() <= EXTENSION_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !RESERVED_NAMES.contains(&name);
    if valid {
        Ok(())
    } else {
        Err(EventError::ExtensionName(name.to_owned()))
    }
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("every OffsetDateTime within RFC 3339's years formats")
}

/// Room for the RFC 3339 text of a time, whose longest is 35 bytes
/// (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+hh:mm`), with room to spare so that a
/// text that filled it would show as too long.
pub(crate) const TIME_TEXT_BYTES_MAX: usize = 48;

/// Writes `t` as [`format_time`] does into `buf`, without allocating, and
/// answers its length.
pub(crate) fn format_time_into(t: OffsetDateTime, buf: &mut [u8; TIME_TEXT_BYTES_MAX]) -> usize {
    let mut out: &mut [u8] = &mut buf[..];
    // `format_into`'s count leaves out some of what it wrote (time 0.3.55
    // counts only part of the fraction of a second); what is left of the
    // buffer says how much was written.
    t.format_into(&mut out, &Rfc3339)
        .expect("every OffsetDateTime within RFC 3339's years formats");
    let left = out.len();
    assert!(
        left > 0,
        "RFC 3339 text is shorter than {TIME_TEXT_BYTES_MAX} bytes"
    );
    debug_assert_eq!(
        &buf[..TIME_TEXT_BYTES_MAX - left],
        format_time(t).as_bytes()
    );
    TIME_TEXT_BYTES_MAX - left
}

fn parse_time(s: &str) -> Result<OffsetDateTime, EventError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| EventError::InvalidAttribute {
        name: "time".into(),
        reason: format!("{s:?} is not an RFC 3339 timestamp: {e}"),
    })
}

/// A media type without its parameters, lower-cased: `Text/Plain; charset=x` is
/// `text/plain`.
fn media_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type declares JSON data: `*/json` or `*/*+json`, parameters
/// ignored.
fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    media_essence(ct)
        .split_once('/')
        .is_some_and(|(_, sub)| sub == "json" || sub.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_uri_references_and_dataschemas_uris() {
        for good in [
            "/orders",
            "orders",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "https://example.com/shop?x=1#frag",
            "//[::1]:8080/a",
            "mailto:ops@example.com",
            "a%20b",
            "./x;y=1",
            "https://user@[2001:db8::7]/c",
        ] {
            assert_eq!(check_uri("source", good, false), Ok(()), "{good}");
        }
        for bad in [
            "×ø",
            "order service",
            "a%2",
            "%zz",
            "1abc:rest",
            "a#b#c",
            "/x[1]",
            "http://[::1/x",
            "bad\\path",
            "tab\there",
        ] {
            assert!(
                matches!(
                    check_uri("source", bad, false),
                    Err(EventError::InvalidAttribute { .. })
                ),
                "{bad}"
            );
        }
        assert!(check_uri("dataschema", "https://example.com/s.json", true).is_ok());
        assert!(check_uri("dataschema", "/schemas/s.json", true).is_err());
        let mut e = CloudEvent::new("not a uri", "t");
        e.id = "1".into();
        assert!(
            matches!(e.validate(), Err(EventError::InvalidAttribute { ref name, .. }) if name == "source")
        );
    }

    #[test]
    fn time_text_without_allocating_is_the_same_text() {
        let mut checked = 0;
        for date in [
            "2026-12-05T12:39:59Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let base = OffsetDateTime::parse(date, &Rfc3339).unwrap();
            for nanos in [
                0,
                1,
                100_000_000,
                120_000_000,
                123_456_789,
                657_219_203,
                999_999_999,
            ] {
                for offset in [(0, 0), (5, 30), (-23, -59), (23, 59)] {
                    let offset = time::UtcOffset::from_hms(offset.0, offset.1, 0).unwrap();
                    let t = base
                        .replace_nanosecond(nanos)
                        .unwrap()
                        .replace_offset(offset);
                    let mut buf = [0u8; TIME_TEXT_BYTES_MAX];
                    let len = format_time_into(t, &mut buf);
                    assert_eq!(&buf[..len], format_time(t).as_bytes(), "{t}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 84);
    }

    #[test]
    fn new_events_are_valid_with_uuid_v7_ids_and_a_time() {
        let e = CloudEvent::new("/orders", "order.placed");
        assert_eq!(e.validate(), Ok(()));
        let id = uuid::Uuid::parse_str(e.id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(e.time().is_some());
        let later = CloudEvent::new("/orders", "order.placed");
        assert!(later.id() > e.id(), "UUIDv7 ids sort by creation");
    }

    #[test]
    fn validation_names_the_problem() {
        let e = CloudEvent::new("", "order.placed");
        assert_eq!(e.validate(), Err(EventError::EmptyAttribute("source")));
        let e = CloudEvent::new("/s", "t").with_id("");
        assert_eq!(e.validate(), Err(EventError::EmptyAttribute("id")));
        for bad in ["Upper", "with-dash", "", "data", "type", &"x".repeat(65)] {
            let r = CloudEvent::new("/s", "t").with_extension(bad, "v");
            assert_eq!(r, Err(EventError::ExtensionName(bad.to_owned())), "{bad:?}");
        }
        let long = "x".repeat(ATTRIBUTE_BYTES_MAX + 1);
        let e = CloudEvent::new("/s", "t").with_subject(long);
        assert!(matches!(
            e.validate(),
            Err(EventError::AttributeTooLong { .. })
        ));
        let e = CloudEvent::new("/s", "t").with_data(
            "application/octet-stream",
            vec![0u8; EVENT_DATA_BYTES_MAX + 1],
        );
        assert_eq!(
            e.validate(),
            Err(EventError::DataTooLarge(EVENT_DATA_BYTES_MAX + 1))
        );
    }

    #[test]
    fn a_reaction_inherits_the_correlation_and_names_its_cause() {
        let placed = CloudEvent::new("/orders", "order.placed");
        let paid = CloudEvent::new("/payments", "payment.completed").caused_by(&placed);
        let shipped = CloudEvent::new("/shipping", "order.shipped").caused_by(&paid);
        assert_eq!(paid.correlationid(), Some(placed.id()));
        assert_eq!(shipped.correlationid(), Some(placed.id()));
        assert_eq!(shipped.causationid(), Some(paid.id()));
        assert_ne!(shipped.id(), paid.id());
    }

    #[test]
    fn json_media_types() {
        for ct in [
            None,
            Some("application/json"),
            Some("text/json; charset=utf-8"),
            Some("application/cloudevents+json"),
        ] {
            assert!(is_json_media_type(ct), "{ct:?}");
        }
        for ct in [
            Some("application/xml"),
            Some("text/plain"),
            Some("application/jsonx"),
            Some("json"),
        ] {
            assert!(!is_json_media_type(ct), "{ct:?}");
        }
    }
}
