//! The parts of a schema that need an interpreter: `x-kubernetes-validations` CEL rules and
//! `pattern` regular expressions.
//!
//! There is no CEL or regex engine here. Each rule and pattern the served schemas use is
//! implemented by hand, keyed by its exact text; any other rule or pattern is not checked.

use serde_json::Value;

use super::field::FieldError;
use crate::api::openapi::{self, SUBJECT_NAMES_RULE};

/// What a rule evaluates to: `Ok(true)` passes, `Err` is a CEL evaluation error.
type RuleFn = fn(&Value) -> Result<bool, String>;

/// Whether a string matches a pattern.
type PatternFn = fn(&str) -> bool;

/// The rules the loopback server evaluates, by their text.
const KNOWN_RULES: &[(&str, RuleFn)] = &[(SUBJECT_NAMES_RULE, subject_names_rule)];

/// Gateway API's `PreciseHostname`: a DNS name, no wildcard (BackendTLSPolicy's hostname).
/// Its `Hostname`, which allows a leading `*.`, is the text of [`openapi::FQDN_PATTERN`].
const PRECISE_HOSTNAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The patterns the loopback server checks, by their text.
const KNOWN_PATTERNS: &[(&str, PatternFn)] =
    &[(openapi::FQDN_PATTERN, is_fqdn), (PRECISE_HOSTNAME_PATTERN, |text| !text.starts_with("*.") && is_fqdn(text))];

/// Whether `pattern` matches `text`; `None` for a pattern the server cannot evaluate.
pub fn pattern_matches(pattern: &str, text: &str) -> Option<bool> {
    KNOWN_PATTERNS.iter().find(|(known, _)| *known == pattern).map(|(_, matches)| matches(text))
}

/// Whether any node of `schema` carries CEL rules (then Kubernetes runs its CEL validator).
pub fn has_rules(schema: &Value) -> bool {
    let schema = openapi::resolve(schema);
    schema.get("x-kubernetes-validations").is_some() || children(schema).any(has_rules)
}

/// Evaluates every rule of `schema` and its children on `value`, as apiextensions' CEL
/// validator does: a rule that is false adds `Invalid value: "<type>": <message>`.
pub fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let schema = openapi::resolve(schema);
    if value.is_null() {
        return;
    }
    let node_type = schema.get("type").and_then(Value::as_str).unwrap_or("object");
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        let message = rule.get("message").and_then(Value::as_str).unwrap_or(text);
        let Some((_, evaluate)) = KNOWN_RULES.iter().find(|(known, _)| *known == text) else {
            tracing::debug!(rule = text, "api server: CEL rule not evaluated");
            continue;
        };
        match evaluate(value) {
            Ok(true) => {}
            Ok(false) => errors.push(FieldError::invalid(path, Value::from(node_type), message)),
            Err(e) => errors.push(FieldError::invalid(
                path,
                Value::from(node_type),
                format!("{e} evaluating rule: {}", message.trim()),
            )),
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                if let Some(child) = properties.and_then(|p| p.get(key)) {
                    check(child, &map[key], &super::schema::child(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// The schemas directly below `schema`.
fn children(schema: &Value) -> impl Iterator<Item = &Value> {
    let properties = schema.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values());
    let items = schema.get("items").into_iter();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object()).into_iter();
    properties.chain(items).chain(additional)
}

/// Contour's rule on `validation`: `subjectNames[0]` must equal `subjectName` when the list
/// is set. An empty list fails to evaluate, as `self.subjectNames[0]` does in CEL.
fn subject_names_rule(validation: &Value) -> Result<bool, String> {
    match validation.get("subjectNames") {
        Some(Value::Array(names)) => match names.first() {
            Some(first) => Ok(Some(first) == validation.get("subjectName")),
            None => Err("index out of bounds: 0".into()),
        },
        _ => Ok(true),
    }
}

/// `^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`: an optional
/// `*.`, then dot-separated labels of lowercase letters, digits and inner hyphens.
fn is_fqdn(text: &str) -> bool {
    let names = text.strip_prefix("*.").unwrap_or(text);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-'),
            _ => false,
        }
    };
    names.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fqdn_pattern() {
        for ok in ["a", "example.com", "*.example.com", "a-b.c0", "0.0"] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in ["", "Example.com", "a..b", "-a.com", "a-.com", "*.", "a.*.com", "a_b.com", "a.com."] {
            assert!(!is_fqdn(bad), "{bad}");
        }
        assert_eq!(pattern_matches(openapi::FQDN_PATTERN, "x.y"), Some(true));
        assert_eq!(pattern_matches("^x$", "x"), None);
    }

    #[test]
    fn subject_names_rule_compares_the_first_entry() {
        assert_eq!(subject_names_rule(&json!({"subjectName": "a"})), Ok(true));
        assert_eq!(subject_names_rule(&json!({"subjectName": "a", "subjectNames": ["a", "b"]})), Ok(true));
        assert_eq!(subject_names_rule(&json!({"subjectName": "a", "subjectNames": ["b", "a"]})), Ok(false));
        assert!(subject_names_rule(&json!({"subjectName": "a", "subjectNames": []})).is_err());
    }
}
