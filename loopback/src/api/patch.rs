//! PATCH bodies applied to a stored object: [`PatchKind`] and [`apply_patch`].
//!
//! - JSON merge patch (RFC 7386).
//! - Strategic merge patch is treated as a merge patch after dropping `$`-directives
//!   (`$patch`, `$retainKeys`, `$setElementOrder/...`): lists are replaced, never merged by key.
//!   That is enough for the labels, annotations and scalar fields kubectl patches.
//! - JSON patch (RFC 6902): `add`, `remove`, `replace`, `move`, `copy`, `test`.
//!
//! Server-side apply (`application/apply-patch+yaml`) lives in `apply.rs`.

use serde_json::{Map, Value};

use super::errors::ApiError;

/// The patch formats a PATCH request may carry, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    /// The format named by a `content-type` header, parameters ignored.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// Applies a merge, strategic merge or JSON patch to `target`.
///
/// # Errors
/// `BadRequest` for a malformed patch; `Invalid` (422) for a JSON patch whose operation
/// cannot be applied (a missing path, a failed `test`). Apply patches are rejected here:
/// they are not a function of the target alone.
pub fn apply_patch(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => {
            merge_patch(target, patch);
            Ok(())
        }
        PatchKind::Strategic => {
            merge_patch(target, &strip_directives(patch));
            Ok(())
        }
        PatchKind::Json => json_patch(target, patch),
        PatchKind::Apply => Err(ApiError::bad_request("apply patches are handled by apply")),
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A strategic merge patch without its `$`-directives.
fn strip_directives(patch: &Value) -> Value {
    match patch {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// RFC 6902. Operations apply in order to a copy, so a failing patch changes nothing.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request(format!("JSON patch operation {op} has no string {name:?}")))
        };
        let path = field("path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("JSON patch operation {op} has no value")))
        };
        match field("op")? {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let moved = remove(&mut doc, field("from")?)?;
                add(&mut doc, path, moved)?;
            }
            "copy" => {
                let copied = doc.pointer(field("from")?).cloned().ok_or_else(|| missing(path))?;
                add(&mut doc, path, copied)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(ApiError::invalid_simple(&format!(
                        "the server rejected our request due to an error in our request: testing value {path} failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!("unknown JSON patch operation {other:?}")));
            }
        }
    }
    *target = doc;
    Ok(())
}

fn missing(path: &str) -> ApiError {
    ApiError::invalid_simple(&format!(
        "the server rejected our request due to an error in our request: path {path} does not exist"
    ))
}

/// The parent's pointer and the last reference token, unescaped (`~1` is `/`, `~0` is `~`).
fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let (parent, last) =
        path.rsplit_once('/').ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if token == "-" { items.len() } else { token.parse().map_err(|_| missing(path))? };
            if index > items.len() {
                return Err(missing(path));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => match token.parse::<usize>() {
            Ok(index) if index < items.len() => Ok(items.remove(index)),
            _ => Err(missing(path)),
        },
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386 section 3, abridged.
        let mut doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
                             "tags": ["example", "sample"], "content": "text"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
                           "author": {"familyName": null}, "tags": ["example"]});
        merge_patch(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                   "content": "text", "phoneNumber": "+01-123-456-7890"})
        );
        let mut scalar = json!({"a": "b"});
        merge_patch(&mut scalar, &json!({"a": {"bb": null}}));
        assert_eq!(scalar, json!({"a": {}}));
    }

    #[test]
    fn strategic_patch_drops_directives() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 1}]}});
        let patch = json!({"metadata": {"labels": {"b": "2"}},
                           "spec": {"$setElementOrder/ports": [{"port": 2}], "ports": [{"port": 2}]}});
        apply_patch(PatchKind::Strategic, &mut doc, &patch).unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 2}]}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let patch = json!([
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "add", "path": "/metadata/labels/c", "value": "3"},
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "replace", "path": "/list/0", "value": 9},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "copy", "from": "/list", "path": "/copy"},
            {"op": "move", "from": "/copy", "path": "/moved"},
        ]);
        apply_patch(PatchKind::Json, &mut doc, &patch).unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"c": "3"}}, "list": [9, 2, 3], "moved": [9, 2, 3]}));
    }

    #[test]
    fn failing_json_patch_changes_nothing() {
        let mut doc = json!({"a": 1});
        let patch = json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}]);
        assert_eq!(apply_patch(PatchKind::Json, &mut doc, &patch).unwrap_err().code, 422);
        assert_eq!(doc, json!({"a": 1}));
        let err = apply_patch(PatchKind::Json, &mut doc, &json!([{"op": "remove", "path": "/x"}])).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(apply_patch(PatchKind::Json, &mut doc, &json!({"op": "add"})).unwrap_err().code, 400);
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchKind::Merge));
        assert_eq!(PatchKind::from_content_type("application/apply-patch+yaml"), Some(PatchKind::Apply));
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
