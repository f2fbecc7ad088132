//! JUnit XML for CI systems: one `<testsuite>` named `upstream-tls-conformance`, one
//! `<testcase>` per scenario with `classname` `upstream-tls.<area>` (the scenario's directory)
//! and `name` the scenario's name; a failure's `message` is its one-line reason and its text
//! the whole failure with the last answers; a skip carries its reason.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{RunReport, Verdict};

/// # Errors
/// The XML writer fails (it does not for strings the model holds).
pub fn render(report: &RunReport) -> Result<String, String> {
    let mut junit = Report::new("upstream-tls-conformance");
    let mut suite = TestSuite::new("upstream-tls-conformance");
    for scenario in &report.scenarios {
        let status = match scenario.verdict {
            Verdict::Passed => TestCaseStatus::success(),
            Verdict::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(scenario.skip_reason.clone().unwrap_or_default());
                status
            }
            // JUnit has no expected failure: a skip that says so, never a success.
            Verdict::KnownFailure => {
                let mut status = TestCaseStatus::skipped();
                if let Some(known) = &scenario.known_failure {
                    let finding = known.finding.as_ref().map_or(String::new(), |f| format!(" (see {f})"));
                    status.set_message(format!("known failure: {}{finding}", known.reason));
                }
                if let Some(failure) = &scenario.failure {
                    status.set_description(format!("{}\n{}: {}\n", scenario.file, failure.place(), failure.message));
                }
                status
            }
            Verdict::Failed => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                if let Some(failure) = &scenario.failure {
                    let place = failure.place();
                    let first_line = failure.message.lines().next().unwrap_or_default();
                    status.set_message(format!("{place}: {first_line}"));
                    let mut text = format!("{}\n{place}: {}\n", scenario.file, failure.message);
                    for answer in &failure.answers {
                        text.push_str(&format!("answer {}: {}\n", answer.request_id, answer.summary()));
                    }
                    for line in failure.broken_lines() {
                        text.push_str(&format!("{line}\n"));
                    }
                    status.set_description(text);
                }
                status
            }
        };
        let mut case = TestCase::new(scenario.name.clone(), status);
        case.set_classname(format!("upstream-tls.{}", scenario.area));
        case.set_time(std::time::Duration::from_secs_f64(scenario.duration_seconds));
        suite.add_test_case(case);
    }
    junit.add_test_suite(suite);
    junit.set_time(std::time::Duration::from_secs_f64(report.wall_time_seconds));
    junit.to_string().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_has_a_case_per_scenario_with_failures_and_skips() {
        let xml = render(&super::super::tests::sample()).unwrap();
        assert!(xml.contains(r#"<testsuite name="upstream-tls-conformance" tests="3""#), "{xml}");
        assert!(xml.contains(r#"failures="1""#) && xml.contains(r#"skipped="1""#), "{xml}");
        assert!(xml.contains(r#"<testcase name="broken" classname="upstream-tls.validation""#), "{xml}");
        assert!(xml.contains(r#"<failure message="step 1 (request): expected status 200, got 503 &lt;&amp;&gt; -----BEGIN PRIVATE KEY-----""#), "{xml}");
        assert!(
            xml.contains("<skipped message=\"the implementation does not claim feature upstream-validation\""),
            "{xml}"
        );
    }
}
