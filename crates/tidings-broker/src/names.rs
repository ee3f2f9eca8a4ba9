//! Names the broker gives out or accepts beyond topic names.

use std::fmt;

use tidings_types::{TopicName, TopicNameError, TOPIC_NAME_BYTES_MAX};

/// The longest group name accepted, in bytes: a stream group's offsets file,
/// `broker/groups/<group>.offsets`, and a queue group's files,
/// `broker/queues/<group>.journal` and `<group>.state`, are file names, and
/// Linux refuses one longer than 255 bytes (`NAME_MAX`). Kafka sets no
/// limit; a Kafka client with a longer group id gets `INVALID_GROUP_ID`.
pub const GROUP_NAME_BYTES_MAX: usize = 247;
const FILE_NAME_BYTES_MAX: usize = 255;
const _: () = assert!(GROUP_NAME_BYTES_MAX + ".offsets".len() <= FILE_NAME_BYTES_MAX);
const _: () = assert!(GROUP_NAME_BYTES_MAX + ".journal".len() <= FILE_NAME_BYTES_MAX);
const _: () = assert!(GROUP_NAME_BYTES_MAX + ".state".len() <= FILE_NAME_BYTES_MAX);
const _: () = assert!(GROUP_NAME_BYTES_MAX <= TOPIC_NAME_BYTES_MAX);

/// The name of a consumer group, in stream or queue mode. It follows the rules
/// of topic names, at most [`GROUP_NAME_BYTES_MAX`] bytes long: a queue
/// group's dead letters go to the topic `<topic>.<group>.dlq`, and each
/// group's state file is named after it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(TopicName);

/// Why a group name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupNameError {
    /// Longer than [`GROUP_NAME_BYTES_MAX`].
    TooLong {
        /// Length of the refused name in bytes.
        len: usize,
    },
    /// Not a name by the rules of topic names.
    Invalid(TopicNameError),
}

impl fmt::Display for GroupNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupNameError::TooLong { len } => write!(
                f,
                "group name is {len} bytes long; the limit is {GROUP_NAME_BYTES_MAX}"
            ),
            // The rules are the topic names'; the name refused is a group's.
            GroupNameError::Invalid(e) => {
                let reason = e.to_string();
                match reason.strip_prefix("topic name") {
                    Some(rest) => write!(f, "group name{rest}"),
                    None => f.write_str(&reason),
                }
            }
        }
    }
}

impl std::error::Error for GroupNameError {}

impl GroupName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<GroupName, GroupNameError> {
        if name.len() > GROUP_NAME_BYTES_MAX {
            return Err(GroupNameError::TooLong { len: name.len() });
        }
        TopicName::new(name)
            .map(GroupName)
            .map_err(GroupNameError::Invalid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_fit_a_file_name() {
        let longest = "g".repeat(GROUP_NAME_BYTES_MAX);
        assert_eq!(GroupName::new(&longest).unwrap().as_str(), longest);
        let e = GroupName::new(&format!("{longest}g")).unwrap_err();
        assert_eq!(e, GroupNameError::TooLong { len: 248 });
        assert_eq!(
            e.to_string(),
            "group name is 248 bytes long; the limit is 247"
        );
        for (name, says) in [
            ("", "group name is empty"),
            ("a b", "group name \"a b\" contains ' '"),
            ("../g", "group name \"../g\" contains '/'"),
            (".", "group name \".\" is reserved"),
        ] {
            let e = GroupName::new(name).unwrap_err().to_string();
            assert!(e.starts_with(says), "{name:?}: {e}");
        }
    }
}
