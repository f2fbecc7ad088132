//! A Markdown summary fit for a CI step summary: totals, what changed since the baseline run,
//! failures first with their one-line reason and the guarantee broken, results per profile,
//! then every scenario.

use super::{RunReport, Totals, Verdict};

pub fn render(report: &RunReport) -> String {
    let t = report.totals;
    let mut out = format!(
        "# Upstream TLS conformance\n\n**{}** passed, **{}** failed, **{}** skipped{} in {:.1}s against the {} (run `{}`).\n",
        t.passed,
        t.failed,
        t.skipped,
        if t.known_failures > 0 { format!(", **{}** known failures", t.known_failures) } else { String::new() },
        report.wall_time_seconds,
        report.target,
        report.run_id
    );
    if let Some(repetitions) = &report.repetitions {
        out.push_str(&format!(
            "\nThe suite ran **{} times**; each scenario is reported by its first failure, if it had one. {} flaky.\n",
            repetitions.runs, repetitions.flaky
        ));
        let failing: Vec<_> = repetitions.tallies.iter().filter(|t| t.failed > 0).collect();
        if !failing.is_empty() {
            out.push_str("\n| scenario | passed | failed | failure rate |\n|---|---|---|---|\n");
            for t in failing {
                out.push_str(&format!(
                    "| {} | {} | {} | {:.0}% |\n",
                    t.scenario,
                    t.passed,
                    t.failed,
                    t.failure_rate() * 100.0
                ));
            }
        }
    }
    if let Some(changes) = &report.baseline {
        out.push_str(&format!("\n## Since the last run\n\n{}.\n", cell(&changes.headline())));
        let lines = changes.lines();
        if !lines.is_empty() {
            out.push('\n');
        }
        for line in lines {
            out.push_str(&format!("- {}\n", cell(&line)));
        }
    }
    if let Some(signal) = report.interrupted {
        out.push_str(&format!(
            "\n**Interrupted by {signal}**: the scenarios that did not finish are skipped; this run certifies nothing.\n"
        ));
    }
    let failures: Vec<_> = report.scenarios.iter().filter(|s| s.verdict == Verdict::Failed).collect();
    if !failures.is_empty() {
        out.push_str("\n## Failures\n\n");
        for scenario in failures {
            let reason = scenario.failure.as_ref().map_or_else(String::new, |f| {
                format!("{}: {}", f.place(), f.message.lines().next().unwrap_or_default())
            });
            out.push_str(&format!("- **{}** ({}): {}\n", scenario.name, scenario.file, cell(&reason)));
            for broken in scenario.failure.iter().flat_map(|f| &f.breaks) {
                out.push_str(&format!("  - breaks {}\n", cell(&broken.says)));
            }
        }
    }
    let known: Vec<_> = report.scenarios.iter().filter(|s| s.verdict == Verdict::KnownFailure).collect();
    if !known.is_empty() {
        out.push_str("\n## Known failures\n\nThe implementation is known to fail these; they do not fail the run.\n\n");
        for scenario in known {
            let Some(entry) = &scenario.known_failure else { continue };
            let finding = entry.finding.as_ref().map_or(String::new(), |f| format!(" (see {f})"));
            out.push_str(&format!("- **{}**: {}{}\n", scenario.name, cell(&entry.reason), cell(&finding)));
        }
    }
    out.push_str(
        "\n## By profile\n\n| profile | passed | failed | skipped | known failures |\n|---|---|---|---|---|\n",
    );
    for (profile, Totals { passed, failed, skipped, known_failures }) in report.profile_totals() {
        out.push_str(&format!("| {} | {passed} | {failed} | {skipped} | {known_failures} |\n", profile.name()));
    }
    out.push_str("\n## Scenarios\n\n| scenario | clauses | result | time |\n|---|---|---|---|\n");
    for scenario in &report.scenarios {
        let result = match scenario.verdict {
            Verdict::Passed => "passed".to_string(),
            Verdict::Failed => "**failed**".to_string(),
            Verdict::KnownFailure => "known failure".to_string(),
            Verdict::Skipped => {
                let label = if scenario.not_applicable { "not applicable" } else { "skipped" };
                format!("{label}: {}", cell(scenario.skip_reason.as_deref().unwrap_or_default()))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {result} | {:.1}s |\n",
            scenario.name,
            scenario.contract.join(", "),
            scenario.duration_seconds
        ));
    }
    out
}

/// Text safe inside a table cell or list item: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_puts_failures_first_and_counts_profiles() {
        let text = render(&super::super::tests::sample());
        let failures = text.find("## Failures").unwrap();
        assert!(failures < text.find("## By profile").unwrap());
        assert!(text.contains("**1** passed, **1** failed, **1** skipped"), "{text}");
        assert!(
            text.contains(
                "- **broken** (scenarios/validation/demo.yaml): step 1 (request): expected status 200, got 503"
            ),
            "{text}"
        );
        assert!(text.contains("| core | 1 | 1 | 1 |"), "{text}");
        assert!(
            text.contains(
                "| later |  | skipped: the implementation does not claim feature upstream-validation | 1.5s |"
            ),
            "{text}"
        );
        let mut report = super::super::tests::sample();
        report.scenarios[2].not_applicable = true;
        report.scenarios[2].skip_reason = Some("the installation has an Envoy client certificate".into());
        let text = render(&report);
        assert!(
            text.contains("| later |  | not applicable: the installation has an Envoy client certificate |"),
            "{text}"
        );
    }
}
