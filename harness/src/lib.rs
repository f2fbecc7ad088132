//! The upstream TLS conformance harness for HTTPProxy implementations.
//!
//! The pipeline, one module per stage:
//! - [`scenario`]: scenario files, loaded and checked before anything runs.
//! - [`pki`]: certificates and keys with rcgen.
//! - [`fixture`]: the nginx backend objects.
//! - [`cluster`]: the cluster driver (kube-rs, a kubeconfig, nothing else).
//! - [`install`]: install-wide state the harness manages (the Envoy client certificate).
//! - [`traffic`]: requests through the proxy and their checks.
//! - [`status_match`]: partial matching of object status.
//! - [`runner`]: one scenario from set-up to clean-up.
//! - [`config`]: the implementation config file, with flags and variables on top.
//! - [`target`]: where to run (a real cluster, or the built-in loopback cluster).
//! - [`known`]: scenarios an implementation is known to fail, as data.
//! - [`suite`]: many scenarios at once.
//! - [`progress`]: a live progress bar, or plain lines off a terminal.
//! - [`report`]: JUnit, JSON and Markdown reports of a run.
//! - [`redaction`]: private keys out of every text the harness writes.
//! - [`matrix`]: the catalog against every loopback fault, and the generated catalog page.
//! - [`bench`]: the catalog timed against loopback: wall, CPU, memory, critical path.

pub mod bench;
pub mod certify;
pub mod cluster;
pub mod config;
pub mod contour_config;
pub mod differential;
pub mod explain;
pub mod fixture;
pub mod generate;
pub mod install;
pub mod known;
pub mod matrix;
pub mod pki;
pub mod progress;
pub mod provision;
pub mod redaction;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod status_match;
pub mod suite;
pub mod target;
pub mod traffic;

/// Installs aws-lc-rs as the process's rustls crypto provider. Call once at start; later
/// calls do nothing.
pub fn init_crypto() {
    // An already-installed provider is fine: it is the same one, installed by an earlier call.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
