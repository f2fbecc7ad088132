//! The loopback kubelet: Deployments become Pods, Pods become local nginx processes.
//!
//! [`Kubelet::run`] reconciles whenever an object it reads changes, on a short tick while a pod is
//! starting, and on a slow one otherwise, so a backend that exits is noticed. Pods on loopback share the host's network namespace, so each gets its own
//! address in 127.0.0.0/8 and listens there on its container ports, which is what lets many
//! backends use port 8443 at once, as in a real cluster.
//!
//! - [`deployments`]: the Deployment controller (pods from templates, Deployment status).
//! - [`pods`]: volumes, the container process, readiness, pod status, stopping.
//! - [`nginx_conf`]: a pod's nginx configuration, confined to the pod before it runs.
//! - [`endpoint_slices`]: EndpointSlices for Services from ready pods, as kube-controller-manager.

pub mod deployments;
pub mod endpoint_slices;
pub mod nginx_conf;
pub mod pods;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::Store;
use crate::api::kinds::{CONFIG_MAP, DEPLOYMENT, ENDPOINT_SLICE, NAMESPACE, POD, ResourceKind, SECRET, SERVICE};
use crate::disruption::Disruptions;

/// How often a starting pod's ports are probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often running pods are checked for exited processes when nothing else happens.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the kubelet, the Deployment controller and the EndpointSlice controller read: a
/// change to anything else (a proxy's status, an Event) does not wake them.
static WATCHED: [&ResourceKind; 7] = [&DEPLOYMENT, &POD, &SERVICE, &ENDPOINT_SLICE, &CONFIG_MAP, &SECRET, &NAMESPACE];

/// The kubelet and the Deployment controller of a loopback cluster.
pub struct Kubelet {
    store: Store,
    pods: pods::PodRunner,
    deployments: deployments::Deployments,
}

impl Kubelet {
    /// `root` receives one directory per pod; `nginx` is the binary containers run.
    /// Backends crash under `disruptions` that say so.
    pub fn new(store: Store, root: PathBuf, nginx: PathBuf, disruptions: Arc<Disruptions>) -> Self {
        let pods = pods::PodRunner::new(store.clone(), root, nginx, disruptions);
        Kubelet { store, pods, deployments: deployments::Deployments::default() }
    }

    /// An address of the cluster's pod range for a program that listens like a pod (Envoy), with
    /// `ports` free there; no pod gets it.
    ///
    /// # Errors
    /// No address of the range has those ports free.
    pub fn reserve_address(&mut self, ports: &[u16]) -> Result<std::net::Ipv4Addr, String> {
        self.pods.reserve_address(ports)
    }

    /// Reconciles until `shutdown` turns true, then stops every pod process.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.store.changes(&WATCHED);
        loop {
            self.deployments.sync(&self.store);
            let mut settling = self.pods.sync().await;
            self.deployments.sync(&self.store);
            endpoint_slices::sync(&self.store);
            // The namespace controller's part: Terminating namespaces go once empty and due.
            settling |= self.store.finish_terminating_namespaces();
            tokio::select! {
                batch = changes.next() => if batch.is_none() { break },
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(if settling { PROBE_INTERVAL } else { IDLE_INTERVAL }) => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.pods.stop_all().await;
    }
}
