//! The embedded store's in-memory index: where each stream's events sit in the log,
//! each category's positions, and each event id's position.
//!
//! Everything here is derived from the log and rebuilt from it on open; the log is
//! the only source of truth. The index may hold entries of appends still on their
//! way to disk (queued in order behind the log's writer); readers only ever look at
//! positions below the log's durable high-watermark.

use std::collections::HashMap;

use crate::types::{category_of, StreamName, StreamState};

/// An event id as the index keys it: UUIDs (the default) in 16 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IdKey {
    Uuid(u128),
    Text(Box<str>),
}

impl IdKey {
    pub(crate) fn of(id: &str) -> IdKey {
        match uuid::Uuid::try_parse(id) {
            // Only the canonical hyphenated lowercase form maps to the number, so
            // two ids that differ as text never share a key.
            Ok(u) if u.hyphenated().to_string() == id => IdKey::Uuid(u.as_u128()),
            _ => IdKey::Text(id.into()),
        }
    }
}

/// One stream: the log position of each version, and its metadata.
#[derive(Debug, Default)]
pub(crate) struct StreamEntry {
    /// `positions[v]` is the log position of version `v`.
    pub(crate) positions: Vec<u64>,
    pub(crate) state: StreamState,
}

/// The whole index.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) streams: HashMap<StreamName, StreamEntry>,
    pub(crate) categories: HashMap<Box<str>, Vec<u64>>,
    pub(crate) ids: HashMap<IdKey, u64>,
    /// The log position the next record gets.
    pub(crate) next: u64,
}

/// What [`Index::add_event`] changed, so it can be undone.
pub(crate) enum Undo {
    Event {
        stream: StreamName,
        id: IdKey,
        previous_state: StreamState,
    },
    Metadata {
        stream: StreamName,
        previous_state: StreamState,
    },
}

impl Index {
    /// The state of `stream`; default for a stream never written.
    pub(crate) fn state(&self, stream: &StreamName) -> StreamState {
        self.streams
            .get(stream)
            .map(|s| s.state)
            .unwrap_or_default()
    }

    /// Records event `version` of `stream` with `id` at `position`.
    pub(crate) fn add_event(
        &mut self,
        stream: &StreamName,
        version: u64,
        id: &str,
        position: u64,
    ) -> Result<Undo, String> {
        let entry = self.streams.entry(stream.clone()).or_default();
        if version != entry.positions.len() as u64 {
            return Err(format!(
                "stream {stream} has {} events, but the next one has version {version}",
                entry.positions.len()
            ));
        }
        let previous_state = entry.state;
        entry.positions.push(position);
        entry.state.last = Some(version);
        self.categories
            .entry(category_of(stream.as_str()).into())
            .or_default()
            .push(position);
        let id = IdKey::of(id);
        self.ids.insert(id.clone(), position);
        self.next = position + 1;
        Ok(Undo::Event {
            stream: stream.clone(),
            id,
            previous_state,
        })
    }

    /// Records new metadata of `stream`, written at `position`.
    pub(crate) fn set_metadata(
        &mut self,
        stream: &StreamName,
        state: StreamState,
        position: u64,
    ) -> Undo {
        let entry = self.streams.entry(stream.clone()).or_default();
        let previous_state = entry.state;
        entry.state.truncate_before = state.truncate_before;
        entry.state.metadata = state.metadata;
        self.next = position + 1;
        Undo::Metadata {
            stream: stream.clone(),
            previous_state,
        }
    }

    /// Undoes changes, newest first; `next` goes back to `next`.
    pub(crate) fn undo(&mut self, undo: Vec<Undo>, next: u64) {
        for change in undo.into_iter().rev() {
            match change {
                Undo::Event {
                    stream,
                    id,
                    previous_state,
                } => {
                    self.ids.remove(&id);
                    let entry = self.streams.get_mut(&stream).expect("undone stream exists");
                    entry.positions.pop();
                    entry.state = previous_state;
                    if let Some(c) = self.categories.get_mut(category_of(stream.as_str())) {
                        c.pop();
                    }
                }
                Undo::Metadata {
                    stream,
                    previous_state,
                } => {
                    self.streams
                        .get_mut(&stream)
                        .expect("undone stream exists")
                        .state = previous_state;
                }
            }
        }
        self.streams
            .retain(|_, s| !s.positions.is_empty() || s.state != StreamState::default());
        self.categories.retain(|_, c| !c.is_empty());
        self.next = next;
    }
}
