//! The HTTP front of the API server: [`serve`] answers HTTP/1.1 on a listener, routes each
//! request to discovery, a resource handler or a watch, and renders errors as `Status`.
//! [`write_kubeconfig`] writes the kubeconfig that points clients at it.
//!
//! URL shapes follow Kubernetes: `/api/v1/...` for the core group, `/apis/{group}/{version}/...`
//! for the others, then `{plural}[/{name}[/{subresource}]]`, optionally under
//! `namespaces/{namespace}/`; `/openapi/v3[/...]` serves the OpenAPI documents. HTTPS with a
//! bearer token ([`Credentials`]), as a real cluster serves it. Reads answer with a `Table` when `Accept` asks for one (`kubectl get`);
//! warnings from a write (unknown fields) go out as `Warning` headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::access::{Credentials, PUBLIC_PATHS};
use super::admission::Admission;
use super::apply::ApplyRecords;
use super::errors::ApiError;
use super::kinds::{self, Kinds, ResourceKind};
use super::store::Store;
use super::tables::TableRequest;
use super::validation;
use super::{discovery, handlers, openapi, watch as watches};
use crate::disruption::{ApiTrouble, Disruption, Disruptions};

/// The body of every response: a whole document or a watch stream.
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body accepted: the API server's own limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long open connections get to finish after shutdown before they are dropped.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// What every request handler may use.
pub(super) struct ServerState {
    pub store: Store,
    pub admission: Admission,
    pub applies: ApplyRecords,
    pub shutdown: watch::Receiver<bool>,
    pub address: SocketAddr,
    pub credentials: Arc<Credentials>,
    pub disruptions: Arc<Disruptions>,
}

/// Serves the Kubernetes API for `store` on `listener`, over TLS with `credentials`, until
/// `shutdown` turns true (or its sender is dropped); open watch streams then end and
/// connections are closed. Authenticated requests meet the API `disruptions` switched on.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    admission: Admission,
    credentials: Arc<Credentials>,
    disruptions: Arc<Disruptions>,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let state = Arc::new(ServerState {
        store,
        admission,
        applies: ApplyRecords::default(),
        shutdown: shutdown.clone(),
        address,
        credentials,
        disruptions,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "api server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIME, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("api server: connections still open after shutdown; dropping them");
    }
    connections.shutdown().await;
}

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// How long a connection may wait for the head of its next request.
const IDLE_LIMIT: Duration = Duration::from_secs(120);

async fn serve_connection(stream: TcpStream, state: Arc<ServerState>) {
    let mut shutdown = state.shutdown.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(state.credentials.tls.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "api server: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("api server: TLS handshake timed out");
            return;
        }
    };
    let disruptions = state.disruptions.clone();
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(request, &state).await) }
    });
    // A connection with no request under way (a new one, or one kept alive) is closed after
    // IDLE_LIMIT: clients keep idle connections for less (90 s in client-go and kube-rs).
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE_LIMIT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let lifetime = disruptions.connection_lifetime();
    let cut = async {
        match lifetime {
            Some(lifetime) => tokio::time::sleep(lifetime).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = cut => {
            // Dropped unfinished: the client sees the connection close mid-answer.
            disruptions.injected(Disruption::ApiConnectionsCut);
            tracing::debug!("api server: connection cut (disruption)");
        }
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "api server: connection ended with an error");
            }
        }
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            // Errors while closing are of no interest: the server is going away.
            let _ = connection.await;
        }
    }
}

/// Resolves once `shutdown` is true or its sender is gone.
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here rather than across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn handle(request: Request<Incoming>, state: &ServerState) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let public = method == Method::GET && PUBLIC_PATHS.contains(&path.trim_end_matches('/'));
    if !public && !state.credentials.admits(request.headers()) {
        tracing::debug!(%method, %path, "api request without the token");
        return error_response(&ApiError::unauthorized());
    }
    if !public {
        let delay = state.disruptions.api_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(ApiTrouble::Fail(code)) = state.disruptions.api_request() {
            tracing::debug!(%method, %path, code, "api request failed (disruption)");
            return disrupted_response(code);
        }
    }
    let creates_namespace = method == Method::POST && path.trim_end_matches('/') == "/api/v1/namespaces";
    let response = match dispatch(request, state).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    };
    if creates_namespace && response.status() == StatusCode::CREATED {
        state.disruptions.namespace_created();
    }
    tracing::debug!(%method, %path, status = response.status().as_u16(), "api request");
    response
}

/// What a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// All objects of a kind, in one namespace or (`None`) in all.
    Collection { kind: &'static ResourceKind, namespace: Option<String> },
    /// One object or one of its subresources; `namespace` is empty for cluster-scoped kinds.
    Object { kind: &'static ResourceKind, namespace: String, name: String, part: Part },
}

/// The part of an object a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Main,
    Status,
    Log,
}

async fn dispatch(request: Request<Incoming>, state: &ServerState) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let query = Query::parse(request.uri().query().unwrap_or_default());
    let method = request.method().clone();
    if method == Method::GET {
        match path.as_str() {
            "/healthz" | "/readyz" | "/livez" => return Ok(text_response(StatusCode::OK, "ok")),
            "/version" => return Ok(json_response(StatusCode::OK, &version_info())),
            _ => {}
        }
        let kinds = state.store.kinds();
        if let Some(document) = discovery::document(kinds, &path, state.address) {
            return Ok(json_response(StatusCode::OK, &document));
        }
        if path == "/openapi/v3" {
            return Ok(json_response(StatusCode::OK, &openapi::index(kinds)));
        }
        if let Some(key) = path.strip_prefix("/openapi/v3/") {
            let document = openapi::document(kinds, key).ok_or_else(|| ApiError::path_not_found(&path))?;
            return Ok(json_response(StatusCode::OK, &document));
        }
    }
    let target = parse_target(state.store.kinds(), &path).ok_or_else(|| ApiError::path_not_found(&path))?;
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let table = TableRequest::from_accept(accept, query.get("includeObject"));
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        read_body(request).await?
    } else {
        Bytes::new()
    };
    let request =
        handlers::Call { state, query: &query, content_type: &content_type, body: &body, warnings: Default::default() };
    if method == Method::GET && query.flag("watch") {
        let (kind, namespace, name) = match &target {
            Target::Collection { kind, namespace } => (*kind, namespace.clone(), None),
            Target::Object { kind, namespace, name, part: Part::Main } => {
                (*kind, Some(namespace.clone()).filter(|ns| !ns.is_empty()), Some(name.clone()))
            }
            Target::Object { .. } => return Err(method_not_allowed(&method, &path)),
        };
        let mut watch = watches::WatchRequest::from_query(kind, namespace, name, &query)?;
        watch.table = table;
        return Ok(watch_response(watches::stream(&state.store, watch, state.shutdown.clone())));
    }
    let (code, document) = match (&method, &target) {
        (&Method::GET, Target::Collection { kind, namespace }) => request.list(kind, namespace.as_deref())?,
        (&Method::POST, Target::Collection { kind, namespace: Some(ns) }) => request.create(kind, ns)?,
        (&Method::POST, Target::Collection { kind, namespace: None }) if !kind.namespaced => {
            request.create(kind, "")?
        }
        (&Method::DELETE, Target::Collection { kind, namespace }) => {
            request.delete_collection(kind, namespace.as_deref())?
        }
        (&Method::GET, Target::Object { namespace, name, part: Part::Log, .. }) => {
            return request.logs(namespace, name).await;
        }
        (&Method::GET, Target::Object { kind, namespace, name, .. }) => request.get(kind, namespace, name)?,
        (&Method::PUT, Target::Object { kind, namespace, name, part: part @ (Part::Main | Part::Status) }) => {
            request.replace(kind, namespace, name, *part)?
        }
        (&Method::PATCH, Target::Object { kind, namespace, name, part: part @ (Part::Main | Part::Status) }) => {
            request.patch(kind, namespace, name, *part)?
        }
        (&Method::DELETE, Target::Object { kind, namespace, name, part: Part::Main }) => {
            request.delete(kind, namespace, name)?
        }
        _ => return Err(method_not_allowed(&method, &path)),
    };
    let document = match (&method, &target, table) {
        (&Method::GET, Target::Collection { kind, .. }, Some(table)) => {
            let items: Vec<&Value> = document["items"].as_array().into_iter().flatten().collect();
            let resource_version = document.pointer("/metadata/resourceVersion").and_then(Value::as_str);
            table.render(kind, &items, resource_version.and_then(|rv| rv.parse().ok()))
        }
        (&Method::GET, Target::Object { kind, part: Part::Main, .. }, Some(table)) => {
            table.render(kind, &[&document], None)
        }
        _ => document,
    };
    let mut response = json_response(code, &document);
    // A poisoned lock only means a handler panicked while pushing a warning.
    for warning in request.warnings.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Ok(value) = header::HeaderValue::from_str(&warning_header(warning)) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    Ok(response)
}

/// A `Warning` header value as the API server writes it: `299 - "<text>"`.
fn warning_header(text: &str) -> String {
    format!("299 - {}", validation::quote(text))
}

fn method_not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method} {path})"
    ))
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!("reading the request body: {e}"))),
    }
}

/// The resource a path names, if any (discovery paths are answered before this).
pub(super) fn parse_target(kinds: &Kinds, path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let kind = |plural: &str| kinds.by_plural(group, version, plural);
    let object = |kind: &'static ResourceKind, namespace: &str, name: &str, part: Option<&str>| {
        let part = match part {
            None => Part::Main,
            Some("status") if kind.status_subresource => Part::Status,
            Some("log") if kind == &kinds::POD => Part::Log,
            Some(_) => return None,
        };
        Some(Target::Object { kind, namespace: namespace.into(), name: name.into(), part })
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if kind(plural).is_some_and(|k| k.namespaced) => {
            let kind = kind(plural)?;
            match tail {
                [] => Some(Target::Collection { kind, namespace: Some((*ns).into()) }),
                [name] => object(kind, ns, name, None),
                [name, part] => object(kind, ns, name, Some(part)),
                _ => None,
            }
        }
        [plural] => Some(Target::Collection { kind: kind(plural)?, namespace: None }),
        [plural, name] if kind(plural).is_some_and(|k| !k.namespaced) => object(kind(plural)?, "", name, None),
        [plural, name, part] if kind(plural).is_some_and(|k| !k.namespaced) => {
            object(kind(plural)?, "", name, Some(part))
        }
        _ => None,
    }
}

/// Query parameters, percent-decoded; a repeated key keeps its last value.
#[derive(Debug, Default)]
pub(super) struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: &str) -> Self {
        Query(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key), percent_decode(value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A boolean parameter: `true` or `1`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON document with `code`.
pub(super) fn json_response(code: StatusCode, document: &Value) -> Response<Body> {
    // Serializing a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    response(code, "application/json", Bytes::from(bytes))
}

pub(super) fn text_response(code: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    response(code, "text/plain; charset=utf-8", text.into())
}

/// An error as the `Status` document Kubernetes clients expect.
/// A failure [`Disruptions`] asked for; a 429 says when to come back, as kube-apiserver's do.
fn disrupted_response(code: u16) -> Response<Body> {
    let mut response = error_response(&ApiError::disrupted(code));
    if code == 429 {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

pub(super) fn error_response(error: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

fn watch_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn response(code: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(bytes).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// What `/version` answers; kubectl prints it and checks the skew against itself.
fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-loopback",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Writes a kubeconfig whose current context `loopback` points at `server_url` (for example
/// `https://127.0.0.1:6443`) with the server's CA and the bearer token of `credentials`, and
/// the namespace `default`. The file is readable by its owner only: it holds the token.
///
/// # Errors
/// Writing the file.
pub fn write_kubeconfig(path: &Path, server_url: &str, credentials: &Credentials) -> std::io::Result<()> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // JSON strings are valid YAML scalars, so no value needs further quoting rules.
    let server = Value::String(server_url.to_string());
    let ca = Value::String(base64::engine::general_purpose::STANDARD.encode(&credentials.ca_pem));
    let token = Value::String(credentials.token.clone());
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: loopback
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: loopback
  user:
    token: {token}
contexts:
- name: loopback
  context:
    cluster: loopback
    user: loopback
    namespace: default
current-context: loopback
preferences: {{}}
"
    );
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode through `open`.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_group_paths() {
        let collection =
            |kind, namespace: Option<&str>| Target::Collection { kind, namespace: namespace.map(String::from) };
        let object = |kind, namespace: &str, name: &str, part| Target::Object {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            part,
        };
        assert_eq!(parse_target(&Kinds::built_in(), "/api/v1/namespaces"), Some(collection(&kinds::NAMESPACE, None)));
        assert_eq!(
            parse_target(&Kinds::built_in(), "/api/v1/namespaces/a"),
            Some(object(&kinds::NAMESPACE, "", "a", Part::Main))
        );
        assert_eq!(
            parse_target(&Kinds::built_in(), "/api/v1/namespaces/a/status"),
            Some(object(&kinds::NAMESPACE, "", "a", Part::Status))
        );
        assert_eq!(
            parse_target(&Kinds::built_in(), "/api/v1/namespaces/a/secrets"),
            Some(collection(&kinds::SECRET, Some("a")))
        );
        assert_eq!(parse_target(&Kinds::built_in(), "/api/v1/secrets"), Some(collection(&kinds::SECRET, None)));
        assert_eq!(
            parse_target(&Kinds::built_in(), "/api/v1/namespaces/a/pods/p/log"),
            Some(object(&kinds::POD, "a", "p", Part::Log))
        );
        assert_eq!(
            parse_target(&Kinds::built_in(), "/apis/projectcontour.io/v1/namespaces/a/httpproxies/p/status"),
            Some(object(&kinds::HTTP_PROXY, "a", "p", Part::Status))
        );
    }

    #[test]
    fn unknown_paths_and_subresources() {
        for path in [
            "/api/v1/secrets/s",
            "/api/v1/namespaces/a/secrets/s/status",
            "/api/v1/namespaces/a/configmaps/c/log",
            "/api/v1/namespaces/a/namespaces",
            "/apis/example.com/v1/things",
            "/api/v2/pods",
            "/metrics",
        ] {
            assert_eq!(parse_target(&Kinds::built_in(), path), None, "{path}");
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        let query = Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&empty=&bad=%zz%4");
        assert_eq!(query.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(query.flag("watch"));
        assert_eq!(query.get("empty"), None);
        assert_eq!(query.get("bad"), Some("%zz%4"));
    }

    #[test]
    fn kubeconfig_names_the_server() {
        let dir = std::env::temp_dir().join(format!("loopback-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(&path, "an earlier, world-readable file").unwrap();
        let credentials = Credentials::generate().unwrap();
        write_kubeconfig(&path, "https://127.0.0.1:1234", &credentials).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("server: \"https://127.0.0.1:1234\""), "{text}");
        assert!(text.contains(&format!("token: \"{}\"", credentials.token)), "{text}");
        assert!(text.contains("certificate-authority-data: \"LS0t"), "{text}");
        assert!(text.contains("current-context: loopback"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
