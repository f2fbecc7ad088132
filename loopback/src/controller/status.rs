//! HTTPProxy status documents (docs/contract.md S2): [`ProxyStatus`] and the errors that make a proxy
//! invalid.

use serde_json::{Value, json};

/// One entry of `status.conditions[Valid].errors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusError {
    pub error_type: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of processing one HTTPProxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStatus {
    pub errors: Vec<StatusError>,
    /// Orphaned, shown as its own condition reason with no error entry: the shape of the
    /// `orphaned-without-error-entry` fault. Contour's shape is an error of type `Orphaned`.
    pub orphaned_without_error_entry: bool,
}

const INVALID_DESCRIPTION: &str = "At least one error present, see Errors for details";
const VALID_DESCRIPTION: &str = "Valid HTTPProxy";
const ORPHANED_DESCRIPTION: &str = "this HTTPProxy is not part of a delegation chain from a root HTTPProxy";
const ORPHANED: &str = "Orphaned";

impl ProxyStatus {
    /// Adds an error; like Contour, an error reported twice is listed twice.
    pub fn error(&mut self, error_type: &'static str, reason: &'static str, message: String) {
        self.errors.push(StatusError { error_type, reason, message });
    }

    /// Marks a proxy that is not a root and not included by one (docs/contract.md E3).
    pub fn orphan(&mut self) {
        self.error(ORPHANED, ORPHANED, ORPHANED_DESCRIPTION.into());
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// The `status` to store, keeping `lastTransitionTime` from `previous` when the condition's
    /// status did not change.
    pub fn to_json(&self, generation: i64, previous: &Value, now: &str) -> Value {
        let orphan = self.errors.iter().find(|e| e.error_type == ORPHANED);
        let (current, description, condition_status, reason) = if self.orphaned_without_error_entry {
            ("orphaned", ORPHANED_DESCRIPTION, "False", ORPHANED)
        } else if let Some(orphan) = orphan {
            ("orphaned", orphan.message.as_str(), "False", "ErrorPresent")
        } else if self.is_valid() {
            ("valid", VALID_DESCRIPTION, "True", "Valid")
        } else {
            ("invalid", INVALID_DESCRIPTION, "False", "ErrorPresent")
        };
        // Contour's condition message is the generic one whenever errors are listed.
        let message = if reason == "ErrorPresent" { INVALID_DESCRIPTION } else { description };
        let previous_condition =
            previous["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Valid"));
        let transition = match previous_condition {
            Some(c) if c["status"] == condition_status => c["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        let mut condition = json!({
            "type": "Valid",
            "status": condition_status,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        });
        if !self.errors.is_empty() {
            condition["errors"] = self
                .errors
                .iter()
                .map(|e| json!({"type": e.error_type, "reason": e.reason, "message": e.message, "status": "True"}))
                .collect();
        }
        json!({
            "currentStatus": current,
            "description": description,
            "loadBalancer": {},
            "conditions": [condition],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_has_contour_shape() {
        let mut status = ProxyStatus::default();
        status.error("ServiceError", "TLSUpstreamValidation", "boom".into());
        let doc = status.to_json(3, &Value::Null, "2026-01-01T00:00:00Z");
        assert_eq!(doc["currentStatus"], "invalid");
        assert_eq!(doc["description"], INVALID_DESCRIPTION);
        let condition = &doc["conditions"][0];
        assert_eq!(condition["reason"], "ErrorPresent");
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["observedGeneration"], 3);
        assert_eq!(condition["errors"][0]["status"], "True");
    }

    #[test]
    fn an_orphan_is_an_error_entry_with_its_own_current_status() {
        let mut status = ProxyStatus::default();
        status.orphan();
        let doc = status.to_json(1, &Value::Null, "t");
        assert_eq!(doc["currentStatus"], "orphaned");
        assert_eq!(doc["description"], ORPHANED_DESCRIPTION);
        let condition = &doc["conditions"][0];
        assert_eq!(
            (&condition["reason"], &condition["message"]),
            (&json!("ErrorPresent"), &json!(INVALID_DESCRIPTION))
        );
        assert_eq!(condition["errors"][0]["type"], "Orphaned");
        assert_eq!(condition["errors"][0]["message"], ORPHANED_DESCRIPTION);
    }

    #[test]
    fn transition_time_survives_when_status_is_unchanged() {
        let status = ProxyStatus::default();
        let first = status.to_json(1, &Value::Null, "t1");
        let second = status.to_json(2, &first, "t2");
        assert_eq!(second["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(second["description"], VALID_DESCRIPTION);
    }
}
