//! The fuzz targets of Tidings' parsers, in one place: the fuzzers in
//! `fuzz/` (cargo-fuzz, libFuzzer) call [`run`] with each input, and
//! `tests/corpus.rs` replays every committed corpus and the seeds through
//! the same function in the normal tests, so an input that once crashed a
//! fuzzer fails the test command if the fault comes back.
//!
//! Each target panics when an invariant breaks; a panic in a task of the
//! Kafka target's runtime is caught there and raised again (see
//! [`kafka`]). Inputs are bounded by the fuzzers' `-max_len` and by the
//! parsers' own limits.

pub mod events;
pub mod kafka;

/// What a target runs on each input.
pub type Check = fn(&[u8]);

/// Every target: its name (a file in `fuzz/fuzz_targets/` and a corpus
/// directory in `fuzz/corpus/`) and what it runs.
pub const TARGETS: &[(&str, Check)] = &[
    ("kafka_requests", kafka::requests),
    ("producer_batches", tidings_log::fuzz::producer_batches),
    ("segment_recovery", tidings_log::fuzz::segment_recovery),
    ("log_metadata", tidings_log::fuzz::log_metadata),
    ("broker_files", tidings_broker::fuzz::broker_files),
    ("cloudevents", events::cloudevents),
];

/// Runs `target` on `data`.
///
/// # Panics
/// When the target finds a fault, or there is no such target.
pub fn run(target: &str, data: &[u8]) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    check(data);
}

/// Valid inputs of `target` for a fuzzer to start from.
///
/// # Panics
/// When there is no such target.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "kafka_requests" => kafka::seeds(),
        "producer_batches" | "segment_recovery" | "log_metadata" => {
            tidings_log::fuzz::seeds(target)
        }
        "broker_files" => tidings_broker::fuzz::seeds(),
        "cloudevents" => events::seeds(),
        other => panic!("no fuzz target {other}"),
    }
}
