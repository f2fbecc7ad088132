//! One Markdown page per failed scenario, written to `diagnostics/<scenario>.md` next to the
//! other reports: where and why it failed, its steps with timings, the last answers with what
//! the backend echoed, the objects it applied as the cluster had them (Secret values
//! redacted), and the backends' logs.

use std::fmt::Write;

use super::ScenarioReport;

/// How many lines of each backend log the page shows (the JSON report has them all).
const LOG_LINES: usize = 100;

/// The page's path relative to the report directory.
pub fn file_name(scenario: &str) -> String {
    format!("diagnostics/{scenario}.md")
}

/// The page, or `None` when the scenario has no diagnostics (it did not fail).
pub fn render(scenario: &ScenarioReport) -> Option<String> {
    let diagnostics = scenario.diagnostics.as_ref()?;
    let mut out = format!("# {} failed\n\n", scenario.name);
    let _ = writeln!(out, "- file: `{}`", scenario.file);
    let _ = writeln!(out, "- clauses: {}", scenario.contract.join(", "));
    let _ = writeln!(out, "- namespace: `{}`", scenario.namespace);
    let _ = writeln!(out, "- installation: {}", scenario.installation);
    let _ = writeln!(out, "- duration: {:.1}s", scenario.duration_seconds);
    if let Some(failure) = &scenario.failure {
        let _ = write!(out, "\n## Failure at {}\n\n```\n{}\n```\n", failure.place(), failure.message);
        if !failure.breaks.is_empty() {
            out.push_str("\nWhat it shows broken, in the contract's words (docs/contract.md):\n\n");
            for broken in &failure.breaks {
                let _ = writeln!(out, "- {}", broken.says);
            }
        }
        if !failure.answers.is_empty() {
            out.push_str("\n## Last answers\n\n");
            for answer in &failure.answers {
                let _ = writeln!(out, "- `{}`: {}", answer.request_id, answer.summary());
                if let Some(echo) = &answer.echo {
                    let json = serde_json::to_string(echo).unwrap_or_default();
                    let _ = writeln!(out, "  - backend echo: `{json}`");
                }
            }
        }
    }
    out.push_str("\n## Steps\n\n| step | kind | what | result | time |\n|---|---|---|---|---|\n");
    for step in &scenario.steps {
        let result = if step.passed { "passed" } else { "**failed**" };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {result} | {:.2}s |",
            step.index,
            step.kind,
            step.summary.replace('|', "\\|"),
            step.duration_seconds
        );
    }
    out.push_str("\n## Objects as the cluster had them\n\n");
    for object in &diagnostics.objects {
        let kind = object["kind"].as_str().unwrap_or("object");
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let yaml = serde_saphyr::to_string(object).unwrap_or_else(|e| format!("cannot render: {e}"));
        let _ = write!(out, "### {kind} {name}\n\n```yaml\n{}\n```\n\n", yaml.trim_end());
    }
    out.push_str("## Backend logs\n\n");
    if diagnostics.logs.is_empty() {
        out.push_str("No backend pod logs.\n\n");
    }
    for log in &diagnostics.logs {
        let lines: Vec<&str> = log.text.trim_end().lines().collect();
        let shown = &lines[lines.len().saturating_sub(LOG_LINES)..];
        let _ = write!(out, "### {}\n\n{}\n\n", log.pod, log.state);
        if shown.len() < lines.len() {
            let _ = write!(out, "The last {} of {} lines:\n\n", shown.len(), lines.len());
        }
        let _ = write!(out, "```\n{}\n```\n\n", shown.join("\n"));
    }
    if !diagnostics.problems.is_empty() {
        out.push_str("## Not gathered\n\n");
        for problem in &diagnostics.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_failure_steps_objects_and_logs() {
        let report = super::super::tests::sample();
        assert!(render(&report.scenarios[0]).is_none(), "passed scenarios have no page");
        let page = render(&report.scenarios[1]).unwrap();
        assert!(page.starts_with("# broken failed\n"), "{page}");
        assert!(page.contains("## Failure at step 1 (request)"), "{page}");
        assert!(page.contains("| 1 | request | GET / | passed | 0.90s |"), "{page}");
        assert!(page.contains("### Secret backend-ca"), "{page}");
        assert!(page.contains("ca.crt: <redacted, 12 characters>"), "{page}");
        assert!(page.contains("### broken-7d9f\n\nRunning, ready\n\n```\n{\"requestId\":\"r1\"}\n```"), "{page}");
        assert!(page.contains("- logs of backend other: timed out"), "{page}");

        let mut report = super::super::tests::sample();
        let diagnostics = report.scenarios[1].diagnostics.as_mut().unwrap();
        diagnostics.logs[0].text = (1..=150).map(|n| format!("line {n}\n")).collect();
        let page = render(&report.scenarios[1]).unwrap();
        assert!(page.contains("The last 100 of 150 lines:\n\n```\nline 51\n"), "{page}");
        assert!(page.contains("line 150\n```"), "{page}");
    }
}
