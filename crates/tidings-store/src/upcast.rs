//! Upcasting: turning events stored in an older shape into the current one as they
//! are read, so aggregates and projections only know the current shape.
//!
//! An event's schema version is its `schemaversion` extension attribute (absent
//! means 1). An upcaster is registered for one event type and one version; it
//! returns the event in the next version's shape, and [`Upcasters::upcast`] applies
//! upcasters until none matches.
//!
//! ```
//! use tidings_store::upcast::Upcasters;
//! use tidings_types::CloudEvent;
//! use serde_json::json;
//!
//! let mut upcasters = Upcasters::new();
//! // Version 1 of order.placed had `amount`; version 2 calls it `total`.
//! upcasters.register_json("order.placed", 1, |mut data| {
//!     let amount = data["amount"].take();
//!     Ok(json!({ "total": amount }))
//! });
//! let old = CloudEvent::new("/shop", "order.placed").with_json(&json!({"amount": 42})).unwrap();
//! let new = upcasters.upcast(old).unwrap();
//! assert_eq!(new.json::<serde_json::Value>().unwrap(), json!({"total": 42}));
//! assert_eq!(tidings_store::upcast::schema_version(&new), 2);
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use tidings_types::{CloudEvent, ExtensionValue};

/// The extension attribute that holds an event's schema version.
pub const SCHEMA_VERSION_EXTENSION: &str = "schemaversion";

/// Most upcasters applied to one event; more means a cycle.
const CHAIN_MAX: usize = 64;

/// An event that could not be brought up to date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upcasting event {id} of type {ty} from schema version {version}: {reason}")]
pub struct UpcastError {
    /// The event's id.
    pub id: String,
    /// Its type.
    pub ty: String,
    /// The version the failing upcaster started from.
    pub version: u32,
    /// What went wrong.
    pub reason: String,
}

type Upcaster = Arc<dyn Fn(CloudEvent) -> Result<CloudEvent, String> + Send + Sync>;

/// The schema version of `event`: its `schemaversion` attribute, or 1.
pub fn schema_version(event: &CloudEvent) -> u32 {
    match event.extension(SCHEMA_VERSION_EXTENSION) {
        Some(ExtensionValue::Integer(v)) => u32::try_from(*v).unwrap_or(1),
        // Protocol bindings such as Kafka's carry extensions as strings.
        Some(ExtensionValue::String(s)) => s.parse().unwrap_or(1),
        _ => 1,
    }
}

/// Upcasters by event type and schema version.
#[derive(Clone, Default)]
pub struct Upcasters {
    by_type: HashMap<(String, u32), Upcaster>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_type.keys()).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Upcasters::default()
    }

    /// Registers `f` to turn events of `event_type` at `from_version` into the next
    /// version. `f` may change anything, the type included; the store sets the new
    /// schema version.
    pub fn register(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: impl Fn(CloudEvent) -> Result<CloudEvent, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.by_type
            .insert((event_type.to_owned(), from_version), Arc::new(f));
        self
    }

    /// Registers a function of the event's JSON data, for the common case where
    /// only the payload changes shape.
    pub fn register_json(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: impl Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register(event_type, from_version, move |event| {
            let data: serde_json::Value = event.json().map_err(|e| e.to_string())?;
            event.with_json(&f(data)?).map_err(|e| e.to_string())
        })
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Brings `event` to its current shape.
    pub fn upcast(&self, mut event: CloudEvent) -> Result<CloudEvent, UpcastError> {
        if self.by_type.is_empty() {
            return Ok(event);
        }
        for _ in 0..CHAIN_MAX {
            let version = schema_version(&event);
            let Some(f) = self.by_type.get(&(event.ty().to_owned(), version)) else {
                return Ok(event);
            };
            let (id, ty) = (event.id().to_owned(), event.ty().to_owned());
            let error = |reason: String| UpcastError {
                id: id.clone(),
                ty: ty.clone(),
                version,
                reason,
            };
            let next = i32::try_from(version + 1).map_err(|e| error(e.to_string()))?;
            event = f(event)
                .map_err(error)?
                .with_extension(SCHEMA_VERSION_EXTENSION, next)
                .map_err(|e| error(e.to_string()))?;
        }
        Err(UpcastError {
            id: event.id().to_owned(),
            ty: event.ty().to_owned(),
            version: schema_version(&event),
            reason: format!("more than {CHAIN_MAX} upcasters in a row; they form a cycle"),
        })
    }
}
