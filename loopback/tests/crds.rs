//! Loopback's hand-written schemas of HTTPProxy and TLSCertificateDelegation (which drive its
//! admission and OpenAPI) against the CRDs of the Contour releases the project tests, as
//! `scripts/ensure-contour` copies them from Contour's Go module.
//!
//! Wherever the hand-written schema describes an object, it must list exactly the CRD's
//! properties, with the same types, enums, required fields, patterns and bounds, and carry the
//! CRD's CEL rules there; where it keeps an object loose (policies no scenario touches), the
//! CRD's detail is not compared. Without the CRDs (no Go) this test passes with a loud note,
//! unless `UPSTREAM_TLS_REQUIRE_CONTOUR=1` (as CI sets).

use loopback::api::kinds::{self, ResourceKind};
use loopback::api::openapi;
use loopback::config::{contour_cache_dir, contour_versions};
use serde_json::Value;

/// Schema keywords whose values must agree wherever the hand-written schema has detail.
const COMPARED: [&str; 9] =
    ["type", "enum", "pattern", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength"];

/// The `openAPIV3Schema` of `kind`'s served version in a CRD file.
fn crd_schema(crds: &[Value], kind: &ResourceKind) -> Value {
    let crd = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == kind.kind && c["spec"]["group"] == kind.group)
        .unwrap_or_else(|| panic!("no CRD for {}", kind.kind));
    let version = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == kind.version))
        .unwrap_or_else(|| panic!("no version {} in the {} CRD", kind.version, kind.kind));
    version["schema"]["openAPIV3Schema"].clone()
}

fn sorted_strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = value.as_array().into_iter().flatten().map(|v| v.to_string()).collect();
    out.sort();
    out
}

fn rules(value: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        value.as_array().into_iter().flatten().filter_map(|v| v["rule"].as_str().map(String::from)).collect();
    out.sort();
    out
}

/// Every disagreement between `ours` and `crd` at `path` and below; `compared` counts the
/// fields looked at.
fn compare(ours: &Value, crd: &Value, path: &str, problems: &mut Vec<String>, compared: &mut usize) {
    let ours = openapi::resolve(ours);
    *compared += 1;
    let loose = ours["x-kubernetes-preserve-unknown-fields"] == true && ours.get("properties").is_none();
    if loose || path.ends_with(".metadata") || path.ends_with(".status") {
        // Not modelled here, or a built-in (metadata) or controller-written (status) part.
        return;
    }
    for keyword in COMPARED {
        let (a, b) = (&ours[keyword], &crd[keyword]);
        let same = if keyword == "enum" { sorted_strings(a) == sorted_strings(b) } else { a == b };
        if !same {
            problems.push(format!("{path}: {keyword} is {a} here, {b} in the CRD"));
        }
    }
    if sorted_strings(&ours["required"]) != sorted_strings(&crd["required"]) {
        problems.push(format!("{path}: required is {} here, {} in the CRD", ours["required"], crd["required"]));
    }
    if rules(&ours["x-kubernetes-validations"]) != rules(&crd["x-kubernetes-validations"]) {
        problems.push(format!(
            "{path}: CEL rules are {:?} here, {:?} in the CRD",
            rules(&ours["x-kubernetes-validations"]),
            rules(&crd["x-kubernetes-validations"])
        ));
    }
    if let (Some(mine), Some(theirs)) = (ours["properties"].as_object(), crd["properties"].as_object()) {
        for name in theirs.keys().filter(|k| !mine.contains_key(*k)) {
            problems.push(format!("{path}.{name}: in the CRD, missing here"));
        }
        for (name, schema) in mine {
            match theirs.get(name) {
                Some(crd_field) => compare(schema, crd_field, &format!("{path}.{name}"), problems, compared),
                None => problems.push(format!("{path}.{name}: here, not in the CRD")),
            }
        }
    } else if ours.get("properties").is_some() != crd.get("properties").is_some() {
        problems.push(format!("{path}: properties described on one side only"));
    }
    if ours.get("items").is_some() || crd.get("items").is_some() {
        compare(&ours["items"], &crd["items"], &format!("{path}[]"), problems, compared);
    }
}

#[test]
fn the_hand_written_schemas_agree_with_contours_crds() {
    let mut checked = 0;
    for version in contour_versions() {
        let path = contour_cache_dir(version).join("crds.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            let required = std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").is_ok_and(|v| v == "1");
            assert!(!required, "Contour {version}'s CRDs are required but missing at {}", path.display());
            eprintln!("NOT RUN for {version}: no CRDs at {}; run scripts/ensure-contour --all", path.display());
            continue;
        };
        let crds: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("Contour's CRD file parses");
        let (mut problems, mut compared) = (Vec::new(), 0);
        for kind in [&kinds::HTTP_PROXY, &kinds::TLS_CERTIFICATE_DELEGATION] {
            compare(openapi::schema(kind), &crd_schema(&crds, kind), kind.kind, &mut problems, &mut compared);
        }
        assert!(
            problems.is_empty(),
            "loopback's schemas differ from Contour {version}'s CRDs:\n{}",
            problems.join("\n")
        );
        // About 190 fields are modelled; far fewer means the walk stopped early.
        assert!(compared > 150, "only {compared} fields compared for {version}");
        checked += 1;
    }
    eprintln!("compared with the CRDs of {checked} Contour release(s)");
}
