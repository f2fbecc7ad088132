//! Label and field selectors as list and watch requests send them: [`LabelSelector`] and
//! [`FieldSelector`].
//!
//! Label selectors follow the Kubernetes grammar (`=`, `==`, `!=`, `in (...)`, `notin (...)`,
//! `key`, `!key`, `>`/`<` on integers, requirements joined by commas). Field selectors support
//! `=`, `==` and `!=` on `metadata.name` and `metadata.namespace`, and, more leniently than a
//! real API server (which allows only a few fields per kind), on any other dotted path to a
//! scalar, such as `status.phase` or `type`.

use serde_json::Value;

use super::errors::ApiError;

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier in (a, b),!legacy`.
    ///
    /// # Errors
    /// `BadRequest` naming the requirement that does not parse.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let requirements = split_top_level(text)
            .into_iter()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(parse_label_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::GreaterThan(k, n) => label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => label(k).and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l < *n),
        })
    }
}

/// Splits at commas that are not inside parentheses (`a in (x,y),b` has two requirements).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_requirement(req: &str) -> Result<LabelRequirement, ApiError> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: {req:?}"));
    if let Some(key) = req.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) { Ok(LabelRequirement::NotExists(key.into())) } else { Err(invalid()) };
    }
    let key_end = req.find(|c: char| "=!<>( ".contains(c)).unwrap_or(req.len());
    let (key, rest) = (req[..key_end].trim(), req[key_end..].trim());
    if !valid_key(key) {
        return Err(invalid());
    }
    let value = |v: &str| v.trim().to_string();
    if rest.is_empty() {
        Ok(LabelRequirement::Exists(key.into()))
    } else if let Some(v) = rest.strip_prefix("!=") {
        Ok(LabelRequirement::NotEquals(key.into(), value(v)))
    } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        Ok(LabelRequirement::Equals(key.into(), value(v)))
    } else if let Some(v) = rest.strip_prefix('>') {
        Ok(LabelRequirement::GreaterThan(key.into(), v.trim().parse().map_err(|_| invalid())?))
    } else if let Some(v) = rest.strip_prefix('<') {
        Ok(LabelRequirement::LessThan(key.into(), v.trim().parse().map_err(|_| invalid())?))
    } else if let Some(list) = rest.strip_prefix("notin") {
        Ok(LabelRequirement::NotIn(key.into(), parse_value_set(list).ok_or_else(invalid)?))
    } else if let Some(list) = rest.strip_prefix("in") {
        Ok(LabelRequirement::In(key.into(), parse_value_set(list).ok_or_else(invalid)?))
    } else {
        Err(invalid())
    }
}

/// `(a, b, c)` as its values; `None` when the parentheses are missing.
fn parse_value_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// A parsed `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// `(dotted path, value, equal)`: `equal` is false for `!=`.
    requirements: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses a selector such as `metadata.name=web,metadata.namespace!=kube-system`.
    ///
    /// # Errors
    /// `BadRequest` naming the requirement that does not parse.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for req in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = req.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = req.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = req.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{req}'; can't understand '{req}'")));
            };
            requirements.push((field.trim().to_string(), value.trim().to_string(), equal));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object's fields satisfy every requirement. A missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, want, equal)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn equality_and_inequality() {
        let obj = labelled(json!({"app": "web", "tier": "front"}));
        assert!(LabelSelector::parse("app=web").unwrap().matches(&obj));
        assert!(LabelSelector::parse("app==web,tier=front").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("app=db").unwrap().matches(&obj));
        assert!(LabelSelector::parse("app!=db").unwrap().matches(&obj));
        assert!(LabelSelector::parse("missing!=x").unwrap().matches(&obj));
        assert!(LabelSelector::parse("").unwrap().matches(&obj));
    }

    #[test]
    fn set_based_requirements() {
        let obj = labelled(json!({"app": "web"}));
        assert!(LabelSelector::parse("app in (db, web)").unwrap().matches(&obj));
        assert!(LabelSelector::parse("app in (db,web),x notin (1)").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("app notin (web)").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("other in (web)").unwrap().matches(&obj));
        assert!(LabelSelector::parse("app").unwrap().matches(&obj));
        assert!(LabelSelector::parse("!other").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("!app").unwrap().matches(&obj));
        assert!(LabelSelector::parse("example.com/x").unwrap().matches(&labelled(json!({"example.com/x": ""}))));
    }

    #[test]
    fn numeric_comparisons() {
        let obj = labelled(json!({"n": "5"}));
        assert!(LabelSelector::parse("n>4").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("n<5").unwrap().matches(&obj));
    }

    #[test]
    fn malformed_label_selectors_are_bad_requests() {
        for bad in ["app in web", "=x", "app ~ x", "n>x", "!"] {
            let err = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "x", "namespace": "ns"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=x").unwrap().matches(&obj));
        assert!(FieldSelector::parse("metadata.name==x,metadata.namespace=ns").unwrap().matches(&obj));
        assert!(!FieldSelector::parse("metadata.namespace!=ns").unwrap().matches(&obj));
        assert!(FieldSelector::parse("status.phase=Running").unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&obj));
        assert_eq!(FieldSelector::parse("metadata.name").unwrap_err().code, 400);
    }
}
