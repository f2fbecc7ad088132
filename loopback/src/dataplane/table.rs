//! What the controller programs into the proxy: a [`RouteTable`] of virtual hosts, routes and
//! upstream clusters. It plays the part xDS plays between Contour and Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::pool::ConnectionPool;
use crate::config::TlsVersion;

/// The whole proxy configuration; replaced as one value on every rebuild.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// By lowercase host name (the HTTPProxy's `fqdn`).
    pub virtual_hosts: BTreeMap<String, VirtualHost>,
    /// The HTTPS listener's virtual hosts, by the lowercase server name a client sends as SNI.
    pub secure_hosts: BTreeMap<String, SecureHost>,
    /// How a failed upstream connection is answered.
    pub upstream_failure: UpstreamFailureResponse,
    /// Keep a cluster's connections when its TLS settings change (only the
    /// `connections-outlive-cluster-changes` fault asks for it).
    pub keep_connections_across_changes: bool,
    /// Send a cluster's Host rewrite over its route's (only the
    /// `service-host-beats-route-host-header` fault asks for it).
    pub cluster_host_wins: bool,
}

/// The answer to a request whose upstream connection or handshake failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailureResponse {
    /// 503 with Envoy's `upstream connect error or disconnect/reset before headers.` body.
    #[default]
    Envoy,
    /// 502 with an empty body (only the `bare-502-on-handshake-failure` fault asks for it).
    Bare502,
}

#[derive(Debug, Default)]
pub struct VirtualHost {
    /// Matched by longest prefix.
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    pub path: PathPrefix,
    pub action: RouteAction,
    /// Replaces the Host header sent upstream (over a cluster's own rewrite).
    pub host_rewrite: Option<HostRewrite>,
    /// Gets a copy of every forwarded request, its answer ignored (Envoy's request mirror
    /// policy at 100 %).
    pub mirror: Option<Arc<Cluster>>,
    /// The next turn among the clusters it forwards to: each route keeps its own rotation, so
    /// that other routes' traffic does not decide which of its clusters a request gets.
    pub turn: std::sync::atomic::AtomicUsize,
}

/// Where a route's upstream Host comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// A fixed name (Envoy `host_rewrite_literal`).
    Literal(String),
    /// The value of this request header, when the request has it (Envoy
    /// `host_rewrite_header`, from Contour's `%REQ(name)%` Host values).
    FromHeader(String),
}

impl HostRewrite {
    /// The fixed name, if this is one.
    pub fn literal(&self) -> Option<&str> {
        match self {
            HostRewrite::Literal(host) => Some(host),
            HostRewrite::FromHeader(_) => None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            HostRewrite::Literal(host) => serde_json::json!(host),
            HostRewrite::FromHeader(name) => serde_json::json!({"fromHeader": name.to_ascii_lowercase()}),
        }
    }
}

/// A TLS virtual host whose connections are proxied as TCP (an HTTPProxy `tcpproxy`), the
/// client's TLS ended by the proxy or passed through to the backend.
#[derive(Debug)]
pub struct SecureHost {
    pub tls: DownstreamTls,
    /// The clusters connections go to, in turn (a weighted rotation); none closes them.
    pub tcp_proxy: Vec<Arc<Cluster>>,
    /// The next turn among `tcp_proxy`.
    pub turn: std::sync::atomic::AtomicUsize,
}

/// What the proxy does with the client's TLS on a [`SecureHost`].
#[derive(Debug)]
pub enum DownstreamTls {
    /// The proxy completes the handshake with this certificate, then forwards the plaintext.
    Terminate(Arc<ServingTls>),
    /// The proxy forwards the client's TLS bytes unread, chosen by the ClientHello's SNI.
    Passthrough,
}

/// The certificate and protocol versions a terminating [`SecureHost`] serves.
#[derive(Debug)]
pub struct ServingTls {
    pub certificate: Arc<CertifiedChain>,
    /// `(minimum, maximum)` TLS version.
    pub versions: (TlsVersion, TlsVersion),
    /// The rustls configuration made from the fields above on first use. Start it empty.
    pub server_config: OnceLock<Result<Arc<rustls::ServerConfig>, String>>,
}

impl ServingTls {
    /// The server configuration, built once.
    ///
    /// # Errors
    /// rustls refuses the certificate or the key.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        self.server_config
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&TlsVersion::rustls_range(self.versions))
                    .map_err(|e| e.to_string())?
                    .with_no_client_auth()
                    .with_single_cert(self.certificate.chain.clone(), self.certificate.key.clone_key())
                    .map(Arc::new)
                    .map_err(|e| format!("serving certificate: {e}"))
            })
            .clone()
    }
}

/// How a route matches request paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPrefix {
    /// A plain string prefix, as HTTPProxy conditions give Envoy: `/asks` matches `/asksX`.
    String(String),
    /// Whole path segments, as Ingress `Prefix` paths give Envoy: `/asks` matches `/asks` and
    /// `/asks/x`, not `/asksX`.
    Segments(String),
}

impl PathPrefix {
    pub fn as_str(&self) -> &str {
        match self {
            PathPrefix::String(p) | PathPrefix::Segments(p) => p,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPrefix::String(prefix) => path.starts_with(prefix.as_str()),
            PathPrefix::Segments(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                path.strip_prefix(prefix).is_some_and(|rest| {
                    prefix.is_empty() || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
                })
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            PathPrefix::String(_) => "string",
            PathPrefix::Segments(_) => "segments",
        }
    }
}

#[derive(Debug)]
pub enum RouteAction {
    /// Proxy to one of the clusters, in turn.
    Forward(Vec<Arc<Cluster>>),
    /// Answer directly, as Envoy does for a route whose service is missing.
    DirectResponse { status: u16 },
}

/// Weighted clusters as the rotation [`RouteAction::Forward`] takes turns over: each cluster
/// repeated in proportion to its weight (after dividing by the common factor), so requests are
/// shared as Envoy's `weighted_clusters` shares them. A cluster of weight 0 gets no turn; with
/// more than 100 turns in all, each cluster gets one.
pub fn weighted_rotation(entries: Vec<(Arc<Cluster>, u32)>) -> Vec<Arc<Cluster>> {
    const MAX_TURNS: u32 = 100;
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let entries: Vec<(Arc<Cluster>, u32)> = entries.into_iter().filter(|(_, weight)| *weight > 0).collect();
    let divisor = entries.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let total: u32 = entries.iter().map(|(_, w)| w / divisor).sum();
    let mut rotation = Vec::new();
    for (cluster, weight) in entries {
        let turns = if total > MAX_TURNS { 1 } else { weight / divisor };
        rotation.extend(std::iter::repeat_n(cluster, turns as usize));
    }
    rotation
}

/// One upstream: a Service port with its endpoints and how to speak to them.
#[derive(Debug)]
pub struct Cluster {
    /// `namespace/service/port`, for logs and error bodies.
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub transport: Transport,
    /// Replaces the Host header sent upstream when the route does not (it is the SNI, though).
    pub host_rewrite: Option<String>,
    /// The connections kept for reuse; start it empty ([`super::publish`] carries a pool over
    /// from the cluster this one replaces).
    pub pool: PoolSlot,
}

impl Cluster {
    /// The same upstream spoken to over `transport`, with a pool of its own (for faults that
    /// get the transport wrong).
    pub fn with_transport(&self, transport: Transport) -> Cluster {
        Cluster {
            name: self.name.clone(),
            endpoints: self.endpoints.clone(),
            transport,
            host_rewrite: self.host_rewrite.clone(),
            pool: PoolSlot::default(),
        }
    }
}

/// Where a cluster's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An address known when the table was made (a Service's pods, or EDS).
    Address(SocketAddr),
    /// A DNS name and port, resolved whenever a request needs an endpoint, as Envoy's
    /// `STRICT_DNS` clusters keep resolving theirs (an ExternalName Service's cluster).
    Name { host: String, port: u16 },
}

/// A cluster's connection pool: the one carried over from the cluster it replaces, or a new
/// one made on first use.
#[derive(Debug, Default)]
pub struct PoolSlot(OnceLock<Arc<ConnectionPool>>);

impl PoolSlot {
    pub fn get(&self) -> &Arc<ConnectionPool> {
        self.0.get_or_init(Arc::default)
    }

    /// Shares `pool`, unless this slot already has one.
    pub fn share(&self, pool: &Arc<ConnectionPool>) {
        let _ = self.0.set(pool.clone());
    }
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTP over TCP: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
    Plaintext { http2: bool },
    /// HTTP over TLS.
    Tls(TlsSettings),
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The server name sent in the ClientHello; none when `None`.
    pub sni: Option<String>,
    /// ALPN protocols offered: `http/1.1` for `tls` (Envoy's HTTP/1 pool), `h2` for `h2`.
    pub alpn: Vec<Vec<u8>>,
    /// Speak HTTP/2 over the connection.
    pub http2: bool,
    /// Certificate validation; the backend certificate is not checked when `None`.
    pub validation: Option<PeerValidation>,
    /// Presented when the backend asks for a client certificate.
    pub client_certificate: Option<Arc<CertifiedChain>>,
    /// `(minimum, maximum)` TLS version.
    pub versions: (TlsVersion, TlsVersion),
    /// TLS 1.2 cipher suites in order of preference, as OpenSSL names (`[a|b]` groups allowed);
    /// the TLS library's own list when empty. TLS 1.3 suites are not configurable.
    pub cipher_suites: Vec<String>,
    /// The rustls configuration made from the fields above on first use, so it is built once
    /// per programmed cluster rather than once per request. Start it empty.
    pub client_config: ClientConfigCache,
}

impl Transport {
    /// Whether connections made for `other` could serve this transport unchanged: the same
    /// protocol and, for TLS, the same settings (the cached client configuration aside).
    pub fn connects_like(&self, other: &Transport) -> bool {
        match (self, other) {
            (Transport::Plaintext { http2: a }, Transport::Plaintext { http2: b }) => a == b,
            (Transport::Tls(a), Transport::Tls(b)) => {
                a.sni == b.sni
                    && a.alpn == b.alpn
                    && a.http2 == b.http2
                    && a.validation == b.validation
                    && a.versions == b.versions
                    && a.cipher_suites == b.cipher_suites
                    && match (&a.client_certificate, &b.client_certificate) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.chain == b.chain && a.key.secret_der() == b.key.secret_der(),
                        _ => false,
                    }
            }
            _ => false,
        }
    }
}

/// A lazily built client configuration (or why none could be built).
#[derive(Debug, Clone, Default)]
pub struct ClientConfigCache(pub OnceLock<Result<Arc<rustls::ClientConfig>, String>>);

/// Trust anchors and the names one of which the backend certificate must carry as a DNS SAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerValidation {
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// Why Envoy would not load the bundle these came from ([`crate::x509::envoy_ca_bundle`]),
    /// when it would not.
    pub envoy_refuses: Option<&'static str>,
    pub subject_names: Vec<String>,
    /// Deviations only faults switch on; all false is Envoy's behaviour.
    pub faults: ValidationFaults,
}

impl PeerValidation {
    /// Whether Envoy would load these trust anchors: it refuses a cluster whose CA bundle holds
    /// a CERTIFICATE block that is no certificate or carries header lines (docs/contract.md S1).
    pub fn loads(&self) -> bool {
        self.envoy_refuses.is_none()
    }
}

/// Ways validation can be wrong, for the faults that need the data plane to misbehave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidationFaults {
    /// Accept a name found only in the subject common name (`accept-name-from-cn`).
    pub accept_common_name: bool,
    /// Accept expired certificates (`ignore-certificate-expiry`).
    pub ignore_expiry: bool,
    /// Build the chain without the intermediates the backend serves (`ignore-served-intermediates`).
    pub ignore_intermediates: bool,
    /// Compare names as whole strings, so wildcard SANs match nothing (`exact-subject-names`).
    pub exact_names: bool,
}

/// A certificate chain and its private key: the client certificate the proxy presents to
/// backends, or the certificate it serves on a TLS virtual host.
#[derive(Debug)]
pub struct CertifiedChain {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl RouteTable {
    /// Every cluster routes forward or mirror to, once per route that names it.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.virtual_hosts.values().flat_map(|host| &host.routes).flat_map(|route| {
            let forward = match &route.action {
                RouteAction::Forward(clusters) => clusters.as_slice(),
                RouteAction::DirectResponse { .. } => &[],
            };
            forward.iter().chain(&route.mirror)
        })
    }

    /// The route for `host` and `path`: the longest matching prefix of the host's routes.
    pub fn route(&self, host: &str, path: &str) -> Option<&Route> {
        self.virtual_hosts
            .get(host)?
            .routes
            .iter()
            .filter(|r| r.path.matches(path))
            .max_by_key(|r| r.path.as_str().len())
    }
}

impl RouteTable {
    /// What the proxy does for each host and path prefix, and how it speaks to each upstream,
    /// without what differs between equivalent configurations (cluster names, endpoint
    /// addresses, certificate bytes, the order of routes, since the longest prefix wins
    /// whatever the order): the basis for comparing two controllers.
    pub fn effective_settings(&self) -> serde_json::Value {
        use serde_json::json;
        let upstream = |cluster: &Cluster| {
            let transport = match &cluster.transport {
                Transport::Plaintext { http2 } => json!({"tls": false, "http2": http2}),
                Transport::Tls(tls) => json!({
                    "tls": true,
                    "http2": tls.http2,
                    "sni": tls.sni,
                    "alpn": tls.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
                    "versions": [tls.versions.0.name(), tls.versions.1.name()],
                    "cipherSuites": tls.cipher_suites,
                    "validation": tls.validation.as_ref().map(|v| json!({
                        "caCertificates": v.ca_certificates.len(),
                        "subjectNames": v.subject_names,
                    })),
                    "clientCertificate": tls.client_certificate.is_some(),
                }),
            };
            let names: Vec<String> = cluster
                .endpoints
                .iter()
                .filter_map(|endpoint| match endpoint {
                    Endpoint::Name { host, port } => Some(format!("{host}:{port}")),
                    Endpoint::Address(_) => None,
                })
                .collect();
            let mut settings = json!({"transport": transport, "endpoints": cluster.endpoints.len(), "hostRewrite": cluster.host_rewrite});
            if !names.is_empty() {
                settings["dnsNames"] = json!(names);
            }
            settings
        };
        let mut hosts: serde_json::Map<String, serde_json::Value> = self
            .virtual_hosts
            .iter()
            .map(|(host, virtual_host)| {
                let mut routes: Vec<&Route> = virtual_host.routes.iter().collect();
                routes.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
                let routes: Vec<serde_json::Value> = routes
                    .into_iter()
                    .map(|route| {
                        let action = match &route.action {
                            RouteAction::Forward(clusters) => {
                                json!({"forward": clusters.iter().map(|c| upstream(c)).collect::<Vec<_>>()})
                            }
                            RouteAction::DirectResponse { status } => json!({"directResponse": status}),
                        };
                        json!({
                            "prefix": route.path.as_str(),
                            "prefixMatch": route.path.kind(),
                            "hostRewrite": route.host_rewrite.as_ref().map(HostRewrite::to_json),
                            "action": action,
                            "mirror": route.mirror.as_ref().map(|c| upstream(c)),
                        })
                    })
                    .collect();
                (host.clone(), json!(routes))
            })
            .collect();
        for (host, secure) in &self.secure_hosts {
            let tls = match &secure.tls {
                DownstreamTls::Terminate(serving) => json!({
                    "terminate": true,
                    "versions": [serving.versions.0.name(), serving.versions.1.name()],
                }),
                DownstreamTls::Passthrough => json!({"terminate": false}),
            };
            let tcp_proxy: Vec<serde_json::Value> = secure.tcp_proxy.iter().map(|c| upstream(c)).collect();
            hosts.insert(format!("{host} (https)"), json!({"tls": tls, "tcpProxy": tcp_proxy}));
        }
        serde_json::Value::Object(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut table = RouteTable::default();
        let routes =
            [PathPrefix::String("/".into()), PathPrefix::Segments("/api".into()), PathPrefix::String("/asks".into())]
                .into_iter()
                .map(|p| Route {
                    action: RouteAction::DirectResponse { status: p.as_str().len() as u16 },
                    path: p,
                    host_rewrite: None,
                    mirror: None,
                    turn: Default::default(),
                })
                .collect();
        table.virtual_hosts.insert("a.test".into(), VirtualHost { routes });
        table
    }

    #[test]
    fn longest_matching_prefix_wins_by_its_kind() {
        let table = table();
        let status = |path| match table.route("a.test", path).map(|r| &r.action) {
            Some(RouteAction::DirectResponse { status }) => *status,
            _ => 0,
        };
        assert_eq!(status("/api/x"), 4);
        assert_eq!(status("/api"), 4);
        assert_eq!(status("/apix"), 1);
        assert_eq!(status("/asksX"), 5);
        assert_eq!(status("/ask"), 1);
        assert_eq!(status("/"), 1);
        assert!(table.route("b.test", "/").is_none());
    }
}
