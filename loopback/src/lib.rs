//! The loopback cluster: Kubernetes, an HTTPProxy controller and its proxy, on 127.0.0.0/8.
//!
//! [`Loopback::start`] brings up these parts in this process and hands back what a client of a
//! real cluster has: a kubeconfig path and the proxy's address.
//! - [`api`]: an in-memory subset of the Kubernetes API over HTTP.
//! - [`kubelet`]: runs Deployments' pods as local nginx processes, each on its own 127.x address.
//! - [`controller`]: the reference controller, implementing the upstream TLS contract; or
//!   [`contour`]: the real Contour controller, run from its release binary.
//! - [`dataplane`]: the proxy the controller programs, routing by Host; or [`envoy`]: Envoy,
//!   run from its release binary and programmed by the real Contour.
//! - [`xds`]: programs loopback's proxy from an xDS server (the real Contour's), as Envoy is
//!   programmed.
//!
//! [`supervise`] starts, logs and stops the outside programs (Contour, Envoy).
//!
//! [`rebuilds`] records when the controller rebuilt and how long changes waited for it, for
//! the benchmark.
//!
//! [`x509`] reads the certificate names and PEM blocks the controller and the proxy check.
//!
//! [`Fault`]s are deliberate deviations from the contract, so the harness can prove that its
//! scenarios catch real bugs. [`Disruption`]s keep the contract but make the cluster hard to
//! work with (API errors, cut connections, crashing backends), so the harness can prove that it
//! copes.

pub mod api;
pub mod config;
pub mod contour;
pub mod controller;
pub mod dataplane;
pub mod disruption;
pub mod envoy;
pub mod kubelet;
pub mod latency;
pub mod rebuilds;
pub mod supervise;
pub mod x509;
#[cfg(feature = "xds")]
pub mod xds;

mod cluster;

pub use cluster::{
    Loopback, StaleOutcome, StaleWorkDir, StartError, WORK_DIR_MARKER, remove_stale_work_dirs, work_roots,
};
pub use config::{Fault, LoopbackConfig};
pub use disruption::{Disruption, Disruptions};
pub use latency::{Latency, LatencyProfile};
pub use rebuilds::Rebuilds;
