//! The scenario file format: the public contract between scenario authors and the harness.
//!
//! A scenario file is one YAML document, a [`Scenario`]: who it is ([`Scenario::name`], the
//! contract clauses it proves, its features), the PKI to build ([`CertificateSpec`]), the TLS
//! backends to deploy ([`BackendSpec`]) and ordered [`Step`]s. Every type rejects unknown
//! fields, so a misspelt key is an error with its line and column, never a silent default.
//!
//! Strings in `apply` manifests and in expectations may hold `${...}` references
//! ([`template`]): they are checked when the file is loaded and filled in at run time.
//!
//! [`load`] reads and checks files; nothing in this module touches a cluster.

pub mod load;
pub mod template;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use load::{LoadError, LoadedScenario, load_dir, load_file};

/// Where the generated JSON Schema of scenario files lives, relative to the repository.
pub const SCHEMA_PATH: &str = "harness/scenario.schema.json";

/// The JSON Schema of scenario files, generated from these types.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Scenario);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

/// One scenario: a PKI, backends and the steps that prove some contract clauses.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// Unique, DNS-label-like (`[a-z0-9-]`, at most 40 characters): it names the test, the
    /// namespace and the virtual host.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the scenario shows, in a sentence or two.
    pub description: String,
    /// Clauses of the contract the scenario proves, such as `P1` or `V4`.
    #[schemars(with = "Vec<String>")]
    pub contract: Vec<Spanned<String>>,
    /// Features the implementation must have for the scenario to apply; they decide its
    /// profile. A scenario needing an install-wide feature the target lacks is skipped.
    #[serde(default)]
    pub features: Vec<Feature>,
    /// Extra namespaces to create (and delete) for the scenario, as `${namespaces.NAME}`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub namespaces: Vec<Spanned<String>>,
    /// Certificates and keys to generate, in order: an issuer comes before what it signs.
    #[serde(default)]
    pub pki: Vec<CertificateSpec>,
    /// TLS backends (nginx) to deploy before the steps run.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// Why the scenario must run with no other beside it: what it applies can disturb other
    /// scenarios' traffic on some implementations. It then runs as scenarios that change
    /// install-wide state do (after the others, alone, its namespaces gone before the next
    /// starts; on loopback, on a cluster of its own).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub alone: Option<Spanned<String>>,
    /// What to do and check, in order.
    pub steps: Vec<Step>,
}

/// A certificate and its key pair.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateSpec {
    /// How templates and backends refer to it.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The certificate that signs this one; self-signed when absent.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub issuer: Option<Spanned<String>>,
    /// Whether this is a CA certificate (basicConstraints CA:TRUE, keyCertSign).
    #[serde(default)]
    pub ca: bool,
    /// Subject common name; defaults to the name. `""` leaves the subject without one.
    #[serde(default)]
    pub common_name: Option<String>,
    /// DNS subjectAltNames.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub dns_names: Vec<Spanned<String>>,
    /// URI subjectAltNames, such as SPIFFE IDs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub uris: Vec<Spanned<String>>,
    /// IP address subjectAltNames.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ip_addresses: Vec<Spanned<String>>,
    /// Valid from 90 days ago until 30 days ago, instead of from an hour ago for 30 days.
    #[serde(default)]
    pub expired: bool,
    /// Valid from 30 days ahead until 90 days ahead: not valid yet.
    #[serde(default)]
    pub not_yet_valid: bool,
    /// The key pair's algorithm: `ecdsa-p256` (the default) or `rsa-2048`, for a backend that
    /// needs the TLS 1.2 suites with RSA authentication (`ECDHE-RSA-...`).
    #[serde(default)]
    pub key_algorithm: KeyAlgorithmSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum KeyAlgorithmSpec {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// A backend: nginx serving a certificate and echoing what it saw as JSON.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSpec {
    /// Names the Deployment and labels its pods `app.kubernetes.io/name: <name>`. They listen
    /// on 8443 (`https`: TLS, HTTP/2 when ALPN offers it), 8080 (`http`: plaintext HTTP/1.1)
    /// and 8081 (`h2c`: plaintext HTTP/2).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// The PKI entry whose certificate and key nginx serves.
    #[schemars(with = "String")]
    pub certificate: Spanned<String>,
    /// PKI entries served after the certificate, as intermediates.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub chain: Vec<Spanned<String>>,
    /// Ask the proxy for a client certificate.
    #[serde(default)]
    pub client_certificate: Option<ClientCertificateSpec>,
    /// TLS versions nginx accepts; default both.
    #[serde(default)]
    pub tls_versions: Option<Vec<TlsVersionSpec>>,
    /// The TLS 1.2 cipher suites nginx accepts (its `ssl_ciphers`), in OpenSSL's names;
    /// default nginx's own list. TLS 1.3 suites are not affected. The suite of a handshake
    /// needs the certificate's key algorithm: `ECDHE-RSA-...` an RSA key.
    #[serde(default)]
    pub tls_ciphers: Option<Vec<TlsCipherSpec>>,
    /// Whether the TLS port speaks HTTP/2 (`h2` by ALPN); default true. With `false`, nginx
    /// refuses a handshake that offers only `h2` (a no_application_protocol alert).
    #[serde(default = "yes")]
    #[schemars(default = "yes")]
    pub http2: bool,
    /// One of the scenario's `namespaces` to deploy into, for Services that an HTTPProxy in
    /// that namespace routes to; default the scenario's own namespace.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub namespace: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TlsVersionSpec {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// A TLS 1.2 cipher suite a backend may accept, as OpenSSL names it: the ECDHE AEAD suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TlsCipherSpec {
    #[serde(rename = "ECDHE-ECDSA-AES128-GCM-SHA256")]
    EcdsaAes128Gcm,
    #[serde(rename = "ECDHE-ECDSA-AES256-GCM-SHA384")]
    EcdsaAes256Gcm,
    #[serde(rename = "ECDHE-ECDSA-CHACHA20-POLY1305")]
    EcdsaChacha20,
    #[serde(rename = "ECDHE-RSA-AES128-GCM-SHA256")]
    RsaAes128Gcm,
    #[serde(rename = "ECDHE-RSA-AES256-GCM-SHA384")]
    RsaAes256Gcm,
    #[serde(rename = "ECDHE-RSA-CHACHA20-POLY1305")]
    RsaChacha20,
}

impl TlsCipherSpec {
    /// Whether the suite authenticates with RSA (needs an RSA certificate).
    pub fn needs_rsa(self) -> bool {
        matches!(self, TlsCipherSpec::RsaAes128Gcm | TlsCipherSpec::RsaAes256Gcm | TlsCipherSpec::RsaChacha20)
    }

    /// OpenSSL's name, as nginx takes it.
    pub fn openssl_name(self) -> &'static str {
        match self {
            TlsCipherSpec::EcdsaAes128Gcm => "ECDHE-ECDSA-AES128-GCM-SHA256",
            TlsCipherSpec::EcdsaAes256Gcm => "ECDHE-ECDSA-AES256-GCM-SHA384",
            TlsCipherSpec::EcdsaChacha20 => "ECDHE-ECDSA-CHACHA20-POLY1305",
            TlsCipherSpec::RsaAes128Gcm => "ECDHE-RSA-AES128-GCM-SHA256",
            TlsCipherSpec::RsaAes256Gcm => "ECDHE-RSA-AES256-GCM-SHA384",
            TlsCipherSpec::RsaChacha20 => "ECDHE-RSA-CHACHA20-POLY1305",
        }
    }
}

/// How a backend asks for client certificates.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientCertificateSpec {
    /// `optional`: ask and accept none; `require`: ask and reject requests without one
    /// (nginx answers them 400 "No required SSL certificate was sent").
    pub mode: ClientCertificateModeSpec,
    /// The PKI entry (a CA) client certificates must chain to, or `install.envoy-client-ca`
    /// for the CA of the installation's Envoy client certificate.
    #[schemars(with = "String")]
    pub ca: Spanned<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientCertificateModeSpec {
    Optional,
    Require,
}

/// One step. Exactly one key per list entry names its kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Step {
    /// Server-side apply of Kubernetes objects: a YAML block (several documents allowed).
    /// Namespaced objects without a namespace go to the scenario's namespace.
    #[schemars(with = "String")]
    Apply(Spanned<String>),
    /// Wait until an object's status contains the given fields.
    ExpectStatus(ExpectStatus),
    /// Send HTTP requests through the proxy until the expectation holds.
    Request(Box<RequestStep>),
    /// Requests whose expectations must hold at the same moment (two or more, as `request`
    /// steps without `consecutive`, `sharedBy` or `mirror`): sent in rounds, one of each in
    /// turn, until as many rounds in a row as the consistency window (3) match in every
    /// answer. For a configuration that may flip between two states while other objects
    /// change, where separate steps could each pass in a different moment.
    #[schemars(with = "Vec<RequestStep>")]
    Together(Spanned<Vec<RequestStep>>),
    /// For generated cases only (`differential`): records what the HTTPProxy statuses and the
    /// answers to these paths settle to, asserting nothing. Refused in scenario files.
    #[schemars(skip)]
    Observe(Spanned<Vec<String>>),
    /// Delete an object and wait until it is gone.
    Delete(ObjectSpec),
    /// Apply objects the cluster must refuse (admission): the step passes when the API
    /// server rejects one of them with a message containing the given text.
    ApplyRejected(ApplyRejected),
    /// Change the installation's Envoy client certificate Secret (docs/contract.md C2, C4). A
    /// scenario with this step runs alone, and the Secret is restored after it.
    EnvoyClientCertificate(ClientCertificateChange),
}

/// Objects the API server must refuse.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyRejected {
    /// As in `apply`.
    #[schemars(with = "String")]
    pub manifest: Spanned<String>,
    /// Text the refusal must contain.
    pub message_contains: String,
}

/// An object, by kind and name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectSpec {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Defaults to the scenario's namespace; one of its `namespaces` otherwise.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub namespace: Option<Spanned<String>>,
}

/// What to do to the installation's Envoy client certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientCertificateChange {
    /// Replace it with a new certificate from the same CA; `${install.envoy-client.*}` then
    /// describe the new one.
    Rotate,
    /// Delete it.
    Delete,
    /// Replace it with a Secret of this type and contents, to break it on purpose.
    Replace(ReplacementSecret),
}

/// A Secret to put in place of the installation's client certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplacementSecret {
    /// The Secret type, such as `kubernetes.io/tls` or `Opaque`.
    #[serde(rename = "type")]
    pub secret_type: String,
    /// Keys and their text values (PEM from `${pki.*}` references), stored base64-encoded.
    #[serde(default)]
    pub data: std::collections::BTreeMap<String, String>,
}

/// A capability a scenario exercises. Each belongs to a profile; install-wide ones must also
/// be declared by the target (see the book, book/src/real-cluster.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// TLS to upstreams chosen by annotation or protocol field (P1, P4-P6).
    UpstreamTls,
    /// HTTP/2 upstreams: h2 over TLS with ALPN, h2c (P5).
    UpstreamHttp2,
    /// Backend certificate validation and its status (V1-V6, S1, S2, S4, S5).
    UpstreamValidation,
    /// `appProtocol` on Service ports (P3).
    AppProtocol,
    /// The removed `contour.heptio.com` annotations have no effect (P2).
    LegacyAnnotationIgnored,
    /// SNI from Host rewrites (N1).
    UpstreamSni,
    /// Ingress backends get upstream TLS (N3).
    Ingress,
    /// CRD admission of validation blocks (V2).
    CrdAdmission,
    /// CA Secrets from other namespaces through TLSCertificateDelegation (S6).
    TlsCertificateDelegation,
    /// HTTPProxies that include others, across namespaces (I1-I4).
    HttpproxyIncludes,
    /// Route services that get a copy of every request (`mirror: true`, R3).
    RequestMirroring,
    /// Contour's exact status messages (S3, S6, C4).
    ContourStatusMessages,
    /// An install-wide Envoy client certificate (C1-C4).
    EnvoyClientCertificate,
    /// An installation with no Envoy client certificate configured (C5).
    NoEnvoyClientCertificate,
    /// An installation with the default upstream TLS settings: versions 1.2 to 1.3 and
    /// Contour's TLS 1.2 cipher suites (N2).
    UpstreamTlsDefaultVersions,
    /// An installation whose upstream TLS maximum is 1.2 (N2).
    #[serde(rename = "upstream-tls-maximum-1.2")]
    UpstreamTlsMaximum12,
    /// An installation whose TLS 1.2 cipher suites are `ECDHE-ECDSA-CHACHA20-POLY1305` then
    /// `ECDHE-ECDSA-AES128-GCM-SHA256` (N2).
    UpstreamTlsCustomCipherSuites,
    /// An installation that has enabled ExternalName Services (N5).
    ExternalNameServices,
    /// An installation that has not enabled ExternalName Services, Contour's default (N5).
    NoExternalNameServices,
    /// TCPProxy on a TLS virtual host, ended by the proxy or passed through, to upstreams
    /// over TLS (N4); requests go to the proxy's TLS address.
    TcpProxy,
    /// Gateway API's BackendTLSPolicy: HTTPRoutes attached to the installation's Gateway,
    /// their backends validated as a policy says (G1-G6). `${gateway.name}` and
    /// `${gateway.namespace}` name the Gateway.
    GatewayApiBackendTls,
}

/// Groups of features a certification reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// What every HTTPProxy implementation must do.
    Core,
    /// Optional capabilities an implementation may claim.
    Extended,
    /// Contour's own strings and APIs.
    ContourSpecific,
    /// Upstream TLS configured through Gateway API (BackendTLSPolicy), for any Gateway
    /// implementation.
    GatewayApi,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Core, Profile::Extended, Profile::ContourSpecific, Profile::GatewayApi];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Core => "core",
            Profile::Extended => "extended",
            Profile::ContourSpecific => "contour-specific",
            Profile::GatewayApi => "gateway-api",
        }
    }
}

impl Feature {
    /// Every feature, in documentation order (a test checks it against the enum).
    pub const ALL: [Feature; 21] = [
        Feature::UpstreamTls,
        Feature::UpstreamHttp2,
        Feature::UpstreamValidation,
        Feature::NoEnvoyClientCertificate,
        Feature::UpstreamTlsDefaultVersions,
        Feature::NoExternalNameServices,
        Feature::AppProtocol,
        Feature::LegacyAnnotationIgnored,
        Feature::UpstreamSni,
        Feature::Ingress,
        Feature::CrdAdmission,
        Feature::HttpproxyIncludes,
        Feature::RequestMirroring,
        Feature::TcpProxy,
        Feature::EnvoyClientCertificate,
        Feature::UpstreamTlsMaximum12,
        Feature::UpstreamTlsCustomCipherSuites,
        Feature::ExternalNameServices,
        Feature::TlsCertificateDelegation,
        Feature::ContourStatusMessages,
        Feature::GatewayApiBackendTls,
    ];

    pub fn profile(self) -> Profile {
        match self {
            Feature::UpstreamTls
            | Feature::UpstreamHttp2
            | Feature::UpstreamValidation
            | Feature::NoEnvoyClientCertificate
            | Feature::UpstreamTlsDefaultVersions
            | Feature::NoExternalNameServices => Profile::Core,
            Feature::AppProtocol
            | Feature::LegacyAnnotationIgnored
            | Feature::UpstreamSni
            | Feature::Ingress
            | Feature::CrdAdmission
            | Feature::HttpproxyIncludes
            | Feature::RequestMirroring
            | Feature::TcpProxy
            | Feature::EnvoyClientCertificate
            | Feature::UpstreamTlsMaximum12
            | Feature::UpstreamTlsCustomCipherSuites
            | Feature::ExternalNameServices => Profile::Extended,
            Feature::TlsCertificateDelegation | Feature::ContourStatusMessages => Profile::ContourSpecific,
            Feature::GatewayApiBackendTls => Profile::GatewayApi,
        }
    }

    /// Whether the feature depends on how the installation is configured (the harness cannot
    /// change it; a target declares it), rather than on what the implementation claims.
    pub fn is_install_wide(self) -> bool {
        matches!(
            self,
            Feature::EnvoyClientCertificate
                | Feature::NoEnvoyClientCertificate
                | Feature::UpstreamTlsDefaultVersions
                | Feature::UpstreamTlsMaximum12
                | Feature::UpstreamTlsCustomCipherSuites
                | Feature::ExternalNameServices
                | Feature::NoExternalNameServices
        )
    }

    /// Install-wide features no one installation has together.
    pub const CONTRADICTIONS: [(Feature, Feature); 4] = [
        (Feature::EnvoyClientCertificate, Feature::NoEnvoyClientCertificate),
        (Feature::UpstreamTlsDefaultVersions, Feature::UpstreamTlsMaximum12),
        (Feature::ExternalNameServices, Feature::NoExternalNameServices),
        (Feature::UpstreamTlsDefaultVersions, Feature::UpstreamTlsCustomCipherSuites),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::UpstreamTls => "upstream-tls",
            Feature::UpstreamHttp2 => "upstream-http2",
            Feature::UpstreamValidation => "upstream-validation",
            Feature::AppProtocol => "app-protocol",
            Feature::LegacyAnnotationIgnored => "legacy-annotation-ignored",
            Feature::UpstreamSni => "upstream-sni",
            Feature::Ingress => "ingress",
            Feature::CrdAdmission => "crd-admission",
            Feature::HttpproxyIncludes => "httpproxy-includes",
            Feature::RequestMirroring => "request-mirroring",
            Feature::TcpProxy => "tcp-proxy",
            Feature::TlsCertificateDelegation => "tls-certificate-delegation",
            Feature::ContourStatusMessages => "contour-status-messages",
            Feature::EnvoyClientCertificate => "envoy-client-certificate",
            Feature::NoEnvoyClientCertificate => "no-envoy-client-certificate",
            Feature::UpstreamTlsDefaultVersions => "upstream-tls-default-versions",
            Feature::UpstreamTlsMaximum12 => "upstream-tls-maximum-1.2",
            Feature::UpstreamTlsCustomCipherSuites => "upstream-tls-custom-cipher-suites",
            Feature::ExternalNameServices => "external-name-services",
            Feature::NoExternalNameServices => "no-external-name-services",
            Feature::GatewayApiBackendTls => "gateway-api-backend-tls",
        }
    }
}

impl Scenario {
    /// The contract clause ids the scenario proves, as written.
    pub fn clauses(&self) -> Vec<&str> {
        self.contract.iter().map(|c| c.value.as_str()).collect()
    }

    /// The scenario's profile: the most specific of its features' profiles.
    pub fn profile(&self) -> Profile {
        self.features.iter().map(|f| f.profile()).max().unwrap_or(Profile::Core)
    }

    /// Whether it must run alone: it changes install-wide state, or says it disturbs others
    /// ([`Scenario::disturbs_others`]).
    pub fn exclusive(&self) -> bool {
        self.disturbs_others() || self.steps.iter().any(|s| matches!(s, Step::EnvoyClientCertificate(_)))
    }

    /// Whether what it applies can disturb other scenarios (`alone`): on a real cluster, its
    /// objects must be gone before the next scenario starts.
    pub fn disturbs_others(&self) -> bool {
        self.alone.is_some()
    }
}

/// Wait for an object's status.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectStatus {
    /// Defaults to `projectcontour.io/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Defaults to `HTTPProxy`.
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    /// Defaults to the scenario's namespace; one of its `namespaces` otherwise.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub namespace: Option<Spanned<String>>,
    /// Fields the status must contain: maps match when every given key matches, lists when
    /// every given element matches a distinct actual element, scalars when equal.
    #[schemars(with = "serde_json::Value")]
    pub status: Spanned<serde_json::Value>,
    /// Lists in `status` must hold exactly the given elements, in any order: for asserting
    /// that an error is the only one reported.
    #[serde(default)]
    pub exact_lists: bool,
}

/// Requests to the scenario's virtual host through the proxy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestStep {
    /// Host header and TLS-free virtual host; defaults to `${host}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Defaults to `/`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Request headers to send besides Host (set with `host`) and the request id; values
    /// may use references.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub headers: std::collections::BTreeMap<String, Spanned<String>>,
    /// How many answers in a row must match (1-100); default the run's consistency window
    /// (3). More where a wrong implementation would match now and then by chance, such as a
    /// route that should send nothing to a service of weight 0.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1, max = 100))]
    pub consecutive: Option<Spanned<u32>>,
    /// Backends that share the route's requests: every answer must come from one of them,
    /// and each must answer at least once among the consecutive answers (which must number
    /// at least 10 per backend, so that a fair share at random misses none by chance). When
    /// one is missing (a route may still be changing), requests go on until the last answers
    /// in a row include them all, within the traffic time limit.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub shared_by: Vec<Spanned<String>>,
    /// Send the request over TLS to the proxy's TLS address, for a virtual host with
    /// `virtualhost.tls` (a TCPProxy), instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<RequestTls>,
    pub expect: ResponseExpectation,
    /// A mirror's copies: once the answers have passed, a backend other than the one that
    /// answered must show a copy of each of them in its access log, matching this (`name` says
    /// which backend). When copies are missing (a mirror may be programmed after its route),
    /// requests are sent again until as many answers in a row as the consistency window have
    /// their copies, within the traffic time limit.
    #[serde(default)]
    pub mirror: Option<BackendExpectation>,
}

/// How a request reaches a TLS virtual host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestTls {
    /// The `pki` entry (a CA) that the certificate served to the client must chain to: the
    /// virtual host's own, or the backend's when the proxy passes TLS through.
    #[schemars(with = "String")]
    pub trust: Spanned<String>,
    /// A DNS name the served certificate must be valid for; defaults to the host. The SNI is
    /// always the host.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub certificate_name: Option<Spanned<String>>,
    /// The TLS versions the client offers; default both. With versions outside the virtual
    /// host's `minimumProtocolVersion`-`maximumProtocolVersion`, expect `status: refused`.
    #[serde(default)]
    pub versions: Option<Vec<TlsVersionSpec>>,
}

/// What every one of the consecutive answers must show.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseExpectation {
    /// The status code, a list of acceptable codes, `none` or `refused`. `none`: no HTTP
    /// answer at all, the proxy closing the connection it accepted (a TCP proxy with nowhere
    /// to forward it); a refused connection, a rejected certificate or a timeout does not
    /// count. `refused`, for a request over TLS: the proxy refuses the handshake with a TLS
    /// alert (a TLS version outside the virtual host's range).
    pub status: StatusCodes,
    /// The response body must start with this text.
    #[serde(default)]
    pub body_starts_with: Option<String>,
    /// The response body must contain this text.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Response headers that must have exactly these values (names in any case).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Whether the request reached a backend. `false` is checked on every answer and, at
    /// the end, against the backends' access logs.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub backend_reached: Option<Spanned<bool>>,
    /// What the backend must have seen (implies `backendReached: true`).
    #[serde(default)]
    pub backend: Option<BackendExpectation>,
}

/// What a request must get: one status code or several acceptable ones (`503` or
/// `[502, 503]`), no answer (`none`: the connection closes without one), or a refused TLS
/// handshake (`refused`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum StatusCodes {
    /// An HTTP answer with one of these codes (never empty).
    Codes(Vec<u16>),
    /// No HTTP answer: the proxy accepts the connection and closes it.
    #[default]
    None,
    /// For a request over TLS (`tls`): the proxy refuses the client's handshake with a TLS
    /// alert, as for a TLS version outside the virtual host's range.
    Refused,
}

impl<'de> Deserialize<'de> for StatusCodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CodesVisitor;
        impl<'de> serde::de::Visitor<'de> for CodesVisitor {
            type Value = StatusCodes;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an HTTP status code, a list of them, `none` or `refused`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StatusCodes, E> {
                match text {
                    "none" => Ok(StatusCodes::None),
                    "refused" => Ok(StatusCodes::Refused),
                    _ => Err(E::custom(format!(
                        "{text:?} is not a status: give a code, a list of codes, `none` or `refused`"
                    ))),
                }
            }

            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<StatusCodes, E> {
                http_code(code).map(|c| StatusCodes::Codes(vec![c]))
            }

            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<StatusCodes, E> {
                self.visit_u64(u64::try_from(code).map_err(|_| E::custom("status codes are positive"))?)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusCodes, A::Error> {
                let mut codes = Vec::new();
                while let Some(code) = seq.next_element::<u64>()? {
                    codes.push(http_code(code)?);
                }
                if codes.is_empty() {
                    return Err(serde::de::Error::custom("the list of status codes is empty"));
                }
                Ok(StatusCodes::Codes(codes))
            }
        }
        d.deserialize_any(CodesVisitor)
    }
}

impl JsonSchema for StatusCodes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusCodes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An HTTP status code, a non-empty list of acceptable ones, `none` for no answer at all, or `refused` for a TLS handshake the proxy refuses.",
            "oneOf": [
                {"const": "none"},
                {"const": "refused"},
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}, "minItems": 1}
            ]
        })
    }
}

fn http_code<E: serde::de::Error>(code: u64) -> Result<u16, E> {
    match u16::try_from(code) {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(E::custom(format!("{code} is not an HTTP status code"))),
    }
}

/// Facts the backend echoes about the connection it received. Only given fields are checked;
/// strings may hold `${...}` references (such as `${pki.client.serial}`).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendExpectation {
    /// The backend's name as in `backends`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Whether the connection was TLS.
    #[serde(default)]
    pub tls: Option<bool>,
    /// The port the request arrived on: 8443, 8080 or 8081.
    #[serde(default, deserialize_with = "backend_port")]
    pub port: Option<u16>,
    /// The SNI the backend saw; `""` for none.
    #[serde(default)]
    pub sni: Option<String>,
    /// The negotiated ALPN protocol; `""` for none.
    #[serde(default)]
    pub alpn: Option<String>,
    /// `TLSv1.2` or `TLSv1.3`.
    #[serde(default, deserialize_with = "tls_version_name")]
    pub tls_version: Option<String>,
    /// The negotiated cipher suite, as OpenSSL names it (`ECDHE-ECDSA-AES128-GCM-SHA256`).
    #[serde(default)]
    pub cipher: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    #[serde(default, deserialize_with = "http_version_name")]
    pub http_version: Option<String>,
    /// The Host header (or :authority) the backend saw.
    #[serde(default)]
    pub host: Option<String>,
    /// The client certificate the backend saw.
    #[serde(default)]
    pub client_certificate: Option<ClientCertificateExpectation>,
}

/// A backend fact that can only take the values the backend reports (or a `${...}`
/// reference): any other could never match, and the scenario would only fail at run time.
fn reported_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    field: &str,
    reported: &[&str],
    prefix: Option<&str>,
) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    if let Some(value) = &value
        && !reported.contains(&value.as_str())
        && !prefix.is_some_and(|p| value.starts_with(p))
        && !value.contains("${")
    {
        let mut choices: Vec<String> = reported.iter().map(|r| r.to_string()).collect();
        choices.extend(prefix.map(|p| format!("{p}<reason>")));
        return Err(serde::de::Error::custom(format!(
            "{field} {value:?} is never what a backend reports; it reports {}",
            choices.join(", ")
        )));
    }
    Ok(value)
}

fn tls_version_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    reported_value(deserializer, "tlsVersion", &["TLSv1.2", "TLSv1.3"], None)
}

fn http_version_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    reported_value(deserializer, "httpVersion", &["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"], None)
}

fn verify_verdict<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    reported_value(deserializer, "clientCertificate.verify", &["SUCCESS", "NONE"], Some("FAILED:"))
}

/// The ports every backend listens on.
fn backend_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let port = Option::<u16>::deserialize(deserializer)?;
    match port {
        Some(port) if ![8443, 8080, 8081].contains(&port) => Err(serde::de::Error::custom(format!(
            "backend port {port} is not one a backend listens on: 8443 (https), 8080 (http) or 8081 (h2c)"
        ))),
        _ => Ok(port),
    }
}

/// The client certificate facts nginx reports. Only given fields are checked.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientCertificateExpectation {
    /// nginx's verdict: `SUCCESS`, `NONE`, or `FAILED:<reason>`.
    #[serde(default, deserialize_with = "verify_verdict")]
    pub verify: Option<String>,
    /// Subject DN as nginx prints it (RFC 2253), such as `CN=envoy`.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    /// Uppercase hex, such as `${pki.envoy-client.serial}`.
    #[serde(default)]
    pub serial: Option<String>,
    /// Lowercase hex SHA-1 fingerprint, such as `${pki.envoy-client.sha1}`.
    #[serde(default)]
    pub sha1: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenario.schema.json");
        let generated = json_schema();
        if std::env::var_os("UPSTREAM_TLS_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{SCHEMA_PATH} is out of date; run `cargo run -p harness -- schema > {SCHEMA_PATH}`"
        );
    }

    #[test]
    fn the_feature_list_is_complete_and_names_match_the_file_format() {
        // The schema lists every variant as the file format spells it.
        let schema = serde_json::to_value(schemars::schema_for!(Feature)).unwrap();
        let variants = schema["oneOf"].as_array().expect("documented variants are listed one by one");
        let spelled: Vec<String> = variants.iter().filter_map(|v| v["const"].as_str().map(str::to_string)).collect();
        assert_eq!(spelled.len(), Feature::ALL.len(), "Feature::ALL misses a variant: {spelled:?}");
        for feature in Feature::ALL {
            assert!(spelled.iter().any(|s| s == feature.name()), "{} is not how files spell it", feature.name());
            let parsed: Feature = serde_json::from_value(serde_json::json!(feature.name())).unwrap();
            assert_eq!(parsed, feature);
        }
        // Only install-wide features can contradict each other, and each has its opposite.
        for (a, b) in Feature::CONTRADICTIONS {
            assert!(a.is_install_wide() && b.is_install_wide(), "{} / {}", a.name(), b.name());
        }
        for feature in Feature::ALL.into_iter().filter(|f| f.is_install_wide()) {
            let paired = Feature::CONTRADICTIONS.iter().any(|(a, b)| *a == feature || *b == feature);
            assert!(paired, "{} is install-wide but contradicts nothing", feature.name());
        }
    }

    #[test]
    fn every_catalog_file_names_the_schema() {
        let mut files = Vec::new();
        let mut dirs = vec![crate::suite::default_scenario_dir()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        assert!(!files.is_empty());
        for file in files {
            let first = std::fs::read_to_string(&file).unwrap().lines().next().unwrap_or_default().to_string();
            assert_eq!(first, format!("# yaml-language-server: $schema=../../{SCHEMA_PATH}"), "{}", file.display());
        }
    }
}
