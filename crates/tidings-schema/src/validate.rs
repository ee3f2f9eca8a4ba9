//! JSON Schema compilation and validation, shared by the registry, the
//! broker's publish-time check and the toolkit's producer-side check.
//!
//! Schemas are compiled offline: a `$ref` that leaves the document is refused
//! when the schema is registered, never fetched. `format` is asserted, so a
//! schema that says `"format": "date-time"` holds events to it.

use std::fmt;

use serde_json::Value;

use crate::limits::{SCHEMA_BYTES_MAX, VIOLATIONS_MAX};

/// Why a schema could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Longer than [`SCHEMA_BYTES_MAX`].
    #[error("the schema is {0} bytes; at most {SCHEMA_BYTES_MAX} are accepted")]
    TooLarge(usize),
    /// Not JSON.
    #[error("the schema is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a valid JSON Schema (or one naming a document outside itself).
    #[error("the schema is not a valid JSON Schema: {0}")]
    Invalid(String),
}

/// The validation options every surface uses.
pub(crate) fn options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options().should_validate_formats(true)
}

/// A compiled JSON Schema.
pub struct JsonSchema {
    value: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema")
            .field("value", &self.value)
            .finish()
    }
}

/// One way an instance fails its schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Where in the instance, as a JSON pointer (`""` is the whole instance).
    pub path: String,
    /// Where in the schema, as a JSON pointer.
    pub schema_path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

impl JsonSchema {
    /// Parses and compiles schema text.
    pub fn parse(text: &str) -> Result<JsonSchema, SchemaError> {
        if text.len() > SCHEMA_BYTES_MAX {
            return Err(SchemaError::TooLarge(text.len()));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        JsonSchema::compile(value)
    }

    /// Compiles a parsed schema.
    pub fn compile(value: Value) -> Result<JsonSchema, SchemaError> {
        if !matches!(value, Value::Object(_) | Value::Bool(_)) {
            return Err(SchemaError::Invalid(
                "a JSON Schema is an object or a boolean".into(),
            ));
        }
        let validator = options()
            .build(&value)
            .map_err(|e| SchemaError::Invalid(e.to_string()))?;
        Ok(JsonSchema { value, validator })
    }

    /// The schema.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Whether `instance` is valid.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// Checks `instance`: the first [`VIOLATIONS_MAX`] ways it fails.
    pub fn validate(&self, instance: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(instance)
            .take(VIOLATIONS_MAX)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                schema_path: e.schema_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        Err(violations)
    }
}
