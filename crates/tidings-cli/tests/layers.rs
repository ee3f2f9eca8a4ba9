//! The layer rules of DESIGN §1, held by the manifests: every workspace crate's
//! dependencies on other workspace crates (from `cargo metadata`) must be ones
//! its row of ARCHITECTURE.md's layer table allows, and the dependency drawing
//! there must be the real graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crate → its normal dependencies on workspace crates, from `cargo metadata`.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// The backticked crate names in `text`.
fn crates_in(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("tidings"))
        .map(str::to_owned)
        .collect()
}

/// The layer table: crate → what it may depend on (`None`: anything).
fn allowed(architecture: &str) -> BTreeMap<String, Option<BTreeSet<String>>> {
    architecture
        .lines()
        .filter(|l| l.starts_with("| `tidings"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let may = match cells[3] {
                "any" => None,
                "—" => Some(BTreeSet::new()),
                list => Some(crates_in(list)),
            };
            (name, may)
        })
        .collect()
}

/// The dependency drawing: the lines of the code block that follows the
/// bird's-eye view, `crate ──► a, b`.
fn drawing(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let block = architecture
        .split("```")
        .nth(1)
        .expect("ARCHITECTURE.md opens with the dependency drawing");
    block
        .lines()
        .filter(|l| l.starts_with("tidings"))
        .map(|line| {
            let (name, deps) = line.split_once("──►").unwrap_or((line, ""));
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_its_row_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let graph = graph(&root);
    let allowed = allowed(&architecture);
    let crates: BTreeSet<&String> = graph.keys().collect();
    let rows: BTreeSet<&String> = allowed.keys().collect();
    assert_eq!(crates, rows, "every crate has a row in the layer table");
    let mut broken = Vec::new();
    for (name, deps) in &graph {
        if let Some(Some(may)) = allowed.get(name) {
            for dep in deps.difference(may) {
                broken.push(format!("{name} depends on {dep}, which its layer may not"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert_eq!(
        drawing(&architecture),
        graph,
        "ARCHITECTURE.md's drawing is the real dependency graph"
    );
}

#[test]
fn the_rules_catch_a_front_end_on_the_log() {
    // The check itself, on a table and a graph that break a rule.
    let table =
        "| `tidings-http` | front end | `tidings-broker` |\n| `tidings-bench` | tool | any |";
    let allowed = allowed(table);
    assert_eq!(
        allowed["tidings-http"],
        Some(BTreeSet::from(["tidings-broker".to_owned()]))
    );
    assert_eq!(allowed["tidings-bench"], None);
    let deps = BTreeSet::from(["tidings-broker".to_owned(), "tidings-log".to_owned()]);
    let may = allowed["tidings-http"].as_ref().unwrap();
    assert_eq!(
        deps.difference(may).collect::<Vec<_>>(),
        ["tidings-log"],
        "a front end on the log is caught"
    );
}
