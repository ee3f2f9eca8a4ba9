//! Event ids: UUIDv7 made cheaply, monotonic per thread.
//!
//! RFC 9562 §6.2 "method 2" (monotonic random): the 74 bits after the millisecond
//! timestamp are a counter seeded with fresh random bits at each new millisecond
//! and incremented by one for every further id in the same millisecond. An id thus
//! costs a thread-local increment, and random bits are drawn at most once per
//! millisecond per thread. Ids made on one thread sort in the order they were made;
//! ids from different threads in the same millisecond differ by their random seeds.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Bits in the counter: the 12 of `rand_a` and the 62 of `rand_b`.
const COUNTER_BITS: u32 = 74;

thread_local! {
    /// The millisecond and counter of the last id this thread made.
    static LAST: Cell<(u64, u128)> = const { Cell::new((0, 0)) };
}

/// A fresh counter seed. The top counter bit is left clear so that a millisecond
/// has at least 2^73 ids before the counter would overflow.
fn seed() -> u128 {
    Uuid::new_v4().as_u128() & ((1 << (COUNTER_BITS - 1)) - 1)
}

/// A new UUIDv7 for an event made at `time`.
///
/// Ids from one thread always increase: when the clock steps back, or a
/// millisecond's counter runs out, the id keeps the last millisecond it used (or
/// the next one), as RFC 9562 allows.
pub fn uuid_v7_at(time: SystemTime) -> Uuid {
    let now_ms = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        & ((1 << 48) - 1);
    let (ms, counter) = LAST.with(|last| {
        let (last_ms, last_counter) = last.get();
        let next = if now_ms > last_ms {
            (now_ms, seed())
        } else if last_counter + 1 < (1 << COUNTER_BITS) {
            (last_ms, last_counter + 1)
        } else {
            (last_ms + 1, seed())
        };
        last.set(next);
        next
    });
    let rand_a = (counter >> 62) & 0xfff;
    let rand_b = counter & ((1 << 62) - 1);
    Uuid::from_u128((u128::from(ms) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b)
}

/// A new UUIDv7 for an event made now.
pub fn uuid_v7() -> Uuid {
    uuid_v7_at(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_version_7_with_the_millisecond_of_their_time() {
        let time = UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        let id = uuid_v7_at(time);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_767_225_600, 123));
    }

    #[test]
    fn ids_from_one_thread_increase_within_a_millisecond_and_when_the_clock_steps_back() {
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let mut ids: Vec<Uuid> = (0..1000).map(|_| uuid_v7_at(t)).collect();
        ids.push(uuid_v7_at(t - Duration::from_secs(5)));
        ids.push(uuid_v7_at(t + Duration::from_millis(1)));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids are strictly increasing"
        );
        let back = ids[1000].get_timestamp().unwrap().to_unix();
        assert_eq!(
            back,
            (1_800_000_000, 0),
            "a step back keeps the last millisecond"
        );
    }

    #[test]
    fn ids_from_different_threads_differ() {
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let mut ids: Vec<Uuid> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(move || (0..500).map(|_| uuid_v7_at(t)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2000);
    }
}
