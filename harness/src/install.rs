//! Install-wide state: what an installation has configured ([`Installation`], which decides
//! the install-wide features it can run), and the Envoy client certificate the harness
//! manages for it (docs/contract.md C1), [`InstallClientCertificate`].
//!
//! An installation configured (Contour's `tls.envoy-client-certificate`) to read a Secret
//! gets that Secret written at the start of a run with a certificate from the harness's own
//! CA, so backends can require and verify it; the Secret is restored after any scenario that
//! rotates or deletes it.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::cluster::{ClusterClient, ClusterError, ObjectRef, namespace_ref};
use crate::pki::{CertificateRequest, Material, Pki, PkiError};
use crate::scenario::Feature;
use crate::scenario::template::Bindings;

pub use loopback::config::{GatewayRef, TlsVersion};

/// The install-wide settings of an installation that scenarios depend on (docs/contract.md C1, N2).
/// Real installations declare them; loopback knows its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The Secret its Envoy client certificate comes from, if it has one.
    pub client_certificate: Option<SecretRef>,
    /// The TLS versions it allows towards backends, `(minimum, maximum)`.
    pub upstream_tls: (TlsVersion, TlsVersion),
    /// The TLS 1.2 cipher suites it offers backends, when not Contour's defaults
    /// (`cluster.upstream-tls.cipher-suites`).
    pub cipher_suites: Option<Vec<String>>,
    /// Whether route services may name ExternalName Services (Contour's `enableExternalNameService`).
    pub external_name_services: bool,
    /// Whether the harness knows where the proxy serves TLS virtual hosts (loopback's always;
    /// a real cluster's when its TLS address is given).
    pub tls_listener: bool,
    /// Features the implementation does not claim: their scenarios are skipped.
    pub exempt: Vec<Feature>,
    /// The Gateway its controller reconciles, for Gateway API scenarios.
    pub gateway: Option<GatewaySetup>,
}

/// The Gateway an installation's controller reconciles (Contour's `gateway.gatewayRef`): the
/// harness makes it, with its GatewayClass, when the cluster has none, and waits until it is
/// Programmed before any scenario runs. Scenarios attach their HTTPRoutes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySetup {
    pub gateway: GatewayRef,
    /// The GatewayClass it names.
    pub class_name: String,
    /// The class's `controllerName`, for a class the harness makes.
    pub controller_name: String,
}

/// The Gateway API group version the Gateway and its class are made at.
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

impl GatewaySetup {
    /// The Gateway loopback's Contour reconciles: `projectcontour/contour`, of class
    /// `contour`, as in Contour's Gateway API example.
    pub fn loopback() -> Self {
        GatewaySetup {
            gateway: GatewayRef { namespace: "projectcontour".into(), name: "contour".into() },
            class_name: "contour".into(),
            controller_name: "projectcontour.io/gateway-controller".into(),
        }
    }

    fn gateway_object(&self) -> ObjectRef {
        ObjectRef {
            api_version: GATEWAY_API.into(),
            kind: "Gateway".into(),
            namespace: Some(self.gateway.namespace.clone()),
            name: self.gateway.name.clone(),
        }
    }

    /// Makes the Gateway (with its namespace and GatewayClass) unless the cluster has it, then
    /// waits until its controller says it is Programmed. The Gateway made listens for HTTP on
    /// port 80 for routes of every namespace, since each scenario has namespaces of its own.
    /// Returns what it made, in the order made, for the run to remove at its end.
    ///
    /// # Errors
    /// The cluster does not serve the Gateway API, refuses an object, or the Gateway is not
    /// Programmed within `limit` (the message holds its conditions).
    pub async fn ensure(&self, cluster: &ClusterClient, limit: std::time::Duration) -> Result<Vec<ObjectRef>, String> {
        let mut made = Vec::new();
        if let Err(e) = cluster.serves(GATEWAY_API, "Gateway").await {
            return Err(format!(
                "the cluster does not serve {GATEWAY_API} Gateway ({e}); install the Gateway API CRDs the \
                 implementation supports"
            ));
        }
        let gateway = self.gateway_object();
        if cluster.get(&gateway).await.map_err(|e| e.to_string())?.is_none() {
            let namespace = namespace_ref(&self.gateway.namespace);
            if cluster.get(&namespace).await.map_err(|e| e.to_string())?.is_none() {
                let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace.name}});
                cluster.apply(&object, "").await.map_err(|e| e.to_string())?;
                made.push(namespace);
            }
            let class = ObjectRef {
                api_version: GATEWAY_API.into(),
                kind: "GatewayClass".into(),
                namespace: None,
                name: self.class_name.clone(),
            };
            if cluster.get(&class).await.map_err(|e| e.to_string())?.is_none() {
                let object = json!({
                    "apiVersion": GATEWAY_API, "kind": "GatewayClass",
                    "metadata": {"name": self.class_name},
                    "spec": {"controllerName": self.controller_name},
                });
                cluster.apply(&object, "").await.map_err(|e| e.to_string())?;
                made.push(class);
            }
            let object = json!({
                "apiVersion": GATEWAY_API, "kind": "Gateway",
                "metadata": {"name": self.gateway.name, "namespace": self.gateway.namespace},
                "spec": {
                    "gatewayClassName": self.class_name,
                    "listeners": [{
                        "name": "http", "protocol": "HTTP", "port": 80,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }],
                },
            });
            cluster.apply(&object, &self.gateway.namespace).await.map_err(|e| e.to_string())?;
            made.push(gateway.clone());
        }
        let programmed = |gateway: &Value| {
            gateway["status"]["conditions"]
                .as_array()
                .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Programmed" && c["status"] == "True"))
        };
        match cluster.wait_for(&gateway, limit, programmed).await.map_err(|e| e.to_string())? {
            Ok(_) => Ok(made),
            Err(last) => {
                let conditions = last.map(|g| g["status"]["conditions"].to_string()).unwrap_or_else(|| "none".into());
                Err(format!(
                    "the Gateway {} is not Programmed after {}s (its conditions: {conditions}); is the \
                     controller running with gatewayRef {}?",
                    self.gateway,
                    limit.as_secs(),
                    self.gateway
                ))
            }
        }
    }
}

impl Default for Installation {
    /// Contour's defaults: no client certificate, TLS 1.2 to 1.3, no ExternalName Services.
    fn default() -> Self {
        Installation {
            client_certificate: None,
            upstream_tls: (TlsVersion::V1_2, TlsVersion::V1_3),
            cipher_suites: None,
            external_name_services: false,
            tls_listener: false,
            exempt: Vec::new(),
            gateway: None,
        }
    }
}

/// Why an installation does not run a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason {
    pub text: String,
    /// The installation is configured otherwise (an install-wide setting), so the scenario
    /// does not apply to it; as opposed to a feature the implementation does not claim.
    pub not_applicable: bool,
}

impl Installation {
    /// Why this installation cannot run scenarios with `feature`, if it cannot: the one place
    /// claimed and install-wide features are decided.
    pub fn lacks(&self, feature: Feature) -> Option<SkipReason> {
        let (minimum, maximum) = self.upstream_tls;
        let setting = |text: String| Some(SkipReason { text, not_applicable: true });
        match feature {
            _ if self.exempt.contains(&feature) => Some(SkipReason {
                text: format!("the implementation does not claim feature {}", feature.name()),
                not_applicable: false,
            }),
            Feature::EnvoyClientCertificate if self.client_certificate.is_none() => setting(
                "the installation has no Envoy client certificate (declare it with installation.envoyClientCertificate \
                 or --client-cert-secret)"
                    .into(),
            ),
            Feature::NoEnvoyClientCertificate if self.client_certificate.is_some() => {
                setting("the installation has an Envoy client certificate".into())
            }
            Feature::UpstreamTlsDefaultVersions if self.upstream_tls != Installation::default().upstream_tls => {
                setting(format!("the installation limits upstream TLS to {minimum}-{maximum}, not the default 1.2-1.3"))
            }
            Feature::UpstreamTlsDefaultVersions if self.cipher_suites.is_some() => {
                setting("the installation configures its own TLS 1.2 cipher suites, not Contour's defaults".into())
            }
            Feature::UpstreamTlsCustomCipherSuites
                if self.cipher_suites.as_deref() != Some(&CUSTOM_CIPHER_SUITES.map(String::from)[..]) =>
            {
                setting(format!(
                    "the installation's TLS 1.2 cipher suites are not {} (declare them with \
                     installation.upstreamTls.cipherSuites)",
                    CUSTOM_CIPHER_SUITES.join(", ")
                ))
            }
            Feature::UpstreamTlsMaximum12 if maximum != TlsVersion::V1_2 => {
                setting(format!("the installation's upstream TLS maximum is {maximum}, not 1.2"))
            }
            Feature::ExternalNameServices if !self.external_name_services => setting(
                "the installation has not enabled ExternalName Services (declare it with \
                 installation.enableExternalNameService)"
                    .into(),
            ),
            Feature::TcpProxy if !self.tls_listener => Some(SkipReason {
                text: "the proxy's TLS address is not given (--tls-proxy, or cluster.tlsProxy in the config file)".into(),
                not_applicable: false,
            }),
            Feature::GatewayApiBackendTls if self.gateway.is_none() => Some(SkipReason {
                text: "the installation names no Gateway for Gateway API scenarios (installation.gateway in the \
                       config file)"
                    .into(),
                not_applicable: false,
            }),
            Feature::NoExternalNameServices if self.external_name_services => {
                setting("the installation has enabled ExternalName Services".into())
            }
            _ => None,
        }
    }

    /// Why this installation cannot run a scenario with all of `features`, if it cannot.
    pub fn lacks_any(&self, features: &[Feature]) -> Option<SkipReason> {
        features.iter().find_map(|f| self.lacks(*f))
    }

    /// One line for headers and reports.
    pub fn describe(&self) -> String {
        let (minimum, maximum) = self.upstream_tls;
        let certificate = match &self.client_certificate {
            Some(secret) => format!("Envoy client certificate from {secret}"),
            None => "no Envoy client certificate".into(),
        };
        let suites = match &self.cipher_suites {
            Some(suites) => format!(" offering {}", suites.join(", ")),
            None => String::new(),
        };
        let external_names = if self.external_name_services { ", ExternalName Services enabled" } else { "" };
        let gateway = match &self.gateway {
            Some(setup) => format!(", Gateway {}", setup.gateway),
            None => String::new(),
        };
        format!("{certificate}, upstream TLS {minimum}-{maximum}{suites}{external_names}{gateway}")
    }
}

/// The TLS 1.2 cipher suites an installation with feature `upstream-tls-custom-cipher-suites`
/// configures, in order: neither Contour's default order (AES128-GCM first) nor the usual
/// library order (AES256-GCM first), so a scenario can tell which list was offered (N2).
pub const CUSTOM_CIPHER_SUITES: [&str; 2] = ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"];

/// Where the installation reads its client certificate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl SecretRef {
    /// The Secret the harness uses by default (and configures loopback with).
    pub fn default_client_certificate() -> Self {
        SecretRef { namespace: "upstream-tls-conformance".into(), name: "envoy-client".into() }
    }

    /// The Secret as a cluster object.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for SecretRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let label = crate::scenario::load::is_dns_label;
        match s.split_once('/') {
            Some((namespace, name)) if label(namespace) && name.len() <= 253 && name.split('.').all(label) => {
                Ok(SecretRef { namespace: namespace.into(), name: name.into() })
            }
            _ => Err(format!(
                "{s:?} is not of the form NAMESPACE/NAME (a lowercase namespace, a lowercase name that may hold dots)"
            )),
        }
    }
}

const CA: &str = "envoy-client-ca";
const LEAF: &str = "envoy-client";

fn leaf_request() -> CertificateRequest<'static> {
    CertificateRequest {
        name: LEAF,
        issuer: Some(CA),
        ca: false,
        common_name: LEAF,
        dns_names: Vec::new(),
        uris: Vec::new(),
        expired: false,
        not_yet_valid: false,
        ip_addresses: Vec::new(),
        rsa: false,
    }
}

/// The installation's client certificate, its CA, and the Secret that holds it.
pub struct InstallClientCertificate {
    pub secret: SecretRef,
    pki: Mutex<Pki>,
    ca: Material,
    original: Material,
    /// Whether the Secret's namespace did not exist before this run wrote the Secret, so that
    /// [`InstallClientCertificate::remove`] takes it away again (and only then).
    pub namespace_created: bool,
}

impl InstallClientCertificate {
    /// Generates a CA and a client certificate signed by it.
    ///
    /// # Errors
    /// rcgen refuses to generate them.
    pub fn generate(secret: SecretRef) -> Result<Self, PkiError> {
        let mut pki = Pki::default();
        let ca_request = CertificateRequest {
            name: CA,
            issuer: None,
            ca: true,
            common_name: CA,
            dns_names: Vec::new(),
            uris: Vec::new(),
            expired: false,
            not_yet_valid: false,
            ip_addresses: Vec::new(),
            rsa: false,
        };
        let ca = pki.issue(&ca_request)?.clone();
        let original = pki.issue(&leaf_request())?.clone();
        Ok(InstallClientCertificate { secret, pki: Mutex::new(pki), ca, original, namespace_created: false })
    }

    /// The CA backends verify the client certificate against.
    pub fn ca(&self) -> &Material {
        &self.ca
    }

    /// The certificate written at the start of the run.
    pub fn original(&self) -> &Material {
        &self.original
    }

    /// A new certificate from the same CA, for rotation.
    ///
    /// # Errors
    /// rcgen refuses to generate it.
    pub fn rotated(&self) -> Result<Material, PkiError> {
        let mut pki = self.pki.lock().unwrap_or_else(|e| e.into_inner());
        Ok(pki.issue(&leaf_request())?.clone())
    }

    /// `install.envoy-client-ca.*`, `install.secret` (`namespace/name`) and, for `current`,
    /// `install.envoy-client.*`.
    pub fn bind(&self, bindings: &mut Bindings, current: &Material) {
        bindings.insert("install.secret", self.secret.to_string());
        self.ca.bind(bindings, &format!("install.{CA}"));
        current.bind(bindings, &format!("install.{LEAF}"));
    }

    /// Writes the Secret (creating its namespace if needed) with `material`.
    ///
    /// # Errors
    /// The cluster refuses the namespace or the Secret.
    pub async fn write(&self, cluster: &ClusterClient, material: &Material) -> Result<(), ClusterError> {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.secret.namespace}});
        cluster.apply(&namespace, "").await?;
        let data = [("tls.crt", material.cert_pem.as_str()), ("tls.key", material.key_pem.as_str())];
        cluster.apply(&self.secret_object("kubernetes.io/tls", data), &self.secret.namespace).await?;
        Ok(())
    }

    /// Writes the Secret with `secret_type` and `data` (text values, stored base64-encoded).
    ///
    /// # Errors
    /// The cluster refuses the Secret.
    pub async fn write_raw(
        &self,
        cluster: &ClusterClient,
        secret_type: &str,
        data: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let data = data.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        cluster.apply(&self.secret_object(secret_type, data), &self.secret.namespace).await?;
        Ok(())
    }

    /// Puts the original certificate back after a scenario changed the Secret. The Secret is
    /// recreated when a scenario gave it another type, which cannot change in place.
    ///
    /// # Errors
    /// The cluster refuses the deletion or the Secret.
    pub async fn restore(&self, cluster: &ClusterClient, limit: std::time::Duration) -> Result<(), ClusterError> {
        let current = cluster.get(&self.secret.object_ref()).await?;
        if current.is_some_and(|s| s["type"] != "kubernetes.io/tls") {
            self.delete(cluster, limit).await?;
        }
        self.write(cluster, self.original()).await
    }

    /// Removes what the run wrote for the installation, at its end on a real cluster: the
    /// Secret, and its namespace when the run created it; waits up to `limit` for them to go.
    ///
    /// # Errors
    /// The cluster refuses a deletion, or something is still there after `limit`.
    pub async fn remove(&self, cluster: &ClusterClient, limit: std::time::Duration) -> Result<(), ClusterError> {
        self.delete(cluster, limit).await?;
        if self.namespace_created {
            cluster.delete_namespace(&self.secret.namespace, limit).await?;
        }
        Ok(())
    }

    /// Deletes the Secret and waits until it is gone.
    ///
    /// # Errors
    /// The cluster refuses the deletion.
    pub async fn delete(&self, cluster: &ClusterClient, limit: std::time::Duration) -> Result<(), ClusterError> {
        cluster.delete_and_wait(&self.secret.object_ref(), limit).await
    }

    /// The Secret document, `data` given as text and stored base64-encoded.
    fn secret_object<'v>(&self, secret_type: &str, data: impl IntoIterator<Item = (&'v str, &'v str)>) -> Value {
        use base64::Engine;
        let data: serde_json::Map<String, Value> = data
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(v))))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret.name, "namespace": self.secret.namespace},
            "type": secret_type,
            "data": data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_issues_a_new_certificate_from_the_same_ca() {
        let install = InstallClientCertificate::generate(SecretRef::default_client_certificate()).unwrap();
        let rotated = install.rotated().unwrap();
        assert_ne!(rotated.serial_hex, install.original().serial_hex);
        let mut bindings = Bindings::default();
        install.bind(&mut bindings, &rotated);
        assert_eq!(bindings.expand("${install.envoy-client.serial}").unwrap(), rotated.serial_hex);
        assert_eq!(bindings.expand("${install.envoy-client-ca.sha1}").unwrap(), install.ca().sha1_hex);
    }

    #[test]
    fn secret_references_parse() {
        assert_eq!("a/b".parse::<SecretRef>().unwrap(), SecretRef { namespace: "a".into(), name: "b".into() });
        assert!("ab".parse::<SecretRef>().is_err());
    }

    #[test]
    fn install_wide_features_follow_the_settings() {
        let plain = Installation::default();
        let with_certificate =
            Installation { client_certificate: Some(SecretRef::default_client_certificate()), ..Default::default() };
        let limited = Installation { upstream_tls: (TlsVersion::V1_2, TlsVersion::V1_2), ..Default::default() };

        assert!(plain.lacks(Feature::EnvoyClientCertificate).unwrap().not_applicable);
        assert!(plain.lacks(Feature::NoEnvoyClientCertificate).is_none());
        assert!(with_certificate.lacks(Feature::EnvoyClientCertificate).is_none());
        assert!(with_certificate.lacks(Feature::NoEnvoyClientCertificate).is_some());
        assert!(plain.lacks(Feature::UpstreamTlsDefaultVersions).is_none());
        assert!(plain.lacks(Feature::UpstreamTlsMaximum12).is_some());
        assert!(limited.lacks(Feature::UpstreamTlsMaximum12).is_none());
        let reason = limited.lacks(Feature::UpstreamTlsDefaultVersions).unwrap().text;
        assert_eq!(reason, "the installation limits upstream TLS to 1.2-1.2, not the default 1.2-1.3");
        assert!(plain.lacks(Feature::UpstreamTls).is_none(), "not an install-wide feature");
        let exempting = Installation { exempt: vec![Feature::UpstreamTls], ..Default::default() };
        let unclaimed = exempting.lacks(Feature::UpstreamTls).unwrap();
        assert_eq!(unclaimed.text, "the implementation does not claim feature upstream-tls");
        assert!(!unclaimed.not_applicable, "an unclaimed feature counts against certification");
        let external_names = Installation { external_name_services: true, ..Default::default() };
        assert!(plain.lacks(Feature::ExternalNameServices).unwrap().not_applicable);
        assert!(plain.lacks(Feature::NoExternalNameServices).is_none());
        assert!(external_names.lacks(Feature::ExternalNameServices).is_none());
        assert!(external_names.lacks(Feature::NoExternalNameServices).is_some());
        assert!(external_names.describe().ends_with("upstream TLS 1.2-1.3, ExternalName Services enabled"));
        let custom =
            Installation { cipher_suites: Some(CUSTOM_CIPHER_SUITES.map(String::from).into()), ..Default::default() };
        assert!(custom.lacks(Feature::UpstreamTlsCustomCipherSuites).is_none());
        assert!(custom.lacks(Feature::UpstreamTlsDefaultVersions).is_some(), "not Contour's default suites");
        assert!(plain.lacks(Feature::UpstreamTlsCustomCipherSuites).is_some());
        let other =
            Installation { cipher_suites: Some(vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into()]), ..Default::default() };
        assert!(other.lacks(Feature::UpstreamTlsCustomCipherSuites).is_some(), "another list is not this one");
    }
}
