//! `upstream-tls-conformance`: run the upstream TLS conformance suite.
//!
//! Exit codes: 0 every scenario passed; 1 a scenario failed; 2 invalid input (a scenario file,
//! a flag); 3 environment problem (cluster unreachable, loopback cannot start, standard output
//! not writable).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use harness::config::{ImplementationConfig, Overrides};
use harness::install::TlsVersion;
use harness::progress::Progress;
use harness::report::{RunInfo, RunReport, write_all};
use harness::scenario::{LoadedScenario, load_dir};
use harness::suite::{self, Interrupt, Signal};
use harness::target::{Environment, env};

/// Prints to standard output as [`emit`] does.
macro_rules! out {
    ($($arg:tt)*) => { emit(format_args!($($arg)*)) };
}

/// Prints a line to standard output as [`emit`] does.
macro_rules! outln {
    ($($arg:tt)*) => { emit(format_args!("{}\n", format_args!($($arg)*))) };
}

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID_INPUT: u8 = 2;
const EXIT_ENVIRONMENT: u8 = 3;
/// How long a run waits at its end for its scenarios' namespaces to be deleted.
const NAMESPACE_DELETION_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// How long an interrupted run waits for its namespaces to be deleted on a real cluster.
const INTERRUPTED_CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

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
    /// Print the JSON Schema of scenario files (committed as harness/scenario.schema.json),
    /// or with --report of report.json (committed as harness/report.schema.json).
    Schema {
        /// The schema of report.json instead.
        #[arg(long)]
        report: bool,
    },
    /// Time the catalog against the built-in loopback cluster, several runs, and print wall
    /// time, CPU time, peak memory and the critical path of each (a tab-separated table whose
    /// columns stay the same, so later runs can be compared).
    Bench {
        #[command(flatten)]
        selection: Selection,
        /// How many runs.
        #[arg(long, default_value_t = 3, value_parser = suite::parse_parallelism)]
        runs: usize,
        /// How many scenarios run at once [default: all of them; 4 at a real cluster's pace].
        #[arg(long, env = env::PARALLEL, value_parser = suite::parse_parallelism)]
        parallel: Option<usize>,
        /// The controller of the built-in loopback cluster: reference or contour.
        #[arg(long, value_name = "reference|contour", env = env::CONTROLLER)]
        controller: Option<loopback::config::ControllerKind>,
        /// What serves loopback's traffic: loopback (its own proxy) or envoy (with the real
        /// Contour).
        #[arg(long, value_name = "loopback|envoy", env = env::DATA_PLANE)]
        data_plane: Option<loopback::config::DataPlaneKind>,
        /// Run loopback at a real cluster's pace (`kind`), to measure the harness's scheduling
        /// there; default: `none`, full speed.
        #[arg(long = "loopback-latency", value_name = "none|kind", env = env::LATENCY)]
        latency: Option<loopback::LatencyProfile>,
    },
    /// Run the mutation matrix (the catalog against loopback once per fault, then each catch
    /// again with its scenario alone) and print the catalog page; fails unless every fault is
    /// caught and every scenario catches one.
    Catalog {
        #[command(flatten)]
        selection: Selection,
        /// Write the page to scenarios/README.md instead of printing it.
        #[arg(long)]
        write: bool,
    },
    /// Generated cases of the upstream-TLS surface, run under every stack loopback offers
    /// (reference; the real Contour with loopback's proxy; the real Contour with Envoy) and
    /// held against the arbiter, the last of them. A case that disagrees is shrunk to its
    /// plainest form and written as a scenario file asserting what the arbiter did. Exits 1
    /// when something disagreed.
    Differential {
        /// How many cases (at least one).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
        cases: u64,
        /// The generator's seed: a seed and a case number give the same case everywhere.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Cases per loopback cluster.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// The stacks, the arbiter last (repeatable, or a comma list) [default: every one this
        /// machine has: reference, then contour when scripts/ensure-contour built it, then
        /// envoy when scripts/ensure-envoy fetched it].
        #[arg(long = "stack", value_name = "reference|contour|envoy", value_delimiter = ',')]
        stacks: Vec<StackName>,
        /// A loopback fault to plant (repeatable): the reference controller with it joins the
        /// run as one more stack, held against the others, to show what the runs find.
        #[arg(long = "loopback-fault", value_name = "FAULT", value_delimiter = ',')]
        faults: Vec<loopback::Fault>,
        /// At most this many disagreeing cases are shrunk; the others are counted.
        #[arg(long, default_value_t = 10)]
        shrink: usize,
        /// Where the findings' scenario files go.
        #[arg(long, default_value = "reports/differential")]
        findings: PathBuf,
        /// How many cases run at once on each cluster [default: 50].
        #[arg(long, default_value_t = 50, value_parser = suite::parse_parallelism)]
        parallel: usize,
        /// Print case N of the seed as the scenario file it runs, and run nothing.
        #[arg(long, value_name = "N")]
        show: Option<u64>,
    },
    /// Print Contour's config file with the implementation config's installation settings
    /// (tls.envoy-client-certificate, cluster.upstream-tls versions and cipher suites,
    /// enableExternalNameService) set in it, so that the
    /// installation and what the harness expects of it come from one file. Edits the YAML as
    /// data: no duplicate keys, every other setting kept (comments are dropped).
    ContourConfig {
        /// Implementation config file whose `installation` section to apply.
        #[arg(long, env = env::CONFIG)]
        config: PathBuf,
        /// Contour's config file to start from (its ConfigMap's contour.yaml); `-` or absent:
        /// standard input.
        #[arg(long)]
        base: Option<PathBuf>,
    },
    /// Remove what interrupted or crashed runs left behind: on this machine, the work
    /// directories (with their keys) and backends of this user's loopback clusters whose
    /// process is gone (anything it cannot show to be theirs is listed as skipped);
    /// with --cluster, the namespaces the harness labelled on a real cluster.
    Cleanup {
        /// Also look in this directory: the `work-dir` of a loopback config (the temporary
        /// directories loopback uses by default are always looked in).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also delete the harness's namespaces on the cluster of the kubeconfig (those
        /// labelled upstream-tls-conformance/run, or only --run-id's).
        #[arg(long)]
        cluster: bool,
        /// Only this run's namespaces (the run id is in the reports and namespace names).
        #[arg(long, requires = "cluster")]
        run_id: Option<String>,
        /// Only namespaces created longer ago than this (`90s`, `30m`, `2h`, `1d`), so that a
        /// run still going on elsewhere keeps its own.
        #[arg(long, requires = "cluster", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
        /// Kubeconfig of the real cluster (default: $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = env::KUBECONFIG, requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        /// Kubeconfig context (default: the current context).
        #[arg(long, env = env::CONTEXT, requires = "cluster")]
        context: Option<String>,
    },
    /// Check a certification report before it is submitted, as its reviewers do.
    #[command(subcommand)]
    Certify(CertifyCommand),
    /// Say what a scenario proves (its clauses, in the contract's words) and what it does
    /// (certificates, backends, objects applied, steps), without running it.
    Explain {
        /// The scenario's name, as `list` prints it.
        scenario: String,
        #[command(flatten)]
        selection: Selection,
    },
}

#[derive(Subcommand)]
enum CertifyCommand {
    /// Check a certification.yaml: its format, a released harness with that release's catalog
    /// and contract, no loopback faults, no exempted core feature, a reason for every skip,
    /// results and counts that agree. Exit 0 when valid, 1 with every problem otherwise.
    Verify {
        /// The report (certification.yaml of a run).
        file: PathBuf,
    },
    /// Print the JSON Schema of certification.yaml (certification/certification.schema.json).
    Schema,
}

#[derive(clap::Args)]
struct Selection {
    /// Directory of scenario files (searched recursively for *.yaml); default: the catalog
    /// built into this binary (the source's scenarios/).
    #[arg(long, env = env::SCENARIOS)]
    scenarios: Option<PathBuf>,
    /// Only scenarios with this feature or whose name contains this text (repeatable, or a
    /// comma list).
    #[arg(long = "filter", value_name = "FEATURE|TEXT", value_delimiter = ',', env = env::RUN)]
    run: Vec<String>,
    /// Not scenarios with this feature or whose name contains this text (repeatable, or a
    /// comma list).
    #[arg(long = "skip", value_name = "FEATURE|TEXT", value_delimiter = ',', env = env::SKIP)]
    skip: Vec<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    selection: Selection,
    /// Implementation config file (see examples/implementation.yaml); the flags below and
    /// their environment variables override it.
    #[arg(long, env = env::CONFIG)]
    config: Option<PathBuf>,
    /// Address (host:port) where the implementation's proxy serves plain HTTP. Selects a real
    /// cluster; without it the built-in loopback cluster is used.
    #[arg(long, env = env::PROXY)]
    proxy: Option<String>,
    /// Address (host:port) where the proxy serves TLS virtual hosts (Envoy's HTTPS listener).
    /// Without it, scenarios with feature tcp-proxy are skipped on a real cluster.
    #[arg(long, env = env::TLS_PROXY)]
    tls_proxy: Option<String>,
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
    /// The installation's minimum upstream TLS version (Contour's
    /// cluster.upstream-tls.minimum-protocol-version).
    #[arg(long, env = env::MIN_TLS_VERSION)]
    min_tls_version: Option<TlsVersion>,
    /// The installation's maximum upstream TLS version (Contour's
    /// cluster.upstream-tls.maximum-protocol-version).
    #[arg(long, env = env::MAX_TLS_VERSION)]
    max_tls_version: Option<TlsVersion>,
    /// Backend container image on a real cluster (default: nginx:1.27).
    #[arg(long, env = env::IMAGE)]
    image: Option<String>,
    /// Make the cluster for the run: `k3s` starts a throwaway k3s in Docker, installs Contour
    /// as scripts/install-contour does (configured from --config, default
    /// examples/implementation.yaml), preloads the backend image, runs the suite and removes
    /// the container. Needs a binary built with `--features k3s`, a Docker engine with network
    /// access, and kubectl.
    #[arg(long, value_enum)]
    provision: Option<Provision>,
    /// Loopback fault to switch on (repeatable); the suite should then fail.
    #[arg(long = "loopback-fault", value_name = "FAULT", value_delimiter = ',', env = env::FAULTS)]
    faults: Vec<loopback::Fault>,
    /// Loopback disruption to run under (repeatable): trouble the harness must ride out or
    /// report, such as API errors or crashing backends (`loopback disruptions` lists them).
    #[arg(long = "loopback-disruption", value_name = "DISRUPTION", value_delimiter = ',', env = env::DISRUPTIONS)]
    disruptions: Vec<loopback::Disruption>,
    /// The implementation's version as the reports name it, instead of the config file's
    /// `implementation.version` (real clusters).
    #[arg(long, value_name = "VERSION", env = env::IMPLEMENTATION_VERSION)]
    implementation_version: Option<String>,
    /// Run the built-in loopback cluster at a real cluster's pace: `kind` (pods start in
    /// seconds, the controller holds off as Contour does, namespaces take seconds to go), so
    /// that the harness's scheduling there can be measured; `none` (default): full speed.
    #[arg(long = "loopback-latency", value_name = "none|kind", env = env::LATENCY)]
    latency: Option<loopback::LatencyProfile>,
    /// The controller of the built-in loopback cluster: reference (loopback's model of
    /// Contour, the default) or contour (the real Contour, built by scripts/ensure-contour).
    #[arg(long, value_name = "reference|contour", env = env::CONTROLLER)]
    controller: Option<loopback::config::ControllerKind>,
    /// The Contour release loopback runs with --controller contour (default: the first line
    /// of loopback/contour-versions).
    #[arg(long, value_name = "VERSION", env = env::CONTOUR_VERSION)]
    contour_version: Option<String>,
    /// Where the real Contour in loopback reads the installation's settings from: its config
    /// file (default) or a ContourConfiguration object.
    #[arg(long, value_name = "config-file|contour-configuration", env = env::CONTOUR_SETTINGS_FROM)]
    contour_settings_from: Option<loopback::config::ContourSettingsSource>,
    /// What serves the built-in loopback cluster's traffic: loopback (its own proxy, the
    /// default) or envoy (Envoy, fetched by scripts/ensure-envoy and programmed by the real
    /// Contour; implies --controller contour).
    #[arg(long, value_name = "loopback|envoy", env = env::DATA_PLANE)]
    data_plane: Option<loopback::config::DataPlaneKind>,
    /// The Envoy release loopback runs with --data-plane envoy (default: the one
    /// loopback/contour-versions pairs with the Contour release).
    #[arg(long, value_name = "VERSION", env = env::ENVOY_VERSION)]
    envoy_version: Option<String>,
    /// How many scenarios run at once [default: all of them on loopback, 16 on a real cluster].
    #[arg(long, env = env::PARALLEL, value_parser = suite::parse_parallelism)]
    parallel: Option<usize>,
    /// Keep scenario namespaces after the run, for debugging.
    #[arg(long, env = env::KEEP_NAMESPACES)]
    keep_namespaces: bool,
    /// Run the suite this many times and report each scenario's failure rate (flakes); the
    /// reports then show each scenario's first failure, if it had one.
    #[arg(long, default_value_t = 1, value_parser = suite::parse_parallelism)]
    repeat: usize,
    /// Directory for the reports (junit.xml, report.json, summary.md, report.html,
    /// certification.yaml, diagnostics/); default: reports/ in the current directory.
    #[arg(long, env = env::REPORTS)]
    reports: Option<PathBuf>,
    /// The report.json of an earlier run (last night's): the reports then say what changed
    /// since (newly failing, fixed, still failing, flaky, new, gone, markedly slower or faster).
    #[arg(long, value_name = "REPORT_JSON", env = env::BASELINE)]
    baseline: Option<PathBuf>,
}

/// What became of standard output: [`STDOUT_OPEN`], or its reader went away (`| head`), or
/// writing failed otherwise (a full disk).
static STDOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(STDOUT_OPEN);
const STDOUT_OPEN: u8 = 0;
const STDOUT_CLOSED: u8 = 1;
const STDOUT_FAILED: u8 = 2;

/// Writes to standard output. When its reader has gone away (`list | head -1`) the output
/// ends quietly and the command goes on (a run still writes its reports and cleans up); any
/// other write error is said once on standard error and makes the exit code 3.
fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if STDOUT.load(Ordering::Relaxed) != STDOUT_OPEN {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT.store(STDOUT_CLOSED, Ordering::Relaxed);
        } else {
            STDOUT.store(STDOUT_FAILED, Ordering::Relaxed);
            eprintln!("error: cannot write to standard output: {e}");
        }
    }
}

fn main() -> ExitCode {
    forget_empty_settings();
    let code = command();
    if STDOUT.load(std::sync::atomic::Ordering::Relaxed) == STDOUT_FAILED && code == ExitCode::SUCCESS {
        return ExitCode::from(EXIT_ENVIRONMENT);
    }
    code
}

/// An `UPSTREAM_TLS_*` variable set to nothing means the same as one not set, as an empty
/// `KUBECONFIG` does to kubectl (the argument parser would take it for a flag missing its value).
fn forget_empty_settings() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(name, value)| name.to_string_lossy().starts_with("UPSTREAM_TLS_") && value.is_empty())
        .map(|(name, _)| name)
        .collect();
    for name in empty {
        // SAFETY: first thing in main, before any thread is started.
        unsafe { std::env::remove_var(name) };
    }
}

fn command() -> ExitCode {
    tracing_subscriber::fmt()
        // kube-rs logs its own errors, which the harness reports in its words: by default
        // only the harness's messages are printed.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UPSTREAM_TLS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    harness::init_crypto();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { selection } => match load(&selection) {
            Ok(scenarios) => {
                let digest = harness::scenario::load::catalog_sha256(&scenarios);
                outln!("{} scenario files are valid (catalog sha256 {digest})", scenarios.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::List { selection } => match load(&selection) {
            Ok(scenarios) => {
                for s in &scenarios {
                    outln!("{:<40} {}", s.name(), s.scenario.clauses().join(", "));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(args) => run(args),
        Command::Certify(CertifyCommand::Schema) => {
            out!("{}", harness::certify::schema());
            ExitCode::SUCCESS
        }
        Command::Certify(CertifyCommand::Verify { file }) => certify_verify(&file),
        Command::Explain { scenario, selection } => match load(&selection) {
            Ok(scenarios) => match scenarios.iter().find(|s| s.name() == scenario) {
                Some(found) => {
                    out!("{}", harness::explain::explain(found));
                    ExitCode::SUCCESS
                }
                None => {
                    let near: Vec<&str> =
                        scenarios.iter().map(|s| s.name()).filter(|n| n.contains(scenario.as_str())).take(5).collect();
                    let hint =
                        if near.is_empty() { String::new() } else { format!("; did you mean {}?", near.join(", ")) };
                    eprintln!("error: no scenario is named {scenario:?}{hint} (`list` names them all)");
                    ExitCode::from(EXIT_INVALID_INPUT)
                }
            },
            Err(code) => code,
        },
        Command::Schema { report } => {
            if report {
                out!("{}", harness::report::json::schema());
            } else {
                out!("{}", harness::scenario::json_schema());
            }
            ExitCode::SUCCESS
        }
        Command::Catalog { selection, write } if write && !(selection.run.is_empty() && selection.skip.is_empty()) => {
            eprintln!("error: --write needs the whole catalog; drop --filter/--skip ({}/{})", env::RUN, env::SKIP);
            ExitCode::from(EXIT_INVALID_INPUT)
        }
        Command::Bench { selection, runs, parallel, controller, data_plane, latency } => match load(&selection) {
            Ok(scenarios) => {
                bench(scenarios, runs, Overrides { controller, data_plane, parallel, latency, ..Default::default() })
            }
            Err(code) => code,
        },
        Command::Differential { show: Some(index), seed, .. } => {
            let case = harness::generate::Case::generate(seed, index);
            out!("# seed {seed}, case {index}\n{}", case.render());
            ExitCode::SUCCESS
        }
        Command::Differential { cases, seed, batch, stacks, faults, shrink, findings, parallel, show: None } => {
            differential(cases, seed, batch, &stacks, faults, shrink, findings, parallel)
        }
        Command::ContourConfig { config, base } => contour_config(&config, base.as_deref()),
        Command::Cleanup { work_dir, cluster, run_id, older_than, kubeconfig, context } => cleanup(
            work_dir.as_deref(),
            cluster,
            run_id.as_deref(),
            older_than,
            kubeconfig.as_deref(),
            context.as_deref(),
        ),
        Command::Catalog { selection, write } => match load(&selection) {
            Ok(scenarios) => catalog(&scenarios, write),
            Err(code) => code,
        },
    }
}

/// An age such as `90s`, `30m`, `2h` or `1d`.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} is not an age such as 90s, 30m, 2h or 1d")),
    };
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not an age such as 90s, 30m, 2h or 1d"))?;
    Ok(std::time::Duration::from_secs(number.saturating_mul(seconds)))
}

fn load(selection: &Selection) -> Result<Vec<LoadedScenario>, ExitCode> {
    let chosen = harness::config::Selection { run: selection.run.clone(), skip: selection.skip.clone() };
    select(selection.scenarios.as_deref(), &chosen).map(|(selected, _)| selected)
}

/// The scenarios of `dir` (default: the repository's): those `selection` includes, and the
/// others.
fn select(
    dir: Option<&std::path::Path>,
    selection: &harness::config::Selection,
) -> Result<(Vec<LoadedScenario>, Vec<LoadedScenario>), ExitCode> {
    let loaded = match dir {
        Some(dir) => load_dir(dir),
        None => harness::scenario::load::load_builtin(),
    };
    let scenarios = loaded.map_err(|errors| {
        for error in &errors {
            eprintln!("error: {error}");
        }
        eprintln!("{} problem(s) in scenario files; nothing was run", errors.len());
        ExitCode::from(EXIT_INVALID_INPUT)
    })?;
    for entry in selection.unknown_entries(&scenarios) {
        eprintln!("warning: {entry:?} is neither a feature nor part of a scenario name");
    }
    let (selected, others): (Vec<LoadedScenario>, Vec<LoadedScenario>) =
        scenarios.into_iter().partition(|s| selection.includes(s));
    if selected.is_empty() {
        eprintln!("error: no scenario is selected (run: {:?}, skip: {:?})", selection.run, selection.skip);
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    }
    Ok((selected, others))
}

/// The async runtime, or the exit code for a machine that cannot start one.
/// A stack of the differential runs, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StackName {
    Reference,
    Contour,
    Envoy,
}

#[allow(clippy::too_many_arguments)]
fn differential(
    cases: u64,
    seed: u64,
    batch: u64,
    names: &[StackName],
    faults: Vec<loopback::Fault>,
    shrink: usize,
    findings: PathBuf,
    parallel: usize,
) -> ExitCode {
    use harness::differential::{Plan, Stack};
    let mut stacks: Vec<Stack> = if names.is_empty() {
        Stack::available()
    } else {
        names
            .iter()
            .map(|name| match name {
                StackName::Reference => Stack::reference(),
                StackName::Contour => Stack::contour(),
                StackName::Envoy => Stack::contour_with_envoy(),
            })
            .collect()
    };
    if !faults.is_empty() {
        let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
        let planted = Stack {
            name: format!("reference with {}", names.join(", ")),
            options: harness::target::LoopbackOptions::with_faults(faults),
        };
        stacks.insert(0, planted);
    }
    if stacks.len() < 2 {
        eprintln!(
            "error: a differential run needs two stacks or more, the arbiter last; {} only {}: build \
             the real Contour with scripts/ensure-contour (and fetch Envoy with scripts/ensure-envoy), name more \
             with --stack, or plant a fault with --loopback-fault",
            if names.is_empty() { "this machine has" } else { "--stack gives" },
            stacks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let plan = Plan { seed, cases, batch, parallel, stacks, shrink_budget: shrink, findings_dir: Some(findings) };
    eprintln!(
        "differential: seed {seed}, {cases} cases under {}",
        plan.stacks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    match runtime.block_on(harness::differential::run(&plan, &|line| eprintln!("{line}"))) {
        Ok(summary) => {
            out!("{}", harness::differential::report(&summary, seed));
            if summary.findings.is_empty() && summary.unshrunk == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ENVIRONMENT)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_ENVIRONMENT)
    })
}

fn bench(scenarios: Vec<LoadedScenario>, runs: usize, overrides: Overrides) -> ExitCode {
    let plan = match ImplementationConfig::default().resolve(overrides) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Known failures wait out their traffic limit by design: they would time the limit, not
    // the implementation, so the benchmark leaves them out and says so.
    let known = plan.target.known_failures();
    let (left_out, scenarios): (Vec<LoadedScenario>, Vec<LoadedScenario>) =
        scenarios.into_iter().partition(|s| known.iter().any(|k| k.scenario == s.name()));
    let scenarios = scenarios.as_slice();
    let parallelism = plan.parallelism(scenarios.len());
    outln!(
        "upstream TLS conformance benchmark: {} scenarios against the {}, {parallelism} at a time, {runs} {}",
        scenarios.len(),
        plan.target.describe(),
        if runs == 1 { "run" } else { "runs" }
    );
    if !left_out.is_empty() {
        let names: Vec<&str> = left_out.iter().map(|s| s.name()).collect();
        outln!("left out, as known failures of this implementation: {}", names.join(", "));
    }
    let samples =
        match runtime.block_on(harness::bench::run_bench(&plan.target, &plan.settings, scenarios, parallelism, runs)) {
            Ok(samples) => samples,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ENVIRONMENT);
            }
        };
    out!("{}", harness::bench::render(&samples));
    if samples.iter().any(|s| s.failed > 0) {
        eprintln!("error: some scenarios failed, so these figures do not describe a passing run");
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

fn catalog(scenarios: &[LoadedScenario], write: bool) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    eprintln!(
        "running {} scenarios against loopback with no fault and with each of {} faults...",
        scenarios.len(),
        loopback::Fault::ALL.len()
    );
    // The page's catches, if it can be read, only order the work (see run_matrix).
    let page_path = suite::default_scenario_dir().join("README.md");
    let current_page = std::fs::read_to_string(&page_path).unwrap_or_default();
    let expected = harness::matrix::claimed_catches(&current_page).unwrap_or_default();
    let matrix = match runtime.block_on(harness::matrix::run_matrix(scenarios, &loopback::Fault::ALL, &expected)) {
        Ok(matrix) => matrix,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
    };
    for pair in &matrix.unconfirmed {
        eprintln!("note: not recorded, as it did not happen with the scenario on its own: {pair}");
    }
    if !matrix.not_run.is_empty() {
        eprintln!(
            "error: {} scenarios need the real Contour, which is not built; run scripts/ensure-contour first",
            matrix.not_run.len()
        );
        return ExitCode::from(EXIT_ENVIRONMENT);
    }
    let page = harness::matrix::render_catalog(scenarios, &matrix);
    if write {
        if let Err(e) = std::fs::write(&page_path, &page) {
            eprintln!("error: cannot write {}: {e}", page_path.display());
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
        eprintln!("wrote {}", page_path.display());
    } else {
        out!("{page}");
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

fn contour_config(config: &Path, base: Option<&Path>) -> ExitCode {
    let config = match ImplementationConfig::load(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let text = match base.filter(|p| *p != Path::new("-")) {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read standard input: {e}")),
    };
    match text.and_then(|text| harness::contour_config::contour_config(&text, &config.installation)) {
        Ok(written) => {
            out!("{written}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID_INPUT)
        }
    }
}

/// A cluster `run` makes for itself.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Provision {
    K3s,
}

fn run(mut args: RunArgs) -> ExitCode {
    let provisioned = match args.provision {
        None => None,
        Some(Provision::K3s) => match provision_k3s(&mut args) {
            Ok(provisioned) => Some(provisioned),
            Err(code) => return code,
        },
    };
    let code = run_on(args);
    if let Some(provisioned) = provisioned {
        provisioned.remove();
    }
    code
}

/// A provisioned cluster, removed when the run is over.
struct ProvisionedCluster {
    #[cfg(feature = "k3s")]
    cluster: harness::provision::k3s::Provisioned,
    #[cfg(feature = "k3s")]
    runtime: tokio::runtime::Runtime,
}

impl ProvisionedCluster {
    fn remove(self) {
        #[cfg(feature = "k3s")]
        {
            eprintln!("removing the k3s container...");
            self.runtime.block_on(self.cluster.remove());
        }
    }
}

/// Starts k3s with Contour and points `args` at it (`--provision k3s`).
fn provision_k3s(args: &mut RunArgs) -> Result<ProvisionedCluster, ExitCode> {
    if args.proxy.is_some() || args.tls_proxy.is_some() || args.kubeconfig.is_some() || args.context.is_some() {
        eprintln!(
            "error: --provision k3s makes its own cluster: give no --proxy, --tls-proxy, --kubeconfig or --context"
        );
        return Err(ExitCode::from(EXIT_INVALID_INPUT));
    }
    #[cfg(not(feature = "k3s"))]
    {
        eprintln!(
            "error: this binary was built without the k3s feature that --provision k3s needs; build it with \
             `cargo build -p harness --features k3s` (or `cargo run -p harness --features k3s -- run --provision k3s`)"
        );
        Err(ExitCode::from(EXIT_INVALID_INPUT))
    }
    #[cfg(feature = "k3s")]
    {
        let config = args
            .config
            .clone()
            .unwrap_or_else(|| loopback::config::repository_root().join("examples/implementation.yaml"));
        // The installer runs from the repository: it gets the file by an absolute path.
        let config = match std::path::absolute(&config) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {}: {e}", config.display());
                return Err(ExitCode::from(EXIT_INVALID_INPUT));
            }
        };
        let image = match harness::provision::backend_image(args.image.as_deref(), &config) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(EXIT_INVALID_INPUT));
            }
        };
        let version = args
            .contour_version
            .clone()
            .unwrap_or_else(|| loopback::config::contour_versions().first().copied().unwrap_or_default().to_string());
        let runtime = runtime()?;
        let provisioned = runtime.block_on(async {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => signal.recv().await,
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                provisioned = harness::provision::k3s::provision(&image, &config, &version) => Some(provisioned),
                // The container, if it started, is removed as the future is dropped.
                _ = tokio::signal::ctrl_c() => None,
                _ = terminate => None,
            }
        });
        let cluster = match provisioned {
            None => {
                eprintln!("interrupted while provisioning k3s");
                return Err(ExitCode::from(130));
            }
            Some(Err(e)) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(EXIT_ENVIRONMENT));
            }
            Some(Ok(cluster)) => cluster,
        };
        let settings = &cluster.settings;
        args.config = Some(config);
        args.proxy = Some(settings.proxy.clone());
        args.tls_proxy = Some(settings.tls_proxy.clone());
        args.kubeconfig = Some(settings.kubeconfig.clone());
        args.context = Some(settings.context.clone());
        args.image = Some(image);
        args.implementation_version.get_or_insert(version);
        Ok(ProvisionedCluster { cluster, runtime })
    }
}

fn run_on(args: RunArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match ImplementationConfig::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID_INPUT);
            }
        },
        None => ImplementationConfig::default(),
    };
    let overrides = Overrides {
        proxy: args.proxy,
        tls_proxy: args.tls_proxy,
        kubeconfig: args.kubeconfig,
        context: args.context,
        image: args.image,
        client_certificate: args.client_cert_secret,
        min_tls_version: args.min_tls_version,
        max_tls_version: args.max_tls_version,
        run: args.selection.run,
        skip: args.selection.skip,
        faults: args.faults,
        disruptions: args.disruptions,
        latency: args.latency,
        implementation_version: args.implementation_version,
        controller: args.controller,
        contour_version: args.contour_version,
        contour_settings_from: args.contour_settings_from,
        data_plane: args.data_plane,
        envoy_version: args.envoy_version,
        keep_namespaces: args.keep_namespaces,
        parallel: args.parallel,
    };
    let plan = match config.resolve(overrides) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let (scenarios, not_selected) = match select(args.selection.scenarios.as_deref(), &plan.selection) {
        Ok(lists) => lists,
        Err(code) => return code,
    };
    let known_failures = plan.target.known_failures();
    let catalog: Vec<&LoadedScenario> = scenarios.iter().chain(&not_selected).collect();
    for name in harness::known::naming_no_scenario(&known_failures, &catalog) {
        eprintln!("warning: the known failure {name:?} names no scenario of the catalog; it can never match");
    }
    // Read before the reports directory is touched: it may hold the baseline itself.
    let baseline = match args.baseline.as_deref().map(harness::report::baseline::Baseline::load).transpose() {
        Ok(baseline) => baseline,
        Err(e) => {
            eprintln!("error: {e}; nothing was run");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let dir = args.reports.unwrap_or_else(|| PathBuf::from("reports"));
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    if let Err(e) = harness::report::check_writable(&dir) {
        eprintln!("error: the reports directory is unusable: {e}; nothing was run");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    // Claimed before anything is replaced: a second run into the same directory stops here.
    let _claim = match harness::report::claim(&dir) {
        Ok(claim) => claim,
        Err(e) => {
            eprintln!("error: {e}; nothing was run");
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    if let Err(e) = harness::report::mark_in_progress(&dir, &now) {
        eprintln!("error: the reports directory is unusable: {e}; nothing was run");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    runtime.block_on(async move {
        outln!("upstream TLS conformance: {} scenarios against the {}", scenarios.len(), plan.target.describe());
        let begun = Instant::now();
        let environment = match Environment::connect(&plan.target, plan.settings.clone()).await {
            Ok(environment) => environment,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(if e.is_invalid_input() { EXIT_INVALID_INPUT } else { EXIT_ENVIRONMENT });
            }
        };
        let started = (Instant::now(), time::OffsetDateTime::now_utc());
        let (interrupter, interrupt) = Interrupt::new();
        if let Err(e) = interrupter.on_signals() {
            eprintln!("warning: cannot handle Ctrl-C and SIGTERM ({e}); an interrupted run will clean up nothing");
        }
        interrupter.at(begun + plan.settings.run_limit, plan.settings.run_limit);
        let parallelism = plan.parallelism(scenarios.len());
        let mut runs = Vec::new();
        for repetition in 1..=args.repeat {
            if args.repeat > 1 {
                outln!("run {repetition} of {}", args.repeat);
            }
            let progress = Progress::new(scenarios.len());
            runs.push(suite::run_all_until(&environment, &scenarios, parallelism, &progress, &interrupt).await);
            progress.finish();
            if interrupt.signal().is_some() {
                break;
            }
            // Scenarios have their namespaces deleted without waiting; the run waits once, here
            // (and before a repetition, which reuses their names).
            let deletion = environment.await_namespace_deletion(NAMESPACE_DELETION_LIMIT);
            match suite::until_interrupted(deletion, &interrupt).await {
                None => break,
                Some(Err(e)) => {
                    eprintln!(
                        "warning: {e}; `cleanup --cluster --run-id {}` removes what is left",
                        environment.run_id()
                    )
                }
                Some(Ok(_)) => {}
            }
        }
        let repetitions = (args.repeat > 1).then(|| {
            let tallies = suite::tally(&runs);
            out!("\n{}", suite::tally_table(&tallies, runs.len()));
            harness::report::Repetitions {
                runs: runs.len(),
                flaky: tallies.iter().filter(|t| t.flaky()).count(),
                tallies,
            }
        });
        let outcomes = suite::worst_of(runs);
        let signal = interrupt.signal();
        let info =
            RunInfo { interrupted: signal.map(Signal::name), ..RunInfo::new(&plan, environment.run_id(), started) };
        let wall_time = info.wall_time;
        if signal.is_some() {
            match environment.delete_run(INTERRUPTED_CLEANUP_LIMIT).await {
                Ok(namespaces) if !namespaces.is_empty() => {
                    eprintln!("deleted the run's namespaces: {}", namespaces.join(", "));
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("warning: cleanup after the interruption failed: {e}; `cleanup` removes what is left")
                }
            }
        }
        match environment.remove_installation_state(INTERRUPTED_CLEANUP_LIMIT).await {
            Ok(removed) if !removed.is_empty() => outln!("removed the installation's {}", removed.join(" and ")),
            Ok(_) => {}
            Err(e) => eprintln!("warning: cannot remove the installation's client certificate: {e}"),
        }
        let diagnostic_files = environment.diagnostic_files();
        let disruptions = environment.disruption_counts();
        environment.shutdown().await;
        let loaded: Vec<&LoadedScenario> = scenarios.iter().chain(&not_selected).collect();
        let mut report = RunReport { repetitions, ..RunReport::new(info, &loaded, &outcomes) };
        report.baseline = baseline.map(|baseline| harness::report::baseline::Changes::between(&baseline, &report));
        report.diagnostic_files.extend(diagnostic_files);
        match write_all(&report, &dir) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                outln!("reports: {}", names.join(", "));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ENVIRONMENT);
            }
        }
        // The per-scenario lines were printed as they finished; the totals close the run.
        out!("\n{}", suite::totals(&outcomes, wall_time));
        if let Some(changes) = &report.baseline {
            outln!("{}", changes.headline());
            for line in changes.lines() {
                outln!("  {line}");
            }
        }
        if !disruptions.is_empty() {
            let counts: Vec<String> = disruptions.iter().map(|(d, n)| format!("{d} {n} times")).collect();
            outln!("loopback disruptions injected: {}", counts.join(", "));
        }
        if let Some(signal) = signal {
            outln!("interrupted by {}: scenarios that did not finish are reported as skipped", signal.name());
            return ExitCode::from(signal.exit_code());
        }
        if outcomes.iter().all(|o| o.passed()) { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
    })
}

fn certify_verify(file: &Path) -> ExitCode {
    let text = match harness::scenario::load::read_text_file(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    match harness::certify::verify(&text) {
        Ok(verified) => {
            outln!("{}: a valid certification report", file.display());
            outln!("  {}", verified.implementation);
            for (profile, result) in &verified.profiles {
                outln!("  {profile}: {result}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {}: {problem}", file.display());
            }
            eprintln!("{} problem(s): the report cannot be submitted as it is", problems.len());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// How long `cleanup` waits for namespaces to be deleted.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn cleanup(
    work_dir: Option<&Path>,
    cluster: bool,
    run_id: Option<&str>,
    older_than: Option<std::time::Duration>,
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> ExitCode {
    let mut failed = false;
    let stale = loopback::remove_stale_work_dirs(work_dir.map(Path::to_path_buf).as_slice());
    for dir in &stale {
        let processes = match dir.processes {
            0 => String::new(),
            n => format!(" and stopped {n} backend process(es)"),
        };
        match &dir.outcome {
            loopback::StaleOutcome::Removed => outln!("removed {}{processes}", dir.path.display()),
            loopback::StaleOutcome::Failed(e) => {
                failed = true;
                eprintln!("error: cannot remove {}: {e}", dir.path.display());
            }
            loopback::StaleOutcome::Skipped(reason) => {
                outln!("skipped {}: {reason}, so it cannot be shown to be this user's loopback's", dir.path.display())
            }
        }
    }
    if stale.is_empty() {
        outln!("no loopback cluster left anything on this machine");
    }
    if cluster {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        let selector = match run_id {
            Some(id) => format!("{}={id}", harness::cluster::RUN_LABEL),
            None => harness::cluster::RUN_LABEL.to_string(),
        };
        let deleted = runtime.block_on(async {
            let client = harness::cluster::ClusterClient::connect(kubeconfig, context).await?;
            client.delete_namespaces_labelled(&selector, older_than, CLEANUP_LIMIT).await
        });
        match deleted {
            Ok(names) if names.is_empty() => {
                let age = older_than.map_or(String::new(), |d| format!(" and older than {} s", d.as_secs()));
                outln!("no namespace on the cluster is labelled {selector}{age}")
            }
            Ok(names) => outln!("deleted namespaces: {}", names.join(", ")),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(if e.is_invalid_input() { EXIT_INVALID_INPUT } else { EXIT_ENVIRONMENT });
            }
        }
    }
    if failed { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS }
}
