//! The certification report (YAML), modelled on the Gateway API `ConformanceReport`: who was
//! tested, with which harness, contract and catalog, and per profile a result (`success` when
//! every applicable scenario passed, `partial` when some were skipped and none failed,
//! `failure` otherwise, known failures included), statistics, the features claimed and not,
//! and the scenarios that failed, failed as known (with why and the page explaining it), were
//! skipped, or do not apply to the installation's configuration, with why. The README says
//! how to submit one.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Catalog, RunReport, ScenarioReport, Verdict};
use crate::config::Implementation;
use crate::scenario::{Feature, Profile};

/// `apiVersion` of the report; bumped on incompatible changes.
pub const API_VERSION: &str = "upstream-tls-conformance/v1alpha1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificationReport<'a> {
    api_version: &'static str,
    kind: &'static str,
    /// RFC 3339, when the run started.
    date: &'a str,
    implementation: &'a Implementation,
    harness_version: &'a str,
    contract_version: &'a str,
    mode: &'a str,
    catalog: &'a Catalog,
    installations: &'a [String],
    /// Only in runs against loopback with faults, which certify nothing.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    loopback_faults: &'a [String],
    statistics: Statistics,
    profiles: Vec<ProfileReport<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileReport<'a> {
    name: &'static str,
    result: &'static str,
    statistics: Statistics,
    supported_features: Vec<&'static str>,
    unsupported_features: Vec<&'static str>,
    failed_scenarios: Vec<&'a str>,
    /// Scenarios the implementation is known to fail: they fail the profile as any failure
    /// does, listed with why and the page that explains the defect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    known_failures: Vec<Known<'a>>,
    skipped_scenarios: Vec<Skipped<'a>>,
    /// Scenarios for installations configured otherwise (install-wide settings): listed, not
    /// counted against the result.
    not_applicable_scenarios: Vec<Skipped<'a>>,
}

#[derive(Serialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct Statistics {
    passed: usize,
    failed: usize,
    #[serde(skip_serializing_if = "is_zero")]
    known_failures: usize,
    skipped: usize,
    not_applicable: usize,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

#[derive(Serialize)]
struct Skipped<'a> {
    name: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct Known<'a> {
    name: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    finding: Option<&'a str>,
}

pub fn render(report: &RunReport) -> String {
    let profiles = Profile::ALL
        .into_iter()
        .filter(|p| {
            report.scenarios.iter().any(|s| s.profile == *p) || report.not_selected.iter().any(|s| s.profile == *p)
        })
        .map(|p| profile_report(report, p))
        .collect();
    let certification = CertificationReport {
        api_version: API_VERSION,
        kind: "ConformanceReport",
        date: &report.started_at,
        implementation: &report.implementation,
        harness_version: report.harness_version,
        contract_version: report.contract_version,
        mode: &report.mode,
        catalog: &report.catalog,
        installations: &report.installations,
        loopback_faults: &report.faults,
        statistics: statistics(report.scenarios.iter(), report.not_selected.len()),
        profiles,
    };
    let mut text = String::from(
        "# Upstream TLS conformance certification report; certification/README.md says how to submit it.\n",
    );
    text.push_str(&serde_saphyr::to_string(&certification).expect("the certification model always serializes"));
    text
}

/// The name of the profile in the Gateway API-shaped report.
const GATEWAY_API_PROFILE: &str = "UPSTREAM-TLS-BACKEND-TLS-POLICY";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayApiReport<'a> {
    api_version: &'static str,
    kind: &'static str,
    implementation: &'a Implementation,
    date: &'a str,
    #[serde(rename = "gatewayAPIVersion")]
    gateway_api_version: &'a str,
    #[serde(rename = "gatewayAPIChannel")]
    gateway_api_channel: &'a str,
    mode: &'a str,
    profiles: [GatewayApiProfile<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayApiProfile<'a> {
    name: &'static str,
    summary: String,
    core: GatewayApiStatus<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayApiStatus<'a> {
    result: &'static str,
    statistics: GatewayApiStatistics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_tests: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_tests: Vec<&'a str>,
}

/// Gateway API's statistics keep Go's field names.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GatewayApiStatistics {
    passed: usize,
    skipped: usize,
    failed: usize,
}

/// The Gateway API scenarios' results in the shape of Gateway API's own `ConformanceReport`
/// (gateway.networking.k8s.io/v1, one profile), for a Gateway vendor to attach to a Gateway API
/// submission; `None` when the run selected no Gateway API scenario. Known failures count as
/// failed, as in the certification report; the summary says which harness, contract and
/// catalog the results come from.
pub fn render_gateway_api(report: &RunReport) -> Option<String> {
    if !report.scenarios.iter().any(|s| s.profile == Profile::GatewayApi) {
        return None;
    }
    let profile = profile_report(report, Profile::GatewayApi);
    let total = profile.statistics.passed
        + profile.statistics.failed
        + profile.statistics.known_failures
        + profile.statistics.skipped
        + profile.statistics.not_applicable;
    let statistics = profile.statistics;
    let known: Vec<&str> = profile.known_failures.iter().map(|k| k.name).collect();
    let mut summary = format!(
        "{} passed, {} failed, {} skipped of the {} scenarios of feature gateway-api-backend-tls \
         (upstream-tls-conformance {}, contract {}, catalog sha256 {})",
        statistics.passed,
        statistics.failed + statistics.known_failures,
        statistics.skipped + statistics.not_applicable,
        total,
        report.harness_version,
        report.contract_version,
        report.catalog.sha256
    );
    if !known.is_empty() {
        summary.push_str(&format!("; known failures of the implementation: {}", known.join(", ")));
    }
    let (version, channel) = match &report.gateway_api {
        Some(bundle) => (bundle.version.as_str(), bundle.channel.as_str()),
        None => ("unknown", "unknown"),
    };
    let skipped = profile.skipped_scenarios.iter().chain(&profile.not_applicable_scenarios).map(|s| s.name);
    let gateway = GatewayApiReport {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "ConformanceReport",
        implementation: &report.implementation,
        date: &report.started_at,
        gateway_api_version: version,
        gateway_api_channel: channel,
        mode: &report.mode,
        profiles: [GatewayApiProfile {
            name: GATEWAY_API_PROFILE,
            summary,
            core: GatewayApiStatus {
                result: profile.result,
                statistics: GatewayApiStatistics {
                    passed: statistics.passed,
                    skipped: statistics.skipped + statistics.not_applicable,
                    failed: statistics.failed + statistics.known_failures,
                },
                skipped_tests: skipped.collect(),
                failed_tests: profile.failed_scenarios.iter().copied().chain(known).collect(),
            },
        }],
    };
    let mut text = String::from(
        "# Upstream TLS conformance of Gateway API's BackendTLSPolicy, in the shape of Gateway API's ConformanceReport.\n",
    );
    text.push_str(&serde_saphyr::to_string(&gateway).expect("the report model always serializes"));
    Some(text)
}

/// The counts of `scenarios`, with `not_selected` more skipped.
fn statistics<'a>(scenarios: impl Iterator<Item = &'a ScenarioReport>, not_selected: usize) -> Statistics {
    let mut statistics = Statistics { skipped: not_selected, ..Default::default() };
    for scenario in scenarios {
        match scenario.verdict {
            Verdict::Passed => statistics.passed += 1,
            Verdict::Failed => statistics.failed += 1,
            Verdict::Skipped if scenario.not_applicable => statistics.not_applicable += 1,
            Verdict::Skipped => statistics.skipped += 1,
            Verdict::KnownFailure => statistics.known_failures += 1,
        }
    }
    statistics
}

fn profile_report(report: &RunReport, profile: Profile) -> ProfileReport<'_> {
    let scenarios: Vec<_> = report.scenarios.iter().filter(|s| s.profile == profile).collect();
    let not_selected: Vec<_> = report.not_selected.iter().filter(|s| s.profile == profile).collect();
    let statistics = statistics(scenarios.iter().copied(), not_selected.len());
    let skipped = |not_applicable: bool| {
        scenarios
            .iter()
            .filter(move |s| s.not_applicable == not_applicable)
            .filter_map(|s| s.skip_reason.as_deref().map(|reason| Skipped { name: &s.name, reason }))
    };
    let result = match statistics {
        Statistics { failed: 1.., .. } | Statistics { known_failures: 1.., .. } => "failure",
        Statistics { skipped: 1.., .. } => "partial",
        _ => "success",
    };
    let features: BTreeSet<Feature> = Feature::ALL.into_iter().filter(|f| f.profile() == profile).collect();
    let (unsupported, supported): (Vec<Feature>, Vec<Feature>) =
        features.into_iter().partition(|f| report.unsupported_features.contains(f));
    ProfileReport {
        name: profile.name(),
        result,
        statistics,
        supported_features: supported.into_iter().map(Feature::name).collect(),
        unsupported_features: unsupported.into_iter().map(Feature::name).collect(),
        failed_scenarios: scenarios.iter().filter(|s| s.verdict == Verdict::Failed).map(|s| s.name.as_str()).collect(),
        known_failures: scenarios
            .iter()
            .filter_map(|s| {
                let known = s.known_failure.as_ref()?;
                Some(Known { name: &s.name, reason: &known.reason, finding: known.finding.as_deref() })
            })
            .collect(),
        skipped_scenarios: skipped(false)
            .chain(not_selected.iter().map(|s| Skipped { name: &s.name, reason: "not selected for this run" }))
            .collect(),
        not_applicable_scenarios: skipped(true).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_carry_results_features_and_reasons() {
        let text = render(&super::super::tests::sample());
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(value["apiVersion"], API_VERSION);
        assert_eq!(value["kind"], "ConformanceReport");
        assert_eq!(value["implementation"]["project"], "proxy");
        assert_eq!(value["contractVersion"], super::super::CONTRACT_VERSION);
        assert_eq!(value["mode"], "default");
        assert_eq!(value["catalog"]["scenarios"], 1);
        assert_eq!(value["catalog"]["sha256"].as_str().unwrap().len(), 64);
        assert!(value.get("loopbackFaults").is_none(), "no faults, no key: {text}");
        assert_eq!(value["statistics"]["failed"], 1);
        let core = &value["profiles"][0];
        assert_eq!(core["name"], "core");
        assert_eq!(core["result"], "failure", "{text}");
        assert_eq!(core["failedScenarios"][0], "broken");
        assert_eq!(core["skippedScenarios"][0]["name"], "later");
        assert_eq!(
            core["skippedScenarios"][0]["reason"],
            "the implementation does not claim feature upstream-validation"
        );
        assert!(core["supportedFeatures"].as_array().unwrap().iter().any(|f| f == "upstream-validation"));
        assert_eq!(value["profiles"].as_array().unwrap().len(), 1, "only profiles with scenarios: {text}");
    }

    #[test]
    fn gateway_api_scenarios_also_get_a_report_in_gateway_apis_shape() {
        let mut report = super::super::tests::sample();
        assert_eq!(render_gateway_api(&report), None, "no Gateway API scenario, no report");
        for scenario in &mut report.scenarios {
            scenario.profile = Profile::GatewayApi;
        }
        report.gateway_api =
            Some(super::super::GatewayApiBundle { version: "v1.3.0".into(), channel: "experimental".into() });
        let text = render_gateway_api(&report).unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(value["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(value["kind"], "ConformanceReport");
        assert_eq!(value["gatewayAPIVersion"], "v1.3.0");
        assert_eq!(value["gatewayAPIChannel"], "experimental");
        let profile = &value["profiles"][0];
        assert_eq!(profile["name"], GATEWAY_API_PROFILE);
        assert_eq!(profile["core"]["result"], "failure", "{text}");
        assert_eq!(profile["core"]["statistics"]["Failed"], 1, "{text}");
        assert_eq!(profile["core"]["failedTests"][0], "broken");
        assert!(profile["summary"].as_str().unwrap().contains(&report.catalog.sha256), "{text}");
    }

    #[test]
    fn results_follow_the_verdicts() {
        let mut report = super::super::tests::sample();
        report.scenarios.retain(|s| s.verdict != Verdict::Failed);
        assert!(render(&report).contains("result: partial"));
        report.scenarios.retain(|s| s.verdict == Verdict::Passed);
        assert!(render(&report).contains("result: success"));
        report.not_selected = vec![super::super::NotSelected { name: "other".into(), profile: Profile::Core }];
        let value: serde_json::Value = serde_saphyr::from_str(&render(&report)).unwrap();
        assert_eq!(value["profiles"][0]["result"], "partial", "a partial selection is a partial result");
        assert_eq!(value["profiles"][0]["skippedScenarios"][0]["reason"], "not selected for this run");
        report.not_selected.clear();
        report.scenarios[0].verdict = Verdict::Skipped;
        report.scenarios[0].not_applicable = true;
        report.scenarios[0].skip_reason = Some("the installation has an Envoy client certificate".into());
        let value: serde_json::Value = serde_saphyr::from_str(&render(&report)).unwrap();
        assert_eq!(value["profiles"][0]["result"], "success", "not applicable is not a skip");
        assert_eq!(value["profiles"][0]["statistics"]["notApplicable"], 1);
        assert_eq!(value["profiles"][0]["notApplicableScenarios"][0]["name"], "demo");
        report.unsupported_features = vec![Feature::UpstreamHttp2];
        let value: serde_json::Value = serde_saphyr::from_str(&render(&report)).unwrap();
        assert_eq!(value["profiles"][0]["unsupportedFeatures"][0], "upstream-http2");
    }
}
