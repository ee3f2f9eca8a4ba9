//! Numbers, sizes, durations and times as the pages show them, and query
//! strings built from a view's state.

use tidings_types::TimestampMs;

/// `1234567` as `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in the largest binary unit that keeps a number of at least 1:
/// `512 B`, `1.5 KiB`, `3.0 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in its two largest units: `850 ms`, `12 s`, `3 min 5 s`,
/// `2 h 10 min`, `4 d 3 h`.
pub(crate) fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = ms / 1000;
    if s < 60 {
        return format!("{s} s");
    }
    let (m, s) = (s / 60, s % 60);
    if m < 60 {
        return if s == 0 {
            format!("{m} min")
        } else {
            format!("{m} min {s} s")
        };
    }
    let (h, m) = (m / 60, m % 60);
    if h < 24 {
        return if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        };
    }
    let (d, h) = (h / 24, h % 24);
    if h == 0 {
        format!("{d} d")
    } else {
        format!("{d} d {h} h")
    }
}

/// Events per second: `–` without a figure, `0/s`, `0.25/s`, `12.3/s`,
/// `1,234/s`.
pub(crate) fn per_second(rate: Option<f64>) -> String {
    match rate {
        None => "–".to_owned(),
        Some(0.0) => "0/s".to_owned(),
        Some(r) if r < 1.0 => format!("{r:.2}/s"),
        Some(r) if r < 100.0 => format!("{r:.1}/s"),
        Some(r) => format!("{}/s", count(r.round() as u64)),
    }
}

/// A moment as pages show it: RFC 3339 for the machine (`<time datetime>`),
/// UTC to the millisecond for people, and milliseconds for the script that
/// shows it in the zone chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct When {
    /// `2026-12-05T09:50:01.123Z`.
    pub(crate) iso: String,
    /// `2026-12-05 09:50:01.123`.
    pub(crate) text: String,
    /// Milliseconds since the Unix epoch.
    pub(crate) ms: i64,
}

impl When {
    /// The moment `ms` milliseconds after the Unix epoch.
    pub(crate) fn of(ms: TimestampMs) -> When {
        let ms = ms.0;
        let at =
            tidings_types::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(tidings_types::OffsetDateTime::UNIX_EPOCH);
        let text = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        );
        let iso = format!("{}Z", text.replacen(' ', "T", 1));
        When { iso, text, ms }
    }
}

/// A query string of `pairs`, each value escaped; pairs with an empty value
/// are left out, so a view's address carries only what it sets.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// `text` cut to at most `chars` characters, with an ellipsis when cut.
pub(crate) fn preview(text: &str, chars: usize) -> String {
    let mut out: String = text.chars().take(chars).collect();
    if text.chars().nth(chars).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn sizes_take_the_largest_unit_of_at_least_one() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_000), "12 s");
        assert_eq!(duration_ms(185_000), "3 min 5 s");
        assert_eq!(duration_ms(7_800_000), "2 h 10 min");
        assert_eq!(duration_ms(3 * 86_400_000 + 3_600_000), "3 d 1 h");
    }

    #[test]
    fn rates_keep_a_few_significant_digits() {
        assert_eq!(per_second(None), "–");
        assert_eq!(per_second(Some(0.0)), "0/s");
        assert_eq!(per_second(Some(0.25)), "0.25/s");
        assert_eq!(per_second(Some(12.34)), "12.3/s");
        assert_eq!(per_second(Some(1234.4)), "1,234/s");
    }

    #[test]
    fn moments_are_utc_to_the_millisecond() {
        let when = When::of(TimestampMs(1_764_928_201_123));
        assert_eq!(when.iso, "2025-12-05T09:50:01.123Z");
        assert_eq!(when.text, "2025-12-05 09:50:01.123");
    }

    #[test]
    fn queries_escape_values_and_drop_empty_ones() {
        assert_eq!(
            query(&[("q", "a b&c"), ("type", ""), ("partition", "2")]),
            "q=a+b%26c&partition=2"
        );
        assert_eq!(preview("abcdef", 3), "abc…");
        assert_eq!(preview("abc", 3), "abc");
    }
}
