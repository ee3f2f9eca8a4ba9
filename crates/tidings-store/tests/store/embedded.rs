//! The conformance suite on the embedded backend, and what only it must do.

use std::sync::Arc;

use tempfile::TempDir;
use tidings_store::{EmbeddedOptions, EmbeddedStore, LogOptions};
use tidings_types::ManualClock;

use crate::conformance::conformance;
use crate::support::{manual_clock, Backend};

/// A fresh directory per check, and a clock the check moves.
pub(crate) struct Embedded {
    dir: TempDir,
    clock: Arc<ManualClock>,
}

impl Backend for Embedded {
    type Store = EmbeddedStore;

    async fn open(&self) -> EmbeddedStore {
        let options = EmbeddedOptions {
            log: LogOptions {
                clock: self.clock.clone(),
                ..LogOptions::default()
            },
            ..EmbeddedOptions::default()
        };
        EmbeddedStore::open(self.dir.path(), options).unwrap()
    }

    async fn close(&self, store: EmbeddedStore) {
        store.close().unwrap();
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }
}

async fn embedded() -> Option<Embedded> {
    Some(Embedded {
        dir: tempfile::tempdir().unwrap(),
        clock: manual_clock(),
    })
}

conformance!(embedded());

/// The segment files of the store's log, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.join("log")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_multi_stream_append_is_recovered_whole_or_not_at_all() {
    use tidings_store::{
        EventStore, ExpectedVersion, Position, ReadStream, Selector, StreamAppend, StreamVersion,
    };

    use crate::support::{events, stream};

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let (a, b) = (stream("acct-a"), stream("acct-b"));
    let transfer = |n: u64, expected: ExpectedVersion| {
        vec![
            StreamAppend::new(a.clone(), expected, events("debited", n, 1)),
            StreamAppend::new(b.clone(), expected, events("credited", n, 1)),
        ]
    };
    store
        .append(transfer(0, ExpectedVersion::NoStream))
        .await
        .unwrap();
    let head_after_first = store.head().await.unwrap();
    store
        .append(transfer(1, ExpectedVersion::Exact(StreamVersion(0))))
        .await
        .unwrap();
    store.close().unwrap();
    drop(store);

    // The image a crash in the middle of writing the second append leaves: its
    // batch cut short. Every cut point must recover to exactly the first append.
    let segment = segments(dir.path()).pop().unwrap();
    let whole = std::fs::read(&segment).unwrap();
    let data_end = whole.iter().rposition(|&b| b != 0).unwrap() + 1;
    for cut in [data_end - 1, data_end - 20, data_end - 60] {
        let image = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), image.path());
        let torn = segments(image.path()).pop().unwrap();
        std::fs::write(&torn, &whole[..cut]).unwrap();

        let store = EmbeddedStore::open(image.path(), EmbeddedOptions::default()).unwrap();
        assert_eq!(
            store.head().await.unwrap(),
            head_after_first,
            "cut at {cut}"
        );
        for s in [&a, &b] {
            let read = store
                .read_stream(s, ReadStream::forward(StreamVersion(0)))
                .await
                .unwrap();
            assert_eq!(
                read.version,
                Some(StreamVersion(0)),
                "cut at {cut}: neither stream keeps half the append"
            );
        }
        // The rebuilt index accepts the next append where the log now ends.
        let again = store
            .append(transfer(1, ExpectedVersion::Exact(StreamVersion(0))))
            .await
            .unwrap();
        assert_eq!(again[0].first_position, head_after_first);
        let all = store
            .read_all(&Selector::All, Position::START, 100)
            .await
            .unwrap();
        assert_eq!(all.events.len(), 4);
        store.close().unwrap();
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
