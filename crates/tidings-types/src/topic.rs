//! Topic names, validated before they ever become a path on disk.

use std::fmt;

/// The longest topic name accepted, in bytes. Kafka allows 249.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// A topic name that is safe to use as a directory name and on the Kafka wire.
///
/// Allowed: ASCII letters, digits, `.`, `_` and `-`; 1 to [`TOPIC_NAME_BYTES_MAX`]
/// bytes; not `.` or `..`, and no `..` anywhere, so a name can never step out of the
/// data directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(String);

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The name is the empty string.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`TOPIC_NAME_BYTES_MAX`].
    #[error("topic name is {len} bytes long; the limit is {TOPIC_NAME_BYTES_MAX}")]
    TooLong {
        /// Length of the refused name in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-zA-Z0-9._-]`.
    #[error("topic name {name:?} contains {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadCharacter {
        /// The refused name (escaped when printed).
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// The name contains `..`, which could escape the data directory.
    #[error("topic name {name:?} contains \"..\"")]
    DotDot {
        /// The refused name.
        name: String,
    },
    /// The name is exactly `.`.
    #[error("topic name \".\" is reserved")]
    Dot,
}

impl TopicName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<TopicName, TopicNameError> {
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if name.len() > TOPIC_NAME_BYTES_MAX {
            return Err(TopicNameError::TooLong { len: name.len() });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNameError::BadCharacter {
                name: name.to_owned(),
                ch,
            });
        }
        if name == "." {
            return Err(TopicNameError::Dot);
        }
        if name.contains("..") {
            return Err(TopicNameError::DotDot {
                name: name.to_owned(),
            });
        }
        Ok(TopicName(name.to_owned()))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by `TopicName` can be searched with a plain `&str`: equality,
/// order and hash are the inner string's.
impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: Result<(), TopicNameError>) {
        assert_eq!(TopicName::new(name).map(|_| ()), expected, "name {name:?}");
    }

    #[test]
    fn accepts_kafka_style_names() {
        check("orders", Ok(()));
        check("order.placed", Ok(()));
        check("a_b-C.9", Ok(()));
        check(&"x".repeat(TOPIC_NAME_BYTES_MAX), Ok(()));
    }

    #[test]
    fn refuses_names_that_are_not_safe_paths() {
        check("", Err(TopicNameError::Empty));
        check(".", Err(TopicNameError::Dot));
        check("..", Err(TopicNameError::DotDot { name: "..".into() }));
        check(
            "a..b",
            Err(TopicNameError::DotDot {
                name: "a..b".into(),
            }),
        );
        check(
            "../x",
            Err(TopicNameError::BadCharacter {
                name: "../x".into(),
                ch: '/',
            }),
        );
        check(
            "a b",
            Err(TopicNameError::BadCharacter {
                name: "a b".into(),
                ch: ' ',
            }),
        );
        check(
            "é",
            Err(TopicNameError::BadCharacter {
                name: "é".into(),
                ch: 'é',
            }),
        );
        check(
            "a\0",
            Err(TopicNameError::BadCharacter {
                name: "a\0".into(),
                ch: '\0',
            }),
        );
        let long = "x".repeat(TOPIC_NAME_BYTES_MAX + 1);
        check(
            &long,
            Err(TopicNameError::TooLong {
                len: TOPIC_NAME_BYTES_MAX + 1,
            }),
        );
    }
}
