//! Which schema an event answers to, and whether it does: the one check the
//! broker runs before appending to a topic that validates, for CloudEvents
//! and raw Kafka records alike.
//!
//! A CloudEvent's schema is, in order: the one its `dataschema` names when
//! that is a URL of this registry (`…/schemas/ids/<id>` or
//! `…/subjects/<subject>/versions/<n|latest>`); the one its data's Confluent
//! framing names (magic byte 0 and a schema id); the latest version of the
//! subject named as its `type` (`order.placed`); the latest version of the
//! subject `<topic>-value`. A raw record's is the one its framing names, else
//! `<topic>-value`'s latest. Finding none is a rejection: a topic that
//! validates takes only events it can check.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::registry::{Registry, VersionRef};
use crate::validate::{JsonSchema, Violation};
use crate::wire;

/// Why an event was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No schema could be found for it.
    NoSchema(String),
    /// Its data is not JSON.
    NotJson(String),
    /// Its data fails its schema.
    Invalid {
        /// The schema's id.
        schema_id: u32,
        /// How the schema was found (`type order.placed`, `subject orders-value`, …).
        by: String,
        /// The first few ways it fails.
        violations: Vec<Violation>,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoSchema(what) => f.write_str(what),
            Rejection::NotJson(e) => write!(
                f,
                "the data is not JSON, so no JSON Schema can check it: {e}"
            ),
            Rejection::Invalid {
                schema_id,
                by,
                violations,
            } => {
                write!(f, "the data does not match schema {schema_id} ({by}):")?;
                for (i, v) in violations.iter().enumerate() {
                    write!(f, "{} {v}", if i == 0 { "" } else { ";" })?;
                }
                Ok(())
            }
        }
    }
}

impl Rejection {
    /// The instance path of the first violation, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Rejection::Invalid { violations, .. } => violations.first().map(|v| v.path.as_str()),
            _ => None,
        }
    }
}

/// What an event offers for finding its schema.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// Its `type`.
    pub ty: &'a str,
    /// Its `dataschema`.
    pub dataschema: Option<&'a str>,
    /// Its data, as stored.
    pub data: Option<&'a [u8]>,
}

/// A schema the check can use: its id and its compiled form.
#[derive(Clone, Debug)]
pub struct Found {
    /// The registry id.
    pub id: u32,
    /// The compiled schema.
    pub schema: Arc<JsonSchema>,
}

/// Something to look up in a registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A schema by id.
    Id(u32),
    /// A version of a subject (`latest` or a number).
    Version(String, String),
}

/// Where the check finds schemas: the registry itself, or a producer's cache
/// of what it fetched from one.
pub trait Schemas {
    /// The schema `lookup` names, if there is one.
    fn find(&self, lookup: &Lookup) -> Option<Found>;
}

impl Schemas for Registry {
    fn find(&self, lookup: &Lookup) -> Option<Found> {
        let stored = match lookup {
            Lookup::Id(id) => self.schema(*id).ok()?,
            Lookup::Version(subject, version) => {
                self.version(subject, VersionRef::parse(version).ok()?, false)
                    .ok()?
                    .schema
            }
        };
        Some(Found {
            id: stored.id,
            schema: stored.compiled,
        })
    }
}

/// The registry schema a `dataschema` URL names.
fn named(dataschema: &str) -> Option<Lookup> {
    let path = dataschema.split(['?', '#']).next().unwrap_or("");
    if let Some((_, rest)) = path.rsplit_once("/schemas/ids/") {
        return rest.trim_end_matches('/').parse().ok().map(Lookup::Id);
    }
    let (_, rest) = path.rsplit_once("/subjects/")?;
    let (subject, version) = rest.split_once("/versions/")?;
    Some(Lookup::Version(
        percent_decode(subject),
        version.trim_end_matches('/').to_owned(),
    ))
}

fn latest(subject: &str) -> Lookup {
    Lookup::Version(subject.to_owned(), "latest".to_owned())
}

/// Everything [`check_event`] may look up for `event` bound for `topic`, in
/// the order it tries them: a producer fetches these before checking.
pub fn lookups(topic: &str, event: EventRef<'_>) -> Vec<Lookup> {
    let mut out = Vec::new();
    if let Some(l) = event.dataschema.and_then(named) {
        out.push(l);
    }
    if let Some((id, _)) = event.data.and_then(wire::split) {
        out.push(Lookup::Id(id));
    }
    out.push(latest(event.ty));
    out.push(latest(&format!("{topic}-value")));
    out
}

/// Checks a CloudEvent bound for `topic`; the id of the schema it matches.
pub fn check_event(
    schemas: &impl Schemas,
    topic: &str,
    event: EventRef<'_>,
) -> Result<u32, Rejection> {
    let framed = event.data.and_then(wire::split);
    let dataschema = event.dataschema.unwrap_or_default();
    let found = match (event.dataschema.and_then(named), framed) {
        (Some(lookup), _) => {
            let f = schemas.find(&lookup).ok_or_else(|| {
                Rejection::NoSchema(format!(
                    "dataschema {dataschema} names a schema this registry does not hold"
                ))
            })?;
            (f, format!("dataschema {dataschema}"))
        }
        (None, Some((id, _))) => {
            let f = schemas.find(&Lookup::Id(id)).ok_or_else(|| {
                Rejection::NoSchema(format!(
                    "the data is framed with schema id {id}, which the registry does not hold"
                ))
            })?;
            (f, format!("the schema id {id} framing its data"))
        }
        (None, None) => {
            let value_subject = format!("{topic}-value");
            let subjects = [event.ty, value_subject.as_str()];
            let found = subjects.into_iter().find_map(|subject| {
                schemas
                    .find(&latest(subject))
                    .map(|f| (f, format!("the latest version of subject {subject}")))
            });
            found.ok_or_else(|| {
                    Rejection::NoSchema(format!(
                        "topic {topic} validates events and none is registered for this one: register a schema under subject {:?} (its type) or {value_subject:?}, or name one in dataschema",
                        event.ty
                    ))
                })?
        }
    };
    let data = match (event.data, framed) {
        (_, Some((_, rest))) => Some(rest),
        (d, None) => d,
    };
    validate(found, data)
}

/// Checks a raw record's value bound for `topic`: by the schema its framing
/// names, else `<topic>-value`'s latest; the id of the schema it matches.
pub fn check_record(
    schemas: &impl Schemas,
    topic: &str,
    value: Option<&[u8]>,
) -> Result<u32, Rejection> {
    let framed = value.and_then(wire::split);
    let found = match framed {
        Some((id, _)) => {
            let f = schemas.find(&Lookup::Id(id)).ok_or_else(|| {
                Rejection::NoSchema(format!(
                    "the value is framed with schema id {id}, which the registry does not hold"
                ))
            })?;
            (f, format!("the schema id {id} framing the value"))
        }
        None => {
            let subject = format!("{topic}-value");
            let f = schemas.find(&latest(&subject)).ok_or_else(|| {
                Rejection::NoSchema(format!(
                    "topic {topic} validates records and subject {subject} has no schema: register one, or frame values with a schema id"
                ))
            })?;
            (f, format!("the latest version of subject {subject}"))
        }
    };
    validate(found, framed.map(|(_, rest)| rest).or(value))
}

impl Registry {
    /// [`check_event`] against this registry.
    pub fn check_event(&self, topic: &str, event: EventRef<'_>) -> Result<u32, Rejection> {
        check_event(self, topic, event)
    }

    /// [`check_record`] against this registry.
    pub fn check_record(&self, topic: &str, value: Option<&[u8]>) -> Result<u32, Rejection> {
        check_record(self, topic, value)
    }
}

fn validate((found, by): (Found, String), data: Option<&[u8]>) -> Result<u32, Rejection> {
    let instance: Value = match data {
        None => Value::Null,
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| Rejection::NotJson(e.to_string()))?
        }
    };
    found
        .schema
        .validate(&instance)
        .map(|()| found.id)
        .map_err(|violations| Rejection::Invalid {
            schema_id: found.id,
            by,
            violations,
        })
}

/// `%XX` escapes decoded (subjects in URLs are percent-encoded); anything
/// that does not decode is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataschema_urls_name_ids_and_versions() {
        assert_eq!(
            named("http://h:1/registry/schemas/ids/7"),
            Some(Lookup::Id(7))
        );
        assert_eq!(
            named("https://h/registry/subjects/order%2Eplaced/versions/latest?x=1"),
            Some(Lookup::Version("order.placed".into(), "latest".into()))
        );
        assert!(named("https://example.com/schemas/order.json").is_none());
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
