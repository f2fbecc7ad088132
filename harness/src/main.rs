//! `upstream-tls-conformance`: run the upstream TLS conformance suite.
//!
//! Exit codes: 0 every scenario passed; 1 a scenario failed; 2 invalid input (a scenario file,
//! a flag); 3 environment problem (cluster unreachable, loopback cannot start).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use harness::report::{RunInfo, RunReport, write_all};
use harness::runner::RunSettings;
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite::{self, DEFAULT_PARALLELISM};
use harness::target::{Environment, TargetConfig, env};

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID_INPUT: u8 = 2;
const EXIT_ENVIRONMENT: u8 = 3;

#[derive(Parser)]
#[command(version, about = "End-to-end conformance suite for upstream TLS in HTTPProxy implementations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run scenarios against a cluster, or against the built-in loopback cluster when no
    /// proxy address is given.
    Run(RunArgs),
    /// Load and check scenario files without running anything.
    Check {
        #[command(flatten)]
        selection: Selection,
    },
    /// List scenarios with the contract clauses they prove.
    List {
        #[command(flatten)]
        selection: Selection,
    },
    /// Print the JSON Schema of scenario files (committed as harness/scenario.schema.json).
    Schema,
    /// Run the mutation matrix (the catalog against loopback once per fault) and print the
    /// catalog page; fails unless every fault is caught and every scenario catches one.
    Catalog {
        #[command(flatten)]
        selection: Selection,
        /// Write the page to scenarios/README.md instead of printing it.
        #[arg(long)]
        write: bool,
    },
}

#[derive(clap::Args)]
struct Selection {
    /// Directory of scenario files (searched recursively for *.yaml).
    #[arg(long, env = env::SCENARIOS)]
    scenarios: Option<PathBuf>,
    /// Run only scenarios whose name contains one of these strings.
    #[arg(long = "filter", value_name = "TEXT")]
    filters: Vec<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    selection: Selection,
    /// Address (host:port) where the implementation's proxy serves plain HTTP. Selects a real
    /// cluster; without it the built-in loopback cluster is used.
    #[arg(long, env = env::PROXY)]
    proxy: Option<String>,
    /// Kubeconfig of the real cluster (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = env::KUBECONFIG)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, env = env::CONTEXT)]
    context: Option<String>,
    /// NAMESPACE/NAME of the Secret the installation reads its Envoy client certificate from
    /// (Contour's tls.envoy-client-certificate); the harness writes it. Without it, scenarios
    /// needing a client certificate are skipped on real clusters.
    #[arg(long, env = env::CLIENT_CERT_SECRET)]
    client_cert_secret: Option<harness::install::SecretRef>,
    /// Backend container image on a real cluster.
    #[arg(long, env = env::IMAGE, default_value = harness::fixture::DEFAULT_IMAGE)]
    image: String,
    /// Loopback fault to switch on (repeatable); the suite should then fail.
    #[arg(long = "loopback-fault", value_name = "FAULT", value_delimiter = ',', env = env::FAULTS)]
    faults: Vec<loopback::Fault>,
    /// How many scenarios run at once.
    #[arg(long, default_value_t = DEFAULT_PARALLELISM)]
    parallel: usize,
    /// Keep scenario namespaces after the run, for debugging.
    #[arg(long, env = env::KEEP_NAMESPACES)]
    keep_namespaces: bool,
    /// Directory for the reports (junit.xml, report.json, summary.md); default: the
    /// repository's reports/.
    #[arg(long, env = env::REPORTS)]
    reports: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("UPSTREAM_TLS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    harness::init_crypto();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { selection } => match load(&selection) {
            Ok(scenarios) => {
                println!("{} scenario files are valid", scenarios.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::List { selection } => match load(&selection) {
            Ok(scenarios) => {
                for s in &scenarios {
                    println!("{:<40} {}", s.name(), s.scenario.contract.join(", "));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => run(args),
        Command::Schema => {
            print!("{}", harness::scenario::json_schema());
            ExitCode::SUCCESS
        }
        Command::Catalog { selection, write } => match load(&selection) {
            Ok(scenarios) => catalog(&scenarios, write),
            Err(code) => code,
        },
    }
}

fn load(selection: &Selection) -> Result<Vec<LoadedScenario>, ExitCode> {
    let dir = selection.scenarios.clone().unwrap_or_else(suite::default_scenario_dir);
    let scenarios = load_dir(&dir).map_err(|errors| {
        for error in &errors {
            eprintln!("error: {error}");
        }
        eprintln!("{} problem(s) in scenario files; nothing was run", errors.len());
        ExitCode::from(EXIT_INVALID_INPUT)
    })?;
    let selected: Vec<LoadedScenario> = scenarios
        .into_iter()
        .filter(|s| selection.filters.is_empty() || selection.filters.iter().any(|f| s.name().contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        eprintln!("error: no scenario matches the filters {:?}", selection.filters);
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    }
    Ok(selected)
}

fn catalog(scenarios: &[LoadedScenario], write: bool) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
    };
    eprintln!(
        "running {} scenarios against loopback with no fault and with each of {} faults...",
        scenarios.len(),
        loopback::Fault::ALL.len()
    );
    let matrix = match runtime.block_on(harness::matrix::run_matrix(scenarios, &loopback::Fault::ALL)) {
        Ok(matrix) => matrix,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
    };
    let page = harness::matrix::render_catalog(scenarios, &matrix);
    if write {
        let path = suite::default_scenario_dir().join("README.md");
        if let Err(e) = std::fs::write(&path, &page) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
        eprintln!("wrote {}", path.display());
    } else {
        print!("{page}");
    }
    let problems: Vec<String> = matrix
        .baseline_failures
        .iter()
        .map(|f| format!("fails with no fault: {f}"))
        .chain(matrix.uncaught().iter().map(|f| format!("no scenario catches fault {f}")))
        .chain(matrix.idle_scenarios().iter().map(|s| format!("scenario {s} catches no fault")))
        .collect();
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
}

fn run(args: RunArgs) -> ExitCode {
    let scenarios = match load(&args.selection) {
        Ok(scenarios) => scenarios,
        Err(code) => return code,
    };
    let target = match args.proxy {
        Some(proxy) => TargetConfig::Cluster {
            kubeconfig: args.kubeconfig,
            context: args.context,
            proxy,
            client_certificate: args.client_cert_secret,
        },
        None => TargetConfig::Loopback { faults: args.faults },
    };
    let settings = RunSettings { image: args.image, keep_namespaces: args.keep_namespaces, ..Default::default() };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
    };
    runtime.block_on(async move {
        println!("upstream TLS conformance: {} scenarios against the {}", scenarios.len(), target.describe());
        let environment = match Environment::connect(&target, settings).await {
            Ok(environment) => environment,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ENVIRONMENT);
            }
        };
        let started = Instant::now();
        let started_at = time::OffsetDateTime::now_utc();
        let outcomes =
            suite::run_all(&environment.target, &scenarios, args.parallel, |o| println!("{}", suite::line(o))).await;
        let wall_time: Duration = started.elapsed();
        let info =
            RunInfo { target: target.describe(), run_id: environment.target.run_id.clone(), started_at, wall_time };
        environment.shutdown().await;
        let loaded: Vec<&LoadedScenario> = scenarios.iter().collect();
        let report = RunReport::new(info, &loaded, &outcomes);
        let dir = args.reports.unwrap_or_else(suite::default_reports_dir);
        match write_all(&report, &dir) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("reports: {}", names.join(", "));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ENVIRONMENT);
            }
        }
        // The per-scenario lines were printed as they finished; the totals close the run.
        print!("\n{}", suite::totals(&outcomes, wall_time));
        if outcomes.iter().all(|o| o.passed()) { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
    })
}
