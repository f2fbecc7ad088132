//! Admission: the checks a real API server makes before storing an object.
//!
//! - [`admit`]: for the custom resources (HTTPProxy, TLSCertificateDelegation, and the kinds
//!   served from CRDs), the CRD's OpenAPI validation and CEL rules, refused with 422
//!   `Invalid` listing every cause.
//! - [`drop_unknown_fields`]: what a create, update or patch does with fields the kind's
//!   schema does not declare, as `?fieldValidation=` asks (refuse, warn, or drop silently).
//! - [`check_applied_fields`]: server-side apply refuses undeclared fields whatever
//!   `fieldValidation` says, with the structured-merge-diff error (HTTP 500, no reason).
//!
//! Built-in kinds are checked for undeclared top-level and `metadata` fields, and ConfigMap
//! and Secret data keys as Kubernetes checks them ([`data_key_errors`]): a key becomes a file
//! name in the pods that mount it, so `../x` must never be stored.

use serde_json::Value;

use super::errors::ApiError;
use super::kinds::{self, ResourceKind};
use super::openapi;
use super::validation::{self, FieldError, FieldValidation, quote};

/// Which admission checks run. All of them, unless a fault switches one off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Validate custom resources against their CRD schemas and rules.
    pub validate_custom_resources: bool,
    /// The fault `status-messages-rewritten`: Gateway API status conditions written by a
    /// controller are stored with their reason as their message.
    pub rewrite_gateway_status_messages: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { validate_custom_resources: true, rewrite_gateway_status_messages: false }
    }
}

/// The group whose status conditions `status-messages-rewritten` rewrites.
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

impl Admission {
    /// What a status write of `kind` stores: `object` as sent, unless a fault rewrites it.
    pub fn status_write(self, kind: &ResourceKind, object: &mut Value) {
        if !self.rewrite_gateway_status_messages || kind.group != GATEWAY_API_GROUP {
            return;
        }
        // The object's own conditions, and those of each entry of its other status lists
        // (route parents, policy ancestors, Gateway listeners).
        let mut lists: Vec<&mut Value> = Vec::new();
        for (key, value) in object["status"].as_object_mut().into_iter().flatten() {
            if key == "conditions" {
                lists.push(value);
            } else {
                lists.extend(value.as_array_mut().into_iter().flatten().filter_map(|e| e.get_mut("conditions")));
            }
        }
        for condition in lists.into_iter().filter_map(Value::as_array_mut).flatten() {
            if let Some(reason) = condition.get("reason").cloned() {
                condition["message"] = reason;
            }
        }
    }

    /// [`admit`], unless switched off for the kind.
    ///
    /// # Errors
    /// As [`admit`].
    pub fn admit(self, kind: &'static ResourceKind, object: &Value) -> Result<(), ApiError> {
        if !self.validate_custom_resources && is_custom_resource(kind) {
            let mut errors = name_errors(kind, object);
            errors.extend(label_and_annotation_errors(object));
            return refuse(kind, object, errors);
        }
        admit(kind, object)
    }
}

/// Checks `object` of `kind` before it is stored by a create, update, patch or apply.
///
/// # Errors
/// `Invalid` (422) naming each offending field, worded as Kubernetes words it.
pub fn admit(kind: &'static ResourceKind, object: &Value) -> Result<(), ApiError> {
    let mut errors = name_errors(kind, object);
    errors.extend(label_and_annotation_errors(object));
    if is_custom_resource(kind) {
        errors.extend(validation::validate(openapi::schema(kind), object));
    } else if kind == &kinds::CONFIG_MAP || kind == &kinds::SECRET {
        errors.extend(data_key_errors(object));
    }
    refuse(kind, object, errors)
}

fn refuse(kind: &'static ResourceKind, object: &Value, errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::invalid(kind, name, &errors))
}

/// The shape Kubernetes requires of a kind's object names.
#[derive(Clone, Copy)]
enum NameRule {
    /// RFC 1123 subdomain, at most 253 characters: most kinds.
    Subdomain,
    /// RFC 1123 label, at most 63 characters: Namespaces.
    Label,
    /// RFC 1035 label, at most 63 characters: Services.
    Rfc1035Label,
}

/// `metadata.name` checked as the API server checks it for `kind`. Names become directory
/// names in loopback's kubelet, so a name such as `../x` must never be stored.
fn name_errors(kind: &ResourceKind, object: &Value) -> Vec<FieldError> {
    let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
        return Vec::new();
    };
    let rule = if kind == &kinds::NAMESPACE {
        NameRule::Label
    } else if kind == &kinds::SERVICE {
        NameRule::Rfc1035Label
    } else {
        NameRule::Subdomain
    };
    name_problems(rule, name)
        .into_iter()
        .map(|detail| FieldError::invalid("metadata.name", name.into(), detail))
        .collect()
}

fn name_problems(rule: NameRule, name: &str) -> Vec<String> {
    let label_ok = |label: &str, first_alpha: bool| {
        let bytes = label.as_bytes();
        let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let end = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                (if first_alpha { first.is_ascii_lowercase() } else { end(first) })
                    && end(last)
                    && bytes.iter().all(inner)
            }
            _ => false,
        }
    };
    let (max, valid, message) = match rule {
        NameRule::Subdomain => (
            253,
            name.split('.').all(|label| label_ok(label, false)),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        NameRule::Label => (
            63,
            label_ok(name, false),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start \
             and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        NameRule::Rfc1035Label => (
            63,
            label_ok(name, true),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic \
             character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for \
             validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
    };
    let mut problems = Vec::new();
    if name.len() > max {
        problems.push(format!("must be no more than {max} characters"));
    }
    if !valid {
        problems.push(message.to_string());
    }
    problems
}

/// The most bytes an object's annotations may hold, keys and values together.
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// The most characters a label value, or the name part of a label or annotation key, may have.
const LABEL_LIMIT: usize = 63;

/// `metadata.labels` and `metadata.annotations` checked as the API server checks them: keys
/// are qualified names (an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters), label values at most 63 characters of the same alphabet, annotations at most
/// 256 KiB in all. A value quoted in a message is cut short, as a long one would flood it.
fn label_and_annotation_errors(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let shown = |text: &str| -> Value {
        match text.char_indices().nth(LABEL_LIMIT + 1) {
            Some((cut, _)) => Value::String(format!("{}...", &text[..cut])),
            None => Value::String(text.into()),
        }
    };
    let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        for detail in qualified_name_problems(key) {
            errors.push(FieldError::invalid("metadata.labels", shown(key), detail));
        }
        let Some(value) = value.as_str() else {
            errors.push(FieldError::invalid("metadata.labels", shown(key), "label values must be strings"));
            continue;
        };
        if value.len() > LABEL_LIMIT {
            errors.push(FieldError::invalid(
                "metadata.labels",
                shown(value),
                format!("must be no more than {LABEL_LIMIT} characters"),
            ));
        }
        if !value.is_empty() && !is_label_name(value) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                shown(value),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
                 must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
                 regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
    let annotations = object.pointer("/metadata/annotations").and_then(Value::as_object);
    let mut size = 0;
    for (key, value) in annotations.into_iter().flatten() {
        for detail in qualified_name_problems(&key.to_ascii_lowercase()) {
            errors.push(FieldError::invalid("metadata.annotations", shown(key), detail));
        }
        match value.as_str() {
            Some(text) => size += key.len() + text.len(),
            None => errors.push(FieldError::invalid(
                "metadata.annotations",
                shown(key),
                "annotation values must be strings",
            )),
        }
    }
    if size > ANNOTATIONS_LIMIT {
        errors.push(FieldError {
            field: "metadata.annotations".into(),
            error_type: validation::ErrorType::TooLong,
            value: None,
            detail: format!("may not be more than {ANNOTATIONS_LIMIT} bytes"),
        });
    }
    errors
}

/// The name of a label (and of a label key's name part): letters, digits, `-`, `_`, `.`,
/// starting and ending with a letter or digit.
fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let end = |b: &u8| b.is_ascii_alphanumeric();
    bytes.first().is_some_and(end)
        && bytes.last().is_some_and(end)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What is wrong with a label or annotation key, in the API server's words.
fn qualified_name_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            problems.extend(name_problems(NameRule::Subdomain, prefix).into_iter().map(|p| format!("prefix part {p}")));
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".into());
    } else {
        if name.len() > LABEL_LIMIT {
            problems.push(format!("name part must be no more than {LABEL_LIMIT} characters"));
        }
        if !is_label_name(name) {
            problems.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                 alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
                 '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                    .into(),
            );
        }
    }
    problems
}

/// Drops the fields of `object` its kind does not declare. With [`FieldValidation::Warn`]
/// each one adds `unknown field "<path>"` to `warnings`.
///
/// # Errors
/// With [`FieldValidation::Strict`], the paths of the undeclared fields (the object is left
/// as it was): the caller words the error, which differs between verbs.
pub fn drop_unknown_fields(
    kind: &'static ResourceKind,
    object: &mut Value,
    directive: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    let schema = openapi::schema(kind);
    let unknown = validation::unknown_fields(schema, object);
    if unknown.is_empty() {
        return Ok(());
    }
    match directive {
        FieldValidation::Strict => return Err(unknown),
        FieldValidation::Warn => warnings.extend(unknown.iter().map(|path| unknown_field(path))),
        FieldValidation::Ignore => {}
    }
    validation::prune(schema, object);
    Ok(())
}

/// `unknown field "spec.x"`, as the API server words one strict decoding error.
pub fn unknown_field(path: &str) -> String {
    format!("unknown field {}", quote(path))
}

/// The error of a create or update whose body has undeclared fields under `Strict`:
/// `HTTPProxy in version "v1" cannot be handled as a HTTPProxy: strict decoding error: ...`.
pub fn strict_decoding_error(kind: &ResourceKind, unknown: &[String]) -> ApiError {
    let causes: Vec<String> = unknown.iter().map(|path| unknown_field(path)).collect();
    ApiError::bad_request(format!(
        "{kind_name} in version {version} cannot be handled as a {kind_name}: strict decoding error: {causes}",
        kind_name = kind.kind,
        version = quote(kind.version),
        causes = causes.join(", ")
    ))
}

/// Refuses an apply configuration with fields its kind does not declare, as server-side
/// apply does whatever `fieldValidation` says: `failed to create typed patch object
/// (ns/name; group/version, Kind=Kind): .spec.x: field not declared in schema`.
///
/// # Errors
/// An unclassified error (HTTP 500), which is what a real API server answers.
pub fn check_applied_fields(
    kind: &'static ResourceKind,
    namespace: &str,
    name: &str,
    config: &Value,
) -> Result<(), ApiError> {
    let unknown = validation::unknown_fields(openapi::schema(kind), config);
    let errors: Vec<String> = unknown.iter().map(|path| format!(".{path}: field not declared in schema")).collect();
    let detail = match errors.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Err(ApiError::internal_unclassified(format!(
        "failed to create typed patch object ({namespace}/{name}; {}/{}, Kind={}): {detail}",
        kind.group, kind.version, kind.kind
    )))
}

/// The longest data key Kubernetes accepts (`validation.DNS1123SubdomainMaxLength`).
const DATA_KEY_MAX_LENGTH: usize = 253;

/// Every ConfigMap or Secret data key that is not a valid config key, as apimachinery's
/// `IsConfigMapKey` words it: `[-._a-zA-Z0-9]+`, at most 253 characters, and neither `.`,
/// `..` nor anything starting with `..`. A Secret's `stringData` is merged into `data` before
/// a real server validates it, so its keys are reported under `data` too.
pub fn data_key_errors(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (field, reported_as) in [("data", "data"), ("binaryData", "binaryData"), ("stringData", "data")] {
        for key in object[field].as_object().into_iter().flat_map(|map| map.keys()) {
            let path = format!("{reported_as}[{key}]");
            errors.extend(
                data_key_problems(key)
                    .into_iter()
                    .map(|detail| FieldError::invalid(&path, key.as_str().into(), detail)),
            );
        }
    }
    errors
}

fn data_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if key.len() > DATA_KEY_MAX_LENGTH {
        problems.push(format!("must be no more than {DATA_KEY_MAX_LENGTH} characters"));
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        problems.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or \
             'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    match key {
        "." => problems.push("must not be '.'".into()),
        ".." => problems.push("must not be '..'".into()),
        _ if key.starts_with("..") => problems.push("must not start with '..'".into()),
        _ => {}
    }
    problems
}

fn is_custom_resource(kind: &ResourceKind) -> bool {
    kind == &kinds::HTTP_PROXY || kind == &kinds::TLS_CERTIFICATE_DELEGATION || kind.crd_schema.is_some()
}

#[cfg(test)]
mod tests;
