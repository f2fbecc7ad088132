//! The whole [`RunReport`] as JSON (format [`REPORT_FORMAT`](super::REPORT_FORMAT)): every
//! scenario, step, failure and the last answers with what the backend echoed.

use super::RunReport;

pub fn render(report: &RunReport) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report model always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_the_model() {
        let value: serde_json::Value = serde_json::from_str(&render(&super::super::tests::sample())).unwrap();
        assert_eq!(value["format"], "upstream-tls-conformance/report/v1");
        assert_eq!(value["totals"]["failed"], 1);
        assert_eq!(value["scenarios"][1]["verdict"], "failed");
        assert_eq!(value["scenarios"][1]["failure"]["step"], 1);
        assert_eq!(value["scenarios"][2]["skipReason"], "the installation has no Envoy client certificate");
        assert_eq!(value["scenarios"][0]["features"][0], "upstream-validation");
    }
}
