//! Event-type patterns: `*` matches any run of characters, dots included, so
//! `order.*` matches `order.placed` and `order.item.added`, `*.failed` matches
//! `payment.failed`, and `*` matches every type.

use std::fmt;

/// Longest pattern accepted, in bytes.
pub const PATTERN_BYTES_MAX: usize = 256;

/// A validated event-type pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("an event-type pattern cannot be empty")]
    Empty,
    /// The pattern is too long.
    #[error("event-type pattern is {0} bytes; the limit is {PATTERN_BYTES_MAX}")]
    TooLong(usize),
    /// The pattern holds whitespace or control characters, which no event type has.
    #[error("event-type pattern {0:?} contains whitespace or a control character")]
    BadCharacter(String),
}

impl Pattern {
    /// Checks and wraps a pattern.
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > PATTERN_BYTES_MAX {
            return Err(PatternError::TooLong(pattern.len()));
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::BadCharacter(pattern.to_owned()));
        }
        Ok(Pattern(pattern.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        glob(self.0.as_bytes(), event_type.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Glob matching with `*` only, in linear time: on a mismatch, retry from the last
/// star with it covering one more byte.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let p = Pattern::new(pattern).unwrap();
        for t in yes {
            assert!(p.matches(t), "{pattern} should match {t}");
        }
        for t in no {
            assert!(!p.matches(t), "{pattern} should not match {t}");
        }
    }

    #[test]
    fn patterns_match_as_documented() {
        check("*", &["order.placed", "x", ""], &[]);
        check(
            "order.*",
            &["order.placed", "order.item.added", "order."],
            &["order", "orders.placed", "payment.failed"],
        );
        check(
            "*.failed",
            &["payment.failed", "a.b.failed"],
            &["payment.failed.v2", "failed"],
        );
        check(
            "order.placed",
            &["order.placed"],
            &["order.placed2", "order"],
        );
        check("a*b*c", &["abc", "aXbYc", "abbc"], &["ab", "acb"]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Pattern::new(""), Err(PatternError::Empty));
        assert_eq!(
            Pattern::new("a b"),
            Err(PatternError::BadCharacter("a b".into()))
        );
        let long = "a".repeat(PATTERN_BYTES_MAX + 1);
        assert_eq!(Pattern::new(&long), Err(PatternError::TooLong(long.len())));
    }
}
