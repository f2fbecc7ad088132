//! Checking a submitted certification report (`certify verify`): what a reviewer of a
//! submission would otherwise check by hand.
//!
//! A report is valid when it is a `certification.yaml` of this format ([`SubmittedReport`],
//! whose JSON Schema is `certification/certification.schema.json`), made by a released
//! harness ([`RELEASES`]) with that release's catalog and contract, against a named
//! implementation, without loopback faults; when the core profile claims every core feature
//! (core features cannot be exempted); when every skipped or not-applicable scenario says
//! why; when each result and count agrees with the others; and, for a report of this very
//! release, when its lists are the catalog's scenarios, each once, accounting for every one.
//!
//! Reports are not signed: this checks that a report is complete and consistent, not that
//! the run happened as written (the reviewers read the run's summary and logs for that).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::report::certification::API_VERSION;
use crate::scenario::{Feature, Profile};

/// The released harness versions, each with the catalog and contract it carries.
pub const RELEASES: &str = include_str!("../../certification/releases.yaml");

/// A released harness: what its reports must say they ran.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Release {
    pub version: String,
    pub date: String,
    pub contract: String,
    pub catalog: SubmittedCatalog,
}

/// [`RELEASES`], read.
///
/// # Panics
/// The file built into the binary is malformed (a test reads it).
pub fn releases() -> Vec<Release> {
    serde_saphyr::from_str(RELEASES).expect("certification/releases.yaml is well formed")
}

/// A certification report as submitted: the fields `certification.yaml` has, read strictly.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmittedReport {
    pub api_version: String,
    pub kind: String,
    /// RFC 3339, when the run started.
    pub date: String,
    pub implementation: SubmittedImplementation,
    pub harness_version: String,
    pub contract_version: String,
    pub mode: String,
    pub catalog: SubmittedCatalog,
    /// The install-wide settings the scenarios ran with.
    pub installations: Vec<String>,
    /// Present only in runs against loopback with faults, which certify nothing.
    #[serde(default)]
    pub loopback_faults: Vec<String>,
    pub statistics: SubmittedStatistics,
    pub profiles: Vec<SubmittedProfile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmittedImplementation {
    pub organization: String,
    pub project: String,
    pub url: String,
    pub version: String,
    pub contact: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmittedCatalog {
    pub scenarios: usize,
    pub sha256: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmittedStatistics {
    pub passed: usize,
    pub failed: usize,
    #[serde(default)]
    pub known_failures: usize,
    pub skipped: usize,
    pub not_applicable: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmittedProfile {
    pub name: String,
    /// `success`, `partial` or `failure`.
    pub result: String,
    pub statistics: SubmittedStatistics,
    pub supported_features: Vec<String>,
    pub unsupported_features: Vec<String>,
    pub failed_scenarios: Vec<String>,
    #[serde(default)]
    pub known_failures: Vec<SubmittedKnownFailure>,
    pub skipped_scenarios: Vec<SubmittedReason>,
    pub not_applicable_scenarios: Vec<SubmittedReason>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmittedReason {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmittedKnownFailure {
    pub name: String,
    pub reason: String,
    #[serde(default)]
    pub finding: Option<String>,
}

/// The JSON Schema of `certification.yaml`, as committed in `certification/`.
pub fn schema() -> String {
    let schema = schemars::schema_for!(SubmittedReport);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

/// What a valid report certifies, in one line per profile.
#[derive(Debug)]
pub struct Verified {
    pub implementation: String,
    pub profiles: Vec<(String, String)>,
}

/// Checks a submitted report.
///
/// # Errors
/// Every problem found, each in one sentence.
pub fn verify(text: &str) -> Result<Verified, Vec<String>> {
    let report: SubmittedReport = serde_saphyr::from_str(text).map_err(|e| {
        let mut options = serde_saphyr::RenderOptions::default();
        options.snippets = serde_saphyr::SnippetMode::Off;
        vec![format!("not a certification report of this format: {}", e.render_with_options(options))]
    })?;
    let mut problems = Vec::new();
    if report.api_version != API_VERSION || report.kind != "ConformanceReport" {
        problems.push(format!(
            "apiVersion {:?} kind {:?}: expected {API_VERSION} ConformanceReport",
            report.api_version, report.kind
        ));
    }
    release_problems(&report, &mut problems);
    let implementation = &report.implementation;
    for (field, value) in [
        ("organization", &implementation.organization),
        ("project", &implementation.project),
        ("version", &implementation.version),
    ] {
        if value.trim().is_empty() {
            problems.push(format!("implementation.{field} is empty: say which implementation was tested"));
        }
    }
    if report.mode.trim().is_empty() {
        problems.push("mode is empty: name the configuration that was tested".into());
    }
    if !report.loopback_faults.is_empty() {
        problems.push(format!(
            "the run had loopback faults switched on ({}): it tested loopback's faults, not an implementation",
            report.loopback_faults.join(", ")
        ));
    }
    let mut total = SubmittedStatistics::default();
    for profile in &report.profiles {
        profile_problems(profile, &mut problems);
        let s = profile.statistics;
        total.passed += s.passed;
        total.failed += s.failed;
        total.known_failures += s.known_failures;
        total.skipped += s.skipped;
        total.not_applicable += s.not_applicable;
    }
    if !report.profiles.iter().any(|p| p.name == Profile::Core.name()) {
        problems.push("there is no core profile: every certification covers it".into());
    }
    if report.harness_version == env!("CARGO_PKG_VERSION") {
        catalog_problems(&report, &mut problems);
    }
    let stated = report.statistics;
    if total != stated {
        problems.push(format!(
            "the report's statistics {stated:?} are not the sum of its profiles' {total:?}: was it edited?"
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Verified {
        implementation: format!(
            "{}/{} {} (mode {}), harness {}, catalog sha256 {}",
            implementation.organization,
            implementation.project,
            implementation.version,
            report.mode,
            report.harness_version,
            report.catalog.sha256
        ),
        profiles: report.profiles.iter().map(|p| (p.name.clone(), p.result.clone())).collect(),
    })
}

/// A report of this very release, checked against the catalog built into this binary: every
/// scenario it names is the catalog's, in that profile, listed once; each profile accounts
/// for all its scenarios; a scenario is not applicable only for a configuration of the
/// installation (an install-wide feature), never to hide a failure.
fn catalog_problems(report: &SubmittedReport, problems: &mut Vec<String>) {
    let Ok(catalog) = crate::scenario::load::load_builtin() else { return };
    for profile in Profile::ALL {
        let members: Vec<_> = catalog.iter().filter(|s| s.scenario.profile() == profile).collect();
        let submitted = report.profiles.iter().find(|p| p.name == profile.name());
        let Some(submitted) = submitted else {
            if !members.is_empty() {
                problems.push(format!("profile {} of the catalog is missing", profile.name()));
            }
            continue;
        };
        let s = submitted.statistics;
        let accounted = s.passed + s.failed + s.known_failures + s.skipped + s.not_applicable;
        if accounted != members.len() {
            problems.push(format!(
                "{}: {accounted} scenarios are accounted for, but the catalog's profile has {}",
                profile.name(),
                members.len()
            ));
        }
        let listed = submitted
            .failed_scenarios
            .iter()
            .chain(submitted.known_failures.iter().map(|k| &k.name))
            .chain(submitted.skipped_scenarios.iter().map(|s| &s.name))
            .chain(submitted.not_applicable_scenarios.iter().map(|s| &s.name));
        let mut seen = std::collections::BTreeSet::new();
        for name in listed {
            if !members.iter().any(|m| m.name() == name) {
                problems.push(format!("{}: {name} is not a scenario of this profile in the catalog", profile.name()));
            } else if !seen.insert(name.as_str()) {
                problems.push(format!("{}: {name} is listed twice", profile.name()));
            }
        }
        for entry in &submitted.not_applicable_scenarios {
            let install_wide = members
                .iter()
                .find(|m| m.name() == entry.name)
                .is_some_and(|m| m.scenario.features.iter().any(|f| f.is_install_wide()));
            if !install_wide {
                problems.push(format!(
                    "{}: {} is listed as not applicable, but it needs no particular configuration of the installation",
                    profile.name(),
                    entry.name
                ));
            }
        }
    }
}

/// The report must come from a released harness, with the catalog and contract it carries.
fn release_problems(report: &SubmittedReport, problems: &mut Vec<String>) {
    let releases = releases();
    let Some(release) = releases.iter().find(|r| r.version == report.harness_version) else {
        let known: Vec<&str> = releases.iter().map(|r| r.version.as_str()).collect();
        problems.push(format!(
            "harness {} is not a released version ({}): certify with a release",
            report.harness_version,
            known.join(", ")
        ));
        return;
    };
    if report.catalog != release.catalog {
        problems.push(format!(
            "the catalog ({} scenarios, sha256 {}) is not the one harness {} carries ({} scenarios, sha256 {}): \
             scenarios were changed, added or left out",
            report.catalog.scenarios,
            report.catalog.sha256,
            release.version,
            release.catalog.scenarios,
            release.catalog.sha256
        ));
    }
    if report.contract_version != release.contract {
        problems.push(format!(
            "contract {} is not harness {}'s ({})",
            report.contract_version, release.version, release.contract
        ));
    }
}

fn profile_problems(profile: &SubmittedProfile, problems: &mut Vec<String>) {
    let name = &profile.name;
    if !Profile::ALL.iter().any(|p| p.name() == name) {
        problems.push(format!("profile {name:?} is not one of this harness's"));
    }
    if name == Profile::Core.name() {
        // Core features describe what every implementation does; those of an installation's
        // configuration (no client certificate, default versions) are not claims but facts of
        // the run, which makes their scenarios not applicable, never exempt.
        let exempt: Vec<&str> = profile
            .unsupported_features
            .iter()
            .map(String::as_str)
            .filter(|f| Feature::ALL.iter().any(|k| k.name() == *f && !k.is_install_wide()))
            .collect();
        if !exempt.is_empty() {
            problems
                .push(format!("the core profile leaves out {}: core features cannot be exempted", exempt.join(", ")));
        }
    }
    for (list, entries) in [
        ("skippedScenarios", &profile.skipped_scenarios),
        ("notApplicableScenarios", &profile.not_applicable_scenarios),
    ] {
        for entry in entries.iter().filter(|e| e.reason.trim().is_empty()) {
            problems.push(format!("{name}: {list} {} has no reason", entry.name));
        }
    }
    let s = profile.statistics;
    let counts = [
        ("failed", s.failed, profile.failed_scenarios.len()),
        ("knownFailures", s.known_failures, profile.known_failures.len()),
        ("skipped", s.skipped, profile.skipped_scenarios.len()),
        ("notApplicable", s.not_applicable, profile.not_applicable_scenarios.len()),
    ];
    for (field, stated, listed) in counts {
        if stated != listed {
            problems.push(format!("{name}: statistics.{field} is {stated} but {listed} scenarios are listed"));
        }
    }
    let result = if s.failed > 0 || s.known_failures > 0 {
        "failure"
    } else if s.skipped > 0 {
        "partial"
    } else {
        "success"
    };
    if profile.result != result {
        problems.push(format!(
            "{name}: result {:?} does not follow from its statistics, which make it {result:?}",
            profile.result
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_version_is_a_release_with_this_catalog() {
        let releases = releases();
        let version = env!("CARGO_PKG_VERSION");
        let release = releases.iter().find(|r| r.version == version).unwrap_or_else(|| {
            panic!("harness {version} is not in certification/releases.yaml: add it with its catalog")
        });
        let catalog = crate::scenario::load::load_builtin().expect("the catalog loads");
        let digest = crate::scenario::load::catalog_sha256(&catalog);
        assert_eq!(
            (release.catalog.scenarios, release.catalog.sha256.as_str()),
            (catalog.len(), digest.as_str()),
            "the catalog is not the one release {version} carries: a catalog change is a new release; bump the \
             version in Cargo.toml, add it to certification/releases.yaml and CHANGELOG.md"
        );
        assert_eq!(release.contract, crate::report::CONTRACT_VERSION);
        let changelog = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../CHANGELOG.md")).unwrap();
        for release in &releases {
            assert!(
                changelog.contains(&format!("\n## {} ", release.version)),
                "CHANGELOG.md has no {}",
                release.version
            );
        }
    }

    /// Submitted reports (`certification/<organization>-<project>/*.yaml`) stay valid.
    #[test]
    fn every_submitted_report_verifies() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../certification"));
        for submitter in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            for report in std::fs::read_dir(&submitter).unwrap().map(|e| e.unwrap().path()) {
                if report.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&report).unwrap();
                    if let Err(problems) = verify(&text) {
                        panic!("{}: {problems:#?}", report.display());
                    }
                }
            }
        }
    }

    #[test]
    fn the_committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../certification/certification.schema.json");
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            schema(),
            "certification/certification.schema.json is out of date; run `cargo run -p harness -- certify schema > \
             certification/certification.schema.json`"
        );
    }
}
