//! The install-wide Envoy client certificate (docs/contract.md C1-C4): [`ClientCertificateState`],
//! read from the Secret the config names on every rebuild, so replacing the Secret rotates
//! the certificate the proxy presents.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use super::secrets::Secrets;
use super::validation::secret_data;
use crate::config::LoopbackConfig;
use crate::dataplane::table::ClientCertificate;

/// What the configured client certificate Secret holds right now.
#[derive(Debug, Clone)]
pub enum ClientCertificateState {
    /// None configured: backends that require a client certificate fail the handshake (C5).
    NotConfigured,
    Ready(Arc<ClientCertificate>),
    /// Configured but unusable; the status message every route service gets (C4).
    Invalid(String),
}

/// Reads the client certificate the config names.
pub fn load(secrets: Secrets<'_>, config: &LoopbackConfig) -> ClientCertificateState {
    let Some(secret_name) = &config.tls.envoy_client_certificate else {
        return ClientCertificateState::NotConfigured;
    };
    let (namespace, name) = (&secret_name.namespace, &secret_name.name);
    match parse(secrets.get(namespace, name).as_ref()) {
        Ok(certificate) => ClientCertificateState::Ready(Arc::new(certificate)),
        Err(detail) => ClientCertificateState::Invalid(format!(
            "tls.envoy-client-certificate Secret \"{namespace}/{name}\" is invalid: {detail}"
        )),
    }
}

/// A self-signed certificate of the proxy's own, for [`Fault::FallbackClientCertificate`]
/// (`None` if rcgen cannot make one).
///
/// [`Fault::FallbackClientCertificate`]: crate::config::Fault::FallbackClientCertificate
pub fn fallback() -> Option<Arc<ClientCertificate>> {
    static FALLBACK: OnceLock<Option<Arc<ClientCertificate>>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let certified = rcgen::generate_simple_self_signed(vec!["loopback-proxy".to_string()]).ok()?;
            let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).ok()?;
            Some(Arc::new(ClientCertificate { chain: vec![certified.cert.der().clone()], key }))
        })
        .clone()
}

fn parse(secret: Option<&Value>) -> Result<ClientCertificate, String> {
    let secret = secret.ok_or("Secret not found")?;
    let secret_type = secret["type"].as_str().unwrap_or("Opaque");
    if secret_type != "Opaque" && secret_type != "kubernetes.io/tls" {
        return Err(format!("secret type is not \"kubernetes.io/tls\" or \"Opaque\": {secret_type}"));
    }
    let cert_pem = secret_data(secret, "tls.crt");
    let key_pem = secret_data(secret, "tls.key");
    if cert_pem.is_empty() || key_pem.is_empty() {
        return Err("missing TLS certificate or key".into());
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid TLS certificate: {e}"))?;
    if chain.is_empty() {
        return Err("invalid TLS certificate: no certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("invalid TLS private key: {e}"))?;
    Ok(ClientCertificate { chain, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Store;
    use crate::api::kinds::{NAMESPACE, SECRET};
    use crate::config::SecretName;
    use base64::Engine;
    use serde_json::json;

    fn config() -> LoopbackConfig {
        let mut config = LoopbackConfig::default();
        config.tls.envoy_client_certificate = Some(SecretName { name: "client".into(), namespace: "proxy".into() });
        config
    }

    #[test]
    fn missing_secret_gives_contours_message() {
        let store = Store::new();
        match load(Secrets::Live(&store), &config()) {
            ClientCertificateState::Invalid(message) => {
                assert_eq!(message, "tls.envoy-client-certificate Secret \"proxy/client\" is invalid: Secret not found")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            load(Secrets::Live(&store), &LoopbackConfig::default()),
            ClientCertificateState::NotConfigured
        ));
    }

    #[test]
    fn a_tls_secret_is_loaded() {
        let store = Store::new();
        store.create(&NAMESPACE, "", json!({"metadata": {"name": "proxy"}})).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap().self_signed(&key).unwrap();
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = json!({
            "metadata": {"name": "client"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(cert.pem()), "tls.key": b64(key.serialize_pem())},
        });
        store.create(&SECRET, "proxy", secret).unwrap();
        assert!(matches!(load(Secrets::Live(&store), &config()), ClientCertificateState::Ready(_)));
    }
}
