//! Connecting to an upstream endpoint: TCP, then TLS as the cluster says, with Envoy's
//! semantics for validation (chain to the CA bundle, a DNS SAN equal to one subject name).
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

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(UpstreamVerifier::new(settings.validation.as_ref(), provider.clone()));
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(TlsVersion::V1_2, &rustls::version::TLS12), (TlsVersion::V1_3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (settings.versions.0..=settings.versions.1).contains(v))
            .map(|(_, supported)| supported)
            .collect();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
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
            _ => "TLSV1_ALERT_INTERNAL_ERROR",
        },
        Some(rustls::Error::InvalidMessage(_)) => "WRONG_VERSION_NUMBER",
        Some(rustls::Error::PeerIncompatible(_)) => "UNSUPPORTED_PROTOCOL",
        _ => "UNEXPECTED_EOF_WHILE_READING",
    };
    UpstreamFailure::Tls { reason, detail }
}

/// The backend certificate check. Without validation any certificate is accepted (docs/contract.md
/// V1); with it, the chain must verify to the CA bundle and carry a DNS SAN equal to one of
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
        let mut chain_verified = false;
        for name in &validation.subject_names {
            // A name that is not a DNS name can never equal a DNS SAN.
            let Ok(server_name) = ServerName::try_from(name.as_str()) else { continue };
            if !matches!(server_name, ServerName::DnsName(_)) {
                continue;
            }
            let mut result = chain.verify_server_cert(end_entity, intermediates, &server_name, ocsp_response, now);
            if faults.ignore_expiry
                && let Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. })) =
                    &result
            {
                let before_expiry =
                    UnixTime::since_unix_epoch(Duration::from_secs(not_after.as_secs().saturating_sub(1)));
                result =
                    chain.verify_server_cert(end_entity, intermediates, &server_name, ocsp_response, before_expiry);
            }
            match result {
                Ok(verified) => return Ok(verified),
                // webpki checks the chain before the name: only the name failed.
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => chain_verified = true,
                // Chain and expiry failures do not depend on the name: report them.
                Err(other) => return Err(other),
            }
        }
        if chain_verified
            && faults.accept_common_name
            && let Some(cn) = common_name(end_entity)
            && validation.subject_names.iter().any(|n| n.eq_ignore_ascii_case(&cn))
        {
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

/// The subject common name of a DER certificate: the last CN attribute in it (the issuer's
/// comes first), read without a full X.509 parser. Only the `accept-name-from-cn` fault uses it.
fn common_name(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN_OID.len()).rposition(|w| w == CN_OID)? + CN_OID.len();
    let (tag, len) = (*der.get(at)?, usize::from(*der.get(at + 1)?));
    if !matches!(tag, 0x0c | 0x13 | 0x16) || len >= 0x80 {
        return None;
    }
    String::from_utf8(der.get(at + 2..at + 2 + len)?.to_vec()).ok()
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
