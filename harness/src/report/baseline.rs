//! What changed since an earlier run (`run --baseline PREVIOUS/report.json`): scenarios that
//! fail now and did not, that failed and pass now, that still fail, that appeared or went,
//! that were flaky in this run's repetitions, and whose time changed markedly. A nightly job
//! points it at last night's report.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{REPORT_FORMAT, RunReport, Verdict};

/// A scenario's time changed markedly when it moved by at least this many seconds...
const DURATION_CHANGE_SECONDS: f64 = 1.0;
/// ...and by at least this share of its earlier time.
const DURATION_CHANGE_SHARE: f64 = 0.5;

/// The earlier run, as much of its `report.json` as the comparison reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// The file it was read from, as the user named it.
    #[serde(skip)]
    pub file: String,
    run_id: String,
    started_at: String,
    scenarios: Vec<BaselineScenario>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaselineScenario {
    name: String,
    verdict: String,
    duration_seconds: f64,
}

/// Why a baseline cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read the baseline {path}: {message}")]
    Read { path: String, message: String },
    #[error("the baseline {path} is not a report.json of this harness: {message}")]
    NotAReport { path: String, message: String },
}

impl Baseline {
    /// Reads `report.json` of an earlier run.
    ///
    /// # Errors
    /// The file cannot be read, is not JSON, or is not a report of format [`REPORT_FORMAT`].
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let shown = path.display().to_string();
        let text = crate::scenario::load::read_text_file(path)
            .map_err(|e| BaselineError::Read { path: shown.clone(), message: e.to_string() })?;
        Self::parse(&text, &shown)
    }

    fn parse(text: &str, shown: &str) -> Result<Self, BaselineError> {
        let not_a_report = |message: String| BaselineError::NotAReport { path: shown.to_string(), message };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| not_a_report(format!("not JSON (line {}, column {}: {e})", e.line(), e.column())))?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or_default();
        if format != REPORT_FORMAT {
            return Err(not_a_report(format!("its format is {format:?}, expected {REPORT_FORMAT:?}")));
        }
        let mut baseline: Baseline = serde_json::from_value(value).map_err(|e| not_a_report(e.to_string()))?;
        baseline.file = shown.to_string();
        Ok(baseline)
    }
}

/// What changed since the baseline, as the reports show it.
#[derive(Debug, Clone, Default, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// The baseline's file, run id and start (RFC 3339).
    pub file: String,
    pub run_id: String,
    pub started_at: String,
    /// Failed in this run, and did not in the baseline (passed, was skipped, a known
    /// failure, or not there).
    pub newly_failing: Vec<String>,
    /// Failed in the baseline, passed in this run.
    pub fixed: Vec<String>,
    /// Failed in both.
    pub still_failing: Vec<String>,
    /// With `--repeat`: failed in some of this run's repetitions and passed in others.
    pub flaky: Vec<String>,
    /// In this run, not in the baseline.
    pub added: Vec<String>,
    /// In the baseline, not in this run (gone from the catalog or not selected).
    pub removed: Vec<String>,
    /// Scenarios that passed in both and whose time changed by a second and half its
    /// baseline or more, the largest change first.
    pub duration_changes: Vec<DurationChange>,
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DurationChange {
    pub scenario: String,
    pub before_seconds: f64,
    pub after_seconds: f64,
}

impl Changes {
    /// How `report` differs from `baseline`.
    pub fn between(baseline: &Baseline, report: &RunReport) -> Self {
        let before: BTreeMap<&str, &BaselineScenario> =
            baseline.scenarios.iter().map(|s| (s.name.as_str(), s)).collect();
        let failed_before = |name: &str| before.get(name).is_some_and(|s| s.verdict == "failed");
        let mut changes = Changes {
            file: baseline.file.clone(),
            run_id: baseline.run_id.clone(),
            started_at: baseline.started_at.clone(),
            ..Changes::default()
        };
        for scenario in &report.scenarios {
            let name = scenario.name.as_str();
            match (scenario.verdict, failed_before(name)) {
                (Verdict::Failed, true) => changes.still_failing.push(name.into()),
                (Verdict::Failed, false) => changes.newly_failing.push(name.into()),
                (Verdict::Passed, true) => changes.fixed.push(name.into()),
                _ => {}
            }
            match before.get(name) {
                None => changes.added.push(name.into()),
                Some(earlier) if earlier.verdict == "passed" && scenario.verdict == Verdict::Passed => {
                    let (was, is) = (earlier.duration_seconds, scenario.duration_seconds);
                    let moved = (is - was).abs();
                    if moved >= DURATION_CHANGE_SECONDS && moved >= DURATION_CHANGE_SHARE * was {
                        changes.duration_changes.push(DurationChange {
                            scenario: name.into(),
                            before_seconds: was,
                            after_seconds: is,
                        });
                    }
                }
                Some(_) => {}
            }
        }
        let now: std::collections::BTreeSet<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
        changes.removed =
            baseline.scenarios.iter().filter(|s| !now.contains(s.name.as_str())).map(|s| s.name.clone()).collect();
        if let Some(repetitions) = &report.repetitions {
            changes.flaky = repetitions.tallies.iter().filter(|t| t.flaky()).map(|t| t.scenario.clone()).collect();
        }
        let moved = |c: &DurationChange| (c.after_seconds - c.before_seconds).abs();
        changes.duration_changes.sort_by(|a, b| moved(b).total_cmp(&moved(a)));
        changes
    }

    /// One line: `since the baseline (run R of DATE): 1 newly failing, 2 fixed, …`.
    pub fn headline(&self) -> String {
        let counts = [
            (self.newly_failing.len(), "newly failing"),
            (self.fixed.len(), "fixed"),
            (self.still_failing.len(), "still failing"),
            (self.flaky.len(), "flaky"),
            (self.added.len(), "new"),
            (self.removed.len(), "gone"),
            (self.duration_changes.len(), "with a changed time"),
        ];
        let said: Vec<String> = counts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
        let said = if said.is_empty() { "no change".to_string() } else { said.join(", ") };
        format!("since the baseline ({}, run {} of {}): {said}", self.file, self.run_id, self.started_at)
    }

    /// The lists, one per line, for the console and the Markdown summary (`- ` items).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (what, names) in [
            ("newly failing", &self.newly_failing),
            ("fixed", &self.fixed),
            ("still failing", &self.still_failing),
            ("flaky", &self.flaky),
            ("new", &self.added),
            ("gone", &self.removed),
        ] {
            if !names.is_empty() {
                lines.push(format!("{what}: {}", names.join(", ")));
            }
        }
        for change in &self.duration_changes {
            lines.push(format!("{}: {:.1}s, was {:.1}s", change.scenario, change.after_seconds, change.before_seconds));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(scenarios: &[(&str, &str, f64)]) -> Baseline {
        let scenarios: Vec<serde_json::Value> = scenarios
            .iter()
            .map(|(name, verdict, seconds)| serde_json::json!({"name": name, "verdict": verdict, "durationSeconds": seconds}))
            .collect();
        let text = serde_json::json!({"format": REPORT_FORMAT, "runId": "old", "startedAt": "2026-12-06T00:00:00Z",
            "scenarios": scenarios})
        .to_string();
        Baseline::parse(&text, "last/report.json").unwrap()
    }

    #[test]
    fn changes_sort_every_scenario_by_what_became_of_it() {
        // The sample: `demo` passed, `broken` failed, `later` skipped.
        let report = super::super::tests::sample();
        let durations = |name: &str| report.scenarios.iter().find(|s| s.name == name).unwrap().duration_seconds;
        let before = baseline(&[
            ("demo", "passed", durations("demo") + 10.0),
            ("broken", "passed", 1.0),
            ("later", "failed", 1.0),
            ("retired", "failed", 1.0),
        ]);
        let changes = Changes::between(&before, &report);
        assert_eq!(changes.newly_failing, ["broken"]);
        assert!(changes.fixed.is_empty() && changes.still_failing.is_empty(), "{changes:?}");
        assert_eq!(changes.removed, ["retired"]);
        assert!(changes.added.is_empty());
        assert_eq!(changes.duration_changes.len(), 1);
        assert_eq!(changes.duration_changes[0].scenario, "demo");
        assert!(changes.headline().starts_with("since the baseline (last/report.json, run old of 2026-12-06T00:00:00Z): 1 newly failing, 1 gone, 1 with a changed time"), "{}", changes.headline());

        let again = baseline(&[("demo", "failed", 1.0), ("broken", "failed", 1.0)]);
        let changes = Changes::between(&again, &report);
        assert_eq!(
            (changes.fixed.as_slice(), changes.still_failing.as_slice()),
            (&["demo".to_string()][..], &["broken".to_string()][..])
        );
        assert_eq!(changes.added, ["later"]);
        // A small change in time is noise.
        let steady = baseline(&[("demo", "passed", durations("demo") + 0.5)]);
        assert!(Changes::between(&steady, &report).duration_changes.is_empty());
    }

    #[test]
    fn the_summary_and_the_page_say_what_changed() {
        let mut report = super::super::tests::sample();
        let before = baseline(&[("demo", "passed", 0.0), ("broken", "passed", 0.0), ("later", "skipped", 0.0)]);
        report.baseline = Some(Changes::between(&before, &report));
        let markdown = super::super::markdown::render(&report);
        assert!(
            markdown.contains("## Since the last run\n\nsince the baseline (last/report.json, run old of"),
            "{markdown}"
        );
        assert!(markdown.contains("- newly failing: broken\n"), "{markdown}");
        let html = super::super::html::render(&report);
        assert!(html.contains("<h2>Since the last run</h2>") && html.contains("<li><b>newly failing</b>: broken</li>"));
        let json: serde_json::Value = serde_json::from_str(&super::super::json::render(&report)).unwrap();
        assert_eq!(json["baseline"]["newlyFailing"][0], "broken");
        // Without a baseline, none of it.
        report.baseline = None;
        assert!(!super::super::markdown::render(&report).contains("Since the last run"));
    }

    #[test]
    fn a_file_that_is_not_a_report_is_refused_saying_why() {
        let refused = |text: &str| Baseline::parse(text, "x.json").unwrap_err().to_string();
        assert!(refused("{").contains("x.json is not a report.json of this harness: not JSON (line 1, column 1"));
        assert!(refused("{\"format\": \"junit\"}").contains("its format is \"junit\", expected"));
        let wrong = format!("{{\"format\": \"{REPORT_FORMAT}\", \"scenarios\": 3}}");
        assert!(refused(&wrong).contains("x.json is not a report.json"), "{}", refused(&wrong));
        let missing = Baseline::load(Path::new("/nonexistent/report.json")).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read the baseline /nonexistent/report.json: "), "{missing}");
    }
}
