//! The envelope the guides' EventBus wraps around a payload, in its in-process form.

use std::sync::OnceLock;
use std::time::SystemTime;

use uuid::Uuid;

use tidings_types::{uuid_v7_at, CloudEvent, EventError, OffsetDateTime};

use crate::Event;

/// A typed payload with a fresh id (UUIDv7) and the time it was made.
///
/// This is a [`CloudEvent`] kept in-process: the payload stays a Rust value, and
/// the id and time stay binary until someone asks for text. When the event leaves
/// the process, [`to_cloud_event`](Self::to_cloud_event) makes the CloudEvent, with
/// the same id and time and the payload as JSON.
pub struct Envelope<T> {
    id: Uuid,
    time: SystemTime,
    id_text: OnceLock<String>,
    payload: T,
}

impl<T: Event> Envelope<T> {
    /// Wraps `payload` with a new id and the current time.
    pub fn new(payload: T) -> Envelope<T> {
        // One clock reading for both the id and the time. Ids are monotonic per
        // thread, which is all UUIDv7 promises within one millisecond anyway.
        let time = SystemTime::now();
        Envelope {
            id: uuid_v7_at(time),
            time,
            id_text: OnceLock::new(),
            payload,
        }
    }

    /// The id, as text.
    pub fn id(&self) -> &str {
        self.id_text.get_or_init(|| self.id.to_string())
    }

    /// When the envelope was made.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The envelope as a CloudEvent from `source`, with the payload as JSON data.
    pub fn to_cloud_event(&self, source: &str) -> Result<CloudEvent, EventError>
    where
        T: serde::Serialize,
    {
        CloudEvent::new(source, self.payload.event_type())
            .with_id(self.id())
            .with_time(Some(OffsetDateTime::from(self.time)))
            .with_json(&self.payload)
    }
}

impl<T: Event> Event for Envelope<T> {
    fn event_type(&self) -> &str {
        self.payload.event_type()
    }

    fn event_id(&self) -> Option<&str> {
        Some(self.id())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("payload", &self.payload)
            .finish()
    }
}
