//! Producer dedup: an event whose `source` and `id` were appended to the same
//! topic within the dedup window is not appended again; the publish answers
//! the original offset. CloudEvents makes `source` + `id` unique, so two
//! producers may use the same id without either being dropped.
//!
//! The index is rebuilt on open from the log itself (the `ce_source` and `ce_id`
//! headers of every record appended within the window), so it holds only what
//! is durable and survives any restart without a file of its own.
//!
//! It keeps no copy of the ids: each `source` + `id` is a 128-bit [`Key`],
//! two SipHash-1-3 values under keys drawn at random when the index is made
//! (so nobody outside can choose ids that collide). An entry is 40 bytes in
//! the map and 32 in the expiry queue, with nothing allocated per event. Two
//! different events share a key with probability about n² / 2¹²⁹ for n
//! entries: at [`DEDUP_ENTRIES_MAX`] a million, about 1.5 × 10⁻²⁷ per full
//! window — far below the rate of undetected disk or memory errors — and the
//! cost of such a collision is one event answered as a duplicate.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_types::{Offset, PartitionId};
use tokio::sync::watch;

/// Most ids remembered per topic. Past it the oldest are forgotten early (and
/// counted), which shortens the window rather than letting memory grow unbounded.
pub const DEDUP_ENTRIES_MAX: usize = 1_000_000;

/// An event's `source` and `id` as the index keeps them (see the module's
/// notes).
pub(crate) type Key = u128;

/// Hashes a [`Key`], which is uniformly distributed already, by folding it:
/// hashing it again would only cost time.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, k: u128) {
        self.0 ^= (k as u64) ^ ((k >> 64) as u64);
    }
}

/// A map by [`Key`].
pub(crate) type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// Where an event with a given id was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) partition: PartitionId,
    pub(crate) offset: Offset,
}

#[derive(Default)]
struct State {
    /// How long ids are remembered; `None`: dedup is off.
    window_ms: Option<i64>,
    done: KeyMap<(Placement, i64)>,
    /// Ids in the order they were recorded, with their time, for expiry.
    order: VecDeque<(i64, Key)>,
    /// Ids whose append is under way. The claimant holds the sender; dropping it
    /// (when the claim ends, however it ends) wakes every waiter, even one that
    /// starts waiting afterwards.
    pending: KeyMap<watch::Receiver<()>>,
    evicted: u64,
}

pub(crate) struct Dedup {
    state: Mutex<State>,
    /// The two hash keys of this index's [`Key`]s.
    hashers: (RandomState, RandomState),
}

fn millis(window: Option<Duration>) -> Option<i64> {
    window.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The outcome of trying to claim a set of ids for appending.
pub(crate) enum Claim {
    /// The ids are claimed; the `Option`s say which were already appended (and
    /// where) and need no append.
    Claimed(ClaimGuard, Vec<Option<Placement>>),
    /// Another publish is appending one of the ids: once this returns, try again.
    Wait(watch::Receiver<()>),
}

/// Claims on ids being appended. [`finish`](Self::finish) records where they
/// went; dropped unfinished (the publish failed or was cancelled), it releases
/// them so that a waiting publish can claim them instead.
pub(crate) struct ClaimGuard {
    dedup: Arc<Dedup>,
    ids: Vec<Key>,
    _done: watch::Sender<()>,
}

impl ClaimGuard {
    /// Records `placements` (in claim order; `None` for ids not appended).
    pub(crate) fn finish(mut self, placements: &[(Key, Placement)], now: i64) {
        let mut state = self.dedup.state.lock().expect("dedup lock");
        for id in self.ids.drain(..) {
            state.pending.remove(&id);
        }
        if state.window_ms.is_some() {
            for &(id, p) in placements {
                state.done.insert(id, (p, now));
                state.order.push_back((now, id));
            }
        }
        Dedup::expire(&mut state, now);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let mut state = self.dedup.state.lock().expect("dedup lock");
            for id in self.ids.drain(..) {
                state.pending.remove(&id);
            }
        }
    }
}

impl Dedup {
    pub(crate) fn new(window: Option<Duration>) -> Arc<Dedup> {
        Arc::new(Dedup {
            state: Mutex::new(State {
                window_ms: millis(window),
                ..State::default()
            }),
            hashers: (RandomState::new(), RandomState::new()),
        })
    }

    /// The index's key for the event with `source` and `id`.
    pub(crate) fn key(&self, source: &str, id: &str) -> Key {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            // Length-prefixed, so that no two pairs hash the same input.
            h.write_usize(source.len());
            h.write(source.as_bytes());
            h.write(id.as_bytes());
            h.finish()
        };
        (u128::from(half(&self.hashers.0)) << 64) | u128::from(half(&self.hashers.1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("dedup lock")
    }

    /// Whether this topic deduplicates at all.
    pub(crate) fn enabled(&self) -> bool {
        self.lock().window_ms.is_some()
    }

    /// The window, in milliseconds.
    pub(crate) fn window_ms(&self) -> Option<i64> {
        self.lock().window_ms
    }

    /// The window.
    pub(crate) fn window(&self) -> Option<Duration> {
        self.window_ms()
            .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Changes the window. Turned off, the ids remembered are forgotten; a
    /// shorter window forgets the older ones at the next publish. Turned on, the
    /// index starts empty: the caller refills it from the log.
    pub(crate) fn set_window(&self, window: Option<Duration>) {
        let mut state = self.lock();
        state.window_ms = millis(window);
        if state.window_ms.is_none() {
            state.done.clear();
            state.order.clear();
        }
    }

    /// Ids forgotten early because of [`DEDUP_ENTRIES_MAX`].
    pub(crate) fn evicted(&self) -> u64 {
        self.state.lock().expect("dedup lock").evicted
    }

    fn expire(state: &mut State, now: i64) {
        let Some(window) = state.window_ms else {
            return;
        };
        let horizon = now.saturating_sub(window);
        while let Some((ts, _)) = state.order.front() {
            if *ts >= horizon && state.done.len() <= DEDUP_ENTRIES_MAX {
                break;
            }
            let (ts, id) = state.order.pop_front().expect("peeked");
            // One lookup: the map is large and the key long out of cache.
            if let Entry::Occupied(entry) = state.done.entry(id) {
                if entry.get().1 == ts {
                    entry.remove();
                    if ts >= horizon {
                        state.evicted += 1;
                    }
                }
            }
        }
    }

    /// Records an append that is already durable (used when rebuilding).
    pub(crate) fn record(&self, id: Key, placement: Placement, ts: i64) {
        let mut state = self.lock();
        if state.window_ms.is_none() {
            return;
        }
        state.done.insert(id, (placement, ts));
        state.order.push_back((ts, id));
        Dedup::expire(&mut state, ts);
    }

    /// Claims `ids` for appending, all or none: holding some claims while waiting
    /// for another publish's could deadlock two batches with ids in common.
    pub(crate) fn claim(self: &Arc<Self>, ids: &[Key], now: i64) -> Claim {
        let mut state = self.lock();
        Dedup::expire(&mut state, now);
        if let Some(rx) = ids.iter().find_map(|id| state.pending.get(id)) {
            return Claim::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        let mut claimed = Vec::with_capacity(ids.len());
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match state.done.get(&id) {
                Some((placement, _)) if state.window_ms.is_some() => out.push(Some(*placement)),
                _ => {
                    // A repeat within the same batch is answered by the first.
                    if let Entry::Vacant(e) = state.pending.entry(id) {
                        e.insert(rx.clone());
                        claimed.push(id);
                    }
                    out.push(None);
                }
            }
        }
        let guard = ClaimGuard {
            dedup: Arc::clone(self),
            ids: claimed,
            _done: tx,
        };
        Claim::Claimed(guard, out)
    }
}

/// Waits until the claim behind `rx` ends.
pub(crate) async fn wait(mut rx: watch::Receiver<()>) {
    // The sender is only ever dropped, never used to send: `changed` returns
    // when it is gone, at once if it already is.
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Placement {
        Placement {
            partition: PartitionId(0),
            offset: Offset(offset),
        }
    }

    /// Where `claim` says each id went (`None`: not appended, claimable).
    fn placements(dedup: &Arc<Dedup>, ids: &[Key], now: i64) -> Vec<Option<Placement>> {
        match dedup.claim(ids, now) {
            Claim::Claimed(_guard, out) => out,
            Claim::Wait(_) => panic!("nothing else holds a claim"),
        }
    }

    #[test]
    fn ids_are_remembered_for_the_window_and_then_forgotten() {
        let dedup = Dedup::new(Some(Duration::from_millis(1_000)));
        let a = dedup.key("/s", "a");
        let b = dedup.key("/s", "b");
        dedup.record(a, at(1), 10_000);
        // Recorded again later (appended again after it was forgotten once):
        // the first record's expiry must not take the second one with it.
        dedup.record(b, at(2), 10_000);
        dedup.record(b, at(3), 10_600);
        assert_eq!(
            placements(&dedup, &[a, b], 10_999),
            [Some(at(1)), Some(at(3))]
        );
        assert_eq!(placements(&dedup, &[a, b], 11_001), [None, Some(at(3))]);
        assert_eq!(placements(&dedup, &[a, b], 11_601), [None, None]);
        assert_eq!(dedup.evicted(), 0, "expiry is not eviction");
    }

    #[test]
    fn past_the_limit_the_oldest_ids_are_evicted_and_counted() {
        let dedup = Dedup::new(Some(Duration::from_secs(60)));
        let key = |i: usize| dedup.key("/s", &i.to_string());
        let over = 5;
        for i in 0..DEDUP_ENTRIES_MAX + over {
            dedup.record(key(i), at(i as u64), 1_000);
        }
        assert_eq!(dedup.evicted(), over as u64);
        let oldest: Vec<Key> = (0..over + 1).map(key).collect();
        let mut expected = vec![None; over];
        expected.push(Some(at(over as u64)));
        assert_eq!(placements(&dedup, &oldest, 1_000), expected);
        let newest = key(DEDUP_ENTRIES_MAX + over - 1);
        assert_eq!(
            placements(&dedup, &[newest], 1_000),
            [Some(at((DEDUP_ENTRIES_MAX + over - 1) as u64))]
        );
    }
}
