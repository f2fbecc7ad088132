//! Install-wide state the harness manages: the installation's Envoy client certificate
//! (CONTRACT C1), [`InstallClientCertificate`].
//!
//! The installation is configured (Contour's `tls.envoy-client-certificate`) to read a
//! Secret; the harness writes that Secret at the start of a run with a certificate from its
//! own CA, so backends can require and verify it, and restores it after any scenario that
//! rotates or deletes it.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::cluster::{ClusterClient, ClusterError, ObjectRef};
use crate::pki::{CertificateRequest, Material, Pki, PkiError};
use crate::scenario::template::Bindings;

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

    fn object_ref(&self) -> ObjectRef {
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
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(SecretRef { namespace: namespace.into(), name: name.into() })
            }
            _ => Err(format!("{s:?} is not of the form NAMESPACE/NAME")),
        }
    }
}

const CA: &str = "envoy-client-ca";
const LEAF: &str = "envoy-client";

fn leaf_request() -> CertificateRequest<'static> {
    CertificateRequest { name: LEAF, issuer: Some(CA), ca: false, common_name: LEAF, dns_names: &[], expired: false }
}

/// The installation's client certificate, its CA, and the Secret that holds it.
pub struct InstallClientCertificate {
    pub secret: SecretRef,
    pki: Mutex<Pki>,
    ca: Material,
    original: Material,
}

impl InstallClientCertificate {
    /// Generates a CA and a client certificate signed by it.
    ///
    /// # Errors
    /// rcgen refuses to generate them.
    pub fn generate(secret: SecretRef) -> Result<Self, PkiError> {
        let mut pki = Pki::default();
        let ca_request =
            CertificateRequest { name: CA, issuer: None, ca: true, common_name: CA, dns_names: &[], expired: false };
        let ca = pki.issue(&ca_request)?.clone();
        let original = pki.issue(&leaf_request())?.clone();
        Ok(InstallClientCertificate { secret, pki: Mutex::new(pki), ca, original })
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
        cluster.apply(&self.secret_object(material), &self.secret.namespace).await?;
        Ok(())
    }

    /// Deletes the Secret and waits until it is gone.
    ///
    /// # Errors
    /// The cluster refuses the deletion.
    pub async fn delete(&self, cluster: &ClusterClient, limit: std::time::Duration) -> Result<(), ClusterError> {
        cluster.delete_and_wait(&self.secret.object_ref(), limit).await
    }

    fn secret_object(&self, material: &Material) -> Value {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret.name, "namespace": self.secret.namespace},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&material.cert_pem), "tls.key": b64(&material.key_pem)},
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
}
