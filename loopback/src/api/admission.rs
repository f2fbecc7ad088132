//! Admission: the checks a real API server makes before storing an object.
//!
//! - [`admit`]: for the custom resources (HTTPProxy, TLSCertificateDelegation), the CRD's
//!   OpenAPI validation and CEL rules, refused with 422 `Invalid` listing every cause.
//! - [`drop_unknown_fields`]: what a create, update or patch does with fields the kind's
//!   schema does not declare, as `?fieldValidation=` asks (refuse, warn, or drop silently).
//! - [`check_applied_fields`]: server-side apply refuses undeclared fields whatever
//!   `fieldValidation` says, with the structured-merge-diff error (HTTP 500, no reason).
//!
//! Built-in kinds are only checked for undeclared top-level and `metadata` fields.

use serde_json::Value;

use super::errors::ApiError;
use super::kinds::{self, ResourceKind};
use super::openapi;
use super::validation::{self, FieldValidation, quote};

/// Which admission checks run. All of them, unless a fault switches one off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Validate HTTPProxy and TLSCertificateDelegation against their CRD schemas and rules.
    pub validate_custom_resources: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { validate_custom_resources: true }
    }
}

impl Admission {
    /// [`admit`], unless switched off for the kind.
    ///
    /// # Errors
    /// As [`admit`].
    pub fn admit(self, kind: &'static ResourceKind, object: &Value) -> Result<(), ApiError> {
        if !self.validate_custom_resources && is_custom_resource(kind) {
            return Ok(());
        }
        admit(kind, object)
    }
}

/// Checks `object` of `kind` before it is stored by a create, update, patch or apply.
///
/// # Errors
/// `Invalid` (422) naming each offending field, worded as Kubernetes words it.
pub fn admit(kind: &'static ResourceKind, object: &Value) -> Result<(), ApiError> {
    if !is_custom_resource(kind) {
        return Ok(());
    }
    let errors = validation::validate(openapi::schema(kind), object);
    if errors.is_empty() {
        return Ok(());
    }
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::invalid(kind, name, &errors))
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

fn is_custom_resource(kind: &ResourceKind) -> bool {
    kind == &kinds::HTTP_PROXY || kind == &kinds::TLS_CERTIFICATE_DELEGATION
}

#[cfg(test)]
mod tests;
