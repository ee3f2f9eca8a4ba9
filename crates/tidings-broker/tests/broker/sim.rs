//! The broker on the simulated disk, one seed at a time: its queue group's
//! journal and snapshots, a stream group's committed offsets, the producer-id
//! block and the topics' settings all go through the log's `Storage`, so a
//! seed's power losses drop, tear or garble everything the broker left
//! unsynced, and its failed syncs and full disk reach the broker's own files
//! as they reach the log.
//!
//! Each seed draws its faults and 40–120 steps: publishes (events with ids
//! of their own, and now and then one published before, which dedup must
//! answer with its first place and not store), receives, answers (ack, nack, reject), commits of a stream
//! group's offsets, producer ids, clock moves, clean closes, process kills and power
//! losses. Then the faults are lifted, the broker restarts, and everything
//! left is received and acked. The oracle:
//!
//! - an event whose ack was answered is never delivered again, across every
//!   restart and power loss;
//! - every event whose publish was answered ends acked or dead-lettered —
//!   none lost — and none is dead-lettered twice or both acked and
//!   dead-lettered; nothing is delivered that was never published (an event
//!   whose publish failed may appear or not);
//! - a committed offset whose commit was answered never goes back, and no
//!   producer id is handed out twice;
//! - an event published again is answered as a duplicate at the place its
//!   first publish was answered with (the dedup index, rebuilt from the log
//!   at every open).
//!
//! `TIDINGS_BROKER_SIM_SEED=<n>` replays one seed; `TIDINGS_BROKER_SIM_SEEDS`
//! sets how many the test runs and `TIDINGS_BROKER_SIM_BASE` the first (defaults 1000 and 0).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tidings_broker::{
    Backoff, Broker, BrokerOptions, CommittedOffset, Delivery, LogOptions, QueueConfig, QueueError,
    StartPosition, TopicSpec,
};
use tidings_log::sim::{Crash, Faults, Rng, SimDisk};
use tidings_log::Storage;
use tidings_types::{CloudEvent, ManualClock, Offset, PartitionId, TimestampMs, TopicName};

const DATA: &str = "/data";
const TOPIC: &str = "jobs";
const QUEUE: &str = "workers";
const STREAM: &str = "readers";
const PARTITIONS: u32 = 2;

fn id_of(d: &Delivery) -> String {
    match &d.entry.payload {
        tidings_broker::Payload::Event(e) => e.id().to_owned(),
        tidings_broker::Payload::Raw(_) => panic!("a raw record in the queue"),
    }
}

struct Sim {
    seed: u64,
    disk: SimDisk,
    faults: Faults,
    clock: Arc<ManualClock>,
    rt: tokio::runtime::Runtime,
    broker: Option<Broker>,
    rng: Rng,
    next_event: u64,
    /// Events whose publish was answered.
    published: BTreeSet<String>,
    /// Where each answered event was stored, for the dedup check.
    places: HashMap<String, (u32, u64)>,
    /// Events whose publish failed: they may be stored or not.
    maybe: BTreeSet<String>,
    acked: BTreeSet<String>,
    /// Events that may have been dead-lettered by an operation that failed
    /// on a fault (a write between the dead letter's append and its
    /// resolution): they may be dead-lettered again, or delivered and acked.
    unsure: BTreeSet<String>,
    held: HashMap<String, Delivery>,
    /// The highest offset whose commit was answered, per partition.
    committed: BTreeMap<u32, u64>,
    /// Producer ids handed out (Kafka's InitProducerId): never twice.
    producer_ids: BTreeSet<i64>,
    /// What each partition's stream reader has read up to (next offset).
    read_to: BTreeMap<u32, u64>,
    /// Counts, for the report.
    power_losses: u64,
    kills: u64,
    refused_answers: u64,
    trace: bool,
}

impl Sim {
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("seed {}: {}", self.seed, what());
        }
    }

    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let faults = Faults {
            sync_failure_per_mille: [0, 0, 5, 40][rng.below(4) as usize],
            capacity_bytes: None,
        };
        let clock = Arc::new(ManualClock::new(TimestampMs(1_700_000_000_000)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut sim = Sim {
            seed,
            disk: SimDisk::new(seed, Faults::default()),
            faults,
            clock,
            rt,
            broker: None,
            rng,
            next_event: 0,
            published: BTreeSet::new(),
            places: HashMap::new(),
            maybe: BTreeSet::new(),
            acked: BTreeSet::new(),
            unsure: BTreeSet::new(),
            held: HashMap::new(),
            committed: BTreeMap::new(),
            producer_ids: BTreeSet::new(),
            read_to: BTreeMap::new(),
            power_losses: 0,
            kills: 0,
            refused_answers: 0,
            trace: std::env::var_os("TIDINGS_BROKER_SIM_TRACE").is_some(),
        };
        sim.open();
        let b = sim.b();
        // Dedup on: its index is rebuilt from the log at every open.
        let spec = TopicSpec {
            dedup_window: Some(Duration::from_secs(3_600)),
            ..TopicSpec::with_partitions(PARTITIONS)
        };
        b.create_topic(TOPIC, spec).unwrap();
        let config = QueueConfig {
            ack_timeout: Duration::from_secs(5),
            max_deliveries: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                factor: 2,
                max: Duration::from_secs(1),
            },
            key_ordering: false,
        };
        b.create_queue_group(QUEUE, TOPIC, config, StartPosition::Earliest)
            .unwrap();
        sim.disk.set_faults(sim.faults);
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what}\n  faults {:?}\n  disk {:?}\n  replay: TIDINGS_BROKER_SIM_SEED={} cargo test -p tidings-broker --test broker sim::one_seed",
            self.seed,
            self.faults,
            self.disk.stats(),
            self.seed
        )
    }

    fn b(&self) -> &Broker {
        self.broker.as_ref().expect("an open broker")
    }

    fn options(&self) -> BrokerOptions {
        BrokerOptions {
            log: LogOptions {
                clock: self.clock.clone(),
                storage: Arc::new(self.disk.process()) as Arc<dyn Storage>,
                retention_check_interval: Duration::from_secs(3_600),
                ..LogOptions::default()
            },
            ..BrokerOptions::default()
        }
    }

    /// Opens the broker; a try under faults that fails (an open refused for
    /// a failed sync is the fault's, not a finding) ends its process, and
    /// another opens without faults; then they come back.
    fn open(&mut self) {
        let _entered = self.rt.enter();
        let broker = match Broker::open(DATA, self.options()) {
            Ok(b) => b,
            Err(_) => {
                // The process that failed to open exits; another starts.
                self.disk.crash(Crash::Process);
                self.disk.set_faults(Faults::default());
                let b = Broker::open(DATA, self.options())
                    .unwrap_or_else(|e| self.fail(format!("the broker does not open: {e}")));
                self.disk.set_faults(self.faults);
                b
            }
        };
        self.broker = Some(broker);
        self.check_commits();
    }

    /// Stops the broker the way `how` says and opens it again.
    fn restart(&mut self, how: Option<Crash>) {
        self.trace(|| format!("restart {how:?}"));
        self.held.clear();
        let broker = self.broker.take().expect("an open broker");
        match how {
            None => {
                // A clean close may fail under faults: then it is a kill.
                let _ = broker.close();
                drop(broker);
            }
            Some(crash) => {
                drop(broker);
                self.disk.crash(crash);
                match crash {
                    Crash::PowerLoss => self.power_losses += 1,
                    Crash::Process => self.kills += 1,
                }
            }
        }
        // A restart takes time; lease ids come from the start time.
        self.clock.advance(Duration::from_millis(500));
        self.open();
    }

    /// No answered commit went back.
    fn check_commits(&self) {
        let now: BTreeMap<u32, u64> = self
            .b()
            .committed_offsets(STREAM)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.partition.0, c.offset.0))
            .collect();
        for (p, at) in &self.committed {
            let found = now.get(p).copied().unwrap_or(0);
            if found < *at {
                self.fail(format!(
                    "partition {p} is committed at {found}; {at} was answered before"
                ));
            }
        }
    }

    fn publish(&mut self) {
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            // Now and then an event published before, again: dedup answers
            // its place and stores nothing (a second copy would be delivered
            // after the first's ack, which the oracle refuses).
            let again = self.published.len() > 2 && self.rng.below(6) == 0;
            let id = if again {
                let nth = self.rng.below(self.published.len() as u64) as usize;
                self.published.iter().nth(nth).cloned().expect("an event")
            } else {
                self.next_event += 1;
                format!("e-{}", self.next_event)
            };
            let event = CloudEvent::new("/jobs", "job.created")
                .with_id(id.clone())
                .with_partitionkey(format!("k{}", self.rng.below(5)));
            match self.rt.block_on(self.b().publish(TOPIC, event)) {
                Ok(p) => {
                    self.trace(|| format!("published {id} at {}:{}", p.partition.0, p.offset.0));
                    let place = (p.partition.0, p.offset.0);
                    if again {
                        if !p.duplicate || self.places.get(&id) != Some(&place) {
                            self.fail(format!(
                                "{id} published again answered {place:?} (duplicate: {}), first stored at {:?}",
                                p.duplicate,
                                self.places.get(&id)
                            ));
                        }
                    } else {
                        self.places.insert(id.clone(), place);
                        self.published.insert(id);
                    }
                }
                Err(e) => {
                    self.trace(|| format!("publish of {id} failed: {e}"));
                    self.maybe.insert(id);
                }
            }
        }
    }

    fn receive(&mut self) -> bool {
        let max = 1 + self.rng.below(4) as usize;
        let got = match self.rt.block_on(self.b().receive(QUEUE, max)) {
            Ok(got) => got,
            Err(_) => {
                self.interrupted();
                return false;
            }
        };
        for d in got {
            let id = id_of(&d);
            if self.acked.contains(&id) {
                self.fail(format!("{id} delivered again after its ack was answered"));
            }
            if !self.published.contains(&id) && !self.maybe.contains(&id) {
                self.fail(format!("{id} delivered, never published"));
            }
            self.trace(|| format!("received {id} attempt {} lease {:?}", d.attempt, d.lease));
            self.held.insert(id, d);
        }
        true
    }

    /// Answers a held delivery; false when the broker refused for a fault.
    fn answer(&mut self) -> bool {
        let Some(id) = self.held.keys().min().cloned() else {
            return true;
        };
        let d = self.held.remove(&id).expect("held");
        let b = self.broker.as_ref().expect("an open broker");
        let result = match self.rng.below(10) {
            0..=6 => self.rt.block_on(b.ack(QUEUE, &d.lease)).map(|()| true),
            7..=8 => self
                .rt
                .block_on(b.nack(QUEUE, &d.lease, None, "handler failed"))
                .map(|()| false),
            _ => self
                .rt
                .block_on(b.reject(QUEUE, &d.lease, "poison"))
                .map(|()| false),
        };
        self.trace(|| format!("answered {id}: {result:?}"));
        match result {
            Ok(true) => {
                self.acked.insert(id);
                true
            }
            Ok(false) | Err(QueueError::LeaseExpired(_) | QueueError::UnknownLease(_)) => true,
            Err(_) => {
                self.refused_answers += 1;
                self.interrupted();
                false
            }
        }
    }

    /// A queue operation failed on a fault: whatever it was dead-lettering
    /// (the answered event, or any whose lease it found run out) may be in
    /// the dead-letter topic without its resolution.
    fn interrupted(&mut self) {
        let open: Vec<String> = self
            .published
            .iter()
            .chain(&self.maybe)
            .filter(|id| !self.acked.contains(*id))
            .cloned()
            .collect();
        self.unsure.extend(open);
    }

    /// The stream reader moves on in a partition and commits.
    fn commit(&mut self) {
        let p = self.rng.below(u64::from(PARTITIONS)) as u32;
        let end = self
            .b()
            .offsets(TOPIC, PartitionId(p))
            .map(|(_, high)| high.0)
            .unwrap_or(0);
        let from = self.read_to.get(&p).copied().unwrap_or(0);
        if end <= from {
            return;
        }
        let to = from + 1 + self.rng.below(end - from);
        let offsets = vec![CommittedOffset {
            topic: TopicName::new(TOPIC).unwrap(),
            partition: PartitionId(p),
            offset: Offset(to),
            metadata: String::new(),
        }];
        if let Ok(answers) = self.b().commit_offsets(STREAM, None, offsets) {
            if answers.iter().all(Result::is_ok) {
                self.read_to.insert(p, to);
                let c = self.committed.entry(p).or_default();
                *c = (*c).max(to);
            }
        }
    }

    /// A new idempotent producer's id: never one handed out before, across
    /// every restart (ids come in blocks whose end is made durable first).
    fn producer_id(&mut self) {
        if let Ok(id) = self.b().init_producer_id() {
            if !self.producer_ids.insert(id) {
                self.fail(format!("producer id {id} handed out twice"));
            }
        }
    }

    fn step(&mut self) {
        let healthy = match self.rng.below(20) {
            0..=5 => {
                self.publish();
                true
            }
            6..=9 => self.receive(),
            10..=13 => self.answer(),
            14 => {
                if self.rng.below(3) == 0 {
                    self.producer_id();
                } else {
                    self.commit();
                }
                true
            }
            15..=16 => {
                let ms = self.rng.below(6_000);
                self.trace(|| format!("clock +{ms} ms"));
                self.clock.advance(Duration::from_millis(ms));
                true
            }
            17 => {
                self.restart(None);
                true
            }
            18 => {
                self.restart(Some(Crash::Process));
                true
            }
            _ => {
                self.restart(Some(Crash::PowerLoss));
                true
            }
        };
        if !healthy {
            // A failed sync stops the queue group until a restart (fail-stop).
            let crash = if self.rng.below(2) == 0 {
                Crash::Process
            } else {
                Crash::PowerLoss
            };
            self.restart(Some(crash));
        }
    }

    /// Faults lifted and a last power loss: every answered event must come
    /// out, and end acked or dead-lettered.
    fn drain(&mut self) {
        self.faults = Faults::default();
        self.disk.set_faults(self.faults);
        self.restart(Some(Crash::PowerLoss));
        for _ in 0..400 {
            self.clock.advance(Duration::from_secs(6));
            let got = self
                .rt
                .block_on(self.b().receive(QUEUE, 100))
                .unwrap_or_else(|e| self.fail(format!("receive without faults: {e}")));
            for d in got {
                let id = id_of(&d);
                if self.acked.contains(&id) {
                    self.fail(format!("{id} delivered again after its ack was answered"));
                }
                self.rt
                    .block_on(self.b().ack(QUEUE, &d.lease))
                    .unwrap_or_else(|e| self.fail(format!("ack without faults: {e}")));
                self.trace(|| format!("drain acked {id}"));
                self.acked.insert(id);
            }
        }
        let dead = self
            .rt
            .block_on(self.b().dead_letters(QUEUE, Offset(0), 64 << 20))
            .unwrap_or_else(|e| self.fail(format!("dead letters: {e}")));
        let mut dead_ids = BTreeSet::new();
        for d in &dead {
            let tidings_broker::Payload::Event(e) = &d.entry.payload else {
                self.fail("a raw dead letter".into());
            };
            let id = e.id().to_owned();
            if self.acked.contains(&id) && !self.unsure.contains(&id) {
                self.fail(format!("{id} both acked and dead-lettered"));
            }
            if !dead_ids.insert(id.clone()) && !self.unsure.contains(&id) {
                self.fail(format!("{id} dead-lettered twice"));
            }
        }
        for id in &self.published {
            if !self.acked.contains(id) && !dead_ids.contains(id) {
                self.fail(format!(
                    "{id} was published and is neither acked nor dead-lettered"
                ));
            }
        }
        self.check_commits();
    }
}

/// What one seed did.
#[derive(Default)]
struct Outcome {
    published: u64,
    acked: u64,
    power_losses: u64,
    kills: u64,
    refused_answers: u64,
}

fn run(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    let steps = 40 + sim.rng.below(80);
    for _ in 0..steps {
        sim.step();
    }
    sim.drain();
    Outcome {
        published: sim.published.len() as u64,
        acked: sim.acked.len() as u64,
        power_losses: sim.power_losses,
        kills: sim.kills,
        refused_answers: sim.refused_answers,
    }
}

#[test]
fn seeds() {
    let count: u64 = std::env::var("TIDINGS_BROKER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let base: u64 = std::env::var("TIDINGS_BROKER_SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    let mut total = Outcome::default();
    for seed in base..base + count {
        let o = run(seed);
        total.published += o.published;
        total.acked += o.acked;
        total.power_losses += o.power_losses;
        total.kills += o.kills;
        total.refused_answers += o.refused_answers;
    }
    eprintln!(
        "broker on the simulated disk: {count} seeds in {:.1} s; {} events published and answered, {} acks answered, {} power losses, {} kills, {} answers refused under injected faults",
        started.elapsed().as_secs_f64(),
        total.published,
        total.acked,
        total.power_losses,
        total.kills,
        total.refused_answers
    );
    assert!(total.power_losses > count && total.refused_answers > 0);
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("TIDINGS_BROKER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    run(seed);
}
