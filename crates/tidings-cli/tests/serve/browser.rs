//! The web dashboard in a real browser: Debian's Chromium, driven by
//! Playwright (`tests/clients/dashboard_browser.js`), with axe-core
//! checking every page in both themes. `./scripts/test` installs all three.
//! With `TIDINGS_SCREENSHOTS=<dir>` the script also leaves a screenshot of
//! each page there (what `docs/dashboard.md` shows).

use serde_json::Value;

use crate::dashboard::seeded;

#[test]
fn every_page_works_in_chromium_and_axe_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path(), &["--ui-environment", "orders-staging"]);
    let other = tempfile::tempdir().unwrap();
    let read_only = seeded(other.path(), &["--ui-read-only"]);
    let base = server.url("");
    let read_only_base = read_only.url("");
    let mut args = vec![base.as_str(), read_only_base.as_str()];
    let shots = std::env::var("TIDINGS_SCREENSHOTS").ok();
    if let Some(shots) = &shots {
        std::fs::create_dir_all(shots).unwrap();
        args.push(shots);
    }
    let out = crate::support::node("dashboard_browser.js", &args, &server);
    let errors = out["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "the browser saw errors: {errors:#?}");
    let pages = out["pages"].as_object().unwrap();
    assert_eq!(pages.len(), 32, "{out:#}");
    let mut backgrounds = std::collections::BTreeMap::new();
    let mut found = Vec::new();
    for (name, seen) in pages {
        assert_eq!(seen["status"], 200, "{name}: {seen}");
        assert!(!seen["h1"].as_str().unwrap().is_empty(), "{name}: {seen}");
        let violations = if name.starts_with("light:") {
            &seen["violations"]
        } else {
            &seen["violations_dark"]
        };
        if violations != &Value::Array(vec![]) {
            found.push(format!("{name}: {violations:#}"));
        }
        let (scheme, _) = name.split_once(':').unwrap();
        backgrounds
            .entry(scheme.to_owned())
            .or_insert_with(Vec::new)
            .push(seen["background"].as_str().unwrap().to_owned());
    }
    assert!(found.is_empty(), "axe found:\n{}", found.join("\n"));
    // Each theme paints every page the same, and the two differ.
    for colours in backgrounds.values() {
        assert!(colours.windows(2).all(|w| w[0] == w[1]), "{backgrounds:?}");
    }
    assert_ne!(backgrounds["light"][0], backgrounds["dark"][0]);

    let filter = &out["filter"];
    assert_eq!(filter["type"], "order.cancelled", "{filter}");
    assert_eq!(filter["q"], "customer-3", "{filter}");
    assert_eq!(filter["rows"], 2, "{filter}");
    assert!(
        filter["types"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t == "order.cancelled"),
        "{filter}"
    );
    assert_eq!(filter["kept_after_reload"], "order.cancelled", "{filter}");
    assert_eq!(filter["back_to"], "?from=earliest", "{filter}");

    let tail = &out["tail"];
    assert_eq!(tail["published"], 200, "{tail}");
    assert_eq!(tail["tailed"], true, "{tail}");
    assert_eq!(tail["paused"], "false", "{tail}");

    let redrive = &out["redrive"];
    assert_eq!(redrive["before"], "3", "{redrive}");
    assert_eq!(
        redrive["errors_before"],
        serde_json::json!(["carrier down", "address unknown: no such street"]),
        "{redrive}"
    );
    assert!(
        redrive["preview"]
            .as_str()
            .unwrap()
            .contains("2 of the 2 dead letters with the error \"carrier down\""),
        "{redrive}"
    );
    assert_eq!(redrive["outcome"], "done: 2 redriven", "{redrive}");
    assert_eq!(redrive["after"], "1", "{redrive}");
    assert_eq!(
        redrive["errors_after"],
        serde_json::json!(["address unknown: no such street"]),
        "{redrive}"
    );

    // Read-only: no form that changes anything, no link to one, on any page.
    for (name, seen) in out["read_only"].as_object().unwrap() {
        assert_eq!(seen["forms"], 0, "read-only {name}: {seen}");
        assert_eq!(seen["changes"], 0, "read-only {name}: {seen}");
        assert_eq!(seen["badge"], "read-only", "read-only {name}: {seen}");
    }
    assert_eq!(out["read_only"].as_object().unwrap().len(), 16);

    let keys = &out["keys"];
    assert_eq!(keys["help_open"], true, "{keys}");
    assert_eq!(keys["help_closed"], true, "{keys}");
    assert_eq!(keys["goto_focused"], "goto", "{keys}");
    assert_eq!(keys["went_to"], "/ui/groups/billing", "{keys}");
    assert_eq!(keys["t_goes_to"], "/ui/topics", "{keys}");

    assert_eq!(out["theme"]["attribute"], "dark", "{out}");
    assert_eq!(
        out["theme"]["background"],
        backgrounds["dark"][0].as_str(),
        "{out}"
    );

    assert_eq!(out["no_script"]["rows"], 10, "{out}");
    assert_eq!(out["no_script"]["tail_button_hidden"], true, "{out}");
}
