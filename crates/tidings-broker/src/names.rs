//! Names the broker gives out or accepts beyond topic names.

use std::fmt;

use tidings_types::{TopicName, TopicNameError};

/// The name of a consumer group, in stream or queue mode. It follows the rules
/// of topic names: a queue group's dead letters go to the topic
/// `<topic>.<group>.dlq`, and each group's state file is named after it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(TopicName);

impl GroupName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<GroupName, TopicNameError> {
        TopicName::new(name).map(GroupName)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Maps keyed by `GroupName` can be searched with a plain `&str`.
impl std::borrow::Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}
