//! The whole [`RunReport`] as JSON (format [`REPORT_FORMAT`](super::REPORT_FORMAT)): every
//! scenario, step, failure, the last answers with what the backend echoed, and diagnostics.
//! Its JSON Schema, [`schema`], is committed as `harness/report.schema.json`.

use super::RunReport;

/// Where the report's JSON Schema is committed, relative to the repository.
pub const SCHEMA_PATH: &str = "harness/report.schema.json";

/// The JSON Schema of `report.json`, generated from the model.
pub fn schema() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12().for_serialize().into_generator();
    let mut schema = generator.into_root_schema_for::<RunReport>();
    schema.insert("$id".into(), format!("urn:{}", super::REPORT_FORMAT.replace('/', ":")).into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

pub fn render(report: &RunReport) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("the report model always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SCHEMA_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema(),
            "{SCHEMA_PATH} is out of date; regenerate it with `cargo run -p harness -- schema --report > {SCHEMA_PATH}`"
        );
    }

    #[test]
    fn the_schema_requires_what_every_report_has() {
        let schema: serde_json::Value = serde_json::from_str(&schema()).unwrap();
        let required = schema["required"].as_array().unwrap();
        for field in ["format", "implementation", "totals", "scenarios", "notSelected"] {
            assert!(required.iter().any(|r| r == field), "{field} is not required");
        }
        assert!(schema["$defs"]["ScenarioReport"]["properties"]["diagnostics"].is_object());
    }

    #[test]
    fn json_carries_the_model() {
        let value: serde_json::Value = serde_json::from_str(&render(&super::super::tests::sample())).unwrap();
        assert_eq!(value["format"], "upstream-tls-conformance/report/v1");
        assert_eq!(value["totals"]["failed"], 1);
        assert_eq!(value["scenarios"][1]["verdict"], "failed");
        assert_eq!(value["scenarios"][1]["failure"]["step"], 1);
        assert_eq!(
            value["scenarios"][2]["skipReason"],
            "the implementation does not claim feature upstream-validation"
        );
        assert_eq!(value["scenarios"][0]["features"][0], "upstream-validation");
    }
}
