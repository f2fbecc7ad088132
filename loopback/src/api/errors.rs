//! API errors as Kubernetes reports them: [`ApiError`], rendered as a `v1 Status` object.

use serde_json::{Value, json};

use super::kinds::ResourceKind;

/// A failed API request: the HTTP code, the `reason` and the message of a `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status: the object's name and kind, when one is concerned.
    pub details: Option<(String, String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, details: None }
    }

    fn about(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.details = Some((name.to_string(), kind.group.to_string(), kind.plural.to_string()));
        self
    }

    pub fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", kind.qualified_plural())).about(kind, name)
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{namespace}\" not found"))
    }

    pub fn namespace_terminating(namespace: &str, kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                kind.qualified_plural()
            ),
        )
        .about(kind, name)
    }

    pub fn already_exists(kind: &ResourceKind, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", kind.qualified_plural()))
            .about(kind, name)
    }

    pub fn conflict(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_plural()
            ),
        )
        .about(kind, name)
    }

    /// 422 for an object that fails validation; `causes` are `field: detail` lines.
    pub fn invalid(kind: &ResourceKind, name: &str, causes: &[String]) -> Self {
        Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {}", qualified_kind(kind), causes.join(", ")))
            .about(kind, name)
    }

    pub fn invalid_simple(message: &str) -> Self {
        Self::new(422, "Invalid", message.to_string())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    pub fn gone(resource_version: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {resource_version}"))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/merge-patch+json (got {content_type})"
            ),
        )
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// The `v1 Status` document for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, group, kind)) = &self.details {
            status["details"] = json!({"name": name, "group": group, "kind": kind});
        }
        status
    }
}

/// `Kind.group` (`HTTPProxy.projectcontour.io`), or `Kind` in the core group.
fn qualified_kind(kind: &ResourceKind) -> String {
    if kind.group.is_empty() { kind.kind.to_string() } else { format!("{}.{}", kind.kind, kind.group) }
}
