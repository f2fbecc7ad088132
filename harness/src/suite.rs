//! Many scenarios at once: [`run_all`] runs them concurrently against an environment (and
//! [`run_all_until`] stops them on an [`Interrupt`], such as Ctrl-C), and [`line`] and
//! [`totals`] render what the CLI prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;

use crate::report::Totals;
use crate::runner::{Observer, ScenarioOutcome};
use crate::scenario::LoadedScenario;
use crate::target::{Environment, TargetConfig};

/// How many scenarios run at the same time on a real cluster unless told otherwise. Measured
/// on loopback at kind's pace (`bench --loopback-latency kind`, 64 scenarios): 4 at a time
/// took 2.65 times the critical path, 8 took 1.80, 16 took 1.39. Scenarios mostly wait (for
/// pods, for the controller's hold-off), and each holds one or two small nginx pods, so 16
/// does not crowd a kind cluster; `--parallel` lowers it for a smaller one.
pub const DEFAULT_CLUSTER_PARALLELISM: usize = 16;

/// How many of `scenarios` scenarios run at the same time unless told otherwise: on loopback
/// all of them (its clusters run in this process, and scenarios mostly wait), on a real
/// cluster, and on loopback at a real cluster's pace, [`DEFAULT_CLUSTER_PARALLELISM`].
pub fn default_parallelism(target: &TargetConfig, scenarios: usize) -> usize {
    match target {
        TargetConfig::Loopback(options) if options.latency == loopback::LatencyProfile::None => scenarios.max(1),
        _ => DEFAULT_CLUSTER_PARALLELISM,
    }
}

/// Reads a parallelism setting: a whole number, at least 1.
///
/// # Errors
/// Anything else, said in words fit for a flag's or a variable's error message.
pub fn parse_parallelism(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// The repository's scenario directory.
pub fn default_scenario_dir() -> PathBuf {
    repository_dir("scenarios")
}

/// The repository's report directory.
pub fn default_reports_dir() -> PathBuf {
    repository_dir("reports")
}

/// A path from an environment variable, as the user meant it: `cargo test` runs test
/// binaries from the package directory (`harness/`), while users write paths from the
/// repository root where they typed the command, so there a relative path is taken from the
/// repository root.
pub fn user_path(path: PathBuf) -> PathBuf {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_package = std::env::current_dir().is_ok_and(|cwd| cwd == package);
    match package.parent() {
        Some(root) if path.is_relative() && in_package => root.join(path),
        _ => path,
    }
}

/// A top-level directory of this repository, relative to the working directory when inside
/// it (so messages show `scenarios/...`).
fn repository_dir(name: &str) -> PathBuf {
    let dir = loopback::config::repository_root().join(name);
    let dir = dir.canonicalize().unwrap_or(dir);
    match std::env::current_dir() {
        Ok(cwd) => dir.strip_prefix(&cwd).map(PathBuf::from).unwrap_or(dir),
        Err(_) => dir,
    }
}

/// Runs every scenario, `parallelism` at a time, telling `observer` as they go; those that
/// must run alone on this target ([`Environment::needs_alone`]) run after the others, one by
/// one, those that disturb others last. Outcomes come back in that order.
pub async fn run_all(
    environment: &Environment,
    scenarios: &[LoadedScenario],
    parallelism: usize,
    observer: &dyn Observer,
) -> Vec<ScenarioOutcome> {
    run_all_until(environment, scenarios, parallelism, observer, &Interrupt::never()).await
}

/// [`run_all`], stopped by `interrupt`: no scenario starts after it, those running are
/// abandoned (their namespaces are for the caller to delete, [`Environment::delete_run`]), and
/// every scenario that did not finish comes back skipped as [`interrupted`](ScenarioOutcome).
pub async fn run_all_until(
    environment: &Environment,
    scenarios: &[LoadedScenario],
    parallelism: usize,
    observer: &dyn Observer,
    interrupt: &Interrupt,
) -> Vec<ScenarioOutcome> {
    let (mut exclusive, shared): (Vec<&LoadedScenario>, Vec<&LoadedScenario>) =
        scenarios.iter().partition(|s| environment.needs_alone(s));
    // Those that disturb others last: the wait for their namespaces to go, which keeps what
    // they applied from the scenarios after them, then overlaps the run's own final wait.
    exclusive.sort_by_key(|s| s.scenario.disturbs_others());
    let order: Vec<&LoadedScenario> = shared.iter().chain(&exclusive).copied().collect();
    let mut finished: Vec<Option<ScenarioOutcome>> = vec![None; order.len()];
    let mut running = futures::stream::iter(
        shared.iter().enumerate().map(|(i, s)| async move { (i, environment.run(s, observer).await) }),
    )
    .buffer_unordered(parallelism.max(1));
    let mut stopped = interrupt.clone();
    loop {
        tokio::select! {
            biased;
            () = stopped.wait() => break,
            next = running.next() => match next {
                Some((i, outcome)) => finished[i] = Some(outcome),
                None => break,
            },
        }
    }
    drop(running);
    for (i, scenario) in exclusive.iter().enumerate() {
        // `wait` resolves at once when the run was already stopped.
        tokio::select! {
            biased;
            () = stopped.wait() => break,
            outcome = environment.run(scenario, observer) => finished[shared.len() + i] = Some(outcome),
        }
    }
    order
        .iter()
        .zip(finished)
        .map(|(scenario, outcome)| outcome.unwrap_or_else(|| ScenarioOutcome::interrupted(scenario)))
        .collect()
}

/// `work`, unless `interrupt` stops the run first (then `None`).
pub async fn until_interrupted<T>(work: impl std::future::Future<Output = T>, interrupt: &Interrupt) -> Option<T> {
    let mut stopped = interrupt.clone();
    tokio::select! {
        biased;
        () = stopped.wait() => None,
        done = work => Some(done),
    }
}

/// The signals that stop a run, and the exit codes a shell gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): exit code 130.
    Interrupt,
    /// SIGTERM: exit code 143.
    Terminate,
    /// Not a signal: the run reached its time limit (`timeouts.runSeconds`); exit code 124.
    RunLimit,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::RunLimit => "the run's time limit",
        }
    }

    /// For the signals, 128 plus the signal's number, as shells report a process the signal
    /// ended; for the time limit 124, as `timeout` exits.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
            Signal::RunLimit => 124,
        }
    }
}

/// Whether, and by which signal, a run was asked to stop. Cloned freely; all clones see the
/// same request.
#[derive(Debug, Clone)]
pub struct Interrupt(tokio::sync::watch::Receiver<Option<Signal>>);

/// Asks the runs holding the matching [`Interrupt`] to stop. Clones fire the same interrupt.
#[derive(Debug, Clone)]
pub struct Interrupter(std::sync::Arc<tokio::sync::watch::Sender<Option<Signal>>>);

impl Interrupt {
    /// An interrupt and the handle that triggers it.
    pub fn new() -> (Interrupter, Interrupt) {
        let (sender, receiver) = tokio::sync::watch::channel(None);
        (Interrupter(std::sync::Arc::new(sender)), Interrupt(receiver))
    }

    /// One that never fires.
    pub fn never() -> Interrupt {
        let (sender, interrupt) = Interrupt::new();
        // Kept alive for the process, so `wait` pends instead of seeing a closed channel.
        std::mem::forget(sender);
        interrupt
    }

    /// The signal that stopped the run, if one did.
    pub fn signal(&self) -> Option<Signal> {
        *self.0.borrow()
    }

    /// Resolves once the run is asked to stop.
    pub async fn wait(&mut self) {
        if self.0.wait_for(Option::is_some).await.is_err() {
            // The interrupter is gone without firing: nothing will ever stop the run.
            std::future::pending::<()>().await;
        }
    }
}

impl Interrupter {
    /// Stops the run; a second call changes nothing. Returns whether this was the first.
    pub fn fire(&self, signal: Signal) -> bool {
        self.0.send_if_modified(|current| current.is_none() && current.replace(signal).is_none())
    }

    /// Stops the run when the process gets SIGINT or SIGTERM; on a second one, exits at once
    /// with that signal's code. Needs a tokio runtime.
    ///
    /// # Errors
    /// The signal handlers cannot be installed.
    pub fn on_signals(&self) -> std::io::Result<()> {
        let this = self.clone();
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupts = signal(SignalKind::interrupt())?;
        let mut terminations = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    _ = interrupts.recv() => Signal::Interrupt,
                    _ = terminations.recv() => Signal::Terminate,
                };
                if this.fire(signal) {
                    eprintln!(
                        "\n{}: stopping; cleaning up and writing reports for what finished (again to exit at once)",
                        signal.name()
                    );
                } else {
                    eprintln!("{}: exiting at once; cleanup is left undone (see the `cleanup` command)", signal.name());
                    std::process::exit(i32::from(signal.exit_code()));
                }
            }
        });
        Ok(())
    }

    /// Stops the run at `deadline`, saying that its time `limit` is reached. Needs a tokio
    /// runtime.
    pub fn at(&self, deadline: std::time::Instant, limit: std::time::Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            if this.fire(Signal::RunLimit) {
                eprintln!(
                    "\nthe run's time limit of {} s is reached: stopping; cleaning up and writing reports for what finished",
                    limit.as_secs()
                );
            }
        });
    }
}

/// How one scenario fared over repeated runs of the suite (`run --repeat N`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub scenario: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    /// Passed in some runs and failed in others.
    pub fn flaky(&self) -> bool {
        self.passed > 0 && self.failed > 0
    }

    /// The share of the runs that ran it in which it failed.
    pub fn failure_rate(&self) -> f64 {
        let ran = self.passed + self.failed;
        if ran == 0 { 0.0 } else { self.failed as f64 / ran as f64 }
    }
}

/// Each scenario's passes, failures and skips over `runs` (outcomes of the same scenarios,
/// once per run), in the order of the first run.
pub fn tally(runs: &[Vec<ScenarioOutcome>]) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = Vec::new();
    for outcome in runs.iter().flatten() {
        let index = match tallies.iter().position(|t| t.scenario == outcome.name) {
            Some(index) => index,
            None => {
                tallies.push(Tally { scenario: outcome.name.clone(), passed: 0, failed: 0, skipped: 0 });
                tallies.len() - 1
            }
        };
        let tally = &mut tallies[index];
        match (&outcome.skipped, outcome.passed()) {
            (Some(_), _) => tally.skipped += 1,
            (None, true) => tally.passed += 1,
            (None, false) => tally.failed += 1,
        }
    }
    tallies
}

/// One outcome per scenario standing for all the runs: its first failure if it ever failed,
/// otherwise its last outcome. Reports of a repeated run show what went wrong at least once.
pub fn worst_of(runs: Vec<Vec<ScenarioOutcome>>) -> Vec<ScenarioOutcome> {
    let mut chosen: Vec<ScenarioOutcome> = Vec::new();
    for outcome in runs.into_iter().flatten() {
        match chosen.iter_mut().find(|o| o.name == outcome.name) {
            None => chosen.push(outcome),
            Some(kept) if kept.passed() => *kept = outcome,
            Some(_) => {}
        }
    }
    chosen
}

/// The flake table printed after a repeated run: scenarios that failed at least once, then a
/// summary line.
pub fn tally_table(tallies: &[Tally], runs: usize) -> String {
    let mut out = String::new();
    let failing: Vec<&Tally> = tallies.iter().filter(|t| t.failed > 0).collect();
    if !failing.is_empty() {
        out.push_str(&format!("{:<40} {:>6} {:>6} {:>7}  {}\n", "scenario", "passed", "failed", "failure", ""));
        for t in &failing {
            let kind = if t.flaky() { "flaky" } else { "failed every time" };
            let rate = format!("{:.0}%", t.failure_rate() * 100.0);
            out.push_str(&format!("{:<40} {:>6} {:>6} {:>7}  {kind}\n", t.scenario, t.passed, t.failed, rate));
        }
    }
    let flaky = tallies.iter().filter(|t| t.flaky()).count();
    let broken = tallies.iter().filter(|t| t.failed > 0 && !t.flaky()).count();
    out.push_str(&format!(
        "{runs} runs of {} scenarios: {flaky} flaky, {broken} failed every time they ran\n",
        tallies.len()
    ));
    out
}

/// The lines that close a run: wall time, then `N passed, N failed, N skipped` (and the
/// known failures, when there are some).
pub fn totals(outcomes: &[ScenarioOutcome], wall_time: Duration) -> String {
    let Totals { passed, failed, skipped, known_failures } = Totals::of(outcomes);
    let known = if known_failures > 0 { format!(", {known_failures} known failures") } else { String::new() };
    format!(
        "suite wall time: {:.1}s for {} scenarios\n{passed} passed, {failed} failed, {skipped} skipped{known}\n",
        wall_time.as_secs_f64(),
        outcomes.len()
    )
}

/// `PASS name (1.2s)`, or `FAIL name (1.2s)` followed by the indented failure; private keys
/// redacted ([`crate::redaction`]).
pub fn line(outcome: &ScenarioOutcome) -> String {
    crate::redaction::redact(&unredacted_line(outcome))
}

fn unredacted_line(outcome: &ScenarioOutcome) -> String {
    if let Some(reason) = &outcome.skipped {
        return format!("SKIP {}: {}", outcome.name, reason.text);
    }
    let verdict = match (&outcome.known_failure, outcome.passed()) {
        (Some(_), _) => "KNOWN",
        (None, true) => "PASS",
        (None, false) => "FAIL",
    };
    let mut text = format!("{verdict} {} ({:.1}s)", outcome.name, outcome.duration.as_secs_f64());
    if let Some(known) = &outcome.known_failure {
        let finding = known.finding.as_ref().map_or(String::new(), |f| format!(" (see {f})"));
        text.push_str(&format!("\n  known failure: {}{finding}", known.reason));
    }
    if let Some(failure) = &outcome.failure {
        text.push_str(&format!("\n  {}: {failure}", outcome.path.display()));
    }
    if let Some(cleanup) = &outcome.cleanup_error {
        text.push_str(&format!("\n  warning: cleanup of namespace {} failed: {cleanup}", outcome.namespace));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome of a scenario named `name` that passed, failed (`Some(message)`) or, with
    /// `skip`, was skipped.
    fn outcome(name: &str, failure: Option<&str>, skip: bool) -> ScenarioOutcome {
        let text = format!(
            "name: {name}\ndescription: d\ncontract: [P1]\nsteps:\n  - request:\n      expect:\n        status: 200\n"
        );
        let loaded = crate::scenario::load::parse(Path::new("s.yaml"), &text).unwrap();
        if skip {
            return ScenarioOutcome::interrupted(&loaded);
        }
        let mut outcome = ScenarioOutcome::set_up_failed(&loaded, "i".into(), failure.unwrap_or_default().into());
        if failure.is_none() {
            outcome.failure = None;
        }
        outcome
    }

    #[test]
    fn repeated_runs_are_tallied_and_reported_by_their_first_failure() {
        let runs = vec![
            vec![outcome("steady", None, false), outcome("flaky", None, false), outcome("broken", Some("one"), false)],
            vec![
                outcome("steady", None, false),
                outcome("flaky", Some("two"), false),
                outcome("broken", Some("three"), false),
            ],
            vec![outcome("steady", None, false), outcome("flaky", None, false), outcome("broken", None, true)],
        ];
        let tallies = tally(&runs);
        let row = |name: &str| tallies.iter().find(|t| t.scenario == name).unwrap().clone();
        assert_eq!(row("steady"), Tally { scenario: "steady".into(), passed: 3, failed: 0, skipped: 0 });
        assert_eq!(row("flaky"), Tally { scenario: "flaky".into(), passed: 2, failed: 1, skipped: 0 });
        assert_eq!(row("broken"), Tally { scenario: "broken".into(), passed: 0, failed: 2, skipped: 1 });
        assert!(row("flaky").flaky() && !row("broken").flaky() && !row("steady").flaky());
        assert!((row("flaky").failure_rate() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(row("broken").failure_rate(), 1.0, "skips are not runs");

        let table = tally_table(&tallies, 3);
        assert!(table.contains("flaky") && table.contains("33%") && table.contains("failed every time"), "{table}");
        assert!(!table.contains("steady"), "{table}");
        assert!(table.ends_with("3 runs of 3 scenarios: 1 flaky, 1 failed every time they ran\n"), "{table}");

        let worst = worst_of(runs);
        let message =
            |name: &str| worst.iter().find(|o| o.name == name).unwrap().failure.as_ref().map(|f| f.message.clone());
        assert_eq!(message("steady"), None);
        assert_eq!(message("flaky").as_deref(), Some("two"), "a failure in any run is what is reported");
        assert_eq!(message("broken").as_deref(), Some("one"), "the first failure");
        assert_eq!(worst.len(), 3);
    }

    #[test]
    fn loopback_runs_everything_at_once_and_real_clusters_four_unless_told() {
        let loopback = TargetConfig::Loopback(Default::default());
        let cluster = TargetConfig::Cluster {
            kubeconfig: None,
            context: None,
            proxy: "p:80".into(),
            tls_proxy: None,
            installation: Default::default(),
            known_failures: Vec::new(),
        };
        assert_eq!(default_parallelism(&loopback, 64), 64);
        assert_eq!(default_parallelism(&loopback, 0), 1);
        assert_eq!(default_parallelism(&cluster, 64), DEFAULT_CLUSTER_PARALLELISM);
        assert_eq!(parse_parallelism(" 8 "), Ok(8));
        assert_eq!(parse_parallelism("0"), Err("must be at least 1".into()));
        assert_eq!(parse_parallelism("-1"), Err("\"-1\" is not a whole number".into()));
    }

    #[test]
    fn relative_paths_from_cargo_test_are_taken_from_the_repository_root() {
        // Unit tests run from the package directory, as `cargo test --test conformance` does.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(user_path("examples/implementation.yaml".into()), root.join("examples/implementation.yaml"));
        assert!(user_path("examples/implementation.yaml".into()).is_file());
        assert_eq!(user_path("/etc/x.yaml".into()), PathBuf::from("/etc/x.yaml"));
    }
}
