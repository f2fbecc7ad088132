//! The reference controller: the upstream TLS contract (../shared/CONTRACT.md) as code.
//!
//! [`Controller::run`] rebuilds the whole configuration whenever the store changes, as
//! Contour rebuilds its DAG: every HTTPProxy is processed ([`proxy::process`]), the resulting
//! [`RouteTable`] is handed to the data plane, then each proxy's status is written. Routes go
//! out before statuses, so a client that sees `valid` can already send traffic.
//!
//! - [`protocol`]: which protocol speaks to a Service port (P1-P6).
//! - [`validation`]: CA Secrets and subject names (V2-V4, S1, S3).
//! - [`status`]: the status documents (S2).

pub mod protocol;
pub mod proxy;
pub mod status;
pub mod validation;

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::kinds::HTTP_PROXY;
use crate::api::store::{Store, Subresource, now_rfc3339};
use crate::config::LoopbackConfig;
use crate::dataplane::RouteTable;

/// The reference HTTPProxy controller.
pub struct Controller {
    store: Store,
    config: Arc<LoopbackConfig>,
    routes: watch::Sender<Arc<RouteTable>>,
}

impl Controller {
    pub fn new(store: Store, config: Arc<LoopbackConfig>, routes: watch::Sender<Arc<RouteTable>>) -> Self {
        Controller { store, config, routes }
    }

    /// Reconciles until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut revisions = self.store.revisions();
        loop {
            self.reconcile();
            tokio::select! {
                _ = revisions.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One full rebuild.
    pub fn reconcile(&self) {
        let (proxies, _) = self.store.list(&HTTP_PROXY, None);
        let mut table = RouteTable::default();
        let mut statuses = Vec::new();
        for object in &proxies {
            if object["metadata"].get("deletionTimestamp").is_some() {
                continue;
            }
            let processed = proxy::process(&self.store, object, &self.config);
            if let Some((fqdn, virtual_host)) = processed.virtual_host {
                table.virtual_hosts.insert(fqdn, virtual_host);
            }
            statuses.push((object, processed.status));
        }
        self.routes.send_replace(Arc::new(table));
        let now = now_rfc3339();
        for (object, status) in statuses {
            let meta = &object["metadata"];
            let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { continue };
            let generation = meta["generation"].as_i64().unwrap_or(1);
            self.store.modify(&HTTP_PROXY, ns, name, Subresource::Status, |stored| {
                let previous = stored["status"].clone();
                stored["status"] = status.to_json(generation, &previous, &now);
            });
        }
    }
}
