//! The configuration reference in README.md is checked against the config types: every key
//! the parser accepts must be documented, or this test names the missing ones.
//!
//! The parser itself lists its keys: every table denies unknown fields, and serde's error for
//! an unknown field names all the expected ones.

use crate::support::run_cli;

/// Keys the parser accepts in the table opened by `header` (probed with an unknown key).
fn accepted_keys(header: &str, prefix: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("probe.toml");
    std::fs::write(&path, format!("{header}\n{prefix}zzz_not_a_key = 1\n")).expect("write");
    let (_, out, err) = run_cli(
        &["config", "check", path.to_str().expect("path")],
        dir.path(),
    );
    let text = format!("{out}{err}");
    let listed = text
        .split("expected one of ")
        .nth(1)
        .or_else(|| text.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("no key list for {header}: {text}"));
    listed
        .lines()
        .next()
        .unwrap_or_default()
        .replace(" or ", ", ")
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn every_config_key_is_in_the_readme_reference() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `[")).collect();
    let documented = |table: &str, key: &str| {
        rows.iter().any(|row| {
            let first_cell = row.split(" | ").next().unwrap_or_default();
            first_cell.starts_with(&format!("| `{table} "))
                && [format!(" {key}`"), format!("`{key}`"), format!(" {key} ")]
                    .iter()
                    .any(|form| first_cell.contains(form.as_str()))
        })
    };
    let mut missing = Vec::new();
    let tables = accepted_keys("", "");
    for table in &tables {
        let (header, shown) = match table.as_str() {
            "routes" => ("[[routes]]".to_string(), "[[routes]]".to_string()),
            "upstreams" => (
                "[upstreams.probe]".to_string(),
                "[upstreams.NAME]".to_string(),
            ),
            "oidc" => (
                "[[oidc.providers]]".to_string(),
                "[[oidc.providers]]".to_string(),
            ),
            other => (format!("[{other}]"), format!("[{other}]")),
        };
        for key in accepted_keys(&header, "") {
            if !documented(&shown, &key) {
                missing.push(format!("{shown} {key}"));
            }
        }
    }
    // Rule keys (allow/deny entries) are documented in the route-policy section.
    for key in accepted_keys("[[routes]]\nallow = [{ zzz_not_a_key = 1 }]", "#") {
        if !readme.contains(&format!("`{key}`")) && !readme.contains(&format!("`{key} ")) {
            missing.push(format!("rule key {key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "config keys missing from README.md's reference:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn compliance_map_cites_real_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let map = std::fs::read_to_string(format!("{root}/docs/compliance.md")).expect("map");
    let mut cited = 0;
    let mut missing = Vec::new();
    for part in map.split('`') {
        let Some((file, test)) = part.split_once("::") else {
            continue;
        };
        if file.contains(' ') || test.contains(' ') || file.starts_with("src/") {
            continue;
        }
        cited += 1;
        let source =
            std::fs::read_to_string(format!("{root}/tests/proxy/{file}.rs")).unwrap_or_default();
        if !source.contains(&format!("fn {test}(")) {
            missing.push(part.to_string());
        }
    }
    assert!(cited > 30, "only {cited} tests cited");
    assert!(
        missing.is_empty(),
        "the compliance map cites tests that do not exist: {missing:?}"
    );
}
