//! Confluent's wire format for a serialized value: byte 0 is the magic `0`,
//! bytes 1..5 the schema id (big-endian), then the data — for JSON Schema,
//! the JSON text.

/// The magic byte of Confluent's framing.
pub const MAGIC: u8 = 0;

/// Bytes before the data.
pub const PREFIX_BYTES: usize = 5;

/// The schema id and the data of a framed value, or `None` when `bytes` is
/// not in Confluent's framing.
pub fn split(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if bytes.len() < PREFIX_BYTES || bytes[0] != MAGIC {
        return None;
    }
    let id = u32::from_be_bytes(bytes[1..PREFIX_BYTES].try_into().expect("4 bytes"));
    Some((id, &bytes[PREFIX_BYTES..]))
}

/// Frames `data` with schema `id`.
pub fn frame(id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + data.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_other_bytes_are_not_framed() {
        let framed = frame(0x0102_0304, b"{\"a\":1}");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(split(&framed), Some((0x0102_0304, &b"{\"a\":1}"[..])));
        assert_eq!(split(b"{\"a\":1}"), None);
        assert_eq!(split(&[0, 0, 0]), None);
    }
}
