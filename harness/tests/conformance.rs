//! `cargo test --test conformance`: one trial per scenario file.
//!
//! Runs against the built-in loopback cluster unless `UPSTREAM_TLS_PROXY` names a real
//! cluster's proxy (see book/src/running.md). The target is only started when some trial runs, so
//! `-- --list` and filters that select nothing start nothing. Invalid scenario files make a
//! failing trial named `scenario-files`, listing every problem. Scenarios needing an
//! install-wide feature the target lacks are ignored; scenarios that change install-wide
//! state get a loopback cluster of their own, or on a real cluster run alone (they take the
//! exclusive side of a lock the others share).

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::RwLock;

use std::time::{Duration, Instant};

use harness::config::RunPlan;
use harness::report::{RunInfo, RunReport, write_all};
use harness::runner::ScenarioOutcome;
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite;
use harness::target::{Environment, env};
use libtest_mimic::{Arguments, Failed, Trial};

type Shared = Arc<OnceLock<Result<Environment, String>>>;

/// What every trial shares: the runtime, the target (started by the first trial that runs),
/// the locks, and the outcomes for the reports.
#[derive(Clone)]
struct Run {
    runtime: Arc<tokio::runtime::Runtime>,
    environment: Shared,
    start: Arc<Mutex<()>>,
    install: Arc<RwLock<()>>,
    outcomes: Arc<Mutex<Vec<ScenarioOutcome>>>,
}

fn main() {
    let mut args = Arguments::from_args();
    harness::init_crypto();

    let dir = std::env::var_os(env::SCENARIOS).map_or_else(suite::default_scenario_dir, |d| suite::user_path(d.into()));
    let run = Run {
        runtime: Arc::new(tokio::runtime::Runtime::new().expect("a tokio runtime starts on any supported OS")),
        environment: Arc::default(),
        start: Arc::default(),
        install: Arc::default(),
        outcomes: Arc::default(),
    };
    let plan = RunPlan::from_env();
    for warning in plan.iter().flat_map(|p| &p.warnings) {
        eprintln!("warning: {warning}");
    }
    let started = (Instant::now(), time::OffsetDateTime::now_utc());

    let selection = plan.as_ref().map(|p| p.selection.clone()).unwrap_or_default();
    let catalog: Vec<Arc<LoadedScenario>> = match load_dir(&dir) {
        Ok(scenarios) => scenarios.into_iter().map(Arc::new).collect(),
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let trial = Trial::test("scenario-files", move || Err(Failed::from(text.join("\n"))));
            libtest_mimic::run(&args, vec![trial]).exit();
        }
    };
    let selected = catalog.iter().filter(|s| selection.includes(s)).count();
    // Scenarios block little CPU: most of their time is waiting on the cluster and the proxy.
    args.test_threads.get_or_insert(match &plan {
        Ok(plan) => plan.parallelism(selected),
        Err(_) => suite::DEFAULT_CLUSTER_PARALLELISM,
    });
    let trials = catalog
        .iter()
        .filter(|s| selection.includes(s))
        .map(|scenario| {
            let lacks = plan.as_ref().ok().and_then(|p| p.target.lacks(&scenario.scenario.features));
            let ignored = lacks.is_some();
            // Ignored trials never run, so their outcome, with the reason, is recorded here.
            let filtered_out = args.filter.as_ref().is_some_and(|f| !scenario.name().contains(f.as_str()));
            if let Some(reason) = lacks
                && !args.ignored
                && !filtered_out
            {
                let outcome = ScenarioOutcome::skipped(scenario, reason);
                run.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
            }
            trial(scenario.clone(), run.clone()).with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let environment = Arc::into_inner(run.environment).and_then(OnceLock::into_inner);
    if let Some(Ok(environment)) = environment {
        let plan = plan.as_ref().expect("the environment started, so the plan is valid");
        let info = RunInfo::new(plan, environment.run_id(), started);
        let diagnostic_files = environment.diagnostic_files();
        // Scenarios have their namespaces deleted without waiting; wait once, here.
        if let Err(e) = run.runtime.block_on(environment.await_namespace_deletion(Duration::from_secs(300))) {
            eprintln!("warning: {e}");
        }
        if let Err(e) = run.runtime.block_on(environment.remove_installation_state(Duration::from_secs(120))) {
            eprintln!("warning: {e}");
        }
        run.runtime.block_on(environment.shutdown());
        let outcomes = run.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let loaded: Vec<&LoadedScenario> = catalog.iter().map(|s| s.as_ref()).collect();
        let mut report = RunReport::new(info, &loaded, &outcomes);
        report.diagnostic_files.extend(diagnostic_files);
        let reports =
            std::env::var_os(env::REPORTS).map_or_else(suite::default_reports_dir, |d| suite::user_path(d.into()));
        match write_all(&report, &reports) {
            Ok(_) => eprintln!("reports written to {}", reports.display()),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    conclusion.exit();
}

fn trial(scenario: Arc<LoadedScenario>, run: Run) -> Trial {
    let name = scenario.name().to_string();
    let kind = scenario.path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let trial = Trial::test(name, move || {
        let environment = {
            // One trial starts the target; the others wait for it.
            let _guard = run.start.lock().unwrap_or_else(|e| e.into_inner());
            run.environment.get_or_init(|| {
                let plan = RunPlan::from_env()?;
                run.runtime.block_on(Environment::connect(&plan.target, plan.settings)).map_err(|e| e.to_string())
            })
        };
        let environment = environment.as_ref().map_err(|e| Failed::from(format!("cannot set up the run: {e}")))?;
        let outcome = run.runtime.block_on(async {
            if environment.needs_alone(&scenario) {
                let _alone = run.install.write().await;
                environment.run(&scenario, &()).await
            } else {
                let _shared = run.install.read().await;
                environment.run(&scenario, &()).await
            }
        });
        // A known failure does not fail the test (the reports say known failure, never pass);
        // a stale one does, as any failure.
        let verdict = match (&outcome.failure, &outcome.known_failure) {
            (None, _) => Ok(()),
            (Some(_), Some(_)) => {
                eprintln!("{}", suite::line(&outcome));
                Ok(())
            }
            (Some(_), None) => Err(Failed::from(suite::line(&outcome))),
        };
        run.outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(outcome);
        verdict
    });
    match kind {
        Some(kind) => trial.with_kind(kind),
        None => trial,
    }
}
