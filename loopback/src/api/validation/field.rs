//! One validation failure as Kubernetes reports it: [`FieldError`], the Rust shape of
//! apimachinery's `field.Error`.
//!
//! The rendering follows `field.Error.ErrorBody`: the error type, then the offending value
//! (strings quoted, numbers bare; left out for `Required value` and `Too long`), then the
//! detail, all joined with `: `. The whole error is `<field>: <body>`.

use std::fmt;

use serde_json::Value;

/// The kinds of field errors the loopback API server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `Required value`.
    Required,
    /// `Unsupported value`: not one of an enum's values.
    NotSupported,
    /// `Invalid value`: any other constraint.
    Invalid,
    /// `Invalid value`, for a value of the wrong JSON type.
    TypeInvalid,
    /// `Too many`: more list items than `maxItems`.
    TooMany,
    /// `Too long`: a string longer than `maxLength`.
    TooLong,
}

impl ErrorType {
    /// The text Kubernetes opens the error body with.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::TooMany => "Too many",
            ErrorType::TooLong => "Too long",
        }
    }

    /// The `reason` of a `StatusCause` (`metav1.CauseType`).
    pub fn cause(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::TooLong => "FieldValueTooLong",
        }
    }

    /// Whether Kubernetes skips CEL rules when an error of this type is present
    /// (apiextensions-apiserver `hasBlockingErr`).
    pub fn blocks_rules(self) -> bool {
        matches!(
            self,
            ErrorType::NotSupported
                | ErrorType::Required
                | ErrorType::TooLong
                | ErrorType::TooMany
                | ErrorType::TypeInvalid
        )
    }
}

/// A field that failed validation, with the value and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path as Kubernetes prints it: `spec.routes[0].services[1].port`.
    pub field: String,
    pub error_type: ErrorType,
    /// The offending value; `None` leaves it out of the message.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: &str) -> Self {
        FieldError { field: field.into(), error_type: ErrorType::Required, value: None, detail: String::new() }
    }

    pub fn not_supported(field: &str, value: &Value, supported: &[Value]) -> Self {
        let quoted: Vec<String> = supported
            .iter()
            .map(|v| match v {
                Value::String(s) => quote(s),
                other => quote(&other.to_string()),
            })
            .collect();
        FieldError {
            field: field.into(),
            error_type: ErrorType::NotSupported,
            value: Some(value.clone()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    pub fn invalid(field: &str, value: Value, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), error_type: ErrorType::Invalid, value: Some(value), detail: detail.into() }
    }

    pub fn type_invalid(field: &str, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TypeInvalid,
            value: Some(value),
            detail: detail.into(),
        }
    }

    pub fn too_many(field: &str, actual: usize, max: u64) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TooMany,
            value: Some(Value::from(actual)),
            detail: format!("must have at most {max} items"),
        }
    }

    pub fn too_long(field: &str, value: &Value, max: u64) -> Self {
        FieldError {
            field: field.into(),
            error_type: ErrorType::TooLong,
            value: Some(value.clone()),
            detail: format!("may not be longer than {max}"),
        }
    }

    /// The message without the field: what a `StatusCause` carries.
    pub fn body(&self) -> String {
        let mut body = self.error_type.text().to_string();
        let shows_value = !matches!(self.error_type, ErrorType::Required | ErrorType::TooLong);
        if shows_value && let Some(value) = &self.value {
            body.push_str(": ");
            body.push_str(&render_value(value));
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as Go's `%q` / `%v` print it in `ErrorBody`.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Null => quote("null"),
        other => other.to_string(),
    }
}

/// A Go-quoted string (`strconv.Quote`); JSON escaping agrees for the text we meet.
pub fn quote(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bodies_read_like_kubernetes() {
        assert_eq!(FieldError::required("spec.virtualhost.fqdn").to_string(), "spec.virtualhost.fqdn: Required value");
        let protocol = FieldError::not_supported("p", &json!("h3"), &[json!("h2"), json!("h2c"), json!("tls")]);
        assert_eq!(protocol.to_string(), r#"p: Unsupported value: "h3": supported values: "h2", "h2c", "tls""#);
        assert_eq!(FieldError::too_many("n", 9, 8).to_string(), "n: Too many: 9: must have at most 8 items");
        let port = FieldError::invalid("port", json!(0), "port in body should be greater than or equal to 1");
        assert_eq!(port.to_string(), "port: Invalid value: 0: port in body should be greater than or equal to 1");
        assert_eq!(FieldError::too_long("s", &json!("xx"), 1).body(), "Too long: may not be longer than 1");
        let null = FieldError::invalid("<nil>", Value::Null, "rules skipped");
        assert_eq!(null.to_string(), r#"<nil>: Invalid value: "null": rules skipped"#);
    }
}
