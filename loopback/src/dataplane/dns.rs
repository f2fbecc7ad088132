//! The names the proxy can resolve: [`ClusterDns`], loopback's stand-in for a cluster's DNS.
//!
//! Envoy resolves the DNS name of an ExternalName Service's cluster (`STRICT_DNS`) through the
//! pod's resolver, which on a cluster is CoreDNS. Loopback has no DNS server and no Service
//! addresses, so the proxy resolves the one kind of name a scenario can rely on everywhere:
//! a Service's fully qualified cluster name, `<service>.<namespace>.svc.cluster.local`, to the
//! addresses of the Service's ready pods, read from its EndpointSlices, as CoreDNS answers for
//! a headless Service. Every other name resolves to nothing, so its cluster has no endpoint
//! (Envoy's 503 `no healthy upstream`). docs/contract.md, "Where loopback differs".

use std::net::IpAddr;

use crate::api::kinds::ENDPOINT_SLICE;
use crate::api::store::Store;
use crate::kubelet::endpoint_slices::SERVICE_NAME_LABEL;

/// The cluster domain of every name [`ClusterDns`] resolves.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Resolves Services' cluster names against the API's EndpointSlices; with no store (tests of
/// the proxy alone) nothing resolves.
#[derive(Clone, Default)]
pub struct ClusterDns {
    store: Option<Store>,
}

impl ClusterDns {
    pub fn new(store: Store) -> Self {
        ClusterDns { store: Some(store) }
    }

    /// The addresses `name` stands for now: the ready pods of the Service it names, in a
    /// stable order; none for a name outside the cluster domain or a Service with no ready pod.
    pub fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let Some(store) = &self.store else { return Vec::new() };
        let Some((service, namespace)) = service_of(name) else { return Vec::new() };
        let (slices, _) = store.list(&ENDPOINT_SLICE, Some(&namespace));
        let mut addresses: Vec<IpAddr> = slices
            .iter()
            .filter(|slice| slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() == Some(service.as_str()))
            .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|endpoint| endpoint["conditions"]["ready"].as_bool() != Some(false))
            .flat_map(|endpoint| endpoint["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|address| address.as_str().and_then(|a| a.parse().ok()))
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }
}

/// `(service, namespace)` of `<service>.<namespace>.svc.cluster.local` (any case, an optional
/// final dot).
fn service_of(name: &str) -> Option<(String, String)> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let rest = name.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix('.')?;
    let (service, namespace) = rest.split_once('.')?;
    let label = |s: &str| !s.is_empty() && !s.contains('.');
    (label(service) && label(namespace)).then(|| (service.to_string(), namespace.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_fully_qualified_service_names_are_cluster_names() {
        let pair = |s: &str, n: &str| Some((s.to_string(), n.to_string()));
        assert_eq!(service_of("echo.ns.svc.cluster.local"), pair("echo", "ns"));
        assert_eq!(service_of("Echo.NS.svc.cluster.local."), pair("echo", "ns"));
        assert_eq!(service_of("echo.ns.svc"), None);
        assert_eq!(service_of("a.echo.ns.svc.cluster.local"), None);
        assert_eq!(service_of("ns.svc.cluster.local"), None);
        assert_eq!(service_of("echo.backend.test"), None);
        assert_eq!(service_of("localhost"), None);
    }

    #[test]
    fn a_service_name_resolves_to_its_ready_pods() {
        let store = Store::new();
        let slice = |name: &str, service: &str, addresses: &[(&str, bool)]| {
            let endpoints: Vec<_> = addresses
                .iter()
                .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
                .collect();
            json!({
                "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            })
        };
        store.create(&crate::api::kinds::NAMESPACE, "", json!({"metadata": {"name": "ns"}})).unwrap();
        store
            .create(&ENDPOINT_SLICE, "ns", slice("echo-a", "echo", &[("127.0.3.2", true), ("127.0.3.9", false)]))
            .unwrap();
        store.create(&ENDPOINT_SLICE, "ns", slice("echo-b", "echo", &[("127.0.3.1", true)])).unwrap();
        store.create(&ENDPOINT_SLICE, "ns", slice("other", "other", &[("127.0.4.1", true)])).unwrap();
        let dns = ClusterDns::new(store);
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
        assert_eq!(dns.resolve("echo.ns.svc.cluster.local"), ips(&["127.0.3.1", "127.0.3.2"]));
        assert_eq!(dns.resolve("missing.ns.svc.cluster.local"), ips(&[]));
        assert_eq!(dns.resolve("echo.elsewhere.svc.cluster.local"), ips(&[]));
        assert_eq!(ClusterDns::default().resolve("echo.ns.svc.cluster.local"), ips(&[]));
    }
}
