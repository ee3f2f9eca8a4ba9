//! Topics: their configuration and state, and the settings a create or an
//! alteration carries.

use serde::{Deserialize, Serialize};

/// A topic's configuration. Durations are whole milliseconds; `null` is no
/// retention limit, or dedup turned off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Partitions.
    pub partitions: u32,
    /// `always`, `never` or `interval:<ms>`.
    pub fsync: String,
    /// Size at which a segment is sealed.
    pub segment_bytes: u64,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Retention by size.
    pub retention_bytes: Option<u64>,
    /// How long an event id is remembered for dedup.
    pub dedup_window_ms: Option<u64>,
    /// `off`, or `validate`: events are checked against their schemas in the
    /// registry before they are appended.
    pub schema_validation: String,
}

/// One partition's offsets and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// First offset still stored.
    pub log_start: u64,
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// Bytes stored.
    pub size_bytes: u64,
}

/// A topic: `GET /v1/topics/{topic}`, and the answer to a create or an
/// alteration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The name.
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionState>,
    /// Events published since the server started (duplicates excluded).
    pub published_events: u64,
    /// Bytes of event data those carried.
    pub published_bytes: u64,
    /// Ids forgotten before their window ended because the dedup index was full.
    pub dedup_evicted: u64,
}

/// `GET /v1/topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    /// Every topic, by name.
    pub topics: Vec<Topic>,
}

/// The settings a create or an alteration (`PATCH /v1/topics/{topic}`) may
/// carry; absent ones keep their default (create) or current value (alter).
/// For the nullable ones, `Some(None)` travels as `null`: no limit, or dedup
/// off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Partitions (an alteration may only add).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// `always`, `never` or `interval:<ms>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<String>,
    /// Segment size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Retention by age in milliseconds.
    #[serde(
        default,
        deserialize_with = "crate::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention_ms: Option<Option<u64>>,
    /// Retention by size in bytes.
    #[serde(
        default,
        deserialize_with = "crate::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention_bytes: Option<Option<u64>>,
    /// The dedup window in milliseconds.
    #[serde(
        default,
        deserialize_with = "crate::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedup_window_ms: Option<Option<u64>>,
    /// `off` or `validate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_validation: Option<String>,
}

/// `POST /v1/topics`: a name and the settings, in one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateTopic {
    /// The topic's name.
    pub name: String,
    /// Its settings.
    #[serde(flatten)]
    pub settings: TopicSettings,
}

impl CreateTopic {
    /// Reads a create request from its JSON object. The name and the settings
    /// share the object, and a setting this API does not know is refused, so
    /// the name is taken out first and the rest read as [`TopicSettings`]. The
    /// error says what is wrong, for the answer's message.
    pub fn from_object(
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CreateTopic, String> {
        let name = match fields.remove("name") {
            Some(serde_json::Value::String(name)) => name,
            Some(_) => return Err("name must be a string".to_owned()),
            None => return Err("the topic needs a name".to_owned()),
        };
        let settings = TopicSettings::from_object(fields)?;
        Ok(CreateTopic { name, settings })
    }
}

impl TopicSettings {
    /// Reads settings from a JSON object; an unknown field or a value of the
    /// wrong type is refused with what and where.
    pub fn from_object(
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<TopicSettings, String> {
        serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("invalid topic settings: {e}"))
    }
}
