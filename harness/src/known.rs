//! Known non-conformance: scenarios an implementation is known to fail, as data
//! ([`KnownFailure`]), and what that does to an outcome ([`classify`]).
//!
//! A conformance suite that finds a defect in an implementation keeps asserting the intended
//! behaviour; the implementation's release then lists the scenario here with the reason, the
//! source lines and the page that explains it to its maintainers (`docs/findings/`). A run
//! reports such a scenario as a *known failure*, never as a pass, and does not fail for it;
//! a known failure that passes is stale and fails the run, so the list cannot outlive the
//! defect. The real Contour releases loopback runs take theirs from
//! `loopback/known-failures.yaml` ([`for_contour_release`]); a vendor lists its own under
//! `knownFailures` in the implementation config.

use serde::{Deserialize, Serialize};

use crate::runner::{Failure, ScenarioOutcome};

/// A scenario the implementation is known to fail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KnownFailure {
    /// The scenario's name.
    pub scenario: String,
    /// Why it fails, in a sentence.
    pub reason: String,
    /// Where in the implementation's source the defect is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The page (or issue) that explains it to the implementation's maintainers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

/// `loopback/known-failures.yaml`: known failures of the real Contour releases loopback runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContourKnownFailures {
    known_failures: Vec<ContourKnownFailure>,
}

/// One entry of that file: a known failure ([`KnownFailure`]'s fields) and the releases it
/// applies to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContourKnownFailure {
    scenario: String,
    releases: Vec<String>,
    reason: String,
    source: String,
    finding: String,
}

impl ContourKnownFailure {
    fn failure(self) -> KnownFailure {
        KnownFailure {
            scenario: self.scenario,
            reason: self.reason,
            source: Some(self.source),
            finding: Some(self.finding),
        }
    }
}

/// The file's text, checked by a test (every release tested, every scenario in the catalog).
const CONTOUR_KNOWN_FAILURES: &str = include_str!("../../loopback/known-failures.yaml");

/// The known failures of the real Contour at `release`, whatever serves its traffic (the
/// defects listed are Contour's).
///
/// # Panics
/// The file does not parse (a test keeps it parsing).
pub fn for_contour_release(release: &str) -> Vec<KnownFailure> {
    let file: ContourKnownFailures =
        serde_saphyr::from_str(CONTOUR_KNOWN_FAILURES).expect("loopback/known-failures.yaml parses (a test checks it)");
    file.known_failures
        .into_iter()
        .filter(|entry| entry.releases.iter().any(|r| r == release))
        .map(ContourKnownFailure::failure)
        .collect()
}

/// Every release and scenario `loopback/known-failures.yaml` names, for the test that holds
/// it against the tested releases and the catalog.
///
/// # Errors
/// The file does not parse.
pub fn contour_entries() -> Result<Vec<(Vec<String>, KnownFailure)>, String> {
    let file: ContourKnownFailures = serde_saphyr::from_str(CONTOUR_KNOWN_FAILURES).map_err(|e| e.to_string())?;
    Ok(file.known_failures.into_iter().map(|entry| (entry.releases.clone(), entry.failure())).collect())
}

/// The entries of `known` that name no scenario of `catalog` (misspelt, or the scenario was
/// renamed): they can never match, so the run warns about them.
pub fn naming_no_scenario<'a>(known: &'a [KnownFailure], catalog: &[&crate::scenario::LoadedScenario]) -> Vec<&'a str> {
    known.iter().map(|k| k.scenario.as_str()).filter(|name| !catalog.iter().any(|s| s.name() == *name)).collect()
}

/// What becomes of `outcome` when `known` lists the implementation's known failures: a
/// scenario that failed as listed is a known failure (its failure kept as evidence); one that
/// is listed but passed fails, as stale, naming what to remove. Others are left as they are.
pub fn classify(mut outcome: ScenarioOutcome, known: &[KnownFailure]) -> ScenarioOutcome {
    let Some(entry) = known.iter().find(|k| k.scenario == outcome.name) else { return outcome };
    if outcome.skipped.is_some() {
        return outcome;
    }
    match &outcome.failure {
        Some(_) => outcome.known_failure = Some(entry.clone()),
        None => {
            outcome.failure = Some(Failure {
                step: None,
                kind: "known failure",
                message: format!(
                    "listed as a known failure ({}), but it passed: the defect is gone, so remove the entry (for \
                     the real Contour, from loopback/known-failures.yaml; otherwise from the implementation \
                     config's knownFailures)",
                    entry.reason
                ),
                answers: Vec::new(),
                breaks: Vec::new(),
            });
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(failed: bool) -> ScenarioOutcome {
        let scenario =
            crate::scenario::load_file(&crate::suite::default_scenario_dir().join("validation/right-ca.yaml")).unwrap();
        let mut outcome = ScenarioOutcome::set_up_failed(&scenario, String::new(), "it broke".into());
        if !failed {
            outcome.failure = None;
        }
        outcome
    }

    fn known(scenario: &str) -> Vec<KnownFailure> {
        vec![KnownFailure { scenario: scenario.into(), reason: "a defect".into(), source: None, finding: None }]
    }

    #[test]
    fn contours_known_failures_name_tested_releases_and_catalog_scenarios() {
        let entries = contour_entries().expect("loopback/known-failures.yaml parses");
        let catalog = crate::scenario::load_dir(&crate::suite::default_scenario_dir()).unwrap();
        let tested = loopback::config::contour_versions();
        for (releases, failure) in &entries {
            assert!(!releases.is_empty(), "{failure:?} names no release");
            for release in releases {
                assert!(tested.contains(&release.as_str()), "{release} is not a tested release: {failure:?}");
            }
            assert!(catalog.iter().any(|s| s.name() == failure.scenario), "no scenario {}", failure.scenario);
            let finding = failure.finding.as_deref().unwrap_or_default();
            let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(finding);
            assert!(page.is_file(), "{} names {finding}, which is not in the repository", failure.scenario);
        }
        let all: Vec<&crate::scenario::LoadedScenario> = catalog.iter().collect();
        let named: Vec<KnownFailure> = entries.into_iter().map(|(_, f)| f).collect();
        assert!(naming_no_scenario(&named, &all).is_empty());
        assert_eq!(naming_no_scenario(&known("no-such-scenario"), &all), ["no-such-scenario"]);
    }

    #[test]
    fn the_example_configs_for_contour_list_the_default_releases_known_failures() {
        let default = loopback::config::contour_versions()[0];
        let mut want: Vec<String> = for_contour_release(default).into_iter().map(|k| k.scenario).collect();
        want.sort();
        for example in ["implementation.yaml", "implementation-tls12.yaml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
            let config = crate::config::ImplementationConfig::load(&path).unwrap();
            let mut listed: Vec<String> = config.known_failures.into_iter().map(|k| k.scenario).collect();
            listed.sort();
            assert_eq!(listed, want, "{example} and loopback/known-failures.yaml for {default}");
        }
    }

    #[test]
    fn a_listed_failure_is_known_a_listed_pass_is_stale_and_others_are_untouched() {
        let failed = classify(outcome(true), &known("validation-right-ca"));
        assert!(failed.passed() && failed.known_failure.is_some(), "a known failure does not fail the run");
        assert_eq!(failed.failure.as_ref().unwrap().message, "it broke", "the evidence stays");

        let stale = classify(outcome(false), &known("validation-right-ca"));
        assert!(!stale.passed() && stale.known_failure.is_none(), "a known failure that passes fails");
        let message = &stale.failure.unwrap().message;
        assert!(message.contains("a defect") && message.contains("remove the entry"), "{message}");

        let other = classify(outcome(true), &known("some-other-scenario"));
        assert!(!other.passed() && other.known_failure.is_none());
        assert!(classify(outcome(false), &[]).passed());
    }
}
