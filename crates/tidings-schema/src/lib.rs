//! Tidings' schema registry.
//!
//! - [`registry`]: subjects, versions, ids and compatibility levels as
//!   Confluent's Schema Registry keeps them, durable in one journal file.
//! - [`compat`]: whether one JSON Schema reads what another writes, with the
//!   path and rule of every incompatibility.
//! - [`validate`]: compiling schemas and validating events against them, the
//!   same validator for the registry, the broker's publish-time check and the
//!   toolkit's producer-side check.
//! - [`enforce`]: which schema an event or record answers to, and whether it
//!   does — the broker's check before appending to a topic that validates.
//! - [`wire`]: Confluent's wire format (magic byte and schema id before the data).

pub mod compat;
pub mod enforce;
pub mod limits;
pub mod registry;
pub mod validate;
pub mod wire;

pub use compat::{Finding, Level, Reading, Rule, Verdict};
pub use enforce::{EventRef, Rejection};
pub use registry::{
    Registry, RegistryError, SchemaInput, SchemaType, StoredSchema, SubjectVersion, VersionRef,
};
pub use validate::{JsonSchema, SchemaError, Violation};
