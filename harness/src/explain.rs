//! `upstream-tls-conformance explain SCENARIO`: what a scenario proves, in the contract's
//! words, and what it does, without running it.

use std::fmt::Write as _;

use crate::scenario::load::LoadedScenario;
use crate::scenario::{ClientCertificateChange, StatusCodes, Step};

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

/// A clause's title and first sentence, as a failure names the guarantee it broke:
/// `V3 Trust: The chain must verify to a certificate in the CA bundle (`VERIFY_TRUST_CHAIN`).`
/// A sentence that goes on into a list or past [`SENTENCE_LIMIT`] is cut at a clause break.
pub fn clause_sentence(id: &str) -> Option<String> {
    let text = clause_text(id)?;
    let (title, rest) = text.split_once(". ").unwrap_or((text.trim_end_matches('.'), ""));
    // A note such as `*(Added 2026-12-06.)*` before the sentence is history, not the guarantee.
    let rest = match rest.strip_prefix("*(") {
        Some(note) => note.split_once(")* ").map_or(rest, |(_, after)| after),
        None => rest,
    };
    let breaks = prose_positions(rest);
    let stop = breaks
        .iter()
        .find(|&&at| rest[at..].starts_with(". ") && !rest[..at].ends_with("e.g") && !rest[..at].ends_with("i.e"));
    let mut sentence = rest[..stop.map_or(rest.len(), |at| at + 1)].trim().to_string();
    let list = breaks.iter().find(|&&at| at < sentence.len() && sentence[at..].starts_with(" - "));
    if let Some(&at) = list {
        sentence = format!("{} …", sentence[..at].trim_end_matches(':'));
    } else if sentence.len() > SENTENCE_LIMIT {
        let cut = breaks.iter().rev().find(|&&at| at < SENTENCE_LIMIT && sentence[at..].starts_with("; "));
        if let Some(&at) = cut {
            sentence = format!("{} …", &sentence[..at]);
        }
    }
    Some(if sentence.is_empty() { format!("{id} {title}.") } else { format!("{id} {title}: {sentence}") })
}

/// How long a clause's sentence may be before it is cut at a `; `.
const SENTENCE_LIMIT: usize = 280;

/// The byte offsets of `text` outside Markdown code spans (a run of backticks opens one that
/// the next run of the same length closes) and parentheses.
fn prose_positions(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let (mut positions, mut at, mut open, mut depth) = (Vec::new(), 0, None, 0usize);
    while at < bytes.len() {
        if bytes[at] == b'`' {
            let run = bytes[at..].iter().take_while(|&&b| b == b'`').count();
            open = match open {
                None => Some(run),
                Some(n) if n == run => None,
                still => still,
            };
            at += run;
            continue;
        }
        if open.is_none() {
            match bytes[at] {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ if depth == 0 && text.is_char_boundary(at) => positions.push(at),
                _ => {}
            }
        }
        at += 1;
    }
    positions
}

/// Clauses only about what a status says: a traffic step cannot break them.
const STATUS_CLAUSES: [&str; 5] = ["S2", "S3", "G5", "E3", "I3"];
/// Clauses only about what goes on the wire: a status step cannot break them.
const WIRE_CLAUSES: [&str; 12] = ["P5", "V1", "V3", "V4", "V6", "N1", "N2", "R1", "R3", "R4", "C3", "C5"];

/// Which of a scenario's clauses (`contract`) a failure of a step of `kind` breaks: for a
/// traffic step those not only about statuses, for a status step those not only about the
/// wire; all of them when that leaves none.
pub fn broken_by(contract: &[&str], kind: &str) -> Vec<String> {
    let excluded: &[&str] = match kind {
        "request" | "together" | "observe" => &STATUS_CLAUSES,
        "expectStatus" => &WIRE_CLAUSES,
        _ => &[],
    };
    let kept: Vec<String> = contract.iter().filter(|c| !excluded.contains(c)).map(|c| c.to_string()).collect();
    if kept.is_empty() { contract.iter().map(|c| c.to_string()).collect() } else { kept }
}

/// `broken guarantee: V3 Trust: …` for one clause; for several, a line saying one of them is
/// broken, then one line each.
pub fn broken_lines(clauses: &[String]) -> Vec<String> {
    let sentence = |id: &String| clause_sentence(id).unwrap_or_else(|| format!("{id} (not in docs/contract.md)"));
    match clauses {
        [] => Vec::new(),
        [one] => vec![format!("broken guarantee: {}", sentence(one))],
        several => std::iter::once("broken guarantee, one of these:".to_string())
            .chain(several.iter().map(|id| format!("  {}", sentence(id))))
            .collect(),
    }
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
    let status = match &request.expect.status {
        StatusCodes::Codes(codes) => {
            let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
            format!("status {}", codes.join(" or "))
        }
        StatusCodes::None => "no answer".to_string(),
        StatusCodes::Refused => "the TLS handshake refused".to_string(),
    };
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
    #[ignore = "prints every clause's sentence, to read them"]
    fn print_clause_sentences() {
        for id in crate::scenario::load::contract_clauses() {
            println!("{}", clause_sentence(id).unwrap());
        }
    }

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
    fn a_failure_names_the_broken_guarantee_in_one_sentence() {
        assert_eq!(
            clause_sentence("V3").unwrap(),
            "V3 Trust: The chain must verify to a certificate in the CA bundle (`VERIFY_TRUST_CHAIN`)."
        );
        for id in crate::scenario::load::contract_clauses() {
            let sentence = clause_sentence(id).unwrap();
            assert!(sentence.starts_with(&format!("{id} ")) && sentence.ends_with(['.', '…']), "{sentence}");
            assert!(!sentence.contains("*(") && sentence.len() < 450, "{sentence}");
        }
        // A traffic step breaks what goes on the wire, a status step what the status says.
        assert_eq!(broken_by(&["S1", "S3", "V3"], "request"), ["S1", "V3"]);
        assert_eq!(broken_by(&["S1", "S3", "V3"], "expectStatus"), ["S1", "S3"]);
        assert_eq!(broken_by(&["S3"], "request"), ["S3"], "never nothing");
        assert_eq!(broken_by(&["V3", "V6"], "apply"), ["V3", "V6"]);
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
