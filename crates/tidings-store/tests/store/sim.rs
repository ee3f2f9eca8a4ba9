//! The embedded event store on the simulated disk, one seed at a time: its
//! log (the only thing its index is rebuilt from) and its checkpoints file go
//! through the log's `Storage`, so a seed's power losses drop, tear or
//! garble what the store left unsynced and its failed syncs reach both.
//!
//! Each seed draws its sync failures and 30–90 steps over four streams:
//! appends of 1–3 events expecting the stream's version (or any), saves of a
//! subscription's checkpoint at the head, clean closes, kills and power
//! losses. After every reopen the oracle checks:
//!
//! - every event whose append was answered is in its stream at its version,
//!   with its id, and the global positions are those the append answered;
//! - after them come only events of appends that failed, whole and in the
//!   order they were tried (then held to the same standard: what is served
//!   after a recovery must stay);
//! - the checkpoint is never behind the last save that was answered.
//!
//! `TIDINGS_STORE_SIM_SEED=<n>` replays one seed; `TIDINGS_STORE_SIM_SEEDS`
//! sets how many the test runs and `TIDINGS_STORE_SIM_BASE` the first (defaults 500 and 0).

use std::sync::Arc;
use std::time::Duration;

use tidings_log::sim::{Crash, Faults, Rng, SimDisk};
use tidings_log::Storage;
use tidings_store::{
    EmbeddedOptions, EmbeddedStore, EventStore, ExpectedVersion, LogOptions, Position, ReadStream,
    StreamAppend, StreamName, StreamVersion,
};
use tidings_types::{CloudEvent, ManualClock, TimestampMs};

const DIR: &str = "/store";
const STREAMS: usize = 4;
const CHECKPOINT: &str = "projection";

/// One stream's events as the oracle knows them.
#[derive(Default)]
struct Stream {
    /// Ids at versions 0.., each with the position its append answered
    /// (`None` for one found after a recovery).
    known: Vec<(String, Option<u64>)>,
    /// Appends that failed since the last reopen, in order: the next
    /// recovery may find them after `known`.
    failed: Vec<Vec<String>>,
}

struct Sim {
    seed: u64,
    disk: SimDisk,
    faults: Faults,
    clock: Arc<ManualClock>,
    rt: tokio::runtime::Runtime,
    store: Option<EmbeddedStore>,
    rng: Rng,
    streams: Vec<Stream>,
    next_event: u64,
    /// The last checkpoint whose save was answered.
    checkpoint: Option<u64>,
    appends: u64,
    power_losses: u64,
    refused: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let faults = Faults {
            sync_failure_per_mille: [0, 0, 5, 40][rng.below(4) as usize],
            capacity_bytes: None,
        };
        let mut sim = Sim {
            seed,
            disk: SimDisk::new(seed, faults),
            faults,
            clock: Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000))),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            store: None,
            rng,
            streams: (0..STREAMS).map(|_| Stream::default()).collect(),
            next_event: 0,
            checkpoint: None,
            appends: 0,
            power_losses: 0,
            refused: 0,
        };
        sim.open();
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what}\n  faults {:?}\n  disk {:?}\n  replay: TIDINGS_STORE_SIM_SEED={} cargo test -p tidings-store --test store sim::one_seed",
            self.seed,
            self.faults,
            self.disk.stats(),
            self.seed
        )
    }

    fn s(&self) -> &EmbeddedStore {
        self.store.as_ref().expect("an open store")
    }

    fn options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            log: LogOptions {
                clock: self.clock.clone(),
                storage: Arc::new(self.disk.process()) as Arc<dyn Storage>,
                retention_check_interval: Duration::from_secs(3_600),
                ..LogOptions::default()
            },
            ..EmbeddedOptions::default()
        }
    }

    fn name(i: usize) -> StreamName {
        StreamName::new(&format!("order-{i}")).unwrap()
    }

    /// Opens the store (after a try under faults that fails, the process
    /// exits and another opens without them), then
    /// checks every stream and the checkpoint.
    fn open(&mut self) {
        let _entered = self.rt.enter();
        let store = match EmbeddedStore::open(DIR, self.options()) {
            Ok(s) => s,
            Err(_) => {
                // The process that failed to open exits; another starts.
                self.disk.crash(Crash::Process);
                self.disk.set_faults(Faults::default());
                let s = EmbeddedStore::open(DIR, self.options())
                    .unwrap_or_else(|e| self.fail(format!("the store does not open: {e}")));
                self.disk.set_faults(self.faults);
                s
            }
        };
        self.store = Some(store);
        for i in 0..STREAMS {
            self.check_stream(i);
        }
        let found = self
            .rt
            .block_on(self.s().load_checkpoint(CHECKPOINT))
            .unwrap_or_else(|e| self.fail(format!("load the checkpoint: {e}")))
            .map(|p| p.0);
        if found < self.checkpoint {
            self.fail(format!(
                "the checkpoint is at {found:?}; {:?} was answered",
                self.checkpoint
            ));
        }
    }

    /// The stream holds its answered events, then whole failed appends in
    /// order, which from now on it must keep.
    fn check_stream(&mut self, i: usize) {
        let slice = self
            .rt
            .block_on(
                self.s()
                    .read_stream(&Self::name(i), ReadStream::forward(StreamVersion(0))),
            )
            .unwrap_or_else(|e| self.fail(format!("read stream {i}: {e}")));
        let ids: Vec<(String, u64)> = slice
            .events
            .iter()
            .map(|e| (e.event.id().to_owned(), e.position.0))
            .collect();
        let stream = &self.streams[i];
        if ids.len() < stream.known.len() {
            self.fail(format!(
                "stream {i} holds {} events; {} were answered or served",
                ids.len(),
                stream.known.len()
            ));
        }
        for (v, ((id, at), (want, answered))) in ids.iter().zip(&stream.known).enumerate() {
            if id != want || answered.is_some_and(|p| p != *at) {
                self.fail(format!(
                    "stream {i} version {v}: {id} at {at}, expected {want} at {answered:?}"
                ));
            }
        }
        let mut rest: Vec<String> = ids[stream.known.len()..]
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let mut adopted = Vec::new();
        for append in &stream.failed {
            if rest.is_empty() {
                break;
            }
            if rest.len() < append.len() || rest[..append.len()] != append[..] {
                self.fail(format!(
                    "stream {i}: after the answered events comes {rest:?}, not the failed append {append:?}"
                ));
            }
            adopted.extend(rest.drain(..append.len()));
        }
        if !rest.is_empty() {
            self.fail(format!("stream {i}: {rest:?} were never appended there"));
        }
        // Served now: owed from here on. A failed append not there now
        // is gone for good (recovery kept what it found and synced it).
        let stream = &mut self.streams[i];
        stream
            .known
            .extend(adopted.into_iter().map(|id| (id, None)));
        stream.failed.clear();
    }

    fn append(&mut self) {
        let i = self.rng.below(STREAMS as u64) as usize;
        let n = 1 + self.rng.below(3);
        let ids: Vec<String> = (0..n)
            .map(|_| {
                self.next_event += 1;
                format!("ev-{}", self.next_event)
            })
            .collect();
        let events = ids
            .iter()
            .map(|id| CloudEvent::new("/orders", "order.changed").with_id(id.clone()))
            .collect();
        // Versions count from 0: the last event's is one below the count.
        let count = self.streams[i].known.len() as u64;
        let expected = if self.rng.below(3) == 0 {
            ExpectedVersion::Any
        } else if count == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(StreamVersion(count - 1))
        };
        let append = StreamAppend::new(Self::name(i), expected, events);
        match self.rt.block_on(self.s().append(vec![append])) {
            Ok(answers) => {
                self.appends += 1;
                let a = &answers[0];
                // Every failure is followed by a restart, whose check
                // settled it: the append goes right after what is known.
                let first = a.first_version.0 as usize;
                if first != self.streams[i].known.len() {
                    self.fail(format!(
                        "stream {i}: an append answered at version {first} after {} events",
                        self.streams[i].known.len()
                    ));
                }
                let stream = &mut self.streams[i];
                for (k, id) in ids.into_iter().enumerate() {
                    stream.known.push((id, Some(a.first_position.0 + k as u64)));
                }
            }
            Err(_) => {
                self.refused += 1;
                self.streams[i].failed.push(ids);
                // The store stops after a failed write (fail-stop).
                let crash = if self.rng.below(2) == 0 {
                    Crash::Process
                } else {
                    Crash::PowerLoss
                };
                self.restart(Some(crash));
            }
        }
    }

    fn save_checkpoint(&mut self) {
        let head = self
            .streams
            .iter()
            .flat_map(|s| s.known.iter().filter_map(|(_, p)| *p))
            .max();
        let Some(head) = head else { return };
        let at = head.max(self.checkpoint.unwrap_or(0));
        if self
            .rt
            .block_on(self.s().save_checkpoint(CHECKPOINT, Position(at)))
            .is_ok()
        {
            self.checkpoint = Some(at);
        }
    }

    fn restart(&mut self, how: Option<Crash>) {
        let store = self.store.take().expect("an open store");
        match how {
            None => {
                // A clean close may fail under faults: then it is a kill.
                let _ = store.close();
                drop(store);
            }
            Some(crash) => {
                drop(store);
                self.disk.crash(crash);
                if crash == Crash::PowerLoss {
                    self.power_losses += 1;
                }
            }
        }
        self.open();
    }

    fn step(&mut self) {
        match self.rng.below(12) {
            0..=6 => self.append(),
            7 => self.save_checkpoint(),
            8 => self
                .clock
                .advance(Duration::from_millis(self.rng.below(2_000))),
            9 => self.restart(None),
            10 => self.restart(Some(Crash::Process)),
            _ => self.restart(Some(Crash::PowerLoss)),
        }
    }
}

struct Outcome {
    appends: u64,
    power_losses: u64,
    refused: u64,
}

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let steps = 30 + sim.rng.below(60);
    for _ in 0..steps {
        sim.step();
    }
    sim.faults = Faults::default();
    sim.disk.set_faults(sim.faults);
    sim.restart(Some(Crash::PowerLoss));
    Outcome {
        appends: sim.appends,
        power_losses: sim.power_losses,
        refused: sim.refused,
    }
}

#[test]
fn seeds() {
    let count: u64 = std::env::var("TIDINGS_STORE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let base: u64 = std::env::var("TIDINGS_STORE_SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let (mut appends, mut losses, mut refused) = (0, 0, 0);
    for seed in base..base + count {
        let o = run(seed);
        appends += o.appends;
        losses += o.power_losses;
        refused += o.refused;
    }
    eprintln!(
        "event store on the simulated disk: {count} seeds in {:.1} s; {appends} appends answered, {refused} refused under injected faults, {losses} power losses",
        started.elapsed().as_secs_f64()
    );
    assert!(losses > count && refused > 0);
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("TIDINGS_STORE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    run(seed);
}

/// A full disk (the simulated one, 64 KiB past what the opened store
/// uses): the append that finds it is refused as a full disk — which the
/// front ends answer 507 `storage_full` — and so is every write after it,
/// saying what to do, until the store is reopened; reads go on. Once there
/// is space again (the simulated disk's capacity lifted, as when someone
/// deletes other files), the reopened store appends again, and holds every
/// answered event and none of the refused ones.
#[test]
fn a_full_disk_is_told_apart_and_the_reopened_store_writes_again() {
    use tidings_types::ErrorKind;

    let room = Faults {
        sync_failure_per_mille: 0,
        capacity_bytes: None,
    };
    let disk = SimDisk::new(7, room);
    let storage: Arc<dyn Storage> = Arc::new(disk.process());
    let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
    let options = || EmbeddedOptions {
        log: LogOptions {
            clock: clock.clone(),
            storage: Arc::clone(&storage),
            retention_check_interval: Duration::from_secs(3_600),
            ..LogOptions::default()
        },
        ..EmbeddedOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let store = EmbeddedStore::open(DIR, options()).unwrap();
    disk.set_faults(Faults {
        capacity_bytes: Some(disk.used_bytes() + 64 * 1024),
        ..room
    });
    let stream = StreamName::new("order-1").unwrap();
    let event = |n: usize| {
        CloudEvent::new("/orders", "order.changed")
            .with_id(format!("e-{n}"))
            .with_data("application/octet-stream", vec![b'x'; 2048])
    };
    let mut answered = 0;
    let refused = loop {
        assert!(answered < 1_000, "the disk never filled");
        let append = StreamAppend::new(stream.clone(), ExpectedVersion::Any, vec![event(answered)]);
        match rt.block_on(store.append(vec![append])) {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
    };
    assert!(answered >= 2, "the disk filled after {answered} appends");
    assert_eq!(refused.kind(), ErrorKind::StorageFull, "{refused}");
    let again = StreamAppend::new(
        stream.clone(),
        ExpectedVersion::Any,
        vec![event(answered + 1)],
    );
    let e = rt.block_on(store.append(vec![again])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(e.to_string().contains("free space and reopen"), "{e}");
    let read = |store: &EmbeddedStore| {
        rt.block_on(store.read_stream(&stream, ReadStream::forward(StreamVersion(0))))
            .unwrap()
            .events
            .iter()
            .map(|r| r.event.id().to_owned())
            .collect::<Vec<_>>()
    };
    let expected: Vec<String> = (0..answered).map(|n| format!("e-{n}")).collect();
    assert_eq!(read(&store), expected, "reads go on");
    store.close().unwrap();
    drop(store);

    disk.set_faults(room);
    let store = EmbeddedStore::open(DIR, options()).unwrap();
    assert_eq!(read(&store), expected, "answered events, no refused one");
    let append = StreamAppend::new(
        stream.clone(),
        ExpectedVersion::Exact(StreamVersion(answered as u64 - 1)),
        vec![event(answered + 2)],
    );
    rt.block_on(store.append(vec![append])).unwrap();
    store.close().unwrap();
}
