//! Who may talk to the loopback API server: [`Credentials`].
//!
//! As on a real cluster, the API is served over TLS with a certificate from the cluster's own
//! CA, and every request but the health and version endpoints needs the bearer token. Both the
//! CA and the token are in the kubeconfig loopback writes (mode 0600), so kubectl, kube-rs and
//! Contour's Go client connect as they would to kind, and another local user who can reach
//! 127.0.0.1 cannot create pods (which run processes as loopback's user).

use std::sync::Arc;

use http::HeaderMap;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Paths any client may read without a token, as a real API server lets anonymous clients
/// read them.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "/livez", "/version"];

/// The API server's TLS identity and the token clients must present.
pub struct Credentials {
    /// The CA that signed the server's certificate (PEM), for the kubeconfig.
    pub ca_pem: String,
    /// The bearer token, for the kubeconfig.
    pub token: String,
    pub(super) tls: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("token", &"<redacted>").finish_non_exhaustive()
    }
}

impl Credentials {
    /// A fresh CA, a server certificate for `127.0.0.1` and `localhost` signed by it, and a
    /// random token.
    ///
    /// # Errors
    /// Key generation or signing failed, or no random bytes could be drawn.
    pub fn generate() -> Result<Self, String> {
        let failed = |e: rcgen::Error| format!("cannot make the API server's certificate: {e}");
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.distinguished_name.push(DnType::CommonName, "loopback-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, "loopback-apiserver");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server = params.signed_by(&server_key, &issuer).map_err(failed)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain = vec![CertificateDer::from(server.der().to_vec())];
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot configure TLS: {e}"))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| format!("cannot configure TLS: {e}"))?;
        // Watches and lists are HTTP/1.1 here; clients that offer h2 fall back to it.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let mut random = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut random)
            .map_err(|_| "cannot draw random bytes for the API token".to_string())?;
        let token = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Credentials { ca_pem: ca.pem(), token, tls: Arc::new(tls) })
    }

    /// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let expected = self.token.as_bytes();
        let presented = presented.trim().as_bytes();
        presented.len() == expected.len() && presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_is_admitted() {
        let credentials = Credentials::generate().unwrap();
        assert_eq!(credentials.token.len(), 64);
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(credentials.admits(&with(&format!("Bearer {}", credentials.token))));
        assert!(!credentials.admits(&HeaderMap::new()));
        assert!(!credentials.admits(&with("Bearer ")));
        assert!(!credentials.admits(&with(&format!("Bearer {}x", credentials.token))));
        assert!(!credentials.admits(&with(&format!("Basic {}", credentials.token))));
        assert!(!format!("{credentials:?}").contains(&credentials.token));
        assert_ne!(Credentials::generate().unwrap().token, credentials.token);
    }
}
