//! Every fuzz target's seeds and committed corpus (`fuzz/corpus/<target>/`,
//! inputs the fuzzers kept for new coverage, and `fuzz/regressions/<target>/`,
//! inputs that once failed), run through the target as the fuzzer runs them.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_seed_and_corpus_input_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (target, check) in tidings_fuzz::TARGETS {
        let seeds = tidings_fuzz::seeds(target);
        assert!(!seeds.is_empty(), "{target} has seeds");
        for seed in &seeds {
            check(seed);
        }
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            for path in inputs(&fuzz.join(kind).join(target)) {
                // A campaign running beside the tests minimises the corpus
                // as it goes: an input listed a moment ago may be gone.
                let data = match std::fs::read(&path) {
                    Ok(data) => data,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("read {}: {e}", path.display()),
                };
                eprintln!("{target}: {}", path.display());
                check(&data);
                replayed += 1;
            }
        }
        eprintln!("{target}: {} seeds, {replayed} corpus inputs", seeds.len());
    }
}
