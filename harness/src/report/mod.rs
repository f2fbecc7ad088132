//! Reports of a run: one model, [`RunReport`], built from the outcomes, and pure renderers of
//! it: JUnit XML ([`junit`]), JSON ([`json`], the whole model) and a Markdown summary for a CI
//! step ([`markdown`]). [`write_all`] writes them to a directory.
//!
//! Private keys never reach a report: every rendered text passes through [`redact`].

pub mod baseline;
pub mod certification;
pub mod diagnostics;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::config::{Implementation, RunPlan};
pub use crate::redaction::redact;
use crate::runner::{Diagnostics, ScenarioOutcome, StepOutcome};
use crate::scenario::{Feature, LoadedScenario, Profile};
use crate::traffic::Answer;

/// Names the JSON format; bumped on incompatible changes.
pub const REPORT_FORMAT: &str = "upstream-tls-conformance/report/v1";

/// The version of the contract (docs/contract.md) the catalog certifies: the Contour release whose
/// behaviour it describes.
pub const CONTRACT_VERSION: &str = "contour-v1.33.6";

/// Everything known about one run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub format: &'static str,
    pub harness_version: &'static str,
    pub contract_version: &'static str,
    /// Who was tested.
    pub implementation: Implementation,
    /// Where, as the run header says it.
    pub target: String,
    /// The installations scenarios ran on (loopback runs two).
    pub installations: Vec<String>,
    /// The name of the configuration under test.
    pub mode: String,
    /// Features the implementation does not claim.
    pub unsupported_features: Vec<Feature>,
    /// Loopback faults switched on for the run (a run with faults certifies nothing).
    pub faults: Vec<String>,
    /// The scenario files the run drew from.
    pub catalog: Catalog,
    /// The Gateway API release and channel the cluster serves, when the harness knows it
    /// (loopback: the Contour release's CRD bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiBundle>,
    pub run_id: String,
    /// RFC 3339.
    pub started_at: String,
    pub wall_time_seconds: f64,
    /// The signal (`SIGINT`, `SIGTERM`) that stopped the run before every scenario finished;
    /// those that did not finish are skipped, saying so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<&'static str>,
    /// With `run --repeat N`: each scenario's passes, failures and skips over the N runs;
    /// `scenarios` then holds each one's first failure, or its last outcome if it never failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<Repetitions>,
    /// With `run --baseline`: what changed since that earlier run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<baseline::Changes>,
    pub totals: Totals,
    pub scenarios: Vec<ScenarioReport>,
    /// Catalog scenarios this run did not select (filters, `--skip`), by profile.
    pub not_selected: Vec<NotSelected>,
    /// The logs of the programs loopback ran (the real Contour's, Envoy's) and Envoy's
    /// configuration when a scenario failed through it, written beside the diagnostics; set
    /// by the caller before the environment shuts down.
    #[serde(skip)]
    #[schemars(skip)]
    pub diagnostic_files: Vec<DiagnosticFile>,
}

/// The tallies of a repeated run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repetitions {
    pub runs: usize,
    pub flaky: usize,
    pub tallies: Vec<crate::suite::Tally>,
}

/// A program's output over a run, or what it held when a scenario failed, as
/// `diagnostics/<file_name>`: a `.log`, or a `.json` (Envoy's configuration dump).
#[derive(Debug, Clone)]
pub struct DiagnosticFile {
    pub file_name: String,
    pub text: String,
}

/// Which catalog a run drew from.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Catalog {
    pub scenarios: usize,
    /// See [`catalog_sha256`](crate::scenario::load::catalog_sha256).
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NotSelected {
    pub name: String,
    pub profile: Profile,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Failed as the implementation is known to fail them: neither passed nor failed.
    #[serde(default, rename = "knownFailures", skip_serializing_if = "is_zero")]
    pub known_failures: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

impl Totals {
    /// Skipped scenarios and known failures are neither passed nor failed.
    pub fn of(outcomes: &[ScenarioOutcome]) -> Self {
        let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
        let failed = outcomes.iter().filter(|o| !o.passed()).count();
        let known_failures = outcomes.iter().filter(|o| o.known_failure.is_some()).count();
        Totals { passed: outcomes.len() - failed - skipped - known_failures, failed, skipped, known_failures }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
    /// Failed as the implementation is known to fail it ([`crate::known`]): not a pass, and
    /// not a failure of the run.
    KnownFailure,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioReport {
    pub name: String,
    /// The scenario's area: the directory its file is in.
    pub area: String,
    pub file: String,
    pub description: String,
    pub contract: Vec<String>,
    pub features: Vec<Feature>,
    pub profile: Profile,
    pub verdict: Verdict,
    pub duration_seconds: f64,
    pub namespace: String,
    /// The installation it ran on, or was skipped by.
    pub installation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Skipped because the installation is configured otherwise: the scenario does not apply
    /// to it, and does not count against certification.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_applicable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReport>,
    /// For a known failure: why, where in the implementation, and the page that explains it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_failure: Option<crate::known::KnownFailure>,
    pub steps: Vec<StepReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// For failures: evidence from the cluster, also written to [`diagnostics_file`](Self::diagnostics_file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
    /// The diagnostics page, relative to the report directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics_file: Option<String>,
}

/// Passed, failed and skipped per profile, for the profiles that have scenarios.
impl RunReport {
    pub fn profile_totals(&self) -> std::collections::BTreeMap<Profile, Totals> {
        let mut totals: std::collections::BTreeMap<Profile, Totals> = std::collections::BTreeMap::new();
        for scenario in &self.scenarios {
            let counts = totals.entry(scenario.profile).or_default();
            match scenario.verdict {
                Verdict::Passed => counts.passed += 1,
                Verdict::Failed => counts.failed += 1,
                Verdict::Skipped => counts.skipped += 1,
                Verdict::KnownFailure => counts.known_failures += 1,
            }
        }
        totals
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// 1-based; absent for set-up.
    pub step: Option<usize>,
    pub kind: &'static str,
    pub message: String,
    /// The last answers of a traffic expectation, with what the backend echoed.
    pub answers: Vec<Answer>,
    /// The guarantees the failed step shows broken, each with its sentence from the contract.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breaks: Vec<BrokenClause>,
}

/// A contract clause a failure shows broken.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct BrokenClause {
    /// Its id, such as `V3`.
    pub clause: String,
    /// Its title and first sentence (`V3 Trust: The chain must verify …`).
    pub says: String,
}

impl FailureReport {
    /// `step 3 (request)`, or `set-up`.
    pub fn place(&self) -> String {
        self.step.map_or_else(|| "set-up".to_string(), |s| format!("step {s} ({})", self.kind))
    }

    /// `broken guarantee: V3 Trust: …`, as the console says it.
    pub fn broken_lines(&self) -> Vec<String> {
        let ids: Vec<String> = self.breaks.iter().map(|b| b.clause.clone()).collect();
        crate::explain::broken_lines(&ids)
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub index: usize,
    pub kind: &'static str,
    pub summary: String,
    pub duration_seconds: f64,
    pub passed: bool,
}

/// A Gateway API release and channel.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GatewayApiBundle {
    pub version: String,
    pub channel: String,
}

/// Run-wide facts that are not in the outcomes.
pub struct RunInfo {
    /// The Gateway API the cluster serves, when known.
    pub gateway_api: Option<GatewayApiBundle>,
    pub implementation: Implementation,
    pub target: String,
    pub installations: Vec<String>,
    pub unsupported_features: Vec<Feature>,
    pub faults: Vec<String>,
    pub run_id: String,
    pub started_at: time::OffsetDateTime,
    pub wall_time: Duration,
    /// The signal that stopped the run early, if one did.
    pub interrupted: Option<&'static str>,
}

impl RunInfo {
    /// The facts of a run of `plan` that started at `started`.
    pub fn new(plan: &RunPlan, run_id: &str, started: (std::time::Instant, time::OffsetDateTime)) -> Self {
        let installations = plan.target.installations();
        RunInfo {
            gateway_api: plan.target.gateway_api_bundle(),
            implementation: plan.implementation.clone(),
            target: plan.target.describe(),
            unsupported_features: installations.first().map(|i| i.exempt.clone()).unwrap_or_default(),
            faults: plan.target.faults().iter().map(|f| f.name().to_string()).collect(),
            installations: installations.iter().map(|i| i.describe()).collect(),
            run_id: run_id.to_string(),
            started_at: started.1,
            wall_time: started.0.elapsed(),
            interrupted: None,
        }
    }
}

impl RunReport {
    /// The model of a run: `outcomes` matched to their scenarios by name; the `catalog`
    /// scenarios with no outcome were not selected.
    pub fn new(info: RunInfo, catalog: &[&LoadedScenario], outcomes: &[ScenarioOutcome]) -> Self {
        let reports: Vec<ScenarioReport> =
            outcomes.iter().map(|o| scenario_report(o, catalog.iter().copied().find(|s| s.name() == o.name))).collect();
        let totals = Totals::of(outcomes);
        RunReport {
            format: REPORT_FORMAT,
            harness_version: env!("CARGO_PKG_VERSION"),
            contract_version: CONTRACT_VERSION,
            mode: info.implementation.mode.clone(),
            implementation: info.implementation,
            target: info.target,
            installations: info.installations,

            unsupported_features: info.unsupported_features,
            faults: info.faults,
            catalog: Catalog {
                scenarios: catalog.len(),
                sha256: crate::scenario::load::catalog_sha256(catalog.iter().copied()),
            },
            gateway_api: info.gateway_api,
            run_id: info.run_id,
            started_at: info.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            wall_time_seconds: info.wall_time.as_secs_f64(),
            interrupted: info.interrupted,
            repetitions: None,
            baseline: None,
            totals,
            scenarios: reports,
            not_selected: catalog
                .iter()
                .filter(|s| !outcomes.iter().any(|o| o.name == s.name()))
                .map(|s| NotSelected { name: s.name().to_string(), profile: s.scenario.profile() })
                .collect(),
            diagnostic_files: outcomes.iter().filter_map(config_dump).collect(),
        }
    }
}

/// A failed scenario's Envoy configuration, when it was gathered, as
/// `envoy-<scenario>.config_dump.json`.
fn config_dump(outcome: &ScenarioOutcome) -> Option<DiagnosticFile> {
    let text = outcome.diagnostics.as_ref()?.data_plane_config.clone()?;
    Some(DiagnosticFile { file_name: format!("envoy-{}.config_dump.json", outcome.name), text })
}

fn scenario_report(outcome: &ScenarioOutcome, loaded: Option<&LoadedScenario>) -> ScenarioReport {
    let verdict = match (&outcome.skipped, &outcome.failure, &outcome.known_failure) {
        (Some(_), _, _) => Verdict::Skipped,
        (None, Some(_), Some(_)) => Verdict::KnownFailure,
        (None, Some(_), None) => Verdict::Failed,
        (None, None, _) => Verdict::Passed,
    };
    let area = outcome
        .path
        .parent()
        .and_then(|p| p.file_name())
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    ScenarioReport {
        name: outcome.name.clone(),
        area,
        file: outcome.path.display().to_string(),
        description: loaded.map(|l| l.scenario.description.clone()).unwrap_or_default(),
        contract: loaded.map(|l| l.scenario.clauses().into_iter().map(str::to_string).collect()).unwrap_or_default(),
        features: loaded.map(|l| l.scenario.features.clone()).unwrap_or_default(),
        profile: loaded.map_or(Profile::Core, |l| l.scenario.profile()),
        verdict,
        duration_seconds: outcome.duration.as_secs_f64(),
        namespace: outcome.namespace.clone(),
        installation: outcome.installation.clone(),
        skip_reason: outcome.skipped.as_ref().map(|s| s.text.clone()),
        not_applicable: outcome.skipped.as_ref().is_some_and(|s| s.not_applicable),
        failure: outcome.failure.as_ref().map(|f| FailureReport {
            step: f.step,
            kind: f.kind,
            message: f.message.clone(),
            answers: f.answers.clone(),
            breaks: f
                .breaks
                .iter()
                .map(|id| BrokenClause {
                    clause: id.clone(),
                    says: crate::explain::clause_sentence(id).unwrap_or_else(|| id.clone()),
                })
                .collect(),
        }),
        known_failure: outcome.known_failure.clone(),
        steps: outcome.steps.iter().map(step_report).collect(),
        cleanup_error: outcome.cleanup_error.clone(),
        diagnostics: outcome.diagnostics.clone(),
        diagnostics_file: outcome.diagnostics.as_ref().map(|_| diagnostics::file_name(&outcome.name)),
    }
}

fn step_report(step: &StepOutcome) -> StepReport {
    StepReport {
        index: step.index,
        kind: step.kind,
        summary: step.summary.clone(),
        duration_seconds: step.duration.as_secs_f64(),
        passed: step.passed,
    }
}

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot render JUnit XML: {0}")]
    Junit(String),
    #[error(
        "{dir} holds files that no run wrote ({names}): give --reports a new or empty directory, or one an \
         earlier run wrote, so that nothing else is overwritten"
    )]
    Foreign { dir: PathBuf, names: String },
    #[error("{0} is the filesystem's root: give --reports a directory of its own")]
    Root(PathBuf),
}

/// Checks, before a run, that [`write_all`] will be able to write into `dir`: creates it and
/// its `diagnostics/`, and writes and removes a file there, so that an unusable directory is
/// found before the run rather than after it. A directory holding files no run writes (as
/// `/etc`), or the filesystem's root, is refused before anything is made in it.
///
/// # Errors
/// The directory holds other files, or cannot be created or written.
pub fn check_writable(dir: &Path) -> Result<(), ReportError> {
    if dir.canonicalize().is_ok_and(|d| d.parent().is_none()) {
        return Err(ReportError::Root(dir.to_path_buf()));
    }
    let foreign = foreign_files(dir);
    if !foreign.is_empty() {
        let mut names = foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if foreign.len() > 3 {
            names.push_str(&format!(" and {} more", foreign.len() - 3));
        }
        return Err(ReportError::Foreign { dir: dir.to_path_buf(), names });
    }
    let diagnostics = dir.join("diagnostics");
    std::fs::create_dir_all(&diagnostics).map_err(|source| ReportError::Write { path: diagnostics.clone(), source })?;
    let probe = diagnostics.join(".write-check");
    std::fs::write(&probe, b"").map_err(|source| ReportError::Write { path: probe.clone(), source })?;
    std::fs::remove_file(&probe).map_err(|source| ReportError::Write { path: probe, source })
}

/// The report files a run writes at its end, besides the diagnostics.
const REPORT_FILES: [&str; 6] =
    ["junit.xml", "report.json", "summary.md", "report.html", "certification.yaml", "gateway-api-conformance.yaml"];

/// The file that says which process is writing reports into a directory.
const LOCK_FILE: &str = ".run.lock";

/// The files in `dir` that a run would not have written (subdirectories aside: the default
/// `reports/` holds other runs' directories), sorted. Empty when `dir` does not exist yet.
fn foreign_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !REPORT_FILES.contains(&name.as_str()) && name != LOCK_FILE && name != "README.md")
        .collect();
    names.sort();
    names
}

/// A reports directory claimed by this process's run ([`claim`]); dropping it releases the
/// directory.
#[derive(Debug)]
pub struct Claim {
    lock: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.lock).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.lock);
        }
    }
}

/// Claims `dir` for this process's run, so that two runs never write one directory: a
/// `.run.lock` holding the process id, removed when the [`Claim`] is dropped, and replaced
/// when the process it names is gone (a run that was killed).
///
/// # Errors
/// Another live process holds the directory (the message names it and what to do), or the
/// lock cannot be written.
pub fn claim(dir: &Path) -> Result<Claim, String> {
    let lock = dir.join(LOCK_FILE);
    let me = std::process::id();
    if let Ok(text) = std::fs::read_to_string(&lock)
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid != me as i32
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        && unsafe { libc::kill(pid, 0) } == 0
    {
        return Err(format!(
            "another run (process {pid}) is writing its reports to {}; give this one --reports with another directory",
            dir.display()
        ));
    }
    replace_file(&lock, format!("{me}\n").as_bytes()).map_err(|e| format!("cannot write {}: {e}", lock.display()))?;
    Ok(Claim { lock })
}

/// Before a run: replaces the reports of an earlier run in `dir` with a `junit.xml` holding
/// one failed test and a `summary.md` saying that a run is under way, which [`write_all`]
/// replaces at the end. A run killed before its end (SIGKILL, the machine gone) thus leaves a
/// red report, never the previous run's green one.
///
/// # Errors
/// A file cannot be written or removed.
pub fn mark_in_progress(dir: &Path, started_at: &str) -> Result<(), ReportError> {
    let message = format!(
        "a run started at {started_at} has not written its reports: it is still running, or it ended before writing \
         them (killed, or it could not start: see its output)"
    );
    for name in REPORT_FILES {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ReportError::Write { path, source }),
        }
    }
    let junit = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"upstream-tls-conformance\" tests=\"1\" failures=\"1\">\n\
         <testsuite name=\"run\" tests=\"1\" failures=\"1\">\n<testcase name=\"run-finished\" classname=\"run\">\n\
         <failure message=\"{message}\"/>\n</testcase>\n</testsuite>\n</testsuites>\n"
    );
    let summary = format!("# Upstream TLS conformance: no result\n\n{message}.\n");
    for (name, text) in [("junit.xml", junit), ("summary.md", summary)] {
        let path = dir.join(name);
        replace_file(&path, text.as_bytes()).map_err(|source| ReportError::Write { path, source })?;
    }
    Ok(())
}

/// Writes `junit.xml`, `report.json`, `summary.md`, `report.html`, `certification.yaml` (and,
/// when Gateway API scenarios ran, `gateway-api-conformance.yaml`) and a
/// `diagnostics/<scenario>.md` per failed scenario into `dir` (created if needed; diagnostics
/// of earlier runs are removed).
///
/// # Errors
/// A file cannot be written, or JUnit rendering fails.
pub fn write_all(report: &RunReport, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    remove_old_diagnostics(&dir.join("diagnostics"))?;
    let pages = report.scenarios.iter().filter_map(|s| {
        let page = diagnostics::render(s)?;
        Some((diagnostics::file_name(&s.name), page))
    });
    let files = [
        ("junit.xml", junit::render(report).map_err(ReportError::Junit)?),
        ("report.json", json::render(report)),
        ("summary.md", markdown::render(report)),
        ("report.html", html::render(report)),
        ("certification.yaml", certification::render(report)),
    ];
    let gateway_api = certification::render_gateway_api(report).map(|text| ("gateway-api-conformance.yaml", text));
    let files = files.into_iter().chain(gateway_api);
    let logs = report.diagnostic_files.iter().map(|log| (format!("diagnostics/{}", log.file_name), log.text.clone()));
    let files = files.into_iter().map(|(name, text)| (name.to_string(), text)).chain(pages).chain(logs);
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|source| ReportError::Write { path: parent.to_owned(), source })?;
        replace_file(&path, redact(&text).as_bytes())
            .map_err(|source| ReportError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `bytes` as a new file beside `path` and renames it over `path`: a symlink at `path`
/// is replaced, never followed (a link planted in the reports directory cannot make the run
/// overwrite what it points at), and a reader never sees half a file.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Removes the `*.md` pages, `*.log` program logs and `*.json` configuration dumps of an
/// earlier run from `dir`, and `dir` itself if that empties it; anything else there is left
/// alone.
fn remove_old_diagnostics(dir: &Path) -> Result<(), ReportError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md" || e == "log" || e == "json") && path.is_file() {
            std::fs::remove_file(&path).map_err(|source| ReportError::Write { path: path.clone(), source })?;
        }
    }
    // Fails, harmlessly, when other files remain.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::install::SkipReason;
    use crate::runner::Failure;
    use crate::scenario::load::parse;

    /// A run with one pass, one failure (carrying a private key in its message) and one skip.
    pub(crate) fn sample() -> RunReport {
        let text = "name: demo\ndescription: d\ncontract: [V3]\nfeatures: [upstream-validation]\nsteps:\n  - request:\n      expect:\n        status: 200\n";
        let loaded = parse(Path::new("scenarios/validation/demo.yaml"), text).unwrap();
        let outcome = |name: &str| ScenarioOutcome {
            name: name.into(),
            path: "scenarios/validation/demo.yaml".into(),
            namespace: format!("utls-{name}-r1"),
            installation: "no Envoy client certificate, upstream TLS 1.2-1.3".into(),
            duration: Duration::from_millis(1500),
            steps: vec![StepOutcome {
                index: 1,
                kind: "request",
                summary: "GET /".into(),
                duration: Duration::from_millis(900),
                passed: true,
            }],
            failure: None,
            skipped: None,
            cleanup_error: None,
            diagnostics: None,
            statuses: Vec::new(),
            known_failure: None,
            traffic: Vec::new(),
            held_off: None,
        };
        let mut failed = outcome("broken");
        failed.failure = Some(Failure {
            step: Some(1),
            kind: "request",
            message: "expected status 200, got 503 <&> -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
                .into(),
            answers: Vec::new(),
            breaks: vec!["V3".into()],
        });
        failed.diagnostics = Some(Diagnostics {
            objects: vec![serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "backend-ca"}, "data": {"ca.crt": "<redacted, 12 characters>"}})],
            logs: vec![crate::runner::PodLog {
                pod: "broken-7d9f".into(),
                state: "Running, ready".into(),
                text: "{\"requestId\":\"r1\"}\n".into(),
            }],
            problems: vec!["logs of backend other: timed out".into()],
            data_plane_config: None,
        });
        let mut skipped = outcome("later");
        skipped.skipped = Some(SkipReason {
            text: "the implementation does not claim feature upstream-validation".into(),
            not_applicable: false,
        });
        let info = RunInfo {
            gateway_api: None,
            implementation: Implementation {
                organization: "example".into(),
                project: "proxy".into(),
                url: "https://example.test/proxy".into(),
                version: "v1.0.0".into(),
                contact: vec!["@example/maintainers".into()],
                mode: "default".into(),
            },
            target: "built-in loopback cluster".into(),
            installations: vec!["no Envoy client certificate, upstream TLS 1.2-1.3".into()],
            unsupported_features: vec![Feature::Ingress],
            faults: Vec::new(),
            run_id: "r1".into(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            wall_time: Duration::from_secs(2),
            interrupted: None,
        };
        RunReport::new(info, &[&loaded], &[outcome("demo"), failed, skipped])
    }

    /// [`sample`] with its failure known to the implementation.
    fn with_known_failure() -> RunReport {
        let mut report = sample();
        let broken = report.scenarios.iter_mut().find(|s| s.name == "broken").unwrap();
        broken.verdict = Verdict::KnownFailure;
        broken.known_failure = Some(crate::known::KnownFailure {
            scenario: "broken".into(),
            reason: "the cluster name ignores the CA Secret's namespace".into(),
            source: Some("internal/envoy/cluster.go".into()),
            finding: Some("docs/findings/cluster-name-collision.md".into()),
        });
        report.totals = Totals { passed: 1, failed: 0, skipped: 1, known_failures: 1 };
        report
    }

    #[test]
    fn a_failure_names_the_guarantee_it_broke_in_every_report() {
        let report = sample();
        let sentence = "V3 Trust: The chain must verify to a certificate in the CA bundle";
        let json: serde_json::Value = serde_json::from_str(&json::render(&report)).unwrap();
        assert_eq!(json["scenarios"][1]["failure"]["breaks"][0]["clause"], "V3");
        assert!(json["scenarios"][1]["failure"]["breaks"][0]["says"].as_str().unwrap().starts_with(sentence));
        assert!(json["scenarios"][0].get("failure").is_none(), "a passed scenario breaks nothing");
        assert!(markdown::render(&report).contains(&format!("  - breaks {sentence}")));
        let html = html::render(&report);
        assert!(html.contains(&format!("<b>Broken guarantee</b> (docs/contract.md):<ul><li>{sentence}")));
        assert!(html.contains("CA bundle (<code>VERIFY_TRUST_CHAIN</code>).</li>"), "code spans are code");
        assert!(junit::render(&report).unwrap().contains(&format!("broken guarantee: {sentence}")));
        assert!(diagnostics::render(&report.scenarios[1]).unwrap().contains(&format!("- {sentence}")));
    }

    #[test]
    fn known_failures_are_reported_as_such_everywhere_and_never_as_passes() {
        let report = with_known_failure();
        let junit = junit::render(&report).unwrap();
        assert!(junit.contains("<skipped message=\"known failure: the cluster name ignores"), "{junit}");
        let markdown = markdown::render(&report);
        assert!(markdown.contains("**1** known failures"), "{markdown}");
        assert!(markdown.contains("## Known failures") && markdown.contains("docs/findings/cluster-name-collision.md"));
        assert!(markdown.contains("| broken |  | known failure |"), "{markdown}");
        let certification = certification::render(&report);
        assert!(certification.contains("knownFailures: 1"), "{certification}");
        assert!(certification.contains("result: failure"), "a known failure is no pass: {certification}");
        assert!(certification.contains("finding: docs/findings/cluster-name-collision.md"), "{certification}");
        let page = html::render(&report);
        assert!(page.contains("known failure: the cluster name ignores"), "the page says why");
        let json = json::render(&report);
        assert!(json.contains("\"verdict\": \"knownFailure\"") && json.contains("\"knownFailures\": 1"), "{json}");
    }

    #[test]
    fn totals_and_verdicts_follow_the_outcomes() {
        let report = sample();
        assert_eq!(report.totals, Totals { passed: 1, failed: 1, skipped: 1, known_failures: 0 });
        assert_eq!(report.scenarios[0].area, "validation");
        assert_eq!(report.scenarios[0].contract, vec!["V3"]);
        assert_eq!(report.started_at, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn no_report_carries_private_key_material() {
        let report = sample();
        let dir = std::env::temp_dir().join(format!("utls-report-test-{}", std::process::id()));
        let files = write_all(&report, &dir).unwrap();
        assert_eq!(files.len(), 6);
        assert!(dir.join("diagnostics/broken.md").is_file());
        std::fs::write(dir.join("diagnostics/stale.md"), "an earlier run").unwrap();
        std::fs::write(dir.join("diagnostics/notes.txt"), "the user's").unwrap();
        write_all(&report, &dir).unwrap();
        assert!(!dir.join("diagnostics/stale.md").exists(), "pages of earlier runs go");
        assert!(dir.join("diagnostics/notes.txt").exists(), "other files stay");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("PRIVATE KEY") && !text.contains("MIIB"), "{} leaks a key:\n{text}", file.display());
            // The certification report names failed scenarios without their messages.
            if !file.ends_with("certification.yaml") {
                assert!(text.contains("redacted"), "{} lost the failure", file.display());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_in_the_reports_directory_is_replaced_not_followed() {
        let dir = std::env::temp_dir().join(format!("utls-report-symlink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("precious.txt");
        std::fs::write(&target, "the user's").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("report.json")).unwrap();
        // A dangling link too: writing through it would create the file it names.
        std::os::unix::fs::symlink(dir.join("created-elsewhere"), dir.join("summary.md")).unwrap();
        write_all(&sample(), &dir).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "the user's");
        assert!(!dir.join("created-elsewhere").exists());
        for name in ["report.json", "summary.md"] {
            let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
            assert!(meta.is_file(), "{name} is a file of its own now");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reports_directory_that_cannot_be_made_is_found_before_the_run() {
        let base = std::env::temp_dir().join(format!("utls-check-writable-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        check_writable(&base.join("fine")).unwrap();
        assert!(base.join("fine/diagnostics").is_dir());
        assert!(!base.join("fine/diagnostics/.write-check").exists(), "the probe is removed");
        std::fs::write(base.join("file"), b"").unwrap();
        let err = check_writable(&base.join("file/reports")).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot write {}", base.join("file/reports/diagnostics").display())), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_directory_holding_other_files_is_never_written() {
        let dir = std::env::temp_dir().join(format!("utls-foreign-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("earlier-run")).unwrap();
        for name in ["README.md", "junit.xml", "report.json", LOCK_FILE] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        check_writable(&dir).unwrap();
        for name in ["passwd", "group", "hosts", "shadow"] {
            std::fs::write(dir.join(name), b"kept").unwrap();
        }
        std::fs::remove_dir_all(dir.join("diagnostics")).unwrap();
        let err = check_writable(&dir).unwrap_err().to_string();
        assert!(err.contains("holds files that no run wrote (group, hosts, passwd and 1 more)"), "{err}");
        assert!(!dir.join("diagnostics").exists(), "nothing is made in a refused directory");
        let err = check_writable(Path::new("/")).unwrap_err().to_string();
        assert_eq!(err, "/ is the filesystem's root: give --reports a directory of its own");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reports_directory_has_one_run_at_a_time() {
        let dir = std::env::temp_dir().join(format!("utls-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = claim(&dir).unwrap();
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists(), "a finished run releases the directory");
        let _held = claim(&dir).unwrap();
        claim(&dir).unwrap();
        // A live process of someone else: pid 1 is always there.
        std::fs::write(dir.join(LOCK_FILE), "1\n").unwrap();
        let err = claim(&dir).unwrap_err();
        assert!(err.contains("another run (process 1)") && err.contains("--reports"), "{err}");
        // A run that was killed: its process is gone.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(dir.join(LOCK_FILE), format!("{pid}\n")).unwrap();
        let _ours = claim(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap().trim(), std::process::id().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_that_never_ends_leaves_a_red_report_not_the_last_green_one() {
        let dir = std::env::temp_dir().join(format!("utls-in-progress-{}", std::process::id()));
        write_all(&sample(), &dir).unwrap();
        std::fs::write(dir.join("gateway-api-conformance.yaml"), "result: success\n").unwrap();
        mark_in_progress(&dir, "2026-12-07T03:40:00Z").unwrap();
        let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
        assert!(junit.contains("failures=\"1\"") && junit.contains("2026-12-07T03:40:00Z"), "{junit}");
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(summary.contains("has not written its reports"), "{summary}");
        for gone in ["report.json", "report.html", "certification.yaml", "gateway-api-conformance.yaml"] {
            assert!(!dir.join(gone).exists(), "{gone} of the earlier run is removed");
        }
        write_all(&sample(), &dir).unwrap();
        assert!(
            !std::fs::read_to_string(dir.join("junit.xml")).unwrap().contains("run-finished"),
            "the end replaces it"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn diagnostic_files_are_written_redacted_and_replaced_by_the_next_run() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIBsecret\n-----END PRIVATE KEY-----";
        let log =
            DiagnosticFile { file_name: "contour-installation-1.log".into(), text: format!("level=info\n{key}\n") };
        let dump = DiagnosticFile { file_name: "envoy-s.config_dump.json".into(), text: format!("{{\"k\": {key:?}}}") };
        let report = RunReport { diagnostic_files: vec![log, dump], ..sample() };
        let dir = std::env::temp_dir().join(format!("utls-report-logs-test-{}", std::process::id()));
        let files = write_all(&report, &dir).unwrap();
        let written = dir.join("diagnostics/contour-installation-1.log");
        assert!(files.contains(&written), "{files:?}");
        let text = std::fs::read_to_string(&written).unwrap();
        assert!(text.starts_with("level=info") && !text.contains("MIIBsecret"), "{text}");
        let dumped = dir.join("diagnostics/envoy-s.config_dump.json");
        assert!(!std::fs::read_to_string(&dumped).unwrap().contains("MIIBsecret"));
        write_all(&sample(), &dir).unwrap();
        assert!(!written.exists(), "a run without the real controller leaves no log of an earlier one");
        assert!(!dumped.exists(), "nor a configuration dump");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
