//! W3C trace context (`traceparent`), as events carry it in the CloudEvents
//! distributed-tracing extension and Kafka records in a `traceparent` or
//! `ce_traceparent` header.
//!
//! The format is `version-traceid-parentid-flags`: two lowercase hex digits of
//! version, 32 of trace id, 16 of parent (span) id, 2 of flags. Version `00`
//! is exactly those 55 characters; a later version may append fields after
//! a `-`, which are ignored; version `ff` and all-zero ids are invalid
//! (W3C Trace Context, "traceparent Header").

use std::fmt;

/// A parsed `traceparent`: which trace, which span in it, and whether the
/// caller sampled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace, 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The span that is the parent of what continues it, never all zero.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// The length of a version `00` `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// The context a Kafka record's headers carry: its `traceparent` header
    /// (a Kafka client's OpenTelemetry instrumentation) or `ce_traceparent`
    /// (the CloudEvents Kafka binding's), the first valid one.
    pub fn from_record_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Option<TraceParent> {
        headers
            .into_iter()
            .filter(|(name, _)| *name == "traceparent" || *name == "ce_traceparent")
            .filter_map(|(_, value)| std::str::from_utf8(value?).ok())
            .find_map(TraceParent::parse)
    }

    /// Reads a `traceparent` value; `None` when it is not a valid one (which
    /// the W3C rules say to treat as absent).
    pub fn parse(text: &str) -> Option<TraceParent> {
        let bytes = text.as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        if version == 0xff || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        match (version, bytes.len()) {
            (0, TRACEPARENT_LEN) => {}
            (0, _) => return None,
            // A later version: its first fields read as version 00's.
            (_, TRACEPARENT_LEN) => {}
            (_, _) if bytes[TRACEPARENT_LEN] == b'-' => {}
            _ => return None,
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&bytes[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&bytes[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace: random trace and span ids, `sampled` as asked.
    pub fn new_root(sampled: bool) -> TraceParent {
        let trace = uuid::Uuid::new_v4().into_bytes();
        let span = uuid::Uuid::new_v4().into_bytes();
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&span[8..]);
        TraceParent {
            trace_id: trace,
            span_id,
            flags: u8::from(sampled),
        }
    }

    /// Whether the caller sampled (may have recorded) the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id in its 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in its 16 hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// The version `00` form.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written into one buffer: every published event without a context
        // gets one of these, so it is on the publish path.
        let mut text = [b'-'; TRACEPARENT_LEN];
        text[0..2].copy_from_slice(b"00");
        put_hex(&mut text[3..35], &self.trace_id);
        put_hex(&mut text[36..52], &self.span_id);
        put_hex(&mut text[53..55], &[self.flags]);
        f.write_str(std::str::from_utf8(&text).expect("hex digits and dashes are ASCII"))
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out`, which is twice as long.
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0x0f)];
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    put_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Two lowercase hex digits (uppercase is invalid in `traceparent`).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_digit_is_written_in_lower_case() {
        let context = TraceParent {
            trace_id: [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
                0x32, 0x10,
            ],
            span_id: [0xa0, 0x0a, 0xff, 0x00, 0x10, 0x01, 0x99, 0x5c],
            flags: 0x83,
        };
        assert_eq!(
            context.to_string(),
            "00-0123456789abcdeffedcba9876543210-a00aff001001995c-83"
        );
        assert_eq!(context.trace_id_hex(), "0123456789abcdeffedcba9876543210");
        assert_eq!(context.span_id_hex(), "a00aff001001995c");
    }

    #[test]
    fn record_headers_give_the_first_valid_traceparent() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = [
            ("traceparent", Some(&b"not one"[..])),
            ("other", Some(&good[..])),
            ("ce_traceparent", None),
            ("ce_traceparent", Some(&good[..])),
        ];
        let found = TraceParent::from_record_headers(headers).unwrap();
        assert_eq!(found.to_string().as_bytes(), good);
        assert_eq!(
            TraceParent::from_record_headers(headers[..3].to_vec()),
            None
        );
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn invalid_ones_read_as_absent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Uppercase hex, version ff, all-zero ids, wrong separators.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 with anything after it; a non-hex flag.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_reads_its_known_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let parsed = TraceParent::parse(later).unwrap();
        assert_eq!(parsed.to_string(), VALID);
        assert_eq!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
    }

    #[test]
    fn new_roots_are_valid_and_distinct() {
        let a = TraceParent::new_root(true);
        let b = TraceParent::new_root(false);
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
        assert_eq!(TraceParent::parse(&b.to_string()), Some(b));
        assert!(!b.sampled());
    }
}
