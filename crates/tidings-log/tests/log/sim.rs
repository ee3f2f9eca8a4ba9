//! The log on a simulated disk, one seed at a time.
//!
//! Each seed draws a workload and a set of faults (power loss that drops,
//! tears or garbles unsynced writes and forgets unsynced directory entries,
//! failed syncs, a full disk, bit rot in data the log no longer writes) and
//! runs the real log on [`SimDisk`], appending one batch at a time, reading
//! back, crashing and reopening. After every reopen the oracle checks:
//!
//! - every acknowledged record is at its offset with its bytes (under
//!   `fsync=always`; under `never`, those acknowledged since the last clean
//!   close may be lost, as the policy says, but only from the end);
//! - nothing appears that was not appended, offsets are contiguous, and
//!   what appears after the acknowledged records is a prefix of the appends
//!   that failed, in order — after which it is held to the same standard:
//!   recovery syncs what it serves;
//! - the topic is whole or absent: present once its creation was answered,
//!   empty if it appears otherwise;
//! - damage is refused with the damaged file (and, for a segment, the
//!   position), never served: a read that does not answer the right bytes
//!   names the file a bit was flipped in, and a partition is refused as
//!   corrupt only for that file or after a power loss kept a later write and
//!   lost an earlier one (which recovery cannot tell from corruption).
//!
//! `TIDINGS_SIM_SEED=<n>` replays one seed; `TIDINGS_SIM_SEEDS` and
//! `TIDINGS_SIM_BASE` choose how many and from where (`scripts/sim` runs
//! them for as long as asked).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_log::sim::{Crash, Faults, Rng, SimDisk, Stats};
use tidings_log::{
    AppendError, FsyncPolicy, Log, LogOptions, OpenError, ReadError, Record, RecoveryError,
    Storage, TopicConfig,
};
use tidings_types::{Offset, PartitionId, TimestampMs};

use crate::support::{record, ManualClock};

const DATA: &str = "/data";
const TOPIC: &str = "t";

/// What one partition must hold.
#[derive(Default)]
struct Expected {
    /// Records at offsets `0..known.len()`: acknowledged, or served after a
    /// recovery.
    known: Vec<Record>,
    /// How many of `known` no crash may lose.
    durable: usize,
    /// Appends that failed, in order: a recovery may find them after `known`.
    pending: Vec<Record>,
    /// A read answered a flipped bit's damage; no more reads are checked.
    damaged: bool,
    /// A power loss kept a later write and lost an earlier one since this
    /// partition last recovered: recovery may refuse it as corrupt.
    reordered: bool,
}

/// How a seed ended, for the totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub appends_acked: u64,
    pub appends_failed: u64,
    /// Appends answered "disk full": never written, never to appear.
    pub appends_full: u64,
    /// Appends acknowledged after space was freed, without a restart.
    pub appends_after_space_freed: u64,
    pub crashes: u64,
    pub reopens_refused: u64,
    pub refused_as_corrupt: u64,
    pub reads_refused: u64,
    pub disk: Stats,
}

struct Run {
    seed: u64,
    rng: Rng,
    disk: SimDisk,
    faults: Faults,
    clock: Arc<ManualClock>,
    log: Option<Log>,
    config: TopicConfig,
    created: bool,
    parts: Vec<Expected>,
    next_id: u64,
    /// The file a bit was flipped in, if any.
    rotted: Option<PathBuf>,
    /// Power losses that reordered writes, when last looked at.
    reordered_seen: u64,
    /// A full disk was given its space back in this process.
    space_freed: bool,
    outcome: Outcome,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut rng = Rng::new(seed ^ 0x005E_ED0F_7D1D_1265);
        let faults = Faults {
            sync_failure_per_mille: [0, 0, 5, 40][rng.below(4) as usize],
            capacity_bytes: rng.chance(250).then(|| 4_000 + rng.below(40_000)),
        };
        let fsync = if rng.chance(700) {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Never
        };
        let config = TopicConfig {
            partitions: 1 + rng.below(2) as u32,
            fsync,
            segment_bytes: 1_024 + rng.below(3_000),
            segment_age: None,
            retention_age: None,
            retention_bytes: None,
            index_interval_bytes: 64 + rng.below(400) as u32,
        };
        Run {
            seed,
            disk: SimDisk::new(seed, faults),
            faults,
            clock: Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000))),
            log: None,
            parts: (0..config.partitions)
                .map(|_| Expected::default())
                .collect(),
            config,
            created: false,
            next_id: 0,
            rotted: None,
            reordered_seen: 0,
            space_freed: false,
            outcome: Outcome::default(),
            rng,
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!(
            "seed {}: {what}\n  config {:?}\n  faults {:?}\n  disk {:?}\n  replay: TIDINGS_SIM_SEED={} cargo test -p tidings-log --test log sim::one_seed",
            self.seed,
            self.config,
            self.faults,
            self.disk.stats(),
            self.seed
        )
    }

    fn options(&self) -> LogOptions {
        LogOptions {
            clock: self.clock.clone(),
            storage: Arc::new(self.disk.process()) as Arc<dyn Storage>,
            retention_check_interval: Duration::from_secs(3_600),
            ..LogOptions::default()
        }
    }

    fn always(&self) -> bool {
        self.config.fsync == FsyncPolicy::Always
    }

    /// Opens the log, with faults off when one try with them failed.
    fn open(&mut self) -> Result<(), String> {
        for attempt in 0..2 {
            match Log::open(DATA, self.options()) {
                Ok(log) => {
                    self.log = Some(log);
                    return self.check_topic();
                }
                Err(OpenError::TopicMeta { path, reason }) => {
                    if self.rotted.as_deref() == Some(&path) {
                        self.outcome.reopens_refused += 1;
                        return Err(String::new());
                    }
                    return Err(self.fail(format!(
                        "topic metadata {} refused: {reason}",
                        path.display()
                    )));
                }
                Err(e) if attempt == 0 => {
                    // An injected fault (a failed sync, a full disk) stopped the open.
                    self.outcome.reopens_refused += 1;
                    tracing::debug!(error = %e, "open failed under faults; retrying without");
                    self.crash(Crash::Process);
                    self.lift_faults();
                }
                Err(e) => {
                    return Err(self.fail(format!("the log does not open without faults: {e}")))
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn lift_faults(&mut self) {
        self.faults = Faults::default();
        self.disk.set_faults(self.faults);
    }

    fn crash(&mut self, crash: Crash) {
        self.space_freed = false;
        if std::env::var_os("TIDINGS_SIM_TRACE").is_some() {
            eprintln!("crash {crash:?}: {:?}", self.disk.stats());
        }
        self.disk.crash(crash);
        // The process is gone: dropping its log only finds dead handles.
        drop(self.log.take());
        self.outcome.crashes += 1;
    }

    /// After an open: the topic is whole or absent, each partition holds what
    /// it must.
    fn check_topic(&mut self) -> Result<(), String> {
        let log = self.log.as_ref().expect("open");
        let topic = match log.topic(TOPIC) {
            Ok(topic) => topic,
            Err(_) if !self.created => return Ok(()),
            Err(e) => return Err(self.fail(format!("the created topic is gone: {e}"))),
        };
        if topic.config().partitions != self.config.partitions {
            return Err(self.fail(format!(
                "the topic has {} partitions",
                topic.config().partitions
            )));
        }
        self.created = true;
        if self.disk.stats().reordered > self.reordered_seen {
            self.reordered_seen = self.disk.stats().reordered;
            for part in &mut self.parts {
                part.reordered = true;
            }
        }
        let refused: Vec<(PartitionId, Arc<RecoveryError>)> = topic.refused();
        for (id, error) in refused {
            let file = match &*error {
                RecoveryError::Corrupt { file, .. } => Some(file.clone()),
                _ => None,
            };
            let rot = file.is_some() && self.rotted == file;
            let known_damage = self.parts[id.0 as usize].damaged;
            let reordered = self.parts[id.0 as usize].reordered;
            if file.is_some() && (rot || reordered || known_damage) {
                self.outcome.refused_as_corrupt += u64::from(!known_damage);
                // Refused with its file and position; nothing more to check there.
                self.parts[id.0 as usize].damaged = true;
                continue;
            }
            if file.is_none() && self.faults != Faults::default() {
                // An injected fault during recovery; the next open retries.
                self.outcome.reopens_refused += 1;
                self.parts[id.0 as usize].pending.clear();
                continue;
            }
            return Err(self.fail(format!("partition {} refused: {error}", id.0)));
        }
        for i in 0..self.config.partitions {
            self.check_partition(i)?;
        }
        Ok(())
    }

    /// Reads a whole partition back and holds it to the oracle; what it
    /// serves becomes known (recovery made it durable).
    fn check_partition(&mut self, i: u32) -> Result<(), String> {
        if self.parts[i as usize].damaged {
            return Ok(());
        }
        let log = self.log.as_ref().expect("open");
        let Ok(p) = log.topic(TOPIC).and_then(|t| t.partition(PartitionId(i))) else {
            return Ok(());
        };
        let end = p.high_watermark();
        if p.log_start_offset() != Offset(0) {
            return Err(self.fail(format!("partition {i} starts at {}", p.log_start_offset())));
        }
        let mut served = Vec::new();
        while (served.len() as u64) < end.0 {
            match p.read_records(Offset(served.len() as u64), 64 * 1024) {
                Ok(records) if !records.is_empty() => {
                    for r in records {
                        if r.offset.0 != served.len() as u64 {
                            return Err(self.fail(format!(
                                "partition {i}: offset {} after {}",
                                r.offset,
                                served.len()
                            )));
                        }
                        served.push(r.record);
                    }
                }
                Ok(_) => return Err(self.fail(format!("partition {i}: empty read below {end}"))),
                Err(e) => {
                    if self.refused_rightly(&e) {
                        self.parts[i as usize].damaged = true;
                        return Ok(());
                    }
                    return Err(self.fail(format!("partition {i}: read at {}: {e}", served.len())));
                }
            }
        }
        let always = self.always();
        let part = &mut self.parts[i as usize];
        let must = if always {
            part.known.len()
        } else {
            part.durable
        };
        if served.len() < must {
            let lost = must - served.len();
            return Err(self.fail(format!(
                "partition {i}: {lost} acknowledged records lost (holds {}, must hold {must})",
                served.len()
            )));
        }
        let part = &self.parts[i as usize];
        for (o, r) in served.iter().enumerate() {
            let ok = match part.known.get(o) {
                Some(k) => k == r,
                None => part.pending.get(o - part.known.len()) == Some(r),
            };
            if !ok {
                return Err(self.fail(format!(
                    "partition {i}: offset {o} holds a record that was never appended there"
                )));
            }
        }
        let part = &mut self.parts[i as usize];
        part.durable = served.len();
        part.reordered = false;
        part.known = served;
        part.pending.clear();
        Ok(())
    }

    /// A read error is right only when it names the file whose bit flipped.
    fn refused_rightly(&mut self, e: &ReadError) -> bool {
        let file = match e {
            ReadError::Corrupt { file, .. } | ReadError::Io { path: file, .. } => file,
            _ => return false,
        };
        let right = self.rotted.as_deref() == Some(file.as_path());
        if right {
            self.outcome.reads_refused += 1;
        }
        right
    }

    fn append(&mut self, i: u32) -> Result<(), String> {
        let log = self.log.as_ref().expect("open");
        let Ok(p) = log.topic(TOPIC).and_then(|t| t.partition(PartitionId(i))) else {
            return Ok(());
        };
        let count = 1 + self.rng.below(4);
        let now = tidings_types::Clock::now(&*self.clock).0;
        let records: Vec<Record> = (0..count)
            .map(|_| {
                self.next_id += 1;
                record(self.next_id, self.rng.below(300) as usize, now)
            })
            .collect();
        let always = self.always();
        let result = p.append_blocking(&records);
        let part = &self.parts[i as usize];
        match result {
            Ok(appended) => {
                self.outcome.appends_acked += 1;
                self.outcome.appends_after_space_freed += u64::from(self.space_freed);
                if part.damaged {
                    return Ok(());
                }
                if !part.pending.is_empty() {
                    return Err(self.fail(format!("partition {i} took an append after one failed")));
                }
                if appended.base_offset.0 != part.known.len() as u64 {
                    return Err(self.fail(format!(
                        "partition {i}: appended at {} after {} records",
                        appended.base_offset,
                        part.known.len()
                    )));
                }
                let part = &mut self.parts[i as usize];
                part.known.extend(records);
                if always {
                    part.durable = part.known.len();
                }
            }
            Err(AppendError::DiskFull { path, .. }) => {
                if self.faults.capacity_bytes.is_none() {
                    return Err(self.fail(format!(
                        "partition {i}: answered disk full ({}) with space to spare",
                        path.display()
                    )));
                }
                // Refused before anything was written: these never appear,
                // and the partition goes on once space is freed.
                if let Some(reason) = p.failure() {
                    return Err(self.fail(format!(
                        "partition {i} stopped after answering disk full: {reason}"
                    )));
                }
                self.outcome.appends_full += 1;
            }
            Err(_) => {
                self.outcome.appends_failed += 1;
                self.parts[i as usize].pending.extend(records);
            }
        }
        Ok(())
    }

    /// Reads one known record back without a crash.
    fn read_one(&mut self, i: u32) -> Result<(), String> {
        let part = &self.parts[i as usize];
        if part.known.is_empty() || part.damaged {
            return Ok(());
        }
        let o = self.rng.below(part.known.len() as u64);
        let log = self.log.as_ref().expect("open");
        let Ok(p) = log.topic(TOPIC).and_then(|t| t.partition(PartitionId(i))) else {
            return Ok(());
        };
        if o >= p.high_watermark().0 {
            // Under `never`, acknowledged records are visible at once; under
            // `always`, only once synced, and a failed partition stops there.
            return Ok(());
        }
        match p.read_records(Offset(o), 4096) {
            Ok(records) => match records.first() {
                Some(r)
                    if r.offset.0 == o && r.record == self.parts[i as usize].known[o as usize] =>
                {
                    Ok(())
                }
                _ => Err(self.fail(format!("partition {i}: offset {o} reads back wrong"))),
            },
            Err(e) if self.refused_rightly(&e) => {
                self.parts[i as usize].damaged = true;
                Ok(())
            }
            Err(e) => Err(self.fail(format!("partition {i}: read at {o}: {e}"))),
        }
    }

    /// Flips a bit in a file the log no longer writes: a sealed segment, its
    /// index, the topic's metadata.
    fn rot(&mut self) {
        let fs = self.disk.process();
        let mut candidates = vec![Path::new(DATA)
            .join("topics")
            .join(TOPIC)
            .join("topic.meta")];
        for p in 0..self.config.partitions {
            let dir = Path::new(DATA)
                .join("topics")
                .join(TOPIC)
                .join(p.to_string());
            let Ok(entries) = fs.list(&dir) else { continue };
            let mut names: Vec<String> = entries
                .into_iter()
                .filter_map(|e| e.name.into_string().ok())
                .collect();
            names.sort();
            let active = names.iter().rfind(|n| n.ends_with(".log")).cloned();
            for n in names {
                let sealed = active
                    .as_ref()
                    .is_some_and(|a| n[..20.min(n.len())] < a[..20.min(a.len())]);
                if sealed
                    && (n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex"))
                {
                    candidates.push(dir.join(n));
                }
            }
        }
        let path = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        let len = fs.file_len(&path).unwrap_or(0);
        if len > 0 && self.disk.flip_bit(&path, self.rng.below(len * 8)) {
            self.rotted = Some(path);
        }
    }

    fn run(mut self) -> Result<Outcome, String> {
        match self.open() {
            Ok(()) => {}
            Err(e) if e.is_empty() => return Ok(self.outcome),
            Err(e) => return Err(e),
        }
        let steps = 20 + self.rng.below(60);
        for _ in 0..steps {
            if !self.created {
                let log = self.log.as_ref().expect("open");
                let created = log.create_topic(TOPIC, self.config.clone());
                if std::env::var_os("TIDINGS_SIM_TRACE").is_some() {
                    eprintln!("create: {created:?}");
                }
                if created.is_ok() {
                    self.created = true;
                    continue;
                }
            }
            let roll = self.rng.below(100);
            let i = self.rng.below(u64::from(self.config.partitions)) as u32;
            match roll {
                0..=64 if self.created => self.append(i)?,
                65..=79 if self.created => self.read_one(i)?,
                80..=81 => self.clock.advance(Duration::from_secs(1)),
                82..=83 if self.faults.capacity_bytes.is_some() => {
                    // Space returns while the log runs: appends go on, no restart.
                    self.faults.capacity_bytes = None;
                    self.disk.set_faults(self.faults);
                    self.space_freed = true;
                }
                _ => {
                    let crash = match self.rng.below(3) {
                        0 => None,
                        1 => Some(Crash::Process),
                        _ => Some(Crash::PowerLoss),
                    };
                    match crash {
                        Some(crash) => self.crash(crash),
                        None => {
                            if let Some(log) = self.log.take() {
                                // A failed partition's close fails; that is its answer.
                                let clean = log.close().is_ok();
                                drop(log);
                                if clean && self.faults == Faults::default() {
                                    for part in &mut self.parts {
                                        part.durable = part.known.len();
                                    }
                                }
                            }
                            self.crash(Crash::Process);
                        }
                    }
                    if crash == Some(Crash::PowerLoss)
                        && self.rotted.is_none()
                        && self.rng.chance(150)
                    {
                        self.rot();
                    }
                    if self.rng.chance(400) {
                        self.lift_faults();
                    }
                    match self.open() {
                        Ok(()) => {}
                        Err(e) if e.is_empty() => return Ok(self.finish()),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // The end: faults off, a clean close, and everything reads back.
        self.lift_faults();
        self.crash(Crash::Process);
        match self.open() {
            Ok(()) => {}
            Err(e) if e.is_empty() => return Ok(self.finish()),
            Err(e) => return Err(e),
        }
        Ok(self.finish())
    }

    fn finish(mut self) -> Outcome {
        self.outcome.disk = self.disk.stats();
        self.outcome
    }
}

/// Runs one seed; the error says what broke and how to replay it.
pub fn run_seed(seed: u64) -> Result<Outcome, String> {
    Run::new(seed).run()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Runs `count` seeds from `base` on every core; the failures, and totals.
fn run_seeds(base: u64, count: u64) -> (Vec<String>, Outcome, Duration) {
    let started = Instant::now();
    // Each seed waits on its partitions' writer threads: two seeds a core keep
    // the cores busy.
    let threads = 2 * std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let results: Vec<(Vec<String>, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    let mut total = Outcome::default();
                    let mut seed = base + t;
                    while seed < base + count {
                        match run_seed(seed) {
                            Ok(o) => add(&mut total, &o),
                            Err(e) => failures.push(e),
                        }
                        seed += threads;
                    }
                    (failures, total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a seed thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut total = Outcome::default();
    for (f, o) in results {
        failures.extend(f);
        add(&mut total, &o);
    }
    (failures, total, started.elapsed())
}

fn add(total: &mut Outcome, o: &Outcome) {
    total.appends_acked += o.appends_acked;
    total.appends_failed += o.appends_failed;
    total.appends_full += o.appends_full;
    total.appends_after_space_freed += o.appends_after_space_freed;
    total.crashes += o.crashes;
    total.reopens_refused += o.reopens_refused;
    total.refused_as_corrupt += o.refused_as_corrupt;
    total.reads_refused += o.reads_refused;
    total.disk.writes += o.disk.writes;
    total.disk.syncs += o.disk.syncs;
    total.disk.sync_failures += o.disk.sync_failures;
    total.disk.full += o.disk.full;
    total.disk.dropped += o.disk.dropped;
    total.disk.torn += o.disk.torn;
    total.disk.lost_entries += o.disk.lost_entries;
    total.disk.reordered += o.disk.reordered;
    total.disk.crashes += o.disk.crashes;
}

/// The seeds of the test command: `TIDINGS_SIM_SEEDS` (10 000 by default)
/// from `TIDINGS_SIM_BASE` (0).
#[test]
fn seeds() {
    let count = env_u64("TIDINGS_SIM_SEEDS").unwrap_or(10_000);
    let base = env_u64("TIDINGS_SIM_BASE").unwrap_or(0);
    let (failures, total, took) = run_seeds(base, count);
    eprintln!(
        "simulated {count} seeds from {base} in {:.1} s ({:.0} seeds/min): {total:?}",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64() * 60.0
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The faults happened: a run that injects nothing proves nothing.
    if count >= 1_000 {
        let d = total.disk;
        assert!(
            d.sync_failures > 0 && d.full > 0 && d.torn > 0 && d.dropped > 0 && d.lost_entries > 0,
            "{d:?}"
        );
        assert!(
            total.reads_refused + total.refused_as_corrupt > 0,
            "{total:?}"
        );
        assert!(
            total.appends_full > 0 && total.appends_after_space_freed > 0,
            "{total:?}"
        );
    }
}

/// One seed, from `TIDINGS_SIM_SEED` (or seed 1), run twice: the same seed
/// must make the same run.
#[test]
fn one_seed() {
    let seed = env_u64("TIDINGS_SIM_SEED").unwrap_or(1);
    let first = run_seed(seed);
    if let Err(e) = &first {
        panic!("{e}");
    }
    assert_eq!(
        first,
        run_seed(seed),
        "seed {seed} ran differently the second time"
    );
}
