//! The mutation matrix: every loopback fault is caught by at least one scenario, every
//! scenario catches at least one fault, the catalog passes with no fault, and the generated
//! `scenarios/README.md` is current.
//!
//! By default every catch the page records is checked: each fault runs with only the
//! scenarios the page says catch it, and each of them must fail a step under it. A catch the
//! page does not record is not looked for; `cargo run -p harness -- catalog --write` runs the
//! full matrix (the whole catalog under every fault) and rewrites the page. Set
//! `UPSTREAM_TLS_FULL_MATRIX=1` to run the full matrix here and compare the page with it, or
//! `UPSTREAM_TLS_WRITE_CATALOG=1` to rewrite the page from it.
//!
//! `UPSTREAM_TLS_MATRIX_MODEL_ONLY=1` checks only the catches of the faults of loopback's own
//! model (its reference controller and proxy), without the real Contour's scenarios or the
//! faults at its boundaries: the second stage of `scripts/mutants --judge model`, which asks
//! whether a mutant of the model changed what one of those faults does.

use harness::matrix::{claimed_catches, on_real_contour, render_catalog, run_matrix, verify_claims};
use harness::scenario::load_dir;
use harness::suite::default_scenario_dir;
use loopback::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_caught_and_every_scenario_catches_one() {
    harness::init_crypto();
    let dir = default_scenario_dir();
    let scenarios = load_dir(&dir).expect("the catalog loads");
    let path = dir.join("README.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let write = std::env::var_os("UPSTREAM_TLS_WRITE_CATALOG").is_some();
    let full = write || std::env::var_os("UPSTREAM_TLS_FULL_MATRIX").is_some();

    // Read only when it is checked: a page naming a fault that is gone can still be rewritten.
    let mut claims = if full {
        Default::default()
    } else {
        claimed_catches(&committed).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let model_only = !full && std::env::var_os("UPSTREAM_TLS_MATRIX_MODEL_ONLY").is_some();
    let scenarios = if model_only {
        for faults in claims.values_mut() {
            faults.retain(|fault| !fault.at_boundary());
        }
        scenarios.into_iter().filter(|s| !on_real_contour(s)).collect()
    } else {
        scenarios
    };
    let matrix = if full {
        // The committed page only orders the work of the full matrix; it may be stale.
        let expected = claimed_catches(&committed).unwrap_or_default();
        run_matrix(&scenarios, &Fault::ALL, &expected).await
    } else {
        verify_claims(&scenarios, &claims).await
    }
    .expect("loopback starts (is nginx installed?)");

    assert!(
        matrix.baseline_failures.is_empty(),
        "scenarios fail with no fault:\n{}",
        matrix.baseline_failures.join("\n")
    );
    if !full {
        let unconfirmed: Vec<String> = claims
            .iter()
            .flat_map(|(scenario, faults)| faults.iter().map(move |fault| (scenario, fault)))
            .filter(|(scenario, fault)| !matrix.catches.get(scenario.as_str()).is_some_and(|c| c.contains(fault)))
            .map(|(scenario, fault)| format!("{scenario} under {fault}"))
            .collect();
        assert!(
            unconfirmed.is_empty(),
            "{} records catches that did not happen (the scenario passed, or failed only in set-up):\n{}\n\
             set-up failures:\n{}",
            path.display(),
            unconfirmed.join("\n"),
            matrix.setup_failures.join("\n")
        );
    }
    if model_only {
        eprintln!("only the model's faults were checked (UPSTREAM_TLS_MATRIX_MODEL_ONLY)");
        return;
    }
    assert!(matrix.uncaught().is_empty(), "faults no scenario catches: {:?}", matrix.uncaught());
    assert!(matrix.idle_scenarios().is_empty(), "scenarios that catch no fault: {:?}", matrix.idle_scenarios());

    if !matrix.not_run.is_empty() {
        assert!(!write, "the catalog page is written from a matrix that runs every scenario: build Contour first");
        eprintln!(
            "NOT RUN: {} scenarios need the real Contour (scripts/ensure-contour); the catalog page is not compared",
            matrix.not_run.len()
        );
        return;
    }
    let page = render_catalog(&scenarios, &matrix);
    if write {
        std::fs::write(&path, &page).unwrap();
        return;
    }
    assert!(
        committed == page,
        "{} is out of date; regenerate it with `cargo run -p harness -- catalog --write`\n--- generated ---\n{page}",
        path.display()
    );
}
