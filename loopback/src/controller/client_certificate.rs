//! The install-wide Envoy client certificate (docs/contract.md C1-C4): [`ClientCertificateState`],
//! read from the Secret the config names on every rebuild, so replacing the Secret rotates
//! the certificate the proxy presents.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use super::secrets::Secrets;
use super::validation::secret_data;
use crate::config::{Fault, LoopbackConfig};
use crate::dataplane::table::CertifiedChain;
use crate::x509;

/// What the configured client certificate Secret holds right now.
#[derive(Debug, Clone)]
pub enum ClientCertificateState {
    /// None configured: backends that require a client certificate fail the handshake (C5).
    NotConfigured,
    Ready(Arc<CertifiedChain>),
    /// Configured but unusable; the status message every route service gets (C4).
    Invalid(String),
}

/// Reads the client certificate the config names.
pub fn load(secrets: Secrets<'_>, config: &LoopbackConfig) -> ClientCertificateState {
    let Some(secret_name) = &config.tls.envoy_client_certificate else {
        return ClientCertificateState::NotConfigured;
    };
    let (namespace, name) = (&secret_name.namespace, &secret_name.name);
    let strict = !config.has(Fault::LenientClientCertificateSecret);
    match tls_secret(secrets.get(namespace, name).as_deref(), strict) {
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
pub fn fallback() -> Option<Arc<CertifiedChain>> {
    static FALLBACK: OnceLock<Option<Arc<CertifiedChain>>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let certified = rcgen::generate_simple_self_signed(vec!["loopback-proxy".to_string()]).ok()?;
            let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).ok()?;
            Some(Arc::new(CertifiedChain { chain: vec![certified.cert.der().clone()], key }))
        })
        .clone()
}

/// The certificate and key of a Secret, checked as Contour checks a TLS Secret, with its
/// error texts: the Envoy client certificate (docs/contract.md C2, C4) and a TLS virtual
/// host's certificate (N4).
pub fn tls_secret(secret: Option<&Value>, strict: bool) -> Result<CertifiedChain, String> {
    let secret = secret.ok_or("Secret not found")?;
    let secret_type = secret["type"].as_str().unwrap_or("Opaque");
    if secret_type != "Opaque" && secret_type != "kubernetes.io/tls" {
        return Err("secret type is not \"kubernetes.io/tls\" or \"Opaque\"".into());
    }
    let cert_pem = secret_value(secret, "tls.crt").ok_or("missing TLS certificate")?;
    let chain = serving_bundle(&cert_pem, strict).map_err(|e| format!("invalid TLS certificate: {e}"))?;
    let key_pem = secret_value(secret, "tls.key").ok_or("missing TLS private key")?;
    let key = private_key(&key_pem, strict).map_err(|e| format!("invalid TLS private key: {e}"))?;
    Ok(CertifiedChain { chain, key })
}

/// A Secret's value for `key` when the key is present, even if empty.
fn secret_value(secret: &Value, key: &str) -> Option<Vec<u8>> {
    let present = secret["data"].get(key).is_some() || secret["stringData"].get(key).is_some();
    present.then(|| secret_data(secret, key))
}

/// Certificates only, at least one, the first with a common name or a DNS or IP SAN.
fn serving_bundle(pem: &[u8], strict: bool) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for block in x509::pem_blocks(pem)? {
        if block.label != "CERTIFICATE" {
            return Err(format!("unexpected block type '{}'", block.label));
        }
        let names = x509::Names::read(&block.der)?;
        let named =
            names.common_names.iter().any(|cn| !cn.trim().is_empty()) || !names.dns.is_empty() || !names.ip.is_empty();
        if chain.is_empty() && !named && strict {
            return Err("certificate has no common name or subject alt name".into());
        }
        chain.push(CertificateDer::from(block.der));
    }
    if chain.is_empty() {
        return Err("failed to locate certificate".into());
    }
    Ok(chain)
}

/// Exactly one private key among the blocks (EC PARAMETERS blocks are skipped).
fn private_key(pem: &[u8], strict: bool) -> Result<PrivateKeyDer<'static>, String> {
    let mut keys = Vec::new();
    for block in x509::pem_blocks(pem)? {
        let key = match block.label.as_str() {
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(block.der.into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(block.der.into()),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(block.der.into()),
            "EC PARAMETERS" => continue,
            other => return Err(format!("unexpected block type '{other}'")),
        };
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        if provider.key_provider.load_private_key(key.clone_key()).is_err() {
            return Err("x509: failed to parse private key".into());
        }
        keys.push(key);
    }
    match keys.len() {
        0 => Err("failed to locate private key".into()),
        1 => Ok(keys.remove(0)),
        _ if !strict => Ok(keys.remove(0)),
        _ => Err("multiple private keys".into()),
    }
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

    fn pem_pair(configure: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        configure(&mut params);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn check(secret_type: &str, data: serde_json::Value) -> Result<(), String> {
        tls_secret(Some(&json!({"type": secret_type, "stringData": data})), true).map(|_| ())
    }

    #[test]
    fn secrets_are_checked_in_contours_order_and_words() {
        let (cert, key) = pem_pair(|_| {});
        let (other_cert, other_key) = pem_pair(|_| {});
        let ok = json!({"tls.crt": cert, "tls.key": key});
        assert_eq!(check("kubernetes.io/tls", ok.clone()), Ok(()));
        assert_eq!(check("Opaque", ok.clone()), Ok(()));
        let wrong_type = "secret type is not \"kubernetes.io/tls\" or \"Opaque\"";
        assert_eq!(check("kubernetes.io/basic-auth", ok).unwrap_err(), wrong_type);
        assert_eq!(check("Opaque", json!({"tls.key": key})).unwrap_err(), "missing TLS certificate");
        assert_eq!(check("Opaque", json!({"tls.crt": cert})).unwrap_err(), "missing TLS private key");
        assert_eq!(
            check("Opaque", json!({"tls.crt": "", "tls.key": key})).unwrap_err(),
            "invalid TLS certificate: failed to locate certificate"
        );
        assert_eq!(
            check("Opaque", json!({"tls.crt": key, "tls.key": key})).unwrap_err(),
            "invalid TLS certificate: unexpected block type 'PRIVATE KEY'"
        );
        assert_eq!(
            check("Opaque", json!({"tls.crt": cert, "tls.key": format!("{key}{other_key}")})).unwrap_err(),
            "invalid TLS private key: multiple private keys"
        );
        assert_eq!(
            check("Opaque", json!({"tls.crt": cert, "tls.key": other_cert})).unwrap_err(),
            "invalid TLS private key: unexpected block type 'CERTIFICATE'"
        );
        assert_eq!(
            check("Opaque", json!({"tls.crt": cert, "tls.key": "none"})).unwrap_err(),
            "invalid TLS private key: failed to locate private key"
        );
    }

    #[test]
    fn the_first_certificate_needs_a_common_name_or_a_dns_or_ip_name() {
        let nameless = |p: &mut rcgen::CertificateParams| p.distinguished_name = rcgen::DistinguishedName::new();
        let (bare, key) = pem_pair(nameless);
        let (uri_only, uri_key) = pem_pair(|p| {
            nameless(p);
            p.subject_alt_names = vec![rcgen::SanType::URI("spiffe://proxy".try_into().unwrap())];
        });
        let (ip_only, ip_key) = pem_pair(|p| {
            nameless(p);
            p.subject_alt_names = vec![rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap())];
        });
        let refused = "invalid TLS certificate: certificate has no common name or subject alt name";
        assert_eq!(check("Opaque", json!({"tls.crt": bare, "tls.key": key})).unwrap_err(), refused);
        assert_eq!(check("Opaque", json!({"tls.crt": uri_only, "tls.key": uri_key})).unwrap_err(), refused);
        assert_eq!(check("Opaque", json!({"tls.crt": ip_only, "tls.key": ip_key})), Ok(()));
        // Only the first certificate of the bundle is checked for names.
        let (named, named_key) = pem_pair(|_| {});
        assert_eq!(check("Opaque", json!({"tls.crt": format!("{named}{bare}"), "tls.key": named_key})), Ok(()));
    }
}
