//! What the fuzzers in `fuzz/` run against the broker's files (feature
//! `fuzz`, not an API): arbitrary bytes, framed as the broker frames them
//! (magic, version, lengths and checksums right, so mutation reaches what
//! lies behind them), read as the broker reads them at startup. Nothing may
//! panic, and what reads encodes back to the same state. `tidings-fuzz`
//! replays the committed corpora through the same functions in the normal
//! tests.

use tidings_types::{Offset, TopicName};

use crate::groups::file as group_file;
use crate::journal;
use crate::producer_ids;
use crate::queue::codec;
use crate::queue::state::QueueState;
use crate::queue::QueueConfig;

/// Splits a `len:u16` (little-endian) prefixed piece off `data`.
fn piece<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(u16::from_le_bytes(data.get(..2)?.try_into().ok()?));
    let rest = &data[2..];
    let len = len.min(rest.len());
    let (head, tail) = rest.split_at(len);
    *data = tail;
    Some(head)
}

/// A queue group's files as [`Queues::load`](crate::queue::Queues) reads
/// them: `revision:u8`, a snapshot body (`len:u16` first), then journal
/// record bodies (each `len:u16` first) framed into a journal image of the
/// snapshot's generation. The snapshot is decoded, the journal's records
/// are applied until one is refused (which refuses the group), and the
/// state restarted; the state then written as a snapshot reads back the
/// same.
fn queue_state(mut data: &[u8]) {
    let Some((&revision, rest)) = data.split_first() else {
        return;
    };
    data = rest;
    let Some(body) = piece(&mut data) else {
        return;
    };
    let Ok(snapshot) = codec::decode(&codec::frame_snapshot(u16::from(revision), body)) else {
        return;
    };
    let mut image = journal::header(snapshot.generation);
    while let Some(record) = piece(&mut data) {
        journal::frame(&mut image, record);
    }
    let (records, end) = journal::records(&image);
    assert!(end <= image.len());
    let mut state = snapshot.state;
    for record in &records {
        if state.apply(record).is_err() {
            return;
        }
    }
    state.restart(1);
    let written = codec::encode(
        snapshot.generation,
        &snapshot.topic,
        &snapshot.dead_letters,
        &state,
    );
    let again = codec::decode(&written).expect("a snapshot the broker wrote reads");
    assert_eq!(again.generation, snapshot.generation);
    assert_eq!(
        (again.topic, again.dead_letters),
        (snapshot.topic, snapshot.dead_letters)
    );
    let persisted = |s: &QueueState| {
        (
            s.config,
            s.partitions.clone(),
            s.lane.clone(),
            s.dlq_floor,
            s.dlq_handled.clone(),
        )
    };
    let (mut restored, kept) = (again.state, persisted(&state));
    restored.restart(1);
    assert_eq!(persisted(&restored), kept, "queue state round trip");
}

/// A group's committed offsets file (checksum appended): what reads writes
/// back as revision 2 and reads the same.
fn group_offsets(body: &[u8]) {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    if let Ok((committed, _)) = group_file::decode(&bytes) {
        let again = group_file::decode(&group_file::encode(&committed));
        assert_eq!(again, Ok((committed, 2)), "group offsets round trip");
    }
}

/// The producer-id block file (checksum appended).
fn producer_id_block(body: &[u8]) {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    if let Ok(next) = producer_ids::decode(&bytes) {
        assert_eq!(producer_ids::decode(&producer_ids::encode(next)), Ok(next));
    }
}

/// The broker's files, the first byte choosing which: a queue group's
/// snapshot and journal, a group's committed offsets, the producer-id block.
pub fn broker_files(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => queue_state(rest),
        1 => group_offsets(rest),
        _ => producer_id_block(rest),
    }
}

/// Valid files of each kind, for the fuzzer to start from.
pub fn seeds() -> Vec<Vec<u8>> {
    let with_len = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&u16::try_from(bytes.len()).expect("small").to_le_bytes());
        out.extend_from_slice(bytes);
    };
    let topic = TopicName::new("orders").expect("a topic name");
    let dead_letters = TopicName::new("orders.billing.dlq").expect("a topic name");
    let config = QueueConfig {
        key_ordering: true,
        ..QueueConfig::default()
    };
    let mut state = QueueState::new(config, [0, 10, 20], 1, 7);
    let mut pending = crate::queue::state::Pending::new(Some(bytes::Bytes::from_static(b"o-17")));
    pending.attempts = 2;
    pending.first_failure = Some(1_700_000_000_000);
    pending.last_failure = Some(1_700_000_001_000);
    pending.last_error = "payment gateway timed out".into();
    state.partitions[1].pending.insert(12, pending.clone());
    let snapshot = codec::encode(3, &topic, &dead_letters, &state);
    let mut queue = vec![0u8, 2];
    with_len(&mut queue, &snapshot[12..snapshot.len() - 4]);
    for record in [
        codec::attempt(0, 1, &pending),
        codec::resolve(1, 12),
        codec::floor(2, 25),
        codec::dlq_floor(3),
        codec::dlq_handled(&[5, 9]),
    ] {
        with_len(&mut queue, &record.0);
    }

    let mut committed = group_file::Offsets::new();
    committed.insert(
        (topic.clone(), 0),
        group_file::Committed {
            offset: Offset(42),
            metadata: "tidings-attempts/1 0:2:0".into(),
        },
    );
    committed.insert(
        (dead_letters, 3),
        group_file::Committed {
            offset: Offset(7),
            metadata: String::new(),
        },
    );
    let offsets = group_file::encode(&committed);
    let ids = producer_ids::encode(1_000);
    vec![
        queue,
        [&[1u8][..], &offsets[..offsets.len() - 4]].concat(),
        [&[2u8][..], &ids[..ids.len() - 4]].concat(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_read_and_round_trip() {
        let seeds = seeds();
        for seed in &seeds {
            broker_files(seed);
        }
        // Valid, not merely harmless: every record of the queue seed applies.
        let mut data = &seeds[0][2..];
        let body = piece(&mut data).unwrap();
        let snapshot = codec::decode(&codec::frame_snapshot(2, body)).unwrap();
        let mut state = snapshot.state;
        while let Some(record) = piece(&mut data) {
            state.apply(record).unwrap();
        }
        assert_eq!(state.dlq_floor, 3);
        let offsets = &seeds[1][1..];
        let mut bytes = offsets.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(offsets).to_le_bytes());
        assert_eq!(group_file::decode(&bytes).unwrap().0.len(), 2);
    }
}
