//! The verbs on resources (get, list, create, update, patch, apply, delete, pod logs):
//! [`Call`], one request with what its handler may use.
//!
//! Every write drops or refuses the fields its kind does not declare, as `fieldValidation`
//! asks (the warnings collect in [`Call::warnings`]), and every write of a main resource passes
//! [`admit`]. `dryRun=All` validates and answers without storing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::admission::{drop_unknown_fields, strict_decoding_error, unknown_field};
use super::apply::{Applied, ApplyRequest};
use super::errors::ApiError;
use super::kinds::{self, ResourceKind};
use super::patch::{PatchKind, apply_patch};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{Body, Part, Query, ServerState, text_response};
use super::store::{Subresource, metadata_mut};
use super::validation::{self, FieldError, FieldValidation};

/// The annotation in which the kubelet records the path of a pod's log file.
pub const LOG_FILE_ANNOTATION: &str = "loopback.dev/log-file";

/// How often a patch is recomputed when another write slips in between read and write.
const PATCH_ATTEMPTS: usize = 5;

/// A JSON answer: the HTTP code and the document.
pub(super) type Answer = (StatusCode, Value);

/// One API request, with the server state and the parts of the request the verbs need.
pub(super) struct Call<'a> {
    pub state: &'a ServerState,
    pub query: &'a Query,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// `Warning` header texts for the response (unknown fields under `fieldValidation=Warn`).
    pub warnings: Mutex<Vec<String>>,
}

impl Call<'_> {
    pub fn get(&self, kind: &'static ResourceKind, namespace: &str, name: &str) -> Result<Answer, ApiError> {
        let object = self.state.store.get(kind, namespace, name).ok_or_else(|| ApiError::not_found(kind, name))?;
        Ok((StatusCode::OK, object))
    }

    pub fn list(&self, kind: &'static ResourceKind, namespace: Option<&str>) -> Result<Answer, ApiError> {
        let (items, resource_version) = self.selected(kind, namespace)?;
        Ok((StatusCode::OK, list_document(kind, items, resource_version)))
    }

    /// The objects a list or deletecollection selects, with the store's resourceVersion.
    fn selected(&self, kind: &'static ResourceKind, namespace: Option<&str>) -> Result<(Vec<Value>, u64), ApiError> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        let (items, resource_version) = self.state.store.list(kind, namespace);
        let items = items.iter().filter(|o| labels.matches(o) && fields.matches(o)).map(|o| Value::clone(o)).collect();
        Ok((items, resource_version))
    }

    pub fn create(&self, kind: &'static ResourceKind, namespace: &str) -> Result<Answer, ApiError> {
        let directive = FieldValidation::from_query(self.query.get("fieldValidation"), "CreateOptions")?;
        let mut object = self.parse_body()?;
        check_identity(kind, namespace, None, &mut object)?;
        self.drop_unknown_fields(kind, &mut object, directive)
            .map_err(|unknown| strict_decoding_error(kind, &unknown))?;
        generate_name(&mut object);
        normalize(kind, &mut object);
        self.state.admission.admit(kind, &object)?;
        if self.dry_run() {
            if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
                && self.state.store.get(kind, namespace, name).is_some()
            {
                return Err(ApiError::already_exists(kind, name));
            }
            return Ok((StatusCode::CREATED, object));
        }
        Ok((StatusCode::CREATED, self.state.store.create(kind, namespace, object)?))
    }

    pub fn replace(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
    ) -> Result<Answer, ApiError> {
        let directive = FieldValidation::from_query(self.query.get("fieldValidation"), "UpdateOptions")?;
        let mut object = self.parse_body()?;
        check_identity(kind, namespace, Some(name), &mut object)?;
        self.drop_unknown_fields(kind, &mut object, directive)
            .map_err(|unknown| strict_decoding_error(kind, &unknown))?;
        self.write(kind, namespace, name, object, part)
    }

    pub fn patch(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
    ) -> Result<Answer, ApiError> {
        let patch_kind = PatchKind::from_content_type(self.content_type)
            .ok_or_else(|| ApiError::unsupported_media_type(self.content_type))?;
        let directive = FieldValidation::from_query(self.query.get("fieldValidation"), "PatchOptions")?;
        let patch = self.parse_body()?;
        if patch_kind == PatchKind::Apply {
            return self.apply(kind, namespace, name, part, patch);
        }
        let mut last_error = None;
        for _ in 0..PATCH_ATTEMPTS {
            let mut object =
                self.state.store.get(kind, namespace, name).ok_or_else(|| ApiError::not_found(kind, name))?;
            let stored_version = object.pointer("/metadata/resourceVersion").cloned();
            apply_patch(patch_kind, &mut object, &patch)?;
            check_identity(kind, namespace, Some(name), &mut object)?;
            self.drop_unknown_fields(kind, &mut object, directive)
                .map_err(|unknown| strict_patch_error(&object, &unknown))?;
            let pinned = object.pointer("/metadata/resourceVersion") != stored_version.as_ref();
            match self.write(kind, namespace, name, object, part) {
                Err(e) if e.reason == "Conflict" && !pinned => last_error = Some(e),
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| ApiError::conflict(kind, name)))
    }

    fn apply(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
        config: Value,
    ) -> Result<Answer, ApiError> {
        let manager = self.query.get("fieldManager").ok_or_else(|| {
            ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests must include the fieldManager query parameter",
            )
        })?;
        let request = ApplyRequest {
            kind,
            namespace,
            name,
            manager,
            subresource: subresource(part),
            dry_run: self.dry_run(),
            admission: self.state.admission,
        };
        Ok(match self.state.applies.apply(&self.state.store, &request, config)? {
            Applied::Created(object) => (StatusCode::CREATED, object),
            Applied::Updated(object) => (StatusCode::OK, object),
        })
    }

    /// Stores a new version of an existing object (after admission, for the main resource).
    fn write(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        mut object: Value,
        part: Part,
    ) -> Result<Answer, ApiError> {
        if part == Part::Main {
            normalize(kind, &mut object);
            self.state.admission.admit(kind, &object)?;
        } else {
            self.state.admission.status_write(kind, &mut object);
        }
        if self.dry_run() {
            self.get(kind, namespace, name)?;
            return Ok((StatusCode::OK, object));
        }
        let stored = self.state.store.update(kind, namespace, name, object, subresource(part))?;
        Ok((StatusCode::OK, stored))
    }

    pub fn delete(&self, kind: &'static ResourceKind, namespace: &str, name: &str) -> Result<Answer, ApiError> {
        if self.dry_run() {
            return self.get(kind, namespace, name);
        }
        Ok((StatusCode::OK, self.state.store.delete(kind, namespace, name)?))
    }

    pub fn delete_collection(&self, kind: &'static ResourceKind, namespace: Option<&str>) -> Result<Answer, ApiError> {
        let (items, _) = self.selected(kind, namespace)?;
        let mut deleted = Vec::new();
        for item in items {
            let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let ns = item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
            if self.dry_run() {
                deleted.push(item.clone());
                continue;
            }
            match self.state.store.delete(kind, ns, name) {
                Ok(object) => deleted.push(object),
                // Deleted meanwhile by someone else: nothing left to do.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let resource_version = self.state.store.resource_version();
        Ok((StatusCode::OK, list_document(kind, deleted, resource_version)))
    }

    /// The pod's log as the kubelet wrote it; `tailLines` keeps the last lines.
    ///
    /// # Errors
    /// `NotFound` for a missing pod, `BadRequest` when the pod has no log (yet).
    pub async fn logs(&self, namespace: &str, name: &str) -> Result<Response<Body>, ApiError> {
        let pod =
            self.state.store.get(&kinds::POD, namespace, name).ok_or_else(|| ApiError::not_found(&kinds::POD, name))?;
        let waiting =
            || ApiError::bad_request(format!("container in pod \"{name}\" is waiting to start: ContainerCreating"));
        let path = pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LOG_FILE_ANNOTATION))
            .and_then(Value::as_str)
            .ok_or_else(waiting)?;
        let text = tokio::fs::read(path).await.map_err(|_| waiting())?;
        let text = match self.query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
            Some(lines) => tail_lines(&text, lines).to_vec(),
            None => text,
        };
        Ok(text_response(StatusCode::OK, text))
    }

    /// [`drop_unknown_fields`], with the warnings kept for the response.
    fn drop_unknown_fields(
        &self,
        kind: &'static ResourceKind,
        object: &mut Value,
        directive: FieldValidation,
    ) -> Result<(), Vec<String>> {
        let mut warnings = Vec::new();
        let result = drop_unknown_fields(kind, object, directive, &mut warnings);
        // A poisoned lock only means another thread panicked while pushing a warning.
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).extend(warnings);
        result
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    /// The request body as JSON, or YAML when the content type says so.
    ///
    /// Protobuf and CBOR bodies get 415 Unsupported Media Type: client-go (kubectl's typed
    /// commands such as `kubectl create namespace`) then retries with JSON.
    fn parse_body(&self) -> Result<Value, ApiError> {
        if self.content_type.contains("protobuf") || self.content_type.contains("cbor") {
            return Err(ApiError::unsupported_media_type(self.content_type));
        }
        let text = std::str::from_utf8(self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        let value = if self.content_type.contains("yaml") {
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?
        } else {
            serde_json::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
        };
        Ok(value)
    }
}

/// The error of a patch whose result has undeclared fields under `Strict`: Kubernetes reports
/// the patched object as an invalid `patch` of an unnamed kind (` "" is invalid: patch: ...`).
fn strict_patch_error(patched: &Value, unknown: &[String]) -> ApiError {
    let causes: Vec<String> = unknown.iter().map(|path| unknown_field(path)).collect();
    let detail = format!("strict decoding error: {}", causes.join(", "));
    let error = FieldError::invalid("patch", Value::String(patched.to_string()), detail);
    ApiError::invalid_group_kind("", "", "", &[error])
}

fn subresource(part: Part) -> Subresource {
    if part == Part::Status { Subresource::Status } else { Subresource::Main }
}

/// `{kind: <Kind>List, apiVersion, metadata: {resourceVersion}, items}`.
fn list_document(kind: &ResourceKind, items: Vec<Value>, resource_version: u64) -> Value {
    json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": resource_version.to_string()},
        "items": items,
    })
}

/// Checks that a request body is an object of `kind` that names the URL's namespace and name
/// (when it names any), then fills both in.
///
/// # Errors
/// `BadRequest` with the messages Kubernetes uses for each mismatch.
pub(super) fn check_identity(
    kind: &ResourceKind,
    namespace: &str,
    name: Option<&str>,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(format!("the body must be a {} object", kind.kind)));
    }
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
        && api_version != kind.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if let Some(body_kind) = object.get("kind").and_then(Value::as_str)
        && body_kind != kind.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({body_kind}) does not match the expected kind ({})",
            kind.kind
        )));
    }
    let meta = metadata_mut(object);
    if kind.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
    }
    if let Some(name) = name {
        match meta.get("name").and_then(Value::as_str) {
            Some(body_name) if !body_name.is_empty() && body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta.insert("name".into(), json!(name));
            }
        }
    }
    Ok(())
}

/// What the API server does to an object before validating and storing it: a Secret's
/// `stringData` is base64-encoded into `data` (where it wins) and dropped, and the defaults
/// clients read back are filled in (Secret `type: Opaque`; Service `type: ClusterIP` and port
/// `protocol: TCP`); a kind served from a CRD gets its schema's defaults.
pub(super) fn normalize(kind: &ResourceKind, object: &mut Value) {
    if let Some(schema) = kind.crd_schema {
        validation::apply_defaults(schema, object);
        return;
    }
    if kind == &kinds::SERVICE {
        default_service(object);
        return;
    }
    if kind != &kinds::SECRET {
        return;
    }
    let Some(map) = object.as_object_mut() else {
        return;
    };
    if map.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        map.insert("type".into(), json!("Opaque"));
    }
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
        data[key] = json!(BASE64_STANDARD.encode(text));
    }
}

fn default_service(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        spec.insert("type".into(), json!("ClusterIP"));
    }
    for port in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(port) = port.as_object_mut()
            && port.get("protocol").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            port.insert("protocol".into(), json!("TCP"));
        }
    }
}

/// Fills `metadata.name` from `metadata.generateName` plus five random characters.
fn generate_name(object: &mut Value) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let meta = metadata_mut(object);
    if meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
        return;
    }
    let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
        return;
    };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut seed = u64::from(nanos) ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Kubernetes avoids vowels and look-alike digits in generated suffixes; so do we.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[(seed % ALPHABET.len() as u64) as usize];
            seed /= ALPHABET.len() as u64;
            c as char
        })
        .collect();
    let name = format!("{prefix}{suffix}");
    meta.insert("name".into(), json!(name));
}

/// The last `lines` lines of a log.
fn tail_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(lines - 1).map_or(0, |(i, _)| i + 1);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_mismatches_are_bad_requests() {
        let mut wrong_ns = json!({"metadata": {"name": "s", "namespace": "b"}});
        let err = check_identity(&kinds::SECRET, "a", None, &mut wrong_ns).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("does not match the namespace sent on the request"));
        let mut wrong_name = json!({"metadata": {"name": "s"}});
        assert_eq!(check_identity(&kinds::SECRET, "a", Some("t"), &mut wrong_name).unwrap_err().code, 400);
        let mut wrong_kind = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(check_identity(&kinds::SECRET, "a", None, &mut wrong_kind).unwrap_err().code, 400);
        let mut fine = json!({"metadata": {}});
        check_identity(&kinds::SECRET, "a", Some("s"), &mut fine).unwrap();
        assert_eq!(fine, json!({"metadata": {"namespace": "a", "name": "s"}}));
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut secret = json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "y"}});
        normalize(&kinds::SECRET, &mut secret);
        assert_eq!(secret, json!({"type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}}));
        let mut tls = json!({"type": "kubernetes.io/tls"});
        normalize(&kinds::SECRET, &mut tls);
        assert_eq!(tls, json!({"type": "kubernetes.io/tls"}));
        let mut config_map = json!({"stringData": {"b": "y"}});
        normalize(&kinds::CONFIG_MAP, &mut config_map);
        assert_eq!(config_map, json!({"stringData": {"b": "y"}}));
    }

    #[test]
    fn services_get_their_defaults() {
        let mut service = json!({"spec": {"ports": [{"port": 443}, {"port": 53, "protocol": "UDP"}]}});
        normalize(&kinds::SERVICE, &mut service);
        assert_eq!(
            service,
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}})
        );
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let mut object = json!({"metadata": {"generateName": "web-"}});
        generate_name(&mut object);
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\n", 0), b"");
    }
}
