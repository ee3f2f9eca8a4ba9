//! Decompressing the records section of producers' batches, under a size cap.
//!
//! Kafka producers compress the records of a batch with gzip, snappy, lz4 or
//! zstd. The log stores such batches as they arrive; it decompresses them to
//! check every record before the append and to decode records on reads. Every
//! decoder here reads through a cap on the decompressed size, checked before
//! memory is allocated where the format declares sizes up front (snappy blocks,
//! zstd windows), so a small batch cannot expand into a large allocation.

use std::io::Read;

use crate::limits::DECOMPRESSED_BATCH_BYTES_MAX;

/// Why a compressed records section cannot be decompressed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecompressError {
    /// The attributes name a codec Kafka does not define.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The data decompresses to more than the cap.
    #[error("decompresses to more than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The data is not valid for its codec.
    #[error("invalid {codec} data: {reason}")]
    Invalid {
        /// The codec's name.
        codec: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// The codec numbers of a batch's attributes (bits 0..3).
pub(crate) const GZIP: u8 = 1;
pub(crate) const SNAPPY: u8 = 2;
pub(crate) const LZ4: u8 = 3;
pub(crate) const ZSTD: u8 = 4;

/// The codec's name, for errors and logs.
pub(crate) fn codec_name(codec: u8) -> &'static str {
    match codec {
        0 => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// Decompresses `data`, compressed with `codec`, to at most
/// [`DECOMPRESSED_BATCH_BYTES_MAX`] bytes.
pub(crate) fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    decompress_capped(codec, data, DECOMPRESSED_BATCH_BYTES_MAX)
}

pub(crate) fn decompress_capped(
    codec: u8,
    data: &[u8],
    cap: usize,
) -> Result<Vec<u8>, DecompressError> {
    let invalid = |reason: String| DecompressError::Invalid {
        codec: codec_name(codec),
        reason,
    };
    match codec {
        GZIP => {
            read_capped(flate2::read::MultiGzDecoder::new(data), cap).map_err(|e| e.into(codec))
        }
        SNAPPY => snappy(data, cap),
        LZ4 => {
            read_capped(lz4_flex::frame::FrameDecoder::new(data), cap).map_err(|e| e.into(codec))
        }
        ZSTD => {
            let window = zstd_window(data).map_err(|r| invalid(r.to_owned()))?;
            if window > cap as u64 {
                return Err(invalid(format!(
                    "frame window of {window} bytes is larger than the {cap}-byte limit"
                )));
            }
            let decoder = ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| invalid(e.to_string()))?;
            read_capped(decoder, cap).map_err(|e| e.into(codec))
        }
        other => Err(DecompressError::UnknownCodec(other)),
    }
}

enum ReadFault {
    TooLarge(usize),
    Io(std::io::Error),
}

impl ReadFault {
    fn into(self, codec: u8) -> DecompressError {
        match self {
            ReadFault::TooLarge(limit) => DecompressError::TooLarge { limit },
            ReadFault::Io(e) => DecompressError::Invalid {
                codec: codec_name(codec),
                reason: e.to_string(),
            },
        }
    }
}

/// Reads a decoder to its end, stopping one byte past the cap.
fn read_capped(reader: impl Read, cap: usize) -> Result<Vec<u8>, ReadFault> {
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(ReadFault::Io)?;
    if out.len() > cap {
        return Err(ReadFault::TooLarge(cap));
    }
    Ok(out)
}

/// The header the Java client (xerial snappy-java) puts before its blocks:
/// magic, version 1, minimum compatible version 1.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// Snappy as Kafka clients send it: xerial framing (blocks each preceded by a
/// big-endian length) from the Java client and kafkajs, raw snappy from
/// librdkafka. Every block's declared length is checked before it is decoded.
fn snappy(data: &[u8], cap: usize) -> Result<Vec<u8>, DecompressError> {
    let invalid = |reason: String| DecompressError::Invalid {
        codec: "snappy",
        reason,
    };
    let mut blocks = Vec::new();
    if data.len() >= XERIAL_HEADER_BYTES && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[XERIAL_HEADER_BYTES..];
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(invalid("truncated block length".to_owned()));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(invalid(format!(
                    "block of {len} bytes but only {} remain",
                    tail.len()
                )));
            }
            blocks.push(&tail[..len]);
            rest = &tail[len..];
        }
    } else {
        blocks.push(data);
    }
    let mut total = 0usize;
    for block in &blocks {
        let len = snap::raw::decompress_len(block).map_err(|e| invalid(e.to_string()))?;
        total = total.saturating_add(len);
        if total > cap {
            return Err(DecompressError::TooLarge { limit: cap });
        }
    }
    let mut out = vec![0; total];
    let mut at = 0;
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        at += decoder
            .decompress(block, &mut out[at..])
            .map_err(|e| invalid(e.to_string()))?;
    }
    out.truncate(at);
    Ok(out)
}

/// The window size a zstd frame declares, which a decoder allocates up front.
fn zstd_window(data: &[u8]) -> Result<u64, &'static str> {
    const MAGIC: u32 = 0xFD2F_B528;
    let magic = data
        .first_chunk::<4>()
        .map(|m| u32::from_le_bytes(*m))
        .ok_or("truncated frame header")?;
    if magic != MAGIC {
        return Err("not a zstd frame (Kafka batches hold one zstd frame)");
    }
    let descriptor = *data.get(4).ok_or("truncated frame header")?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let w = *data.get(5).ok_or("truncated frame header")?;
        let log = 10 + u32::from(w >> 3);
        let base = 1u64 << log;
        return Ok(base + (base / 8) * u64::from(w & 7));
    }
    // A single-segment frame's window is its content size.
    let dict_bytes = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let size_bytes = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dict_bytes;
    let field = data
        .get(at..at + size_bytes)
        .ok_or("truncated frame header")?;
    let mut size = [0u8; 8];
    size[..size_bytes].copy_from_slice(field);
    let size = u64::from_le_bytes(size);
    Ok(if size_bytes == 2 { size + 256 } else { size })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sample() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn gzip_and_lz4_round_trip_and_stop_at_the_cap() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(GZIP, &gz).unwrap(), data);
        assert_eq!(
            decompress_capped(GZIP, &gz, data.len() - 1),
            Err(DecompressError::TooLarge {
                limit: data.len() - 1
            })
        );

        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).unwrap();
        let lz = lz.finish().unwrap();
        assert_eq!(decompress(LZ4, &lz).unwrap(), data);
        assert!(matches!(
            decompress_capped(LZ4, &lz, 1000),
            Err(DecompressError::TooLarge { limit: 1000 })
        ));
    }

    #[test]
    fn snappy_in_both_framings() {
        let data = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(SNAPPY, &raw).unwrap(), data);

        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(SNAPPY, &framed).unwrap(), data);
        // The declared lengths are refused before anything is allocated.
        assert_eq!(
            decompress_capped(SNAPPY, &framed, 4096),
            Err(DecompressError::TooLarge { limit: 4096 })
        );
        framed.truncate(framed.len() - 3);
        assert!(matches!(
            decompress(SNAPPY, &framed),
            Err(DecompressError::Invalid { .. })
        ));
    }

    #[test]
    fn a_snappy_block_declaring_a_huge_length_is_refused_up_front() {
        // Varint length 0xFFFFFFFF, then nothing.
        let bomb = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(
            decompress(SNAPPY, &bomb),
            Err(DecompressError::TooLarge { .. }) | Err(DecompressError::Invalid { .. })
        ));
    }

    #[test]
    fn zstd_round_trips_and_stops_at_the_cap() {
        let data = sample();
        let frame = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(decompress(ZSTD, &frame).unwrap(), data);
        assert!(decompress_capped(ZSTD, &frame, 1000).is_err());
    }

    #[test]
    fn zstd_windows_larger_than_the_cap_are_refused_before_decoding() {
        // Magic, descriptor without single segment, window descriptor 2^30.
        let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, (30 - 10) << 3, 0, 0, 0];
        let err = decompress(ZSTD, &frame).unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        assert!(matches!(
            decompress(ZSTD, b"nonsense"),
            Err(DecompressError::Invalid { codec: "zstd", .. })
        ));
        assert_eq!(decompress(7, b"x"), Err(DecompressError::UnknownCodec(7)));
    }
}
