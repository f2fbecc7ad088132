//! API errors as Kubernetes reports them: [`ApiError`], rendered as a `v1 Status` object.

use serde_json::{Value, json};

use super::kinds::ResourceKind;
use super::validation::FieldError;

/// A failed API request: the HTTP code, the `reason` and the message of a `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// Empty for errors Kubernetes does not classify (`StatusReasonUnknown`).
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status, when one object is concerned (boxed: errors travel in
    /// `Result`s everywhere and most have none).
    pub details: Option<Box<StatusDetails>>,
}

/// The `details` of a `Status`: which object, and for `Invalid` the field-level causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDetails {
    pub name: String,
    pub group: String,
    /// The resource (plural) for most errors, the kind for `Invalid`, as Kubernetes does.
    pub kind: String,
    pub causes: Vec<StatusCause>,
}

/// One `details.causes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, details: None }
    }

    fn about(mut self, kind: &ResourceKind, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: kind.group.to_string(),
            kind: kind.plural.to_string(),
            causes: Vec::new(),
        }));
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

    /// 422 for an object that fails validation, as `apierrors.NewInvalid` words it:
    /// `HTTPProxy.projectcontour.io "web" is invalid: <errors>`, where several errors are
    /// joined with `, ` inside `[...]` (duplicates once), and each is a `details.causes` entry.
    pub fn invalid(kind: &ResourceKind, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_group_kind(kind.group, kind.kind, name, errors)
    }

    /// [`ApiError::invalid`] for a `group`/`kind` pair that need not be served (options
    /// objects such as `CreateOptions.meta.k8s.io`, or the empty kind of a failed patch).
    pub fn invalid_group_kind(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut messages: Vec<String> = Vec::new();
        for error in errors {
            let message = error.to_string();
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        let message = match messages.as_slice() {
            [] => format!("{qualified} \"{name}\" is invalid"),
            [one] => format!("{qualified} \"{name}\" is invalid: {one}"),
            many => format!("{qualified} \"{name}\" is invalid: [{}]", many.join(", ")),
        };
        let causes = errors
            .iter()
            .map(|e| StatusCause { reason: e.error_type.cause(), message: e.body(), field: e.field.clone() })
            .collect();
        let mut error = Self::new(422, "Invalid", message);
        error.details =
            Some(Box::new(StatusDetails { name: name.into(), group: group.into(), kind: kind.into(), causes }));
        error
    }

    /// A failure Kubernetes does not classify: code 500 and no reason, as the API server
    /// answers errors that are not a `Status` (server-side apply's schema errors among them).
    pub fn internal_unclassified(message: impl Into<String>) -> Self {
        Self::new(500, "", message.into())
    }

    pub fn invalid_simple(message: &str) -> Self {
        Self::new(422, "Invalid", message.to_string())
    }

    /// A request without the bearer token, answered as kube-apiserver answers it.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// An answer made by [`Disruption::ApiErrors`](crate::Disruption::ApiErrors) or
    /// [`Disruption::ApiOutage`](crate::Disruption::ApiOutage), worded as kube-apiserver words
    /// these codes.
    pub fn disrupted(code: u16) -> Self {
        match code {
            429 => Self::new(429, "TooManyRequests", "Too many requests, please try again later.".into()),
            503 => Self::new(503, "ServiceUnavailable", "the server is currently unable to handle the request".into()),
            _ => Self::new(500, "InternalError", "Internal error occurred: injected by loopback".into()),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// A request body over the API server's limit, in its words.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
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
            "code": self.code,
        });
        // Go's `omitempty`: an unclassified error has no reason at all.
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            let mut rendered = json!({"name": details.name, "group": details.group, "kind": details.kind});
            if !details.causes.is_empty() {
                let causes: Vec<Value> = details
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                rendered["causes"] = json!(causes);
            }
            status["details"] = rendered;
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds;

    #[test]
    fn invalid_joins_several_causes_in_brackets() {
        let one = ApiError::invalid(&kinds::HTTP_PROXY, "web", &[FieldError::required("spec")]);
        assert_eq!(one.message, r#"HTTPProxy.projectcontour.io "web" is invalid: spec: Required value"#);
        let errors = [FieldError::required("a"), FieldError::required("b"), FieldError::required("a")];
        let many = ApiError::invalid(&kinds::HTTP_PROXY, "web", &errors);
        assert_eq!(
            many.message,
            r#"HTTPProxy.projectcontour.io "web" is invalid: [a: Required value, b: Required value]"#
        );
        let status = many.to_status();
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["kind"], "HTTPProxy");
        assert_eq!(
            status["details"]["causes"][1],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "b"})
        );
        let core = ApiError::invalid(&kinds::SECRET, "s", &[FieldError::required("data")]);
        assert!(core.message.starts_with(r#"Secret "s" is invalid"#), "{}", core.message);
    }

    #[test]
    fn unclassified_errors_have_no_reason() {
        let status = ApiError::internal_unclassified("boom").to_status();
        assert_eq!(status["code"], 500);
        assert!(status.get("reason").is_none());
    }
}
