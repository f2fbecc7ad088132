//! Connecting to an upstream endpoint: TCP, then TLS as the cluster says, with Envoy's
//! semantics for validation (chain to the CA bundle, a DNS SAN that Envoy's DNS matcher accepts
//! for one subject name).
//!
//! [`connect`] returns a stream ready for HTTP, or an [`UpstreamFailure`] that renders as the
//! `transport failure reason` of Envoy's 503 body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::table::{PeerValidation, TlsSettings, Transport};
use crate::config::TlsVersion;
use crate::x509;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no stream to the upstream could be had.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    #[error("delayed connect error: {0}")]
    Connect(std::io::Error),
    #[error("delayed connect error: connect timeout")]
    Timeout,
    #[error("TLS_error:|268435581:SSL routines:OPENSSL_internal:{reason}:TLS_error_end")]
    Tls { reason: &'static str, detail: String },
}

/// A plaintext or TLS stream to an upstream.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// The protocol the backend chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamStream::Plain(_) => None,
            UpstreamStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

/// Opens a stream to `endpoint` speaking `transport`.
///
/// # Errors
/// TCP connect failure or timeout; TLS handshake failure, with an OpenSSL-style reason.
pub async fn connect(endpoint: SocketAddr, transport: &Transport) -> Result<UpstreamStream, UpstreamFailure> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
        Err(_) => return Err(UpstreamFailure::Timeout),
        Ok(Err(e)) => return Err(UpstreamFailure::Connect(e)),
        Ok(Ok(tcp)) => tcp,
    };
    let settings = match transport {
        Transport::Plaintext { .. } => return Ok(UpstreamStream::Plain(tcp)),
        Transport::Tls(settings) => settings,
    };
    let config = settings
        .client_config
        .0
        .get_or_init(|| client_config(settings).map(Arc::new))
        .clone()
        .map_err(|detail| UpstreamFailure::Tls { reason: "SSL_CTX_use_certificate", detail })?;
    // Without an SNI name, dial by address: rustls sends no server_name extension for an IP.
    let server_name = match &settings.sni {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|e| UpstreamFailure::Tls { reason: "INVALID_SNI", detail: e.to_string() })?,
        None => ServerName::IpAddress(endpoint.ip().into()),
    };
    let handshake = TlsConnector::from(config).connect(server_name, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => Err(UpstreamFailure::Timeout),
        Ok(Err(e)) => Err(tls_failure(&e)),
        Ok(Ok(stream)) => Ok(UpstreamStream::Tls(Box::new(stream))),
    }
}

/// The crypto provider with its TLS 1.2 cipher suites replaced by `suites` (OpenSSL names,
/// `[a|b]` groups flattened), in that order; names rustls lacks (CBC and RSA key exchange
/// suites) are left out, as a backend accepting only those could not be reached anyway.
/// TLS 1.3 suites stay as they are, as in Envoy. An empty list keeps the library's own.
fn provider_offering(suites: &[String]) -> rustls::crypto::CryptoProvider {
    use rustls::SupportedCipherSuite;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if suites.is_empty() {
        return provider;
    }
    let by_name = |name: &str| match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        "ECDHE-ECDSA-AES256-GCM-SHA384" => Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        "ECDHE-ECDSA-CHACHA20-POLY1305" => Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        "ECDHE-RSA-AES128-GCM-SHA256" => Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        "ECDHE-RSA-AES256-GCM-SHA384" => Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        "ECDHE-RSA-CHACHA20-POLY1305" => Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        _ => None,
    };
    let tls12: Vec<SupportedCipherSuite> = suites
        .iter()
        .flat_map(|entry| entry.trim_start_matches('[').trim_end_matches(']').split('|'))
        .filter_map(by_name)
        .collect();
    provider.cipher_suites.retain(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)));
    provider.cipher_suites.extend(tls12);
    provider
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = Arc::new(provider_offering(&settings.cipher_suites));
    let verifier = Arc::new(UpstreamVerifier::new(settings.validation.as_ref(), provider.clone()));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&TlsVersion::rustls_range(settings.versions))
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    // rustls sends the certificate only when the backend sends a CertificateRequest (C3).
    let mut config = match &settings.client_certificate {
        Some(client) => builder
            .with_client_auth_cert(client.chain.clone(), client.key.clone_key())
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = settings.alpn.clone();
    Ok(config)
}

fn tls_failure(error: &std::io::Error) -> UpstreamFailure {
    let detail = error.to_string();
    let reason = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => "CERTIFICATE_VERIFY_FAILED",
        Some(rustls::Error::AlertReceived(alert)) => match alert {
            rustls::AlertDescription::HandshakeFailure => "SSLV3_ALERT_HANDSHAKE_FAILURE",
            rustls::AlertDescription::ProtocolVersion => "TLSV1_ALERT_PROTOCOL_VERSION",
            rustls::AlertDescription::CertificateRequired => "TLSV13_ALERT_CERTIFICATE_REQUIRED",
            rustls::AlertDescription::NoApplicationProtocol => "TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
            _ => "TLSV1_ALERT_INTERNAL_ERROR",
        },
        Some(rustls::Error::InvalidMessage(_)) => "WRONG_VERSION_NUMBER",
        Some(rustls::Error::PeerIncompatible(_)) => "UNSUPPORTED_PROTOCOL",
        _ => "UNEXPECTED_EOF_WHILE_READING",
    };
    UpstreamFailure::Tls { reason, detail }
}

/// The backend certificate check. Without validation any certificate is accepted (docs/contract.md
/// V1); with it, the chain must verify to the CA bundle and carry a DNS SAN matching one of
/// the subject names (V3, V4). The handshake signature is checked either way, as Envoy does.
#[derive(Debug)]
struct UpstreamVerifier {
    /// The chain verifier (none when no CA certificate parsed: nothing verifies) and the
    /// subject names.
    validation: Option<(Option<Arc<WebPkiServerVerifier>>, PeerValidation)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl UpstreamVerifier {
    fn new(validation: Option<&PeerValidation>, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        let validation = validation.map(|v| {
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(v.ca_certificates.iter().cloned());
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok();
            (verifier, v.clone())
        });
        UpstreamVerifier { validation, provider }
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((chain, validation)) = &self.validation else {
            return Ok(ServerCertVerified::assertion());
        };
        let chain = chain.as_ref().ok_or(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let faults = validation.faults;
        let intermediates = if faults.ignore_intermediates { &[] } else { intermediates };
        // webpki checks the chain, under a name no certificate is meant to carry; the names are
        // matched below as Envoy matches them, which webpki cannot express.
        let placeholder = ServerName::try_from("subject-names.invalid").expect("a valid DNS name");
        let mut result = chain.verify_server_cert(end_entity, intermediates, &placeholder, ocsp_response, now);
        if faults.ignore_expiry
            && let Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. })) = &result
        {
            let before_expiry = UnixTime::since_unix_epoch(Duration::from_secs(not_after.as_secs().saturating_sub(1)));
            result = chain.verify_server_cert(end_entity, intermediates, &placeholder, ocsp_response, before_expiry);
        }
        match result {
            // webpki checks the chain before the name: a name failure means the chain verified.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let names = x509::Names::read(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let wanted = &validation.subject_names;
        // Envoy checks the chain alone when a validation context has no name matchers
        // (Contour never sends one; the fault xds-ignore-subject-names does).
        if wanted.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let san_matches = |want: &String| {
            names
                .dns
                .iter()
                .any(|san| if faults.exact_names { san.eq_ignore_ascii_case(want) } else { dns_name_match(want, san) })
        };
        let cn_matches = |want: &String| names.common_names.last().is_some_and(|cn| cn.eq_ignore_ascii_case(want));
        if wanted.iter().any(san_matches) || (faults.accept_common_name && wanted.iter().any(cn_matches)) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether the DNS SAN `pattern` covers `name`, as Envoy's DNS matcher decides: equal ignoring
/// ASCII case, or `pattern`'s left-most label holds the only `*` and stands for exactly one label
/// of `name` (`*.b.test`, `ec*.b.test`), the rest being equal (docs/contract.md V4).
pub fn dns_name_match(name: &str, pattern: &str) -> bool {
    let (name, pattern) = (name.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    if name == pattern {
        return true;
    }
    let (Some((label, rest)), Some((label_pattern, rest_pattern))) = (name.split_once('.'), pattern.split_once('.'))
    else {
        return false;
    };
    if rest_pattern.contains('*') || label_pattern.starts_with("xn--") || rest != rest_pattern {
        return false;
    }
    match label_pattern.split_once('*') {
        Some(("", "")) => true,
        Some((prefix, suffix)) => {
            !suffix.contains('*')
                && label_pattern.len() <= label.len() + 1
                && label.starts_with(prefix)
                && label.ends_with(suffix)
        }
        None => false,
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{dns_name_match, provider_offering};
    use crate::config::DEFAULT_CIPHER_SUITES;

    #[test]
    fn n2_tls12_suites_are_offered_in_the_configured_order_after_the_tls13_ones() {
        let names = |suites: &[String]| -> Vec<String> {
            provider_offering(suites).cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect()
        };
        let defaults: Vec<String> = DEFAULT_CIPHER_SUITES.iter().map(ToString::to_string).collect();
        let offered = names(&defaults);
        let tls12: Vec<&str> = offered.iter().map(String::as_str).filter(|n| !n.starts_with("TLS13")).collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ]
        );
        assert_eq!(offered.iter().filter(|n| n.starts_with("TLS13")).count(), 3, "{offered:?}");
        // Names rustls lacks are left out; an empty list keeps the library's own order.
        assert_eq!(names(&["AES128-SHA".into()]).len(), 3);
        let library = names(&[]);
        assert_ne!(library, offered);
        assert!(library.iter().any(|n| n == "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"));
    }

    #[test]
    fn dns_names_match_as_envoy_matches_them() {
        let cases = [
            ("echo.backend.test", "echo.backend.test", true),
            ("ECHO.backend.test", "echo.BACKEND.test", true),
            ("echo.backend.test", "*.backend.test", true),
            ("a.echo.backend.test", "*.backend.test", false),
            ("backend.test", "*.backend.test", false),
            ("echo.backend.test", "ech*.backend.test", true),
            ("echo.backend.test", "*cho.backend.test", true),
            ("echo.backend.test", "e*o.backend.test", true),
            ("eo.backend.test", "e*eo.backend.test", false),
            ("echo.backend.test", "x*.backend.test", false),
            ("echo.backend.test", "e**.backend.test", false),
            ("echo.backend.test", "echo.*.test", false),
            ("xn--echo.backend.test", "xn--*.backend.test", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("echo", "*", false),
        ];
        for (name, pattern, expected) in cases {
            assert_eq!(dns_name_match(name, pattern), expected, "{name} against {pattern}");
        }
    }
}
