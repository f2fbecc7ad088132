//! `upstream-tls-conformance explain SCENARIO`: what a scenario proves, in the contract's
//! words, and what it does, without running it.

use std::fmt::Write as _;

use crate::scenario::load::LoadedScenario;
use crate::scenario::{ClientCertificateChange, Step};

/// The contract the harness was built with.
const CONTRACT: &str = include_str!("../../docs/contract.md");

/// A clause of `docs/contract.md` (`V3`): its title and text, without the notes on where it
/// comes from and the mistakes it guards against, joined into one paragraph.
pub fn clause_text(id: &str) -> Option<String> {
    let start = format!("- **{id} ");
    let mut lines = CONTRACT.lines().skip_while(|line| !line.starts_with(&start));
    let first = lines.next()?.strip_prefix("- **")?.to_string();
    let mut text = first;
    for line in lines.take_while(|l| l.starts_with("  ") && !l.trim_start().starts_with("*Plausible mistakes")) {
        text.push(' ');
        text.push_str(line.trim());
    }
    let text = text.replacen("**", "", 2).replace("**", "");
    Some(text.trim_start_matches(id).trim().to_string())
}

/// The explanation of one scenario, as `explain` prints it.
pub fn explain(loaded: &LoadedScenario) -> String {
    let scenario = &loaded.scenario;
    let mut out = String::new();
    let features: Vec<&str> = scenario.features.iter().map(|f| f.name()).collect();
    let _ = writeln!(out, "{} ({})", loaded.name(), loaded.path.display());
    let _ = writeln!(out, "profile {}; features {}", scenario.profile().name(), features.join(", "));
    if let Some(alone) = &scenario.alone {
        let _ = writeln!(out, "runs alone: {}", alone.value.trim());
    }
    let _ = writeln!(out, "\nWhat it proves:\n{}", wrap(scenario.description.trim(), "  "));
    let _ = writeln!(out, "\nContract:");
    for clause in &scenario.contract {
        let text = clause_text(&clause.value).unwrap_or_else(|| "(not in docs/contract.md)".into());
        let _ = writeln!(out, "{}", wrap(&format!("{} {text}", clause.value), "  "));
    }
    if !scenario.pki.is_empty() {
        let names: Vec<String> = scenario
            .pki
            .iter()
            .map(|entry| {
                let mut traits = Vec::new();
                if entry.ca {
                    traits.push("CA".to_string());
                }
                if let Some(issuer) = &entry.issuer {
                    traits.push(format!("issued by {}", issuer.value));
                }
                if entry.expired {
                    traits.push("expired".into());
                }
                if entry.not_yet_valid {
                    traits.push("not yet valid".into());
                }
                if traits.is_empty() {
                    entry.name.value.clone()
                } else {
                    format!("{} ({})", entry.name.value, traits.join(", "))
                }
            })
            .collect();
        let _ = writeln!(out, "\nCertificates:\n{}", wrap(&names.join("; "), "  "));
    }
    if !scenario.backends.is_empty() {
        let backends: Vec<String> =
            scenario.backends.iter().map(|b| format!("{} (serves {})", b.name.value, b.certificate.value)).collect();
        let _ = writeln!(out, "\nBackends:\n{}", wrap(&backends.join("; "), "  "));
    }
    let _ = writeln!(out, "\nSteps:");
    for (index, step) in scenario.steps.iter().enumerate() {
        let _ = writeln!(out, "{}", wrap(&format!("{}. {}", index + 1, step_summary(step)), "  "));
    }
    out
}

/// One line saying what a step does.
fn step_summary(step: &Step) -> String {
    match step {
        Step::Apply(manifest) => format!("apply {}", objects(&manifest.value)),
        Step::ApplyRejected(rejected) => format!(
            "apply {}, which must be refused with a message containing {:?}",
            objects(&rejected.manifest.value),
            rejected.message_contains
        ),
        Step::ExpectStatus(expect) => format!(
            "wait until {} {} has the status {}",
            expect.kind.as_deref().unwrap_or("HTTPProxy"),
            expect.name,
            serde_json::to_string(&expect.status.value).unwrap_or_default()
        ),
        Step::Request(request) => request_summary(request),
        Step::Together(requests) => {
            let each: Vec<String> = requests.value.iter().map(request_summary).collect();
            format!("send together, in rounds: {}", each.join("; "))
        }
        Step::Delete(object) => format!("delete {} {} and wait until it is gone", object.kind, object.name),
        Step::EnvoyClientCertificate(change) => match change {
            ClientCertificateChange::Rotate => "rotate the installation's Envoy client certificate".into(),
            ClientCertificateChange::Delete => "delete the installation's Envoy client certificate Secret".into(),
            ClientCertificateChange::Replace(secret) => format!(
                "replace the installation's Envoy client certificate Secret with a {} Secret holding {}",
                secret.secret_type,
                secret.data.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        },
        Step::Observe(paths) => format!("record {}", paths.value.join(", ")),
    }
}

fn request_summary(request: &crate::scenario::RequestStep) -> String {
    let host = request.host.as_ref().map_or("${host}", |h| h.value.as_str());
    let path = request.path.as_ref().map_or("/", |p| p.value.as_str());
    let scheme = if request.tls.is_some() { "https" } else { "http" };
    let codes: Vec<String> = request.expect.status.0.iter().map(u16::to_string).collect();
    let status = if codes.is_empty() { "no answer".to_string() } else { format!("status {}", codes.join(" or ")) };
    let backend = match &request.expect.backend {
        Some(backend) => {
            let name = backend.name.as_ref().map_or("a backend", |n| n.value.as_str());
            let tls = match backend.tls {
                Some(true) => " over TLS",
                Some(false) => " in plaintext",
                None => "",
            };
            format!(", answered by {name}{tls}")
        }
        None if request.expect.backend_reached.as_ref().is_some_and(|r| !r.value) => ", no backend reached".into(),
        None => String::new(),
    };
    format!("request GET {scheme}://{host}{path}, expecting {status}{backend}")
}

/// `Kind name` of each document of a manifest, references left as written.
fn objects(manifest: &str) -> String {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(manifest).unwrap_or_default();
    let names: Vec<String> = documents
        .iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            let kind = d["kind"].as_str().unwrap_or("object");
            let name = d["metadata"]["name"].as_str().unwrap_or("?");
            match d["metadata"]["namespace"].as_str() {
                Some(namespace) => format!("{kind} {namespace}/{name}"),
                None => format!("{kind} {name}"),
            }
        })
        .collect();
    names.join(", ")
}

/// `text` wrapped at 96 columns, indented by `indent`, its continuation lines further.
fn wrap(text: &str, indent: &str) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    let hanging = format!("{indent}    ");
    for word in text.split_whitespace() {
        let this_indent = if lines.is_empty() { indent } else { hanging.as_str() };
        if !line.is_empty() && this_indent.len() + line.len() + 1 + word.len() > 96 {
            lines.push(format!("{this_indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let this_indent = if lines.is_empty() { indent } else { hanging.as_str() };
        lines.push(format!("{this_indent}{line}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clause_of_the_contract_has_its_text() {
        for id in crate::scenario::load::contract_clauses() {
            let text = clause_text(id).unwrap_or_else(|| panic!("{id} has no text"));
            assert!(text.len() > 20 && !text.contains("**") && !text.starts_with(id), "{id}: {text}");
        }
        assert!(clause_text("V3").unwrap().starts_with("Trust. The chain must verify"));
        assert!(!clause_text("V3").unwrap().contains("Plausible mistakes"));
    }

    #[test]
    fn a_scenario_is_explained_by_its_clauses_objects_and_steps() {
        let catalog = crate::scenario::load::load_builtin().unwrap();
        let wrong_ca = catalog.iter().find(|s| s.name() == "validation-wrong-ca").unwrap();
        let text = explain(wrong_ca);
        for expected in [
            "validation-wrong-ca (scenarios/validation/wrong-ca.yaml)",
            "profile core; features ",
            "What it proves:",
            "V3 Trust. The chain must verify",
            "apply Secret ",
            "HTTPProxy ",
            "request GET http://${host}/, expecting status 502 or 503",
        ] {
            assert!(text.contains(expected), "{expected:?} is not in:\n{text}");
        }
        // Every scenario of the catalog can be explained, and says each of its clauses.
        for loaded in &catalog {
            let text = explain(loaded);
            for clause in &loaded.scenario.contract {
                assert!(text.contains(&format!("  {} ", clause.value)), "{}: {}", loaded.name(), clause.value);
            }
            assert!(!text.contains("(not in docs/contract.md)"), "{}", loaded.name());
        }
    }
}
