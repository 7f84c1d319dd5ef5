//! Measured figures of the fault tests, for `docs/RELIABILITY.md`: each test appends one JSON
//! line (fault, registry, outcome, figures) to the file named by `HOIST_FIGURES`, and prints
//! it. `scripts/reliability.sh` runs the tests with it set and renders the table.

use std::io::Write;

/// Appends one row. `figure` is the human line the table shows; `data` the raw numbers.
pub fn record(
    test: &str,
    fault: &str,
    registry: &str,
    outcome: &str,
    figure: &str,
    data: serde_json::Value,
) {
    let line = serde_json::json!({
        "test": test,
        "fault": fault,
        "registry": registry,
        "outcome": outcome,
        "figure": figure,
        "data": data,
    });
    eprintln!("FIGURE {line}");
    if let Some(path) = std::env::var_os("HOIST_FIGURES") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open HOIST_FIGURES");
        // One write per line: tests run in parallel and append to the same file.
        f.write_all(format!("{line}\n").as_bytes())
            .expect("write HOIST_FIGURES");
    }
}
