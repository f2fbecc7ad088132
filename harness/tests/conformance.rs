//! `cargo test --test conformance`: one trial per scenario file.
//!
//! Runs against the built-in loopback cluster unless `UPSTREAM_TLS_PROXY` names a real
//! cluster's proxy (see the README). The target is only started when some trial runs, so
//! `-- --list` and filters that select nothing start nothing. Invalid scenario files make a
//! failing trial named `scenario-files`, listing every problem. Scenarios needing an
//! install-wide feature the target lacks are ignored; scenarios that change install-wide
//! state run alone (they take the exclusive side of a lock the others share).

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::RwLock;

use harness::runner::{RunSettings, run_scenario};
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite;
use harness::target::{Environment, TargetConfig, env};
use libtest_mimic::{Arguments, Failed, Trial};

/// Scenarios block little CPU: most of their time is waiting on the cluster and the proxy.
const DEFAULT_TEST_THREADS: usize = 4;

type Shared = Arc<OnceLock<Result<Environment, String>>>;

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(DEFAULT_TEST_THREADS);
    harness::init_crypto();

    let dir = std::env::var_os(env::SCENARIOS).map_or_else(suite::default_scenario_dir, Into::into);
    let runtime = Arc::new(tokio::runtime::Runtime::new().expect("a tokio runtime starts on any supported OS"));
    let environment: Shared = Arc::default();
    let start_lock = Arc::new(Mutex::new(()));
    let install_lock = Arc::new(RwLock::new(()));
    let config = TargetConfig::from_env();

    let trials = match load_dir(&dir) {
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            vec![Trial::test("scenario-files", move || Err(Failed::from(text.join("\n"))))]
        }
        Ok(scenarios) => scenarios
            .into_iter()
            .map(|scenario| {
                let ignored = config
                    .as_ref()
                    .ok()
                    .is_some_and(|c| scenario.scenario.features.iter().any(|f| c.lacks(*f).is_some()));
                let locks = Locks { start: start_lock.clone(), install: install_lock.clone() };
                trial(scenario, runtime.clone(), environment.clone(), locks).with_ignored_flag(ignored)
            })
            .collect(),
    };
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(environment)) = Arc::into_inner(environment).and_then(OnceLock::into_inner) {
        runtime.block_on(environment.shutdown());
    }
    conclusion.exit();
}

/// One trial starts the target, the others wait for it; install-wide changes run alone.
struct Locks {
    start: Arc<Mutex<()>>,
    install: Arc<RwLock<()>>,
}

fn trial(scenario: LoadedScenario, runtime: Arc<tokio::runtime::Runtime>, environment: Shared, locks: Locks) -> Trial {
    let name = scenario.name().to_string();
    let kind = scenario.path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let trial = Trial::test(name, move || {
        let environment = {
            // One trial starts the target; the others wait for it.
            let _guard = locks.start.lock().unwrap_or_else(|e| e.into_inner());
            environment.get_or_init(|| {
                let target = TargetConfig::from_env().map_err(|e| e.to_string())?;
                runtime.block_on(Environment::connect(&target, RunSettings::default())).map_err(|e| e.to_string())
            })
        };
        let environment = environment.as_ref().map_err(|e| Failed::from(format!("environment: {e}")))?;
        let outcome = runtime.block_on(async {
            if scenario.scenario.exclusive() {
                let _alone = locks.install.write().await;
                run_scenario(&environment.target, &scenario).await
            } else {
                let _shared = locks.install.read().await;
                run_scenario(&environment.target, &scenario).await
            }
        });
        match &outcome.failure {
            None => Ok(()),
            Some(_) => Err(Failed::from(suite::line(&outcome))),
        }
    });
    match kind {
        Some(kind) => trial.with_kind(kind),
        None => trial,
    }
}
