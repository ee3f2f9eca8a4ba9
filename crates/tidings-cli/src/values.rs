//! Flag values checked where they are typed, so a mistake is named by its
//! flag (`--from`), not by the HTTP parameter the server would have refused.

use tidings_types::OffsetDateTime;

/// Whether `text` is an RFC 3339 time.
fn is_time(text: &str) -> bool {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

/// A position to read from: earliest, latest, an offset or an RFC 3339 time.
pub(crate) fn position(text: &str) -> Result<String, String> {
    match text {
        "earliest" | "latest" => Ok(text.to_owned()),
        _ if text.parse::<u64>().is_ok() || is_time(text) => Ok(text.to_owned()),
        _ => Err(
            "expected earliest, latest, an offset or an RFC 3339 time such as 2026-12-01T00:00:00Z"
                .into(),
        ),
    }
}

/// A position over every partition: earliest, latest or an RFC 3339 time.
pub(crate) fn start(text: &str) -> Result<String, String> {
    match text {
        "earliest" | "latest" => Ok(text.to_owned()),
        _ if is_time(text) => Ok(text.to_owned()),
        _ if text.parse::<u64>().is_ok() => Err(
            "an offset names a place in one partition; give earliest, latest or an RFC 3339 time"
                .into(),
        ),
        _ => {
            Err("expected earliest, latest or an RFC 3339 time such as 2026-12-01T00:00:00Z".into())
        }
    }
}

/// An fsync policy: always, never or interval:<ms> (1 ms or more).
pub(crate) fn fsync(text: &str) -> Result<String, String> {
    match text.split_once(':') {
        None if text == "always" || text == "never" => Ok(text.to_owned()),
        Some(("interval", ms)) => match ms.parse::<u64>() {
            Ok(0) => Err("interval:0 would sync after every write: give always, or an interval of 1 ms or more".into()),
            Ok(_) => Ok(text.to_owned()),
            Err(_) => Err(format!("{ms:?} is not a number of milliseconds")),
        },
        _ => Err("expected always, never or interval:<ms>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_as_typed() {
        for ok in ["earliest", "latest", "42", "2026-12-01T00:00:00Z"] {
            assert_eq!(position(ok).as_deref(), Ok(ok));
        }
        assert!(position("soon").is_err());
        assert!(start("42").unwrap_err().contains("one partition"));
        assert!(start("2026-12-01T00:00:00+01:00").is_ok());
        assert!(fsync("interval:0").unwrap_err().contains("give always"));
        assert!(fsync("interval:x").is_err());
        assert!(fsync("sometimes").is_err());
        assert_eq!(fsync("interval:5").as_deref(), Ok("interval:5"));
    }
}
