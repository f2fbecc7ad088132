//! Partial matching of an object's status against an expectation: [`contains`].
//!
//! Maps match when every expected key matches; lists when every expected element matches a
//! distinct actual element (in any order) and, with [`Lists::Exact`], nothing else is left;
//! scalars when equal. The first difference is reported with its path, as
//! `conditions[0].errors[0].message: expected "x", got "y"`.

use serde_json::Value;

/// How lists in an expectation match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lists {
    /// The actual list may hold elements beyond the expected ones.
    #[default]
    Subset,
    /// The actual list holds the expected elements and nothing else.
    Exact,
}

/// Checks that `actual` contains `expected`.
///
/// # Errors
/// Where the first difference is and what it is.
pub fn contains(actual: &Value, expected: &Value, lists: Lists) -> Result<(), String> {
    at_path("", actual, expected, lists)
}

fn at_path(path: &str, actual: &Value, expected: &Value, lists: Lists) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match have.get(key) {
                    Some(have_value) => at_path(&child, have_value, want_value, lists)?,
                    None => return Err(format!("{child}: expected {}, but it is absent", short(want_value))),
                }
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(have)) => {
            let mut used = vec![false; have.len()];
            for (i, want_item) in want.iter().enumerate() {
                let found = have
                    .iter()
                    .enumerate()
                    .find(|(j, have_item)| !used[*j] && at_path("", have_item, want_item, lists).is_ok());
                match found {
                    Some((j, _)) => used[j] = true,
                    None => {
                        // Show the closest candidate's difference when there is one item.
                        let detail = match have.as_slice() {
                            [only] => at_path(&format!("{path}[0]"), only, want_item, lists).err().unwrap_or_default(),
                            _ => {
                                format!("{path}[{i}]: no element matches {}; have {}", short(want_item), short(actual))
                            }
                        };
                        return Err(detail);
                    }
                }
            }
            match used.iter().position(|u| !u) {
                Some(extra) if lists == Lists::Exact => Err(format!(
                    "{path}[{extra}]: {} is not expected (lists are exact here); have {}",
                    short(&have[extra]),
                    short(actual)
                )),
                _ => Ok(()),
            }
        }
        (want, have) if numbers_equal(want, have) || want == have => Ok(()),
        (want, have) => {
            let place = if path.is_empty() { "status".to_string() } else { path.to_string() };
            Err(format!("{place}: expected {}, got {}", short(want), short(have)))
        }
    }
}

/// YAML `1` and JSON `1.0` are the same number.
fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn short(value: &Value) -> String {
    // Redacted before the cut: a key cut short may no longer be recognisable.
    let text = crate::redaction::redact(&value.to_string());
    if text.len() > 300 { format!("{}...", &text[..text.floor_char_boundary(300)]) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subset(actual: &Value, expected: &Value) -> Result<(), String> {
        contains(actual, expected, Lists::Subset)
    }

    #[test]
    fn subsets_match_in_any_order() {
        let actual = json!({"currentStatus": "invalid", "conditions": [{"type": "A"}, {"type": "Valid", "errors": [{"reason": "X", "message": "m"}]}]});
        assert!(subset(&actual, &json!({"currentStatus": "invalid"})).is_ok());
        assert!(subset(&actual, &json!({"conditions": [{"type": "Valid", "errors": [{"reason": "X"}]}]})).is_ok());
    }

    #[test]
    fn differences_name_their_path() {
        let actual = json!({"currentStatus": "valid", "conditions": [{"type": "Valid", "message": "ok"}]});
        assert_eq!(
            subset(&actual, &json!({"currentStatus": "invalid"})).unwrap_err(),
            "currentStatus: expected \"invalid\", got \"valid\""
        );
        assert_eq!(
            subset(&actual, &json!({"conditions": [{"message": "bad"}]})).unwrap_err(),
            "conditions[0].message: expected \"bad\", got \"ok\""
        );
        assert!(subset(&actual, &json!({"description": "x"})).unwrap_err().contains("absent"));
        assert!(subset(&json!({"a": [1, 2]}), &json!({"a": [2, 2]})).is_err(), "elements are used once");
    }

    #[test]
    fn exact_lists_refuse_extra_elements_at_any_depth() {
        let actual = json!({"conditions": [{"type": "Valid", "errors": [{"reason": "X"}, {"reason": "Y"}]}]});
        let expected = json!({"conditions": [{"errors": [{"reason": "Y"}]}]});
        assert!(subset(&actual, &expected).is_ok());
        let err = contains(&actual, &expected, Lists::Exact).unwrap_err();
        assert!(err.contains("reason") && err.contains("\"X\"") && err.contains("not expected"), "{err}");
        let both = json!({"conditions": [{"errors": [{"reason": "Y"}, {"reason": "X"}]}]});
        assert!(contains(&actual, &both, Lists::Exact).is_ok(), "order does not matter");
    }
}
