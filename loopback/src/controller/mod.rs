//! The reference controller: the upstream TLS contract (docs/contract.md) as code.
//!
//! [`Controller::run`] rebuilds the whole configuration whenever what it reads changes, as
//! Contour rebuilds its DAG: every root HTTPProxy is processed with what it includes ([`proxy::process_root`]), then every
//! Ingress ([`ingress::routes`]); the resulting [`RouteTable`] is handed to the data plane,
//! then each proxy's status is written. Routes go out before statuses, so a client that sees
//! `valid` can already send traffic.
//!
//! - [`protocol`]: which protocol speaks to a Service port (P1-P6).
//! - [`validation`]: CA Secrets, delegation and subject names (V2-V5, S1, S3, S6).
//! - [`client_certificate`]: the install-wide Envoy client certificate (C1-C5).
//! - [`upstream`]: transport, TLS settings, SNI and endpoints of one Service port (P5, N1, N2).
//! - [`status`]: the status documents (S2).
//!
//! Every [`Fault`](crate::Fault) is implemented here (or, for the failure response, chosen
//! here for the data plane), next to the behaviour it breaks.

pub mod client_certificate;
pub mod ingress;
pub mod protocol;
pub mod proxy;
pub mod secrets;
pub mod status;
pub mod upstream;
pub mod validation;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::watch;

use crate::api::kinds::{
    HTTP_PROXY, INGRESS, NAMESPACE, POD, ResourceKind, SECRET, SERVICE, TLS_CERTIFICATE_DELEGATION,
};
use crate::api::store::{Batch, EventType, Store, Subresource, WatchEvent, now_rfc3339};
use crate::config::{Fault, LoopbackConfig};
use crate::dataplane::RouteTable;
use crate::dataplane::table::{UpstreamFailureResponse, VirtualHost};
use crate::rebuilds::Rebuilds;
use client_certificate::ClientCertificateState;
use secrets::{SecretSnapshot, Secrets};
use status::ProxyStatus;

/// What one rebuild reads: the store, the config and install-wide state.
pub struct Context<'a> {
    pub store: &'a Store,
    pub secrets: Secrets<'a>,
    pub config: &'a LoopbackConfig,
    pub client_certificate: &'a ClientCertificateState,
    /// CA bundles as first seen, for the `stale-ca-bundle` fault only.
    pub ca_cache: &'a Mutex<HashMap<String, validation::CaBundle>>,
    /// Delegations once granted, for the `delegation-never-withdrawn` fault only.
    pub delegation_grants: &'a Mutex<HashSet<String>>,
}

/// What a rebuild reads (Pods for endpoints, Namespaces for the Secrets snapshot): a change
/// to anything else does not wake the controller.
static WATCHED: [&ResourceKind; 7] =
    [&HTTP_PROXY, &INGRESS, &SERVICE, &POD, &SECRET, &TLS_CERTIFICATE_DELEGATION, &NAMESPACE];

/// When the controller rebuilds under a latency profile, as Contour's event handler decides
/// (`internal/contour/handler.go`): a change that comes more than the longest hold-off after
/// the last rebuild is acted on at once; any other change (re)starts a wait of the hold-off
/// delay, so a burst costs one rebuild, due at the latest when a change comes after the
/// longest hold-off.
#[derive(Debug)]
struct HoldOff<I> {
    delay: std::time::Duration,
    max_delay: std::time::Duration,
    last_rebuild: I,
    deadline: Option<I>,
}

impl<I> HoldOff<I>
where
    I: Copy + Ord + std::ops::Add<std::time::Duration, Output = I> + std::ops::Sub<I, Output = std::time::Duration>,
{
    /// Contour counts its first wait from its start.
    fn new(delay: std::time::Duration, max_delay: std::time::Duration, start: I) -> Self {
        HoldOff { delay, max_delay, last_rebuild: start, deadline: None }
    }

    /// A change to act on came at `now`.
    fn changed(&mut self, now: I) {
        let wait = if now - self.last_rebuild > self.max_delay { std::time::Duration::ZERO } else { self.delay };
        self.deadline = Some(now + wait);
    }

    /// When to rebuild, if a change waits.
    fn deadline(&self) -> Option<I> {
        self.deadline
    }

    /// The controller rebuilt at `now`.
    fn rebuilt(&mut self, now: I) {
        self.last_rebuild = now;
        self.deadline = None;
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The reference HTTPProxy controller.
pub struct Controller {
    store: Store,
    config: Arc<LoopbackConfig>,
    routes: watch::Sender<Arc<RouteTable>>,
    ca_cache: Mutex<HashMap<String, validation::CaBundle>>,
    delegation_grants: Mutex<HashSet<String>>,
    /// Each Secret's `data` as last seen (`namespace/name`), to tell what a change was.
    secret_data: Mutex<HashMap<String, Value>>,
    /// The first usable client certificate, for the `stale-client-certificate` fault only.
    client_cache: Mutex<Option<ClientCertificateState>>,
    /// Secrets as last refreshed, for the `ignore-secret-events` fault only.
    secret_snapshot: SecretSnapshot,
    /// Each proxy's metadata as last seen, to tell a status write from a change.
    proxy_metadata: Mutex<HashMap<String, Value>>,
    /// Where each rebuild is told ([`Controller::telling`]).
    rebuilds: Arc<Rebuilds>,
}

impl Controller {
    pub fn new(store: Store, config: Arc<LoopbackConfig>, routes: watch::Sender<Arc<RouteTable>>) -> Self {
        Controller {
            store,
            config,
            routes,
            ca_cache: Mutex::default(),
            delegation_grants: Mutex::default(),
            secret_data: Mutex::default(),
            client_cache: Mutex::default(),
            secret_snapshot: SecretSnapshot::default(),
            proxy_metadata: Mutex::default(),
            rebuilds: Rebuilds::new(),
        }
    }

    /// Tells `rebuilds` when each rebuild begins.
    #[must_use]
    pub fn telling(mut self, rebuilds: Arc<Rebuilds>) -> Self {
        self.rebuilds = rebuilds;
        self
    }

    /// Reconciles on every change to what it reads until `shutdown` turns true; a burst of
    /// changes costs one rebuild. Under a latency profile it holds off as Contour does
    /// ([`HoldOff`]).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.store.changes(&WATCHED);
        let latency = self.config.latency.latency();
        self.reconcile();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut missed = false;
        let mut hold_off = HoldOff::new(latency.holdoff, latency.holdoff_max, tokio::time::Instant::now());
        loop {
            let batch = tokio::select! {
                batch = changes.next() => batch,
                () = sleep_until(hold_off.deadline()) => {
                    self.catch_up(&mut pending, &mut missed);
                    hold_off.rebuilt(tokio::time::Instant::now());
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            // Whether this batch holds a change to act on (Contour restarts its wait on each).
            let changed = match batch {
                None => return,
                // Missed changes: start again from the whole store.
                Some(Batch::Missed) => {
                    missed = true;
                    true
                }
                Some(Batch::Events(events)) => {
                    // Every event is looked at: the check remembers what each Secret held.
                    let mut triggering = false;
                    for event in events.iter().filter(|e| self.triggers_rebuild(e)) {
                        pending.insert(changed_namespace(event));
                        triggering = true;
                    }
                    triggering
                }
            };
            if !changed {
                continue;
            }
            if latency.holdoff.is_zero() {
                self.catch_up(&mut pending, &mut missed);
            } else {
                hold_off.changed(tokio::time::Instant::now());
            }
        }
    }

    /// Acts on the changes not acted on yet: everything again after missed changes, else the
    /// Secrets of the namespaces that changed, then a rebuild.
    fn catch_up(&self, pending: &mut BTreeSet<String>, missed: &mut bool) {
        if std::mem::take(missed) {
            pending.clear();
            self.reconcile();
        } else {
            let namespaces = std::mem::take(pending);
            self.refresh_secrets(Some(&namespaces));
            self.rebuild();
        }
    }

    /// Whether a change calls for a rebuild: every change does but a Secret's, which does
    /// only when the Secret (as written, or as it was when deleted) has a `ca.crt` key or is
    /// the installation's client certificate, as in Contour (docs/contract.md S5). Under the
    /// `ignore-secret-events` fault, no Secret change does.
    ///
    /// As in Contour, an update counts as the removal of the old Secret and the addition of
    /// the new one (so losing `ca.crt` rebuilds), and an update that leaves `data` as it was
    /// changes nothing.
    ///
    /// A proxy whose status alone changed (the controller's own writes) calls for nothing.
    fn triggers_rebuild(&self, event: &WatchEvent) -> bool {
        if event.kind == &HTTP_PROXY {
            return self.proxy_changed(event);
        }
        if event.kind != &SECRET {
            return true;
        }
        if self.config.has(Fault::IgnoreSecretEvents) {
            return false;
        }
        let secret = &event.object;
        let name = secret["metadata"]["name"].as_str().unwrap_or_default();
        let key = format!("{}/{name}", event.namespace);
        let before = {
            let mut known = self.secret_data.lock().unwrap_or_else(|e| e.into_inner());
            match event.event_type {
                EventType::Deleted => known.remove(&key),
                EventType::Added | EventType::Modified => known.insert(key.clone(), secret["data"].clone()),
            }
        };
        if event.event_type == EventType::Modified && before.as_ref() == Some(&secret["data"]) {
            return false;
        }
        let has_ca = |data: &Value| data.get(validation::CA_KEY).is_some();
        let configured = self
            .config
            .tls
            .envoy_client_certificate
            .as_ref()
            .is_some_and(|configured| name == configured.name && event.namespace == configured.namespace);
        has_ca(&secret["data"]) || before.as_ref().is_some_and(has_ca) || configured || self.serves_tls_with(&key)
    }

    /// Whether a root HTTPProxy's `virtualhost.tls` names Secret `namespace/name`.
    fn serves_tls_with(&self, key: &str) -> bool {
        let (proxies, _) = self.store.list(&HTTP_PROXY, None);
        proxies.iter().any(|proxy| {
            let Some(secret) = proxy["spec"]["virtualhost"]["tls"]["secretName"].as_str() else { return false };
            let namespace = proxy["metadata"]["namespace"].as_str().unwrap_or_default();
            let named = match secret.split_once('/') {
                Some(("", name)) => format!("{namespace}/{name}"),
                Some(_) => secret.to_string(),
                None => format!("{namespace}/{secret}"),
            };
            named == key
        })
    }

    /// Whether a proxy event changes more than its status; remembers its metadata.
    fn proxy_changed(&self, event: &WatchEvent) -> bool {
        let key = qualified_name(&event.object);
        let mut seen = self.proxy_metadata.lock().unwrap_or_else(|e| e.into_inner());
        if event.event_type == EventType::Deleted {
            seen.remove(&key);
            return true;
        }
        // Spec changes bump metadata.generation; resourceVersion changes with every write.
        let mut metadata = event.object["metadata"].clone();
        if let Some(map) = metadata.as_object_mut() {
            map.remove("resourceVersion");
            map.remove("managedFields");
        }
        seen.insert(key, metadata.clone()).is_none_or(|before| before != metadata)
    }

    /// Records every Secret's `data`, for [`Controller::triggers_rebuild`].
    fn remember_secrets(&self) {
        let (secrets, _) = self.store.list(&SECRET, None);
        let known = secrets.iter().map(|s| (qualified_name(s), s["data"].clone())).collect();
        *self.secret_data.lock().unwrap_or_else(|e| e.into_inner()) = known;
    }

    /// One full rebuild from the store as it is now.
    pub fn reconcile(&self) {
        self.remember_secrets();
        self.refresh_secrets(None);
        self.rebuild();
    }

    /// Keeps the fault's Secret snapshot; without the fault Secrets are read live.
    fn refresh_secrets(&self, namespaces: Option<&BTreeSet<String>>) {
        if self.config.has(Fault::IgnoreSecretEvents) {
            self.secret_snapshot.refresh(&self.store, namespaces);
        }
    }

    fn rebuild(&self) {
        self.rebuilds.rebuilt(std::time::Instant::now());
        let secrets = if self.config.has(Fault::IgnoreSecretEvents) {
            Secrets::Snapshot(&self.secret_snapshot)
        } else {
            Secrets::Live(&self.store)
        };
        let mut client_certificate = client_certificate::load(secrets, &self.config);
        if self.config.has(Fault::StaleClientCertificate) {
            let mut cache = self.client_cache.lock().unwrap_or_else(|e| e.into_inner());
            match &*cache {
                Some(first) => client_certificate = first.clone(),
                None if matches!(client_certificate, ClientCertificateState::Ready(_)) => {
                    *cache = Some(client_certificate.clone());
                }
                None => {}
            }
        }
        let ctx = Context {
            store: &self.store,
            secrets,
            config: &self.config,
            client_certificate: &client_certificate,
            ca_cache: &self.ca_cache,
            delegation_grants: &self.delegation_grants,
        };
        let (proxies, _) = self.store.list(&HTTP_PROXY, None);
        let proxies: Vec<&Value> = proxies
            .iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none() && self.serves_class(p))
            .map(|p| &**p)
            .collect();
        let claims = fqdn_claims(&proxies);
        let index: proxy::ProxyIndex = proxies.iter().map(|p| (qualified_name(p), *p)).collect();
        let mut table = RouteTable::default();
        if self.config.has(Fault::Bare502OnHandshakeFailure) {
            table.upstream_failure = UpstreamFailureResponse::Bare502;
        }
        table.keep_connections_across_changes = self.config.has(Fault::ConnectionsOutliveClusterChanges);
        table.cluster_host_wins = self.config.has(Fault::ServiceHostBeatsRouteHostHeader);
        let mut statuses = proxy::Statuses::new();
        for object in proxies.iter().filter(|p| !p["spec"]["virtualhost"].is_null()) {
            let me = qualified_name(object);
            let fqdn = fqdn_of(object);
            let others: Vec<String> = claims.get(&fqdn).into_iter().flatten().filter(|n| **n != me).cloned().collect();
            if let Some((fqdn, served)) = proxy::process_root(&ctx, &index, object, &others, &mut statuses) {
                if let Some(secure) = served.https {
                    table.secure_hosts.insert(fqdn.clone(), secure);
                }
                if let Some(virtual_host) = served.http {
                    table.virtual_hosts.insert(fqdn, virtual_host);
                }
            }
        }
        // What no root reached is an orphan (docs/contract.md E3).
        for object in &proxies {
            statuses.entry(qualified_name(object)).or_insert_with(|| {
                let mut status = ProxyStatus::default();
                if self.config.has(Fault::OrphanedWithoutErrorEntry) {
                    status.orphaned_without_error_entry = true;
                } else {
                    status.orphan();
                }
                status
            });
        }
        let (ingresses, _) = self.store.list(&INGRESS, None);
        for object in ingresses.iter().filter(|i| self.serves_class(i)) {
            for (host, route) in ingress::routes(&ctx, object) {
                // An HTTPProxy that claims the host wins over Ingress.
                if claims.contains_key(&host) {
                    continue;
                }
                table.virtual_hosts.entry(host).or_insert_with(VirtualHost::default).routes.push(route);
            }
        }
        if self.config.has(Fault::ClustersShareValidation) {
            upstream::share_clusters_by_first_subject_name(&mut table);
        }
        crate::dataplane::publish(&self.routes, table);
        let now = now_rfc3339();
        for object in &proxies {
            let Some(status) = statuses.get(&qualified_name(object)) else { continue };
            let meta = &object["metadata"];
            let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { continue };
            let generation = meta["generation"].as_i64().unwrap_or(1);
            // Most rebuilds change no proxy's status: it is not written then (nor copied to be).
            if status.to_json(generation, &object["status"], &now) == object["status"] {
                continue;
            }
            self.store.modify(&HTTP_PROXY, ns, name, Subresource::Status, |stored| {
                let previous = stored["status"].clone();
                stored["status"] = status.to_json(generation, &previous, &now);
            });
        }
    }
}

impl Controller {
    /// Whether an HTTPProxy or Ingress is for this controller, which has no ingress class of
    /// its own: no class or `contour`. The `projectcontour.io/ingress.class` annotation, then
    /// `kubernetes.io/ingress.class`, win over `spec.ingressClassName` (docs/contract.md R2).
    fn serves_class(&self, object: &Value) -> bool {
        let annotations = &object["metadata"]["annotations"];
        let annotation = ["projectcontour.io/ingress.class", "kubernetes.io/ingress.class"]
            .into_iter()
            .find_map(|key| annotations[key].as_str());
        let spec = object["spec"]["ingressClassName"].as_str();
        let class = match annotation.filter(|c| !c.is_empty()) {
            Some(_) if self.config.has(Fault::IngressClassFieldFirst) && spec.is_some_and(|c| !c.is_empty()) => spec,
            Some(annotation) => Some(annotation),
            None => spec,
        };
        class.is_none_or(|c| c.is_empty() || c == "contour")
    }
}

/// The namespace a change is about (a Namespace's own name for Namespace changes).
fn changed_namespace(event: &WatchEvent) -> String {
    if event.kind == &NAMESPACE {
        event.object["metadata"]["name"].as_str().unwrap_or_default().to_string()
    } else {
        event.namespace.clone()
    }
}

/// Lowercase fqdn -> the root proxies (`namespace/name`) that claim it.
fn fqdn_claims(proxies: &[&Value]) -> BTreeMap<String, Vec<String>> {
    let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in proxies {
        let fqdn = fqdn_of(object);
        if !fqdn.is_empty() {
            claims.entry(fqdn).or_default().push(qualified_name(object));
        }
    }
    claims
}

/// `namespace/name` of a stored object.
pub fn qualified_name(object: &Value) -> String {
    let meta = &object["metadata"];
    format!("{}/{}", meta["namespace"].as_str().unwrap_or_default(), meta["name"].as_str().unwrap_or_default())
}

fn fqdn_of(object: &Value) -> String {
    object["spec"]["virtualhost"]["fqdn"].as_str().unwrap_or_default().to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
