//! The mutation matrix: every loopback fault is caught by at least one scenario, every
//! scenario catches at least one fault, the catalog passes with no fault, and the generated
//! `scenarios/README.md` is current.
//!
//! Set `UPSTREAM_TLS_WRITE_CATALOG=1` to rewrite the page instead of comparing it.

use harness::matrix::{render_catalog, run_matrix};
use harness::scenario::load_dir;
use harness::suite::default_scenario_dir;
use loopback::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_caught_and_every_scenario_catches_one() {
    harness::init_crypto();
    let dir = default_scenario_dir();
    let scenarios = load_dir(&dir).expect("the catalog loads");
    let matrix = run_matrix(&scenarios, &Fault::ALL).await.expect("loopback starts (is nginx installed?)");

    assert!(
        matrix.baseline_failures.is_empty(),
        "scenarios fail with no fault:\n{}",
        matrix.baseline_failures.join("\n")
    );
    assert!(matrix.uncaught().is_empty(), "faults no scenario catches: {:?}", matrix.uncaught());
    assert!(matrix.idle_scenarios().is_empty(), "scenarios that catch no fault: {:?}", matrix.idle_scenarios());

    let page = render_catalog(&scenarios, &matrix);
    let path = dir.join("README.md");
    if std::env::var_os("UPSTREAM_TLS_WRITE_CATALOG").is_some() {
        std::fs::write(&path, &page).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "{} is out of date; regenerate it with `cargo run -p harness -- catalog --write`\n--- generated ---\n{page}",
        path.display()
    );
}
