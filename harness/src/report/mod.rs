//! Reports of a run: one model, [`RunReport`], built from the outcomes, and pure renderers of
//! it: JUnit XML ([`junit`]), JSON ([`json`], the whole model) and a Markdown summary for a CI
//! step ([`markdown`]). [`write_all`] writes them to a directory.
//!
//! Private keys never reach a report: every rendered text passes through [`redact`].

pub mod json;
pub mod junit;
pub mod markdown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::runner::{ScenarioOutcome, StepOutcome};
use crate::scenario::{Feature, LoadedScenario, Profile};
use crate::traffic::Answer;

/// Names the JSON format; bumped on incompatible changes.
pub const REPORT_FORMAT: &str = "upstream-tls-conformance/report/v1";

/// Everything known about one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub format: &'static str,
    pub harness_version: &'static str,
    /// What was tested, as the run header says it.
    pub target: String,
    pub run_id: String,
    /// RFC 3339.
    pub started_at: String,
    pub wall_time_seconds: f64,
    pub totals: Totals,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Totals {
    /// Skipped scenarios are neither passed nor failed.
    pub fn of(outcomes: &[ScenarioOutcome]) -> Self {
        let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
        let failed = outcomes.iter().filter(|o| !o.passed()).count();
        Totals { passed: outcomes.len() - failed - skipped, failed, skipped }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReport>,
    pub steps: Vec<StepReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// 1-based; absent for set-up.
    pub step: Option<usize>,
    pub kind: &'static str,
    pub message: String,
    /// The last answers of a traffic expectation, with what the backend echoed.
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub index: usize,
    pub kind: &'static str,
    pub summary: String,
    pub duration_seconds: f64,
    pub passed: bool,
}

/// Run-wide facts that are not in the outcomes.
pub struct RunInfo {
    pub target: String,
    pub run_id: String,
    pub started_at: time::OffsetDateTime,
    pub wall_time: Duration,
}

impl RunReport {
    /// The model of a run: `outcomes` matched to their `scenarios` by name.
    pub fn new(info: RunInfo, scenarios: &[&LoadedScenario], outcomes: &[ScenarioOutcome]) -> Self {
        let reports: Vec<ScenarioReport> = outcomes
            .iter()
            .map(|o| scenario_report(o, scenarios.iter().copied().find(|s| s.name() == o.name)))
            .collect();
        let totals = Totals::of(outcomes);
        RunReport {
            format: REPORT_FORMAT,
            harness_version: env!("CARGO_PKG_VERSION"),
            target: info.target,
            run_id: info.run_id,
            started_at: info.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            wall_time_seconds: info.wall_time.as_secs_f64(),
            totals,
            scenarios: reports,
        }
    }
}

fn scenario_report(outcome: &ScenarioOutcome, loaded: Option<&LoadedScenario>) -> ScenarioReport {
    let verdict = match (&outcome.skipped, &outcome.failure) {
        (Some(_), _) => Verdict::Skipped,
        (None, Some(_)) => Verdict::Failed,
        (None, None) => Verdict::Passed,
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
        contract: loaded.map(|l| l.scenario.contract.clone()).unwrap_or_default(),
        features: loaded.map(|l| l.scenario.features.clone()).unwrap_or_default(),
        profile: loaded.map_or(Profile::Core, |l| l.scenario.profile()),
        verdict,
        duration_seconds: outcome.duration.as_secs_f64(),
        namespace: outcome.namespace.clone(),
        skip_reason: outcome.skipped.clone(),
        failure: outcome.failure.as_ref().map(|f| FailureReport {
            step: f.step,
            kind: f.kind,
            message: f.message.clone(),
            answers: f.answers.clone(),
        }),
        steps: outcome.steps.iter().map(step_report).collect(),
        cleanup_error: outcome.cleanup_error.clone(),
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
}

/// Writes `junit.xml`, `report.json` and `summary.md` into `dir` (created if needed).
///
/// # Errors
/// A file cannot be written, or JUnit rendering fails.
pub fn write_all(report: &RunReport, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let files = [
        ("junit.xml", junit::render(report).map_err(ReportError::Junit)?),
        ("report.json", json::render(report)),
        ("summary.md", markdown::render(report)),
    ];
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, redact(&text)).map_err(|source| ReportError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// `text` with every PEM private key block replaced (a block with no end: to the end).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_len) = after.find("-----") else { break };
        let label = &after[..label_len];
        if !label.contains("PRIVATE KEY") {
            out.push_str(&rest[..start + "-----BEGIN ".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str("[private key redacted]");
        let end_marker = format!("-----END {label}-----");
        rest = after.find(&end_marker).map_or("", |end| &after[end + end_marker.len()..]);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
        };
        let mut failed = outcome("broken");
        failed.failure = Some(Failure {
            step: Some(1),
            kind: "request",
            message: "expected status 200, got 503 <&> -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
                .into(),
            answers: Vec::new(),
        });
        let mut skipped = outcome("later");
        skipped.skipped = Some("the installation has no Envoy client certificate".into());
        let info = RunInfo {
            target: "built-in loopback cluster".into(),
            run_id: "r1".into(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            wall_time: Duration::from_secs(2),
        };
        RunReport::new(info, &[&loaded], &[outcome("demo"), failed, skipped])
    }

    #[test]
    fn totals_and_verdicts_follow_the_outcomes() {
        let report = sample();
        assert_eq!(report.totals, Totals { passed: 1, failed: 1, skipped: 1 });
        assert_eq!(report.scenarios[0].area, "validation");
        assert_eq!(report.scenarios[0].contract, vec!["V3"]);
        assert_eq!(report.started_at, "1970-01-01T00:00:00Z");
    }

    #[test]
    fn no_report_carries_private_key_material() {
        let report = sample();
        let dir = std::env::temp_dir().join(format!("utls-report-test-{}", std::process::id()));
        let files = write_all(&report, &dir).unwrap();
        assert_eq!(files.len(), 3);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("PRIVATE KEY") && !text.contains("MIIB"), "{} leaks a key:\n{text}", file.display());
            assert!(text.contains("redacted"), "{} lost the failure", file.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redaction_keeps_certificates() {
        let text = "a -----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE----- b -----BEGIN EC PRIVATE KEY-----\nY\n-----END EC PRIVATE KEY----- c";
        assert_eq!(
            redact(text),
            "a -----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE----- b [private key redacted] c"
        );
    }
}
