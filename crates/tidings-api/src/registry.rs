//! The schema registry's API, served under [`REGISTRY_PREFIX`]: Confluent's
//! Schema Registry REST API, so Confluent's serializers, its registry client
//! and tools that speak it work unchanged. Its shapes and error codes are
//! Confluent's (numeric `error_code`), not the rest of this API's.

use serde::{Deserialize, Serialize};

/// Where the registry's API is served: give clients
/// `http://<host>:<port>/registry` as the registry URL.
pub const REGISTRY_PREFIX: &str = "/registry";

/// The media type Confluent's API answers with.
pub const REGISTRY_MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// An error, as Confluent's registry answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryErrorBody {
    /// Confluent's code: 40401 subject not found, 40402 version not found,
    /// 40403 schema not found, 40404/40406 soft-deleted already, 40405/40407
    /// not soft-deleted first, 40408 no subject level, 409 incompatible, 42201
    /// invalid schema, 42202 invalid version, 42203 invalid level, 42208
    /// invalid subject, 42209 a registry limit, 50001 the store failed.
    pub error_code: u32,
    /// What went wrong.
    pub message: String,
}

/// A reference from one schema to another. Tidings' registry takes none yet;
/// the field is read so that a request carrying references is refused by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    /// The name the referring schema uses.
    pub name: String,
    /// The subject holding the referenced schema.
    pub subject: String,
    /// Its version.
    pub version: i64,
}

/// `POST /subjects/{subject}/versions`, `POST /subjects/{subject}` and the
/// compatibility checks: a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRequest {
    /// The schema text (for JSON Schema, a JSON document as a string).
    pub schema: String,
    /// `JSON`; absent means AVRO, which Tidings does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_type: Option<String>,
    /// References to other schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
}

/// The answer to a registration: the schema's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredId {
    /// The registry-wide id.
    pub id: u32,
}

/// A schema by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaById {
    /// The schema text.
    pub schema: String,
    /// `JSON`.
    pub schema_type: String,
    /// Always empty.
    pub references: Vec<SchemaReference>,
}

/// A version of a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectVersionBody {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
    /// The schema's id.
    pub id: u32,
    /// `JSON`.
    pub schema_type: String,
    /// The schema text.
    pub schema: String,
    /// Always empty.
    pub references: Vec<SchemaReference>,
    /// Present and true for a soft-deleted version read with `deleted=true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// A (subject, version) holding a schema id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectVersionRef {
    /// The subject.
    pub subject: String,
    /// The version.
    pub version: u32,
}

/// One incompatibility, with its place and rule (a Tidings extension of
/// Confluent's answer, which lists `messages` only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incompatibility {
    /// The existing version checked against.
    pub version: u32,
    /// `backward` (the new schema reading that version's data) or `forward`.
    pub direction: String,
    /// Where in the schema, as a JSON pointer fragment.
    pub path: String,
    /// The rule broken.
    pub rule: String,
    /// What the writer sends and what the reader does with it.
    pub detail: String,
}

/// The answer to a compatibility check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompatibilityAnswer {
    /// Whether the schema is compatible.
    pub is_compatible: bool,
    /// With `verbose=true`: each incompatibility as a sentence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// With `verbose=true`: each incompatibility with its path and rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incompatibilities: Vec<Incompatibility>,
    /// With `verbose=true`: assumptions the answer rests on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Incompatibility>,
}

/// `PUT /config[/{subject}]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRequest {
    /// The level.
    pub compatibility: String,
}

/// `GET /config[/{subject}]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAnswer {
    /// The level.
    pub compatibility_level: String,
}

/// `GET /mode[/{subject}]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeAnswer {
    /// Always `READWRITE`.
    pub mode: String,
}
