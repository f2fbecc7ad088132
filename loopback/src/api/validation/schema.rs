//! [`validate`]: an object against a structural schema, as kube-openapi's validator and
//! apiextensions' CEL validator report it for a custom resource.
//!
//! Checked: `type`, `enum`, `required`, `minLength`/`maxLength`, the known `pattern`s,
//! `minimum`/`maximum` (with OpenAPI 3.0 boolean `exclusiveMinimum`/`exclusiveMaximum`),
//! `minItems`/`maxItems`, then the known CEL rules. `null` values count as absent (a real server
//! drops them from non-nullable fields). Unknown fields are not errors here; see `unknown.rs`.

use serde_json::{Map, Number, Value, json};

use super::field::{FieldError, quote};
use super::rules;
use crate::api::openapi;

/// The message Kubernetes adds when schema errors keep it from running the CEL rules.
const RULES_SKIPPED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Every error `object` has against `schema`, in the order a real API server lists them:
/// schema errors depth first, then the CEL rules, which are skipped (with a note) when a
/// blocking error (wrong type, unsupported value, missing field, too long, too many) exists.
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(schema, object, "", &mut errors);
    if rules::has_rules(schema) {
        if errors.iter().any(|e| e.error_type.blocks_rules()) {
            errors.push(FieldError::invalid("<nil>", Value::Null, RULES_SKIPPED));
        } else {
            rules::check(schema, object, "", &mut errors);
        }
    }
    errors
}

/// The path of field `key` below `path` (`spec` at the root, then `spec.routes`).
pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let schema = openapi::resolve(schema);
    if value.is_null() {
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, expected)
    {
        let actual = type_name(value);
        let detail = format!("{path} in body must be of type {expected}: {}", quote(actual));
        errors.push(FieldError::type_invalid(path, json!(actual), detail));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(FieldError::not_supported(path, value, allowed));
    }
    match value {
        Value::String(text) => check_string(schema, text, path, errors),
        Value::Number(number) => check_number(schema, number, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(map) => check_object(schema, map, path, errors),
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_string(schema: &Value, text: &str, path: &str, errors: &mut Vec<FieldError>) {
    let length = text.chars().count() as u64;
    let value = Value::from(text);
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        errors.push(FieldError::too_long(path, &value, max));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && rules::pattern_matches(pattern, text) == Some(false)
    {
        errors.push(FieldError::invalid(path, value, format!("{path} in body should match '{pattern}'")));
    }
}

fn check_number(schema: &Value, number: &Number, path: &str, errors: &mut Vec<FieldError>) {
    let Some(actual) = number.as_f64() else {
        return;
    };
    let flag = |name: &str| schema.get(name).and_then(Value::as_bool).unwrap_or(false);
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMaximum");
        if actual > max || (exclusive && actual == max) {
            let relation = if exclusive { "less than" } else { "less than or equal to" };
            let detail = format!("{path} in body should be {relation} {}", go_float(max));
            errors.push(FieldError::invalid(path, Value::Number(number.clone()), detail));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag("exclusiveMinimum");
        if actual < min || (exclusive && actual == min) {
            let relation = if exclusive { "greater than" } else { "greater than or equal to" };
            let detail = format!("{path} in body should be {relation} {}", go_float(min));
            errors.push(FieldError::invalid(path, Value::Number(number.clone()), detail));
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        let detail = format!("{path} in body should have at least {min} items");
        errors.push(FieldError::invalid(path, Value::from(items.len()), detail));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError::too_many(path, items.len(), max));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = required.as_str() else { continue };
        if map.get(name).is_none_or(Value::is_null) {
            errors.push(FieldError::required(&child(path, name)));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        if let Some(property) = properties.and_then(|p| p.get(key)) {
            check(property, &map[key], &child(path, key), errors);
        } else if let Some(additional) = additional {
            check(additional, &map[key], &child(path, key), errors);
        }
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        // JSON has one number type; a whole float such as 443.0 counts, as in kube-openapi.
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

/// The JSON type of `value` as kube-openapi names it in type errors.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A bound as Go's `%v` prints a float64: no `.0` for whole numbers.
fn go_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{}", value as i64) } else { value.to_string() }
}
