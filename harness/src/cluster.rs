//! The cluster driver: everything the harness does to a cluster, through kube-rs and a
//! kubeconfig only: [`ClusterClient`].
//!
//! It is the same code for kind and for loopback. Waits follow watches and the caller sets
//! every time limit. What fails in a way that may pass ([`transient`]: 429 and 5xx answers,
//! broken connections) is tried again, for at most [`RETRY_LIMIT`] per request; watches start
//! again. Anything else is reported at once, naming the object.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::{Value, json};

/// The field manager for every server-side apply the harness makes.
pub const FIELD_MANAGER: &str = "upstream-tls-conformance";
/// Label on every namespace the harness creates, valued with the run id.
pub const RUN_LABEL: &str = "upstream-tls-conformance/run";

/// `apiVersion/Kind @ namespace/name`, how messages name an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} @ {ns}/{}", self.api_version, self.kind, self.name),
            None => write!(f, "{}/{} @ {}", self.api_version, self.kind, self.name),
        }
    }
}

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot read kubeconfig {path}: {why}")]
    KubeconfigFile { path: PathBuf, why: String },
    #[error("cannot reach the cluster at {server}: {cause}")]
    Unreachable { server: String, cause: String },
    #[error("the cluster does not serve {api_version} {kind}: {}", cause(.source))]
    UnknownKind { api_version: String, kind: String, source: Box<kube::Error> },
    #[error("{object}: {action} failed{}: {}", retried(*.attempts), cause(.source))]
    Request { object: Box<ObjectRef>, action: &'static str, attempts: u32, source: Box<kube::Error> },
    #[error("{object}: {what} not seen within {limit:?}")]
    Timeout { object: Box<ObjectRef>, what: String, limit: Duration },
    #[error("object has no apiVersion, kind or metadata.name: {0}")]
    Malformed(String),
    #[error("{object}: a pod cannot start: {reason}")]
    CannotStart { object: Box<ObjectRef>, reason: String },
    #[error("{object}: {what} could not be followed: {message}")]
    Watch { object: Box<ObjectRef>, what: String, message: String },
    #[error("{object}: not applied: {why}")]
    Confined { object: Box<ObjectRef>, why: String },
}

impl ClusterError {
    /// Whether the user's input is at fault: a kubeconfig that is not a regular file of a sane
    /// size holding YAML.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, ClusterError::KubeconfigFile { .. })
    }
}

/// The largest kubeconfig file read: real ones are a few kilobytes.
const KUBECONFIG_LIMIT: u64 = 4 * 1024 * 1024;

/// The kubeconfig files a connection reads: the one given, else those `KUBECONFIG` lists,
/// else `~/.kube/config`.
fn kubeconfig_files(given: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = given {
        return vec![path.to_owned()];
    }
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect(),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube/config")).into_iter().collect(),
    }
}

/// A kubeconfig that is there must be a regular file of a sane size holding YAML that stays
/// within the limits scenario files have: reading a FIFO would wait for a writer forever,
/// `/dev/zero` would never end, and a file of nested aliases would expand without end. A
/// missing one is left to kube, which says so in its words.
fn check_kubeconfig_file(path: &Path) -> Result<(), ClusterError> {
    use std::io::Read;
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let refused = |why: String| Err(ClusterError::KubeconfigFile { path: path.to_owned(), why });
    if !meta.is_file() {
        return refused("it is not a regular file".into());
    }
    if meta.len() > KUBECONFIG_LIMIT {
        return refused(format!("it is larger than {} MiB", KUBECONFIG_LIMIT / 1024 / 1024));
    }
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|file| file.take(KUBECONFIG_LIMIT).read_to_string(&mut text));
    if let Err(e) = read {
        // Unreadable: kube says so in its words.
        tracing::debug!("kubeconfig {}: {e}", path.display());
        return Ok(());
    }
    match serde_saphyr::from_str::<serde_json::Value>(&text) {
        Ok(_) => Ok(()),
        Err(e) => {
            let error = crate::scenario::load::yaml_error(path, &text, &e, (0, 0));
            let at = error.position.map_or(String::new(), |(line, column)| format!(" at line {line}, column {column}"));
            refused(format!("it is not YAML a kubeconfig can be read from{at}: {}", error.message))
        }
    }
}

/// How long a request that keeps failing in a way that may pass ([`transient`]) is made again
/// before its failure is reported. A real API server that answers 429 or 503 for longer is
/// not coming back within a scenario's limits.
pub const RETRY_LIMIT: Duration = Duration::from_secs(20);
/// The pause before the first retry; it doubles with each one, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);
/// How long the API server may keep one watch open before it ends it (and [`follow`] watches
/// again), as kube's own watcher asks: under the 5 minutes many servers allow.
const WATCH_TIMEOUT_SECONDS: u32 = 290;

fn retried(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}

/// The pause after `pause`: twice as long, up to [`LONGEST_PAUSE`].
fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(LONGEST_PAUSE)
}

/// Whether a failed request may succeed if made again: the API server is overloaded or
/// briefly failing (429, 500, 502, 503, 504), or the connection broke (refused, reset, closed
/// mid-answer). A refusal of the request itself (4xx), a certificate that is not trusted or
/// missing credentials will not pass by asking again.
pub fn transient(error: &kube::Error) -> bool {
    if let kube::Error::Api(status) = error {
        return matches!(status.code, 429 | 500 | 502 | 503 | 504);
    }
    if !matches!(error, kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)) {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
            {
                return true;
            }
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled())
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Makes `request` until it succeeds, fails in a way that will not pass (or that `retry` does
/// not pick), or has failed transiently for `budget`; pauses grow between attempts. The error
/// comes with the number of attempts made.
async fn retrying_if<T, F, Fut>(
    retry: impl Fn(&kube::Error) -> bool,
    budget: Duration,
    mut request: F,
) -> Result<T, (kube::Error, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempts = 1;
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(e) if retry(&e) && transient(&e) && started.elapsed() + pause < budget => {
                tracing::debug!(error = %e, attempts, "request failed; trying again");
                back_off(&mut pause).await;
                attempts += 1;
            }
            Err(e) => return Err((e, attempts)),
        }
    }
}

/// Waits `pause`, and makes the next one longer.
async fn back_off(pause: &mut Duration) {
    tokio::time::sleep(*pause).await;
    *pause = next_pause(*pause);
}

/// Follows the object `name` until `condition` holds for it and returns it (`None`: it does
/// not exist): one list of that object, then a watch from the list's resourceVersion, watched
/// again from the last version seen when the server ends it and listed again when that
/// version has expired (410 Gone). Transient failures ([`transient`], and 429 and 5xx watch
/// errors) are ridden out with growing pauses, for as long as the caller waits. Any other
/// failure ends the wait with its message.
async fn follow<K>(api: Api<K>, name: &str, condition: impl Fn(Option<&K>) -> bool) -> Result<Option<K>, String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let selector = format!("metadata.name={name}");
    let mut pause = FIRST_PAUSE;
    // Where the watch goes on from; `None`: list first.
    let mut version: Option<String> = None;
    loop {
        let from = match version.take() {
            Some(from) => from,
            None => match api.list(&ListParams::default().fields(&selector)).await {
                Ok(list) => {
                    let object = list.items.into_iter().next();
                    if condition(object.as_ref()) {
                        return Ok(object);
                    }
                    list.metadata.resource_version.ok_or("the API server gives no resourceVersion to watch from")?
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "listing failed; trying again");
                    back_off(&mut pause).await;
                    continue;
                }
                Err(e) => return Err(format!("listing failed: {}", cause(&e))),
            },
        };
        let params = WatchParams::default().fields(&selector).timeout(WATCH_TIMEOUT_SECONDS);
        let mut events = match api.watch(&params, &from).await {
            Ok(events) => Box::pin(events),
            Err(e) if transient(&e) => {
                tracing::debug!(error = %e, "watching failed; starting it again");
                version = Some(from);
                back_off(&mut pause).await;
                continue;
            }
            Err(e) => return Err(format!("watching failed: {}", cause(&e))),
        };
        version = Some(from);
        while let Some(event) = events.next().await {
            let (object, version_seen) = match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                    let seen = o.meta().resource_version.clone();
                    (Some(o), seen)
                }
                Ok(WatchEvent::Deleted(o)) => (None, o.meta().resource_version.clone()),
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    version = Some(bookmark.metadata.resource_version);
                    continue;
                }
                Ok(WatchEvent::Error(status)) if status.code == 410 => {
                    version = None;
                    break;
                }
                Ok(WatchEvent::Error(status)) if matches!(status.code, 429 | 500 | 502 | 503 | 504) => {
                    tracing::debug!(code = status.code, "the watch reported an error; starting it again");
                    back_off(&mut pause).await;
                    break;
                }
                Ok(WatchEvent::Error(status)) => {
                    return Err(format!("the watch reported {} {}", status.code, status.message));
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "watching failed; starting it again");
                    back_off(&mut pause).await;
                    break;
                }
                Err(e) => return Err(format!("watching failed: {}", cause(&e))),
            };
            pause = FIRST_PAUSE;
            if version_seen.is_some() {
                version = version_seen;
            }
            if condition(object.as_ref()) {
                return Ok(object);
            }
        }
    }
}

/// Container waiting reasons that mean a pod will not start by waiting longer: the image cannot
/// be pulled, the container keeps crashing, or its spec cannot be turned into a container.
pub const CANNOT_START: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How often the pods of a Deployment being waited for are checked for [`CANNOT_START`].
const POD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long the API server gets to answer the first request.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Why a request to the API server failed, in a few words: refused, a name that does not
/// resolve, a timeout, a certificate problem, missing credentials, or the innermost cause.
fn cause(error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        return match status.code {
            401 => "unauthorized: the kubeconfig's credentials are not accepted".into(),
            403 => format!("forbidden: {}", status.message),
            _ => format!("{} {}", status.code, status.message),
        };
    }
    let mut innermost: &dyn std::error::Error = error;
    let mut io_kind = None;
    while let Some(next) = innermost.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = next;
    }
    let text = innermost.to_string();
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused (is the API server running?)".into(),
        Some(std::io::ErrorKind::TimedOut) => "the connection timed out".into(),
        _ if text.contains("failed to lookup address") || text.contains("Name or service not known") => {
            format!("the host name does not resolve ({text})")
        }
        _ if text.contains("certificate") || text.contains("UnknownIssuer") => {
            format!("its TLS certificate is not accepted ({text})")
        }
        _ => text,
    }
}

/// Discovered resources by `(apiVersion, kind)`, with whether they are namespaced.
type ResourceCache = HashMap<(String, String), (ApiResource, bool)>;

/// A connection to one cluster.
#[derive(Clone)]
pub struct ClusterClient {
    client: kube::Client,
    resources: Arc<Mutex<ResourceCache>>,
    /// Set when a request failed transiently for all of [`RETRY_LIMIT`], cleared by the next
    /// success: while set, requests are made once, so that a cluster that went away costs each
    /// later request one attempt, not another [`RETRY_LIMIT`].
    unavailable: Arc<AtomicBool>,
}

impl ClusterClient {
    /// Makes `request`, again while it fails transiently ([`retrying_if`]), within
    /// [`RETRY_LIMIT`] unless the cluster was found unavailable.
    async fn retrying<T, F, Fut>(&self, request: F) -> Result<T, (kube::Error, u32)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let unavailable = self.unavailable.load(Ordering::Relaxed);
        let budget = if unavailable { Duration::ZERO } else { RETRY_LIMIT };
        let result = retrying_if(|_| true, budget, request).await;
        match &result {
            Ok(_) => self.unavailable.store(false, Ordering::Relaxed),
            Err((e, _)) if transient(e) => self.unavailable.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        result
    }

    /// Connects with a kubeconfig file (or the default one: `$KUBECONFIG`, `~/.kube/config`)
    /// and optionally a context, and checks that the API server answers an authenticated
    /// request.
    ///
    /// # Errors
    /// The kubeconfig cannot be read or the cluster does not answer.
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Self, ClusterError> {
        for path in kubeconfig_files(kubeconfig) {
            check_kubeconfig_file(&path)?;
        }
        let options = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
        let config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(ClusterError::Kubeconfig)?;
                kube::Config::from_custom_kubeconfig(file, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .map_err(ClusterError::Kubeconfig)?;
        // This driver retries what may pass itself, within its own limit.
        let mut config = config;
        config.default_retry = false;
        let server = config.cluster_url.to_string();
        let unreachable = |e: kube::Error| ClusterError::Unreachable { server: server.clone(), cause: cause(&e) };
        let client = kube::Client::try_from(config).map_err(unreachable)?;
        // An authenticated request: `/version` answers anyone, so it would not show that the
        // credentials work. The harness creates namespaces, so it may surely list them.
        // An API server that does not answer at all is reported at once; one that answers
        // 429 or 5xx gets the retries any request gets.
        let namespaces = Api::<Namespace>::all(client.clone());
        let params = ListParams::default().limit(1);
        let answered = |e: &kube::Error| matches!(e, kube::Error::Api(_));
        let check = retrying_if(answered, RETRY_LIMIT, || namespaces.list_metadata(&params));
        match tokio::time::timeout(CONNECT_LIMIT, check).await {
            Ok(Ok(_)) => Ok(ClusterClient { client, resources: Arc::default(), unavailable: Arc::default() }),
            Ok(Err((e, _))) => Err(unreachable(e)),
            Err(_) => Err(ClusterError::Unreachable {
                server,
                cause: format!("no answer within {}s", CONNECT_LIMIT.as_secs()),
            }),
        }
    }

    async fn resource(&self, api_version: &str, kind: &str) -> Result<(ApiResource, bool), ClusterError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) = self
            .retrying(|| kube::discovery::pinned_kind(&self.client, &gvk))
            .await
            .map_err(|(source, attempts)| {
                let unknown = match &source {
                    kube::Error::Api(status) => status.code == 404,
                    _ => matches!(source, kube::Error::Discovery(_)),
                };
                if unknown {
                    ClusterError::UnknownKind {
                        api_version: api_version.to_string(),
                        kind: kind.to_string(),
                        source: Box::new(source),
                    }
                } else {
                    let kinds = ObjectRef {
                        api_version: api_version.to_string(),
                        kind: kind.to_string(),
                        namespace: None,
                        name: "*".into(),
                    };
                    failed(kinds, "discovery")((source, attempts))
                }
            })?;
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.resources.lock().unwrap_or_else(|e| e.into_inner()).insert(key, found.clone());
        Ok(found)
    }

    async fn api(&self, object: &ObjectRef) -> Result<Api<DynamicObject>, ClusterError> {
        let (resource, namespaced) = self.resource(&object.api_version, &object.kind).await?;
        Ok(match (&object.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// Whether the cluster serves `kind` of `api_version`.
    ///
    /// # Errors
    /// It does not, or discovery failed.
    pub async fn serves(&self, api_version: &str, kind: &str) -> Result<(), ClusterError> {
        self.resource(api_version, kind).await.map(|_| ())
    }

    /// Whether some HTTPProxy in the cluster is a valid root (has a virtual host and status
    /// `valid`): then Contour has programmed Envoy's HTTP listener.
    ///
    /// # Errors
    /// HTTPProxies cannot be listed.
    pub async fn has_valid_root_proxy(&self) -> Result<bool, ClusterError> {
        let (resource, _) = self.resource("projectcontour.io/v1", "HTTPProxy").await?;
        let api: Api<kube::api::DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let params = kube::api::ListParams::default();
        let every = ObjectRef {
            api_version: "projectcontour.io/v1".into(),
            kind: "HTTPProxy".into(),
            namespace: None,
            name: "(every namespace)".into(),
        };
        let list = self.retrying(|| api.list(&params)).await.map_err(failed(every, "list"))?;
        Ok(list.items.iter().any(|proxy| {
            proxy.data["spec"]["virtualhost"].is_object() && proxy.data["status"]["currentStatus"] == "valid"
        }))
    }

    /// The kube-rs client underneath, for what this driver does not wrap.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Creates a namespace labelled with the run id.
    ///
    /// # Errors
    /// The API server refuses it.
    pub async fn create_namespace(&self, name: &str, run_id: &str) -> Result<(), ClusterError> {
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {RUN_LABEL: run_id}},
        }))
        .map_err(|e| ClusterError::Malformed(e.to_string()))?;
        let api = Api::<Namespace>::all(self.client.clone());
        let params = PostParams::default();
        match self.retrying(|| api.create(&params, &namespace)).await {
            Ok(_) => Ok(()),
            // An attempt whose answer was lost may have created it: then it is this run's.
            Err((kube::Error::Api(status), attempts)) if status.code == 409 && attempts > 1 => {
                match self.retrying(|| api.get_opt(name)).await {
                    Ok(Some(found))
                        if found
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(RUN_LABEL))
                            .is_some_and(|id| id == run_id) =>
                    {
                        Ok(())
                    }
                    _ => Err(failed(namespace_ref(name), "create")((kube::Error::Api(status), attempts))),
                }
            }
            Err(e) => Err(failed(namespace_ref(name), "create")(e)),
        }
    }

    /// Server-side applies `object`; a namespaced object without a namespace goes to
    /// `default_namespace`. Returns how the object is named.
    ///
    /// # Errors
    /// Unknown kind, or the API server refuses the object (admission, conflicts).
    pub async fn apply(&self, object: &Value, default_namespace: &str) -> Result<ObjectRef, ClusterError> {
        self.apply_within(object, default_namespace, None).await
    }

    /// Whether objects of this kind live in namespaces.
    ///
    /// # Errors
    /// The cluster does not serve the kind.
    pub async fn is_namespaced(&self, api_version: &str, kind: &str) -> Result<bool, ClusterError> {
        Ok(self.resource(api_version, kind).await?.1)
    }

    /// Applies an object like [`ClusterClient::apply`], but only into one of `namespaces`
    /// (the first is the default): a scenario's objects stay where its clean-up reaches.
    ///
    /// # Errors
    /// As [`ClusterClient::apply`], and [`ClusterError::Confined`] for an object of another
    /// namespace or of none (nothing is applied then).
    pub async fn apply_confined(&self, object: &Value, namespaces: &[&str]) -> Result<ObjectRef, ClusterError> {
        self.apply_within(object, namespaces.first().copied().unwrap_or_default(), Some(namespaces)).await
    }

    async fn apply_within(
        &self,
        object: &Value,
        default_namespace: &str,
        confined_to: Option<&[&str]>,
    ) -> Result<ObjectRef, ClusterError> {
        let mut reference = object_ref(object)?;
        let (_, namespaced) = self.resource(&reference.api_version, &reference.kind).await?;
        let mut object = object.clone();
        if namespaced {
            let ns = reference.namespace.get_or_insert_with(|| default_namespace.to_string()).clone();
            object["metadata"]["namespace"] = json!(ns);
        } else {
            reference.namespace = None;
        }
        if let Some(allowed) = confined_to {
            let why = match &reference.namespace {
                None => Some(format!(
                    "{} objects belong to no namespace, and a scenario may only make objects in its own",
                    reference.kind
                )),
                Some(ns) if !allowed.contains(&ns.as_str()) => {
                    Some(format!("namespace {ns} is not one of the scenario's own ({})", allowed.join(", ")))
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(ClusterError::Confined { object: Box::new(reference), why });
            }
        }
        let api = self.api(&reference).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&object);
        self.retrying(|| api.patch(&reference.name, &params, &patch))
            .await
            .map_err(failed(reference.clone(), "apply"))?;
        Ok(reference)
    }

    /// The object as the cluster has it now, or `None` if it does not exist.
    ///
    /// # Errors
    /// Unknown kind, or the API server refuses the read.
    pub async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let api = self.api(object).await?;
        let found = self.retrying(|| api.get_opt(&object.name)).await.map_err(failed(object.clone(), "get"))?;
        found
            .map(|o| serde_json::to_value(o).map_err(|e| ClusterError::Malformed(format!("{object}: {e}"))))
            .transpose()
    }

    /// Deletes an object; an object already gone is fine.
    ///
    /// # Errors
    /// The API server refuses the deletion.
    pub async fn delete(&self, object: &ObjectRef) -> Result<(), ClusterError> {
        let api = self.api(object).await?;
        let params = DeleteParams::default();
        match self.retrying(|| api.delete(&object.name, &params)).await {
            Ok(_) => Ok(()),
            Err((kube::Error::Api(status), _)) if status.code == 404 => Ok(()),
            Err(source) => Err(failed(object.clone(), "delete")(source)),
        }
    }

    /// Deletes an object and waits until it is gone.
    ///
    /// # Errors
    /// The deletion is refused or the object is still there after `limit`.
    pub async fn delete_and_wait(&self, object: &ObjectRef, limit: Duration) -> Result<(), ClusterError> {
        self.delete(object).await?;
        let api = self.api(object).await?;
        let gone = |o: Option<&DynamicObject>| o.is_none();
        match tokio::time::timeout(limit, follow(api, &object.name, gone)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(watch_failed(object, "its deletion", message)),
            Err(_) => Err(ClusterError::Timeout { object: Box::new(object.clone()), what: "deletion".into(), limit }),
        }
    }

    /// Waits until a Deployment reports the Available condition for its current generation,
    /// failing at once when one of its pods reports a container that cannot start
    /// ([`CANNOT_START`]) rather than after `limit`.
    ///
    /// # Errors
    /// Not available within `limit`, or a pod cannot start.
    pub async fn wait_deployment_available(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let api = Api::<Deployment>::namespaced(self.client.clone(), namespace);
        let available = |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                let status = d.status.as_ref();
                let current = status.and_then(|s| s.observed_generation) == d.metadata.generation;
                let condition = status.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
                });
                current && condition
            })
        };
        let object = ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        };
        // Boxed: scenario futures are deep already, and these would add their whole state to
        // each one's stack frame.
        let stuck = Box::pin(async {
            loop {
                if let Some(reason) = self.stuck_pod(&api, namespace, name).await {
                    return reason;
                }
                tokio::time::sleep(POD_CHECK_INTERVAL).await;
            }
        });
        let available = Box::pin(follow(api.clone(), name, available));
        let wait = async {
            tokio::select! {
                result = available => Ok(result),
                reason = stuck => Err(reason),
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(message))) => Err(watch_failed(&object, "condition Available=True", message)),
            Ok(Err(reason)) => Err(ClusterError::CannotStart { object: Box::new(object), reason }),
            Err(_) => {
                Err(ClusterError::Timeout { object: Box::new(object), what: "condition Available=True".into(), limit })
            }
        }
    }

    /// The first pod of Deployment `name` with a container that cannot start, described with
    /// its reason, message and last events; `None` while every pod may still come up.
    async fn stuck_pod(&self, deployments: &Api<Deployment>, namespace: &str, name: &str) -> Option<String> {
        let deployment = self.retrying(|| deployments.get_opt(name)).await.ok().flatten()?;
        let labels = deployment.spec.selector.match_labels?;
        let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().labels(&selector.join(","));
        let listed = self.retrying(|| pods.list(&params)).await.ok()?;
        for pod in listed.items {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
            for status in statuses {
                let Some(waiting) = status.state.and_then(|s| s.waiting) else { continue };
                let reason = waiting.reason.unwrap_or_default();
                if CANNOT_START.contains(&reason.as_str()) {
                    let message = waiting.message.map(|m| format!(": {m}")).unwrap_or_default();
                    let events = self.pod_events(namespace, &pod_name).await;
                    return Some(format!("pod {pod_name}, container {}: {reason}{message}{events}", status.name));
                }
            }
        }
        None
    }

    /// The last few events about a pod, as `; events: reason: message, ...`, or nothing.
    async fn pod_events(&self, namespace: &str, pod: &str) -> String {
        let api = Api::<k8s_openapi::api::core::v1::Event>::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        let Ok(events) = self.retrying(|| api.list(&params)).await else { return String::new() };
        let texts: Vec<String> = events
            .items
            .iter()
            .rev()
            .take(5)
            .map(|e| format!("{}: {}", e.reason.as_deref().unwrap_or(""), e.message.as_deref().unwrap_or("")))
            .collect();
        if texts.is_empty() { String::new() } else { format!("; events: {}", texts.join(", ")) }
    }

    /// Waits until an EndpointSlice of Service `namespace/name` lists a ready endpoint.
    ///
    /// # Errors
    /// None within `limit`, or the listing fails.
    pub async fn wait_service_endpoints(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
    ) -> Result<(), ClusterError> {
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), namespace);
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "Service".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        };
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        let ready = async {
            loop {
                let slices = self
                    .retrying(|| api.list(&params))
                    .await
                    .map_err(failed(object.clone(), "list EndpointSlices of"))?;
                let any_ready = slices
                    .items
                    .iter()
                    .flat_map(|slice| slice.endpoints.iter().flatten())
                    .any(|endpoint| endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false));
                if any_ready {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(limit, ready).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Timeout {
                object: Box::new(object),
                what: "an EndpointSlice with a ready endpoint".into(),
                limit,
            }),
        }
    }

    /// Follows an object until `matches` holds for it; returns the matching object.
    /// On timeout returns the last version seen (or `None` if it never existed).
    ///
    /// # Errors
    /// The kind is unknown or the watch fails.
    pub async fn wait_for(
        &self,
        object: &ObjectRef,
        limit: Duration,
        matches: impl Fn(&Value) -> bool + Send + 'static,
    ) -> Result<Result<Value, Option<Value>>, ClusterError> {
        let api = self.api(object).await?;
        let last: Arc<Mutex<Option<Value>>> = Arc::default();
        let seen = last.clone();
        let condition = move |o: Option<&DynamicObject>| {
            let value = o.and_then(|o| serde_json::to_value(o).ok());
            let ok = value.as_ref().is_some_and(&matches);
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = value;
            ok
        };
        match tokio::time::timeout(limit, follow(api, &object.name, condition)).await {
            Ok(Ok(Some(found))) => Ok(Ok(serde_json::to_value(found).unwrap_or_default())),
            Ok(Ok(None)) => Ok(Err(None)),
            Ok(Err(message)) => Err(watch_failed(object, "its state", message)),
            Err(_) => Ok(Err(last.lock().unwrap_or_else(|e| e.into_inner()).take())),
        }
    }

    /// Asks for a namespace to be deleted, without waiting for it to go: on a real cluster
    /// that takes seconds (its pods stop, the namespace controller empties it), which no
    /// scenario needs to wait for. [`ClusterClient::delete_namespaces_labelled`] waits for a
    /// whole run's at once.
    ///
    /// # Errors
    /// The deletion is refused.
    pub async fn start_namespace_deletion(&self, name: &str) -> Result<(), ClusterError> {
        let api = Api::<Namespace>::all(self.client.clone());
        let params = DeleteParams::default();
        match self.retrying(|| api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err((kube::Error::Api(status), _)) if status.code == 404 => Ok(()),
            Err(e) => Err(failed(namespace_ref(name), "delete")(e)),
        }
    }

    /// Deletes a namespace and waits until it is gone.
    ///
    /// # Errors
    /// The deletion is refused or the namespace is still there after `limit`.
    pub async fn delete_namespace(&self, name: &str, limit: Duration) -> Result<(), ClusterError> {
        let api = Api::<Namespace>::all(self.client.clone());
        let params = DeleteParams::default();
        let uid = match self.retrying(|| api.delete(name, &params)).await {
            Ok(either) => either.map_left(|ns| ns.metadata.uid).left_or(None),
            Err((kube::Error::Api(status), _)) if status.code == 404 => return Ok(()),
            Err(source) => return Err(failed(namespace_ref(name), "delete")(source)),
        };
        let Some(uid) = uid else { return Ok(()) };
        // Gone, or replaced by a namespace of the same name.
        let deleted = |ns: Option<&Namespace>| ns.is_none_or(|ns| ns.metadata.uid.as_deref() != Some(uid.as_str()));
        match tokio::time::timeout(limit, follow(api, name, deleted)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(watch_failed(&namespace_ref(name), "its deletion", message)),
            Err(_) => {
                Err(ClusterError::Timeout { object: Box::new(namespace_ref(name)), what: "deletion".into(), limit })
            }
        }
    }

    /// Deletes every namespace whose labels match `selector` (`RUN_LABEL=<run id>`, or
    /// `RUN_LABEL` for every run's) and, with `older_than`, that was created longer ago than
    /// that, all at once, and waits until they are gone or `limit` has passed. Returns their
    /// names.
    ///
    /// # Errors
    /// Listing fails, or a deletion fails or outlasts `limit` (the others are still deleted).
    pub async fn delete_namespaces_labelled(
        &self,
        selector: &str,
        older_than: Option<Duration>,
        limit: Duration,
    ) -> Result<Vec<String>, ClusterError> {
        let api = Api::<Namespace>::all(self.client.clone());
        let params = ListParams::default().labels(selector);
        let listed = self.retrying(|| api.list(&params)).await.map_err(failed(
            ObjectRef { api_version: "v1".into(), kind: "Namespace".into(), namespace: None, name: selector.into() },
            "list",
        ))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let old_enough = |ns: &Namespace| {
            let Some(age) = older_than else { return true };
            let created = ns.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
            created.is_some_and(|created| now.as_secs() as i64 - created > age.as_secs() as i64)
        };
        let names: Vec<String> =
            listed.items.into_iter().filter(|ns| old_enough(ns)).filter_map(|ns| ns.metadata.name).collect();
        let deletions = names.iter().map(|name| self.delete_namespace(name, limit));
        for result in futures::future::join_all(deletions).await {
            result?;
        }
        Ok(names)
    }

    /// The logs of every pod in `namespace` matching `selector`, as `(pod name, state, text)`
    /// where the state is [`pod_state`]'s.
    ///
    /// # Errors
    /// Listing pods or reading a log fails.
    pub async fn pod_logs(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<(String, String, String)>, ClusterError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().labels(selector);
        let pods = self.retrying(|| api.list(&params)).await.map_err(failed(pods_ref(namespace), "list"))?;
        let mut logs = Vec::new();
        for pod in pods {
            let state = pod_state(&pod);
            let name = pod.metadata.name.unwrap_or_default();
            let pod = ObjectRef { name: name.clone(), ..pods_ref(namespace) };
            let params = LogParams::default();
            let text = self.retrying(|| api.logs(&name, &params)).await.map_err(failed(pod, "read logs"))?;
            logs.push((name, state, text));
        }
        Ok(logs)
    }
}

/// A pod's state in a few words: its phase, whether it is ready, how often its container
/// restarted and, when it is not running, why (`Running, not ready, restarted 3 times,
/// waiting: CrashLoopBackOff: nginx exited: ...`).
pub fn pod_state(pod: &Pod) -> String {
    let Some(status) = &pod.status else { return "no status".into() };
    let mut words = vec![status.phase.clone().unwrap_or_else(|| "no phase".into())];
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    words.push(if ready { "ready".into() } else { "not ready".into() });
    for container in status.container_statuses.iter().flatten() {
        match container.restart_count {
            0 => {}
            1 => words.push("restarted once".into()),
            n => words.push(format!("restarted {n} times")),
        }
        let state = container.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("no reason");
            let message = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            words.push(format!("waiting: {reason}{message}"));
        } else if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
            let reason = terminated.reason.as_deref().unwrap_or("no reason");
            words.push(format!("terminated: {reason} (exit code {})", terminated.exit_code));
        }
    }
    words.join(", ")
}

/// How `object` names itself.
///
/// # Errors
/// It lacks apiVersion, kind or metadata.name.
pub fn object_ref(object: &Value) -> Result<ObjectRef, ClusterError> {
    let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    match (field("/apiVersion"), field("/kind"), field("/metadata/name")) {
        (Some(api_version), Some(kind), Some(name)) => {
            Ok(ObjectRef { api_version, kind, namespace: field("/metadata/namespace"), name })
        }
        _ => Err(ClusterError::Malformed(truncate(&object.to_string(), 200))),
    }
}

/// Turns a kube error, and the number of attempts made, into a [`ClusterError::Request`]
/// about `object`.
fn failed(object: ObjectRef, action: &'static str) -> impl FnOnce((kube::Error, u32)) -> ClusterError {
    move |(source, attempts)| ClusterError::Request {
        object: Box::new(object),
        action,
        attempts,
        source: Box::new(source),
    }
}

fn watch_failed(object: &ObjectRef, what: &str, message: String) -> ClusterError {
    ClusterError::Watch { object: Box::new(object.clone()), what: what.into(), message }
}

/// The Namespace `name`.
pub(crate) fn namespace_ref(name: &str) -> ObjectRef {
    ObjectRef { api_version: "v1".into(), kind: "Namespace".into(), namespace: None, name: name.into() }
}

fn pods_ref(namespace: &str) -> ObjectRef {
    ObjectRef { api_version: "v1".into(), kind: "Pod".into(), namespace: Some(namespace.into()), name: "*".into() }
}

/// At most `max` characters of `s`, keys redacted before the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let s = &crate::redaction::redact(s);
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_must_be_a_regular_file_of_a_sane_size() {
        let dir = std::env::temp_dir().join(format!("utls-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        let refused = |path: &Path| match check_kubeconfig_file(path) {
            Err(ClusterError::KubeconfigFile { why, .. }) => why,
            other => panic!("{}: {other:?}", path.display()),
        };
        if made {
            assert_eq!(refused(&fifo), "it is not a regular file");
        }
        assert_eq!(refused(Path::new("/dev/zero")), "it is not a regular file");
        assert_eq!(refused(&dir), "it is not a regular file");
        let big = dir.join("big");
        std::fs::File::create(&big).unwrap().set_len(KUBECONFIG_LIMIT + 1).unwrap();
        assert_eq!(refused(&big), "it is larger than 4 MiB");
        let fine = dir.join("config");
        std::fs::write(&fine, "apiVersion: v1\n").unwrap();
        assert!(check_kubeconfig_file(&fine).is_ok());
        // A missing file is kube's to report.
        assert!(check_kubeconfig_file(&dir.join("missing")).is_ok());
        assert_eq!(kubeconfig_files(Some(&fine)), vec![fine.clone()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("m", "r").with_code(code)))
    }

    #[test]
    fn overload_server_errors_and_broken_connections_are_transient_refusals_are_not() {
        for code in [429, 500, 502, 503, 504] {
            assert!(transient(&api_error(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!transient(&api_error(code)), "{code}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(transient(&kube::Error::Service(Box::new(reset))));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!transient(&kube::Error::Service(Box::new(denied))));
        assert!(!transient(&kube::Error::LinesCodecMaxLineLengthExceeded));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_within_the_budget_and_counted() {
        let mut calls = 0;
        let result = retrying_if(
            |_| true,
            RETRY_LIMIT,
            || {
                calls += 1;
                let answer = if calls < 3 { Err(api_error(503)) } else { Ok(calls) };
                async move { answer }
            },
        )
        .await;
        assert_eq!(result.ok(), Some(3));

        // Pauses of 100, 200 and 400 ms fit in 800 ms, the next one (800 ms) would not: four
        // attempts, or fewer on a machine so busy that the pauses overrun.
        let budget = Duration::from_millis(800);
        let outage = || async { Err::<(), _>(api_error(503)) };
        let Err((error, attempts)) = retrying_if(|_| true, budget, outage).await else { unreachable!() };
        assert!(cause(&error).contains("503") && (2..=4).contains(&attempts), "{attempts}: {error}");

        let refusal = || async { Err::<(), _>(api_error(422)) };
        let Err((_, attempts)) = retrying_if(|_| true, RETRY_LIMIT, refusal).await else { unreachable!() };
        assert_eq!(attempts, 1, "a refusal is not asked again");

        let Err((_, attempts)) = retrying_if(|_| false, RETRY_LIMIT, outage).await else { unreachable!() };
        assert_eq!(attempts, 1, "only what the caller picks is asked again");
    }

    #[test]
    fn pod_states_say_why_a_pod_does_not_serve() {
        let pod: Pod = serde_json::from_value(json!({
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "nginx", "image": "nginx", "imageID": "", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "nginx exited: signal 9"}},
                }],
            },
        }))
        .unwrap();
        assert_eq!(
            pod_state(&pod),
            "Running, not ready, restarted 3 times, waiting: CrashLoopBackOff: nginx exited: signal 9"
        );
        let ready: Pod = serde_json::from_value(json!({
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        assert_eq!(pod_state(&ready), "Running, ready");
    }
}
