//! Writes every fuzz target's seeds into `<dir>/<target>/seed-<n>` (the
//! directory `scripts/fuzz` hands cargo-fuzz beside the committed corpus).

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: tidings-fuzz-seeds <dir>");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for (target, _) in tidings_fuzz::TARGETS {
        let to = dir.join(target);
        if let Err(e) = std::fs::create_dir_all(&to) {
            eprintln!("cannot create {}: {e}", to.display());
            std::process::exit(1);
        }
        for (n, seed) in tidings_fuzz::seeds(target).iter().enumerate() {
            let path = to.join(format!("seed-{n}"));
            if let Err(e) = std::fs::write(&path, seed) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
}
