//! Traffic through the implementation's proxy: [`send`] one request and get an [`Answer`],
//! [`check`] an answer against a [`ResponseExpectation`], and [`until_consecutive`] to wait
//! for N consecutive matching answers within a time limit.
//!
//! Requests dial the proxy address whatever the URL's host name (no name is ever resolved),
//! while carrying that name in the URL and the Host header, as a real client would send it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Empty;
use hyper::body::Bytes;

use crate::fixture::{BackendEcho, REQUEST_ID_HEADER};
use crate::scenario::template::{Bindings, Unbound};
use crate::scenario::{BackendExpectation, ResponseExpectation, StatusCodes};

/// Bodies are kept up to this size in evidence.
const BODY_LIMIT: usize = 2048;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What came back for one request.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Answer {
    pub request_id: String,
    /// `None` when no HTTP response arrived at all.
    pub status: Option<u16>,
    pub body: String,
    /// Response headers, names in lowercase (several values joined by `, `).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The backend's echo, when the body is one for this very request.
    pub echo: Option<BackendEcho>,
    /// Transport error when no response arrived.
    pub error: Option<String>,
    /// No response arrived because the proxy accepted the connection and then closed it (during
    /// the TLS handshake or after the request), rather than refusing it, serving a certificate
    /// the client rejects, or timing out: what `status: none` expects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// No response arrived because the proxy refused the TLS handshake with an alert (a
    /// request over TLS only): what `status: refused` expects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl Answer {
    /// One line for failure messages: for an answer a backend echoed, what it saw as fields
    /// (TLS version, SNI, ALPN, HTTP version, Host, client certificate); for any other (the
    /// proxy's, or a backend's own refusal such as nginx's 400 for a missing client
    /// certificate), its body.
    pub fn summary(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) if let Some(echo) = &self.echo => format!("{status} {}", echo.seen()),
            (Some(status), _) => {
                // Redacted before the cut: a key cut short may no longer be recognisable.
                let body = crate::redaction::redact(self.body.trim());
                let body = if body.len() > 160 {
                    format!("{}...", &body[..body.floor_char_boundary(160)])
                } else {
                    body.to_string()
                };
                format!("{status} without a backend's echo: {body:?}")
            }
            (None, Some(error)) => format!("no response: {error}"),
            (None, None) => "no response".into(),
        }
    }
}

/// What `answers` (those that passed a request step) showed, for comparing implementations
/// (the differential test): the distinct answers by status, the kind of body, and what the
/// backend saw (its name, SNI, ALPN, TLS and HTTP versions, Host, client certificate subject,
/// issuer and verification), sorted. The run's id (in host names) becomes `RUN`; what differs
/// from run to run by design (request ids, serial numbers and fingerprints of certificates
/// generated for the run, cipher choices within what a step allows) is left out.
pub fn observations(answers: &[Answer], run_id: &str) -> serde_json::Value {
    let mut seen: Vec<String> = answers
        .iter()
        .map(|answer| {
            let backend = answer.echo.as_ref().map(|echo| {
                serde_json::json!({
                    "name": echo.backend,
                    "scheme": echo.scheme,
                    "sni": echo.sni,
                    "alpn": echo.alpn,
                    "tlsVersion": echo.tls_version,
                    "httpVersion": echo.http_version,
                    "host": echo.host,
                    "clientVerify": echo.client_verify,
                    "clientSubject": echo.client_subject,
                    "clientIssuer": echo.client_issuer,
                })
            });
            let observed = serde_json::json!({
                "status": answer.status,
                "body": body_kind(answer),
                "backend": backend,
            });
            observed.to_string().replace(run_id, "RUN")
        })
        .collect();
    seen.sort();
    seen.dedup();
    serde_json::Value::Array(seen.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
}

/// The kind of an answer's body: what the backend echoed, the proxy's text for an upstream
/// that failed or has no endpoint, nothing, or something else.
fn body_kind(answer: &Answer) -> &'static str {
    let body = answer.body.trim();
    if answer.status.is_none() {
        match (answer.closed, answer.refused) {
            (true, _) => "connection closed",
            (_, true) => "handshake refused",
            _ => "no answer",
        }
    } else if answer.echo.is_some() {
        "backend echo"
    } else if body.is_empty() {
        "empty"
    } else if body.starts_with(loopback::dataplane::UPSTREAM_FAILURE_PREFIX) {
        "upstream connect error"
    } else if body == "no healthy upstream" {
        "no healthy upstream"
    } else {
        "other"
    }
}

/// A client that dials the proxy at `proxy` whatever the host in a request's URL, keeping the
/// host name in the URL and the Host header. One per request step; its requests may share
/// connections.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<ToProxy, Empty<Bytes>>,
}

/// Connects every request to one address: the proxy's.
#[derive(Clone, Copy)]
struct ToProxy(SocketAddr);

impl tower_service::Service<http::Uri> for ToProxy {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let proxy = self.0;
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(proxy)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to the proxy at {proxy}: {e}")))?;
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// The client for requests to the proxy at `proxy`.
pub fn client(proxy: SocketAddr) -> Client {
    let inner = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(ToProxy(proxy));
    Client { inner }
}

/// Sends `GET url` with the request id header and the scenario's own `headers`, waiting at most
/// [`REQUEST_TIMEOUT`] for the whole answer.
pub async fn send(client: &Client, url: &str, headers: &[(String, String)], request_id: &str) -> Answer {
    settle(request_id, tokio::time::timeout(REQUEST_TIMEOUT, exchange(client, url, headers, request_id)).await)
}

/// The status, headers and body (or why it could not be read) of one HTTP exchange.
type Exchanged = (u16, BTreeMap<String, String>, Result<String, String>);

/// How an exchange without a response ended, besides the error's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Refused, timed out or failed on the client's side.
    Failed,
    /// The proxy accepted the connection and closed it.
    Closed,
    /// The proxy refused the TLS handshake with an alert.
    Refused,
}

/// The answer for an exchange that ended in time, or did not: when none came, why, and how.
fn settle(
    request_id: &str,
    outcome: Result<Result<Exchanged, (String, Ending)>, tokio::time::error::Elapsed>,
) -> Answer {
    match outcome {
        Err(_) => no_response(request_id, format!("no answer within {REQUEST_TIMEOUT:?}")),
        Ok(Err((error, ending))) => Answer {
            closed: ending == Ending::Closed,
            refused: ending == Ending::Refused,
            ..no_response(request_id, error)
        },
        Ok(Ok((status, headers, Err(error)))) => {
            Answer { status: Some(status), headers, ..no_response(request_id, error) }
        }
        Ok(Ok((status, headers, Ok(body)))) => answer(request_id, status, headers, body),
    }
}

async fn exchange(
    client: &Client,
    url: &str,
    headers: &[(String, String)],
    request_id: &str,
) -> Result<Exchanged, (String, Ending)> {
    let request = get(url, None, headers, request_id)
        .map_err(|e| (format!("cannot build the request for {url}: {e}"), Ending::Failed))?;
    let response = client.inner.request(request).await.map_err(|e| {
        let closed = !e.is_connect() && closed_by_peer(&e);
        (format!("GET {url}: {}", error_chain(&e)), if closed { Ending::Closed } else { Ending::Failed })
    })?;
    Ok(read(response).await)
}

/// `GET target` with `host` as its Host header when given (else the client derives it from
/// the URL), the request id header and the scenario's own `headers`.
fn get(
    target: &str,
    host: Option<&str>,
    headers: &[(String, String)],
    request_id: &str,
) -> Result<Request<Empty<Bytes>>, http::Error> {
    let mut request = Request::get(target);
    if let Some(host) = host {
        request = request.header(http::header::HOST, host);
    }
    request = request.header(REQUEST_ID_HEADER, request_id);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request.body(Empty::new())
}

/// A response's status, headers and whole body.
async fn read(response: http::Response<hyper::body::Incoming>) -> Exchanged {
    use http_body_util::BodyExt;
    let status = response.status().as_u16();
    let headers = header_map(response.headers());
    let body = match response.into_body().collect().await {
        Ok(body) => Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned()),
        Err(e) => Err(format!("reading the body: {}", error_chain(&e))),
    };
    (status, headers, body)
}

/// Response headers by lowercase name, several values joined by `, `.
fn header_map(map: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers.entry(name.as_str().to_string()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value.into());
    }
    headers
}

/// The answer for a complete response: the backend's echo if the body is one for this very
/// request, the body cut to [`BODY_LIMIT`].
fn answer(request_id: &str, status: u16, headers: BTreeMap<String, String>, body: String) -> Answer {
    let echo = serde_json::from_str::<BackendEcho>(body.trim()).ok().filter(|e| e.request_id == request_id);
    let body = if body.len() > BODY_LIMIT {
        // Redacted before the cut: a key cut short may no longer be recognisable.
        let body = crate::redaction::redact(&body);
        body[..body.floor_char_boundary(BODY_LIMIT)].to_string()
    } else {
        body
    };
    Answer {
        request_id: request_id.to_string(),
        status: Some(status),
        body,
        headers,
        echo,
        error: None,
        closed: false,
        refused: false,
    }
}

/// How a request reaches a TLS virtual host: the proxy's TLS address, the server name sent as
/// SNI, and what the certificate the client is served must chain to and be valid for.
#[derive(Clone)]
pub struct TlsRequest {
    pub address: SocketAddr,
    pub sni: String,
    pub trust: rustls::pki_types::CertificateDer<'static>,
    pub certificate_name: String,
    /// The TLS versions the client offers; empty: rustls' defaults (1.2 and 1.3).
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

/// Sends `GET path` for `host` over TLS as `tls` says, on a connection of its own, with the
/// request id header and the scenario's own `headers`. No ALPN is offered: HTTP/1.1.
pub async fn send_tls(
    tls: &TlsRequest,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    request_id: &str,
) -> Answer {
    settle(request_id, tokio::time::timeout(REQUEST_TIMEOUT, exchange_tls(tls, host, path, headers, request_id)).await)
}

async fn exchange_tls(
    tls: &TlsRequest,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    request_id: &str,
) -> Result<Exchanged, (String, Ending)> {
    let refused = |message: String| (message, Ending::Failed);
    let config = tls_client_config(tls).map_err(refused)?;
    let sni = rustls::pki_types::ServerName::try_from(tls.sni.clone())
        .map_err(|e| refused(format!("{:?} cannot be sent as SNI: {e}", tls.sni)))?;
    let tcp = tokio::net::TcpStream::connect(tls.address)
        .await
        .map_err(|e| refused(format!("cannot connect to the proxy's TLS address {}: {e}", tls.address)))?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(sni, tcp).await.map_err(|e| {
        // The proxy's alert is its refusal; a certificate this client rejects is a failure of
        // its own; a connection that just ends mid-handshake is the proxy closing it.
        let tls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::AlertReceived(alert)) = tls_error {
            let message = format!("the proxy refused the TLS handshake (SNI {}) with the alert {alert:?}", tls.sni);
            return (message, Ending::Refused);
        }
        if tls_error.is_none() && closed_by_peer(&e) {
            let message = format!("the proxy closed the connection during the TLS handshake (SNI {}): {e}", tls.sni);
            return (message, Ending::Closed);
        }
        (format!("TLS handshake with {} (SNI {}) failed: {e}", tls.address, tls.sni), Ending::Failed)
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| refused(format!("HTTP over TLS: {}", error_chain(&e))))?;
    tokio::spawn(connection);
    let request =
        get(path, Some(host), headers, request_id).map_err(|e| refused(format!("cannot build the request: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| {
        let ending = if closed_by_peer(&e) { Ending::Closed } else { Ending::Failed };
        (format!("no answer after the TLS handshake: {}", error_chain(&e)), ending)
    })?;
    // A body cut short over TLS counts as no answer at all.
    let (status, headers, body) = read(response).await;
    Ok((status, headers, Ok(body.map_err(refused)?)))
}

/// A client configuration that trusts `tls.trust` alone and checks the served certificate
/// for `tls.certificate_name`, whatever the SNI.
fn tls_client_config(tls: &TlsRequest) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.trust.clone()).map_err(|e| format!("the trusted CA certificate: {e}"))?;
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build a certificate verifier: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(tls.certificate_name.clone())
        .map_err(|e| format!("{:?} is not a certificate name: {e}", tls.certificate_name))?;
    let verifier = Arc::new(NamedVerifier { inner, name });
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls.versions.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(&tls.versions)
    };
    let config = builder
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Checks the served certificate against a name of its own rather than the SNI.
#[derive(Debug)]
struct NamedVerifier {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _sni: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn no_response(request_id: &str, error: String) -> Answer {
    Answer {
        request_id: request_id.to_string(),
        status: None,
        body: String::new(),
        headers: BTreeMap::new(),
        echo: None,
        error: Some(error),
        closed: false,
        refused: false,
    }
}

/// Whether `error` comes down to the peer ending the connection: an HTTP message cut short, or
/// a reset or end of stream.
fn closed_by_peer(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(hyper) = current.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
            if matches!(io.kind(), ConnectionReset | UnexpectedEof | BrokenPipe | ConnectionAborted) {
                return true;
            }
        }
        source = current.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Why an answer does not meet the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// Whether the expectation wants the backend reached (`Some(true)`), not reached
/// (`Some(false)`) or does not say.
pub fn wants_backend(expect: &ResponseExpectation) -> Option<bool> {
    if expect.backend.is_some() { Some(true) } else { expect.backend_reached.as_ref().map(|b| b.value) }
}

/// Checks one answer.
///
/// # Errors
/// The first difference, saying expected and actual.
pub fn check(expect: &ResponseExpectation, answer: &Answer) -> Result<(), Mismatch> {
    let codes = match &expect.status {
        StatusCodes::Codes(codes) => codes,
        StatusCodes::None | StatusCodes::Refused => {
            let (word, met, wanted) = match expect.status {
                StatusCodes::None => ("none", answer.closed, "the proxy to close the connection without an answer"),
                _ => ("refused", answer.refused, "the proxy to refuse the TLS handshake"),
            };
            let others = expect.backend.is_some()
                || expect.body_starts_with.is_some()
                || expect.body_contains.is_some()
                || !expect.headers.is_empty();
            if others {
                return Err(Mismatch(format!(
                    "`status: {word}` expects no answer, so `backend`, `bodyStartsWith`, `bodyContains` and `headers` \
                     cannot be checked beside it"
                )));
            }
            return if met { Ok(()) } else { Err(Mismatch(format!("expected {wanted}, got {}", answer.summary()))) };
        }
    };
    let Some(status) = answer.status else {
        return Err(Mismatch(format!("expected status {}, got {}", list(codes), answer.summary())));
    };
    if !codes.contains(&status) {
        return Err(Mismatch(format!("expected status {}, got {}", list(codes), answer.summary())));
    }
    if let Some(prefix) = &expect.body_starts_with
        && !answer.body.starts_with(prefix.as_str())
    {
        return Err(Mismatch(format!("expected a body starting with {prefix:?}, got {}", answer.summary())));
    }
    if let Some(text) = &expect.body_contains
        && !answer.body.contains(text.as_str())
    {
        return Err(Mismatch(format!("expected a body containing {text:?}, got {}", answer.summary())));
    }
    for (name, wanted) in &expect.headers {
        let actual = answer.headers.get(&name.to_ascii_lowercase());
        if actual != Some(wanted) {
            let actual = actual.map_or_else(|| "none".to_string(), |v| format!("{v:?}"));
            return Err(Mismatch(format!("expected header {name}: {wanted:?}, got {actual} ({})", answer.summary())));
        }
    }
    match (wants_backend(expect), &answer.echo) {
        (Some(true), None) => {
            return Err(Mismatch(format!("expected the backend to answer, got {}", answer.summary())));
        }
        (Some(false), Some(echo)) => {
            return Err(Mismatch(format!("expected the backend not to be reached, but {} answered", echo.backend)));
        }
        _ => {}
    }
    if let (Some(want), Some(echo)) = (&expect.backend, &answer.echo) {
        check_echo(want, echo)?;
    }
    Ok(())
}

/// Checks that one of the backends sharing the route (`shared`; none: any) answered.
///
/// # Errors
/// Which backend answered instead.
pub fn check_shared(shared: &[String], answer: &Answer) -> Result<(), Mismatch> {
    match &answer.echo {
        Some(echo) if !shared.is_empty() && !shared.contains(&echo.backend) => {
            Err(Mismatch(format!("expected one of {} to answer, but {} answered", shared.join(", "), echo.backend)))
        }
        _ => Ok(()),
    }
}

/// The backends of `shared` that answered none of `answers`, as a sentence part; `None` when
/// every one answered.
pub fn missing_shares(shared: &[String], answers: &[Answer]) -> Option<String> {
    let answering = answering_backends(answers);
    let missing: Vec<&str> = shared.iter().filter(|name| !answering.contains(name)).map(String::as_str).collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// The backends that answered any of `answers`, sorted.
pub fn answering_backends(answers: &[Answer]) -> Vec<String> {
    let mut names: Vec<String> = answers.iter().filter_map(|a| a.echo.as_ref().map(|e| e.backend.clone())).collect();
    names.sort();
    names.dedup();
    names
}

/// Checks what a backend saw against `want`.
///
/// # Errors
/// The first difference, saying expected and actual.
pub fn check_echo(want: &BackendExpectation, echo: &BackendEcho) -> Result<(), Mismatch> {
    let tls = echo.scheme == "https";
    let client = want.client_certificate.clone().unwrap_or_default();
    let facts: [(&str, Option<String>, &str); 15] = [
        ("backend", want.name.as_ref().map(|n| n.value.clone()), &echo.backend),
        ("tls", want.tls.map(|t| t.to_string()), if tls { "true" } else { "false" }),
        ("port", want.port.map(|p| p.to_string()), &echo.port),
        ("sni", want.sni.clone(), &echo.sni),
        ("alpn", want.alpn.clone(), &echo.alpn),
        ("tlsVersion", want.tls_version.clone(), &echo.tls_version),
        ("cipher", want.cipher.clone(), &echo.cipher),
        ("httpVersion", want.http_version.clone(), &echo.http_version),
        ("host", want.host.clone(), &echo.host),
        ("clientCertificate.verify", client.verify, &echo.client_verify),
        ("clientCertificate.subject", client.subject, &echo.client_subject),
        ("clientCertificate.issuer", client.issuer, &echo.client_issuer),
        ("clientCertificate.serial", client.serial, &echo.client_serial),
        ("clientCertificate.sha1", client.sha1, &echo.client_sha1),
        ("requestId", None, &echo.request_id),
    ];
    for (field, expected, actual) in facts {
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(Mismatch(format!("backend saw {field} {actual:?}, expected {expected:?}")));
        }
    }
    Ok(())
}

/// The expectation with every `${...}` in its strings filled in.
///
/// # Errors
/// A reference without a value.
pub fn expand_expectation(bindings: &Bindings, expect: &ResponseExpectation) -> Result<ResponseExpectation, Unbound> {
    let mut out = expect.clone();
    out.body_starts_with = bindings.expand_option(&expect.body_starts_with)?;
    out.body_contains = bindings.expand_option(&expect.body_contains)?;
    for value in out.headers.values_mut() {
        *value = bindings.expand(value)?;
    }
    if let Some(backend) = &mut out.backend {
        expand_backend(bindings, backend)?;
    }
    Ok(out)
}

/// The backend expectation with every `${...}` in its strings filled in.
///
/// # Errors
/// A reference without a value.
pub fn expand_backend(bindings: &Bindings, backend: &mut BackendExpectation) -> Result<(), Unbound> {
    {
        if let Some(name) = &mut backend.name {
            name.value = bindings.expand(&name.value)?;
        }
        for field in [
            &mut backend.sni,
            &mut backend.alpn,
            &mut backend.tls_version,
            &mut backend.cipher,
            &mut backend.http_version,
            &mut backend.host,
        ] {
            *field = bindings.expand_option(field)?;
        }
        if let Some(client) = &mut backend.client_certificate {
            for field in
                [&mut client.verify, &mut client.subject, &mut client.issuer, &mut client.serial, &mut client.sha1]
            {
                *field = bindings.expand_option(field)?;
            }
        }
    }
    Ok(())
}

fn list(codes: &[u16]) -> String {
    let list: Vec<String> = codes.iter().map(u16::to_string).collect();
    list.join(" or ")
}

/// How [`until_consecutive`] ended badly: the last answers and why the last one failed.
#[derive(Debug, Clone)]
pub struct NotSettled<A = Answer> {
    pub attempts: usize,
    pub last_mismatch: Option<Mismatch>,
    pub last_answers: Vec<A>,
}

/// The longest pause between attempts while answers keep failing the check.
pub const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// Sends requests until `needed` consecutive answers pass `check`, or `limit` elapses.
/// Returns the passing answers. An answer may be one response or a round of several (a
/// `together` step's), checked as one.
///
/// Attempts are `interval` apart while answers pass; while they keep failing, the pause grows
/// by half each time up to [`LONGEST_PAUSE`], so a condition that never holds costs a few dozen
/// requests instead of hundreds, and one that holds late is seen at most that much later.
/// Once `paced` answers in a row have passed, the rest of the streak is asked for without
/// pauses: those answers look for a wrong answer that comes only now and then, not for a
/// change over time.
///
/// # Errors
/// The limit passed first; carries the evidence.
pub async fn until_consecutive<A, F, Fut>(
    needed: usize,
    paced: usize,
    limit: Duration,
    interval: Duration,
    mut attempt: F,
    check: impl Fn(&A) -> Result<(), Mismatch>,
) -> Result<Vec<A>, NotSettled<A>>
where
    A: Clone,
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = A>,
{
    let started = Instant::now();
    let mut streak: Vec<A> = Vec::new();
    let mut recent: Vec<A> = Vec::new();
    let mut last_mismatch = None;
    let mut attempts = 0;
    let mut pause = interval;
    loop {
        let answer = attempt(attempts).await;
        attempts += 1;
        match check(&answer) {
            Ok(()) => streak.push(answer.clone()),
            Err(mismatch) => {
                streak.clear();
                last_mismatch = Some(mismatch);
            }
        }
        recent.push(answer);
        if recent.len() > 3 {
            recent.remove(0);
        }
        if streak.len() >= needed {
            return Ok(streak);
        }
        if started.elapsed() >= limit {
            return Err(NotSettled { attempts, last_mismatch, last_answers: recent });
        }
        if streak.len() < paced {
            // The last attempt comes at the limit, not a long pause after it.
            tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
        }
        pause = next_pause(pause, interval, streak.is_empty());
    }
}

/// The pause after `pause`: half as long again while answers fail (up to [`LONGEST_PAUSE`],
/// or `interval` if that is longer), `interval` once one passes.
fn next_pause(pause: Duration, interval: Duration, failing: bool) -> Duration {
    if failing { (pause * 3 / 2).min(LONGEST_PAUSE.max(interval)) } else { interval }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_says_what_the_backend_saw_as_fields_or_that_none_answered() {
        let echo = |scheme: &str, subject: &str| crate::fixture::BackendEcho {
            backend: "web".into(),
            scheme: scheme.into(),
            tls_version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            http_version: "HTTP/1.1".into(),
            host: "a.test".into(),
            client_subject: subject.into(),
            client_serial: "0A1B".into(),
            client_verify: "SUCCESS".into(),
            ..Default::default()
        };
        let answer = |status, echo| Answer {
            request_id: "r".into(),
            status,
            body: "{\"backend\":\"web\"}".into(),
            headers: BTreeMap::new(),
            echo,
            error: None,
            closed: false,
            refused: false,
        };
        assert_eq!(
            answer(Some(200), Some(echo("https", ""))).summary(),
            "200 from backend `web`: TLSv1.3 (TLS_AES_128_GCM_SHA256), SNI none, ALPN none, HTTP/1.1, Host \"a.test\", \
             no client certificate"
        );
        assert_eq!(
            answer(Some(200), Some(echo("http", "CN=envoy"))).summary(),
            "200 from backend `web`: plaintext, HTTP/1.1, Host \"a.test\", client certificate \"CN=envoy\" serial 0A1B \
             (verify SUCCESS)"
        );
        let mut proxy = answer(Some(503), None);
        proxy.body = "upstream connect error".into();
        assert_eq!(proxy.summary(), "503 without a backend's echo: \"upstream connect error\"");
    }

    fn echo(request_id: &str) -> BackendEcho {
        serde_json::from_value(serde_json::json!({
            "backend": "echo", "requestId": request_id, "scheme": "https", "sni": "", "tlsVersion": "TLSv1.3",
            "cipher": "x", "alpn": "", "httpVersion": "HTTP/1.1", "host": "h", "path": "/", "port": "8443", "clientVerify": "NONE",
            "clientSubject": "", "clientIssuer": "", "clientSerial": "", "clientSha1": "",
        }))
        .unwrap()
    }

    fn answer(status: u16, echoed: bool) -> Answer {
        Answer {
            request_id: "r1".into(),
            status: Some(status),
            body: "upstream connect error or disconnect/reset before headers. x".into(),
            headers: BTreeMap::from([("content-type".to_string(), "text/plain".to_string())]),
            echo: echoed.then(|| echo("r1")),
            error: None,
            closed: false,
            refused: false,
        }
    }

    #[test]
    fn observations_keep_what_implementations_decide_and_drop_what_each_run_changes() {
        let with_id = |id: &str, host: &str| {
            let mut answer = answer(200, true);
            answer.request_id = id.into();
            let echo = answer.echo.as_mut().unwrap();
            echo.request_id = id.into();
            echo.host = host.into();
            echo.client_serial = id.into();
            echo.cipher = id.into();
            answer
        };
        let one = observations(&[with_id("a", "s.r1.test"), with_id("b", "s.r1.test")], "r1");
        let other = observations(&[with_id("c", "s.r2.test")], "r2");
        assert_eq!(one, other, "ids, serials, ciphers and the run id do not count");
        assert_eq!(one[0]["backend"]["host"], "s.RUN.test");
        assert_eq!(one[0]["body"], "backend echo");
        let mut sni = with_id("d", "s.r1.test");
        sni.echo.as_mut().unwrap().sni = "echo.backend.test".into();
        assert_ne!(observations(&[sni], "r1"), one, "the SNI counts");
        let failed = observations(&[answer(503, false)], "r1");
        assert_eq!(failed[0]["body"], "upstream connect error");
        assert_eq!(failed[0]["backend"], serde_json::Value::Null);
        let both = observations(&[with_id("a", "s.r1.test"), answer(503, false)], "r1");
        assert_eq!(both.as_array().unwrap().len(), 2, "distinct answers are kept apart");
    }

    #[test]
    fn no_answer_passes_only_when_the_proxy_closed_the_connection() {
        let expect = ResponseExpectation { status: StatusCodes::None, ..Default::default() };
        let closed = Answer { closed: true, ..no_response("r1", "the proxy closed the connection".into()) };
        assert_eq!(check(&expect, &closed), Ok(()));
        // Refused, untrusted or timed out: something else is wrong, and it must not pass.
        let refused = no_response("r1", "cannot connect to the proxy's TLS address".into());
        let mismatch = check(&expect, &refused).unwrap_err().0;
        assert!(mismatch.starts_with("expected the proxy to close the connection without an answer"), "{mismatch}");
        assert!(check(&expect, &answer(503, false)).is_err(), "an answer is not no answer");
        let contradictory = ResponseExpectation { backend: Some(Default::default()), ..expect };
        assert!(check(&contradictory, &closed).unwrap_err().0.contains("cannot be checked beside it"));
    }

    #[tokio::test]
    async fn a_connection_closed_mid_handshake_is_told_from_a_refused_one() {
        use tokio::io::AsyncReadExt;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                // Read the ClientHello, then hang up without a word.
                let mut buffer = [0u8; 512];
                let _ = stream.read(&mut buffer).await;
            }
        });
        let tls = TlsRequest {
            address,
            sni: "a.test".into(),
            trust: ca.der().clone(),
            certificate_name: "a.test".into(),
            versions: Vec::new(),
        };
        let closed = send_tls(&tls, "a.test", "/", &[], "r1").await;
        assert!(closed.closed && !closed.refused && closed.status.is_none(), "{closed:?}");
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let refused = send_tls(&TlsRequest { address: unused, ..tls }, "a.test", "/", &[], "r2").await;
        assert!(!refused.closed && !refused.refused, "{refused:?}");
    }

    #[tokio::test]
    async fn a_handshake_the_proxy_refuses_is_what_status_refused_expects() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let server = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key.serialize_der().try_into().unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // A TLS 1.3 handshake, then a hang-up; anything else gets rustls' alert.
                let _ = acceptor.accept(stream).await;
            }
        });
        let tls = TlsRequest {
            address,
            sni: "a.test".into(),
            trust: certificate.der().clone(),
            certificate_name: "a.test".into(),
            versions: vec![&rustls::version::TLS12],
        };
        let refused = send_tls(&tls, "a.test", "/", &[], "r1").await;
        assert!(refused.refused && !refused.closed && refused.status.is_none(), "{refused:?}");
        let expect = ResponseExpectation { status: StatusCodes::Refused, ..Default::default() };
        assert_eq!(check(&expect, &refused), Ok(()));
        // A handshake that succeeds is no refusal, whatever follows it.
        let accepted =
            send_tls(&TlsRequest { versions: vec![&rustls::version::TLS13], ..tls }, "a.test", "/", &[], "r2").await;
        assert!(!accepted.refused && accepted.status.is_none(), "{accepted:?}");
        let mismatch = check(&expect, &accepted).unwrap_err().0;
        assert!(mismatch.starts_with("expected the proxy to refuse the TLS handshake"), "{mismatch}");
        assert!(check(&expect, &answer(503, false)).is_err(), "an answer is no refusal");
        let closed = Answer { closed: true, ..no_response("r3", "the proxy closed the connection".into()) };
        assert!(check(&expect, &closed).is_err(), "a hang-up is no refusal");
        let contradictory = ResponseExpectation { body_contains: Some("x".into()), ..expect };
        assert!(check(&contradictory, &refused).unwrap_err().0.contains("cannot be checked beside it"));
    }

    #[tokio::test]
    async fn plain_requests_dial_the_proxy_whatever_the_host_and_tell_a_hang_up_from_a_refusal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Answers each request with its own head, or hangs up after reading it.
        async fn serve(hang_up: bool) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    if !hang_up {
                        let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len());
                        let _ = stream.write_all(&[reply.as_bytes(), &head].concat()).await;
                    }
                }
            });
            address
        }
        let proxy = serve(false).await;
        // A name no resolver knows: the request goes to the proxy all the same.
        let url = format!("http://nowhere.invalid:{}/path", proxy.port());
        let headers = [("x-scenario".to_string(), "yes".to_string())];
        let served = send(&client(proxy), &url, &headers, "r1").await;
        assert_eq!(served.status, Some(200), "{served:?}");
        let head = served.body.to_ascii_lowercase();
        assert!(head.starts_with("get /path http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: nowhere.invalid:{}\r\n", proxy.port())), "{head}");
        assert!(head.contains(&format!("{}: r1\r\n", REQUEST_ID_HEADER.to_ascii_lowercase())), "{head}");
        assert!(head.contains("x-scenario: yes\r\n"), "{head}");

        let hung_up = serve(true).await;
        let closed = send(&client(hung_up), &format!("http://a.test:{}/", hung_up.port()), &[], "r2").await;
        assert!(closed.closed && closed.status.is_none(), "{closed:?}");
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let refused = send(&client(unused), &format!("http://a.test:{}/", unused.port()), &[], "r3").await;
        assert!(!refused.closed && refused.status.is_none(), "{refused:?}");
        let error = refused.error.unwrap_or_default();
        assert!(error.contains(&format!("cannot connect to the proxy at {unused}")), "{error}");
    }

    #[test]
    fn positive_expectation_needs_the_backend_and_its_facts() {
        let expect = ResponseExpectation {
            status: StatusCodes::Codes(vec![200]),
            backend: Some(BackendExpectation { tls: Some(true), sni: Some(String::new()), ..Default::default() }),
            ..Default::default()
        };
        assert!(check(&expect, &answer(200, true)).is_ok());
        let err = check(&expect, &answer(200, false)).unwrap_err();
        assert!(err.0.contains("expected the backend to answer"), "{err:?}");
        let mut plain = answer(200, true);
        plain.echo.as_mut().unwrap().scheme = "http".into();
        assert_eq!(check(&expect, &plain).unwrap_err().0, "backend saw tls \"false\", expected \"true\"");
    }

    #[test]
    fn shared_routes_answer_from_their_backends_and_each_of_them() {
        let from = |backend: &str| {
            let mut answer = answer(200, true);
            answer.echo.as_mut().unwrap().backend = backend.into();
            answer
        };
        let shared = vec!["a".to_string(), "b".to_string()];
        assert!(check_shared(&shared, &from("a")).is_ok());
        assert_eq!(check_shared(&shared, &from("c")).unwrap_err().0, "expected one of a, b to answer, but c answered");
        assert!(check_shared(&[], &from("c")).is_ok(), "no sharing asked for");
        assert_eq!(missing_shares(&shared, &[from("a"), from("a")]).as_deref(), Some("b"));
        assert_eq!(missing_shares(&shared, &[answer(503, false)]).as_deref(), Some("a and b"));
        assert_eq!(missing_shares(&shared, &[from("b"), from("a")]), None);
        assert_eq!(answering_backends(&[from("b"), from("a"), from("b")]), ["a", "b"]);
    }

    #[test]
    fn a_404_never_passes_for_an_upstream_failure() {
        let expect = ResponseExpectation {
            status: StatusCodes::Codes(vec![502, 503]),
            body_starts_with: Some("upstream connect error".into()),
            backend_reached: Some(serde_saphyr::Spanned::new(
                false,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            )),
            ..Default::default()
        };
        assert!(check(&expect, &answer(503, false)).is_ok());
        assert!(check(&expect, &answer(404, false)).is_err());
        assert!(check(&expect, &answer(503, true)).is_err());
    }

    #[test]
    fn headers_must_have_the_given_values_whatever_the_case_of_their_names() {
        let mut expect = ResponseExpectation { status: StatusCodes::Codes(vec![503]), ..Default::default() };
        expect.headers.insert("Content-Type".into(), "text/plain".into());
        assert!(check(&expect, &answer(503, false)).is_ok());
        expect.headers.insert("x-missing".into(), "1".into());
        let err = check(&expect, &answer(503, false)).unwrap_err();
        assert!(err.0.starts_with("expected header x-missing: \"1\", got none"), "{err:?}");
    }

    #[test]
    fn body_text_must_be_contained() {
        let expect = ResponseExpectation {
            status: StatusCodes::Codes(vec![400]),
            body_contains: Some("No required SSL certificate".into()),
            ..Default::default()
        };
        let mut refused = answer(400, false);
        refused.body = "<html><head><title>400 No required SSL certificate was sent</title>".into();
        assert!(check(&expect, &refused).is_ok());
        let mut plain = answer(400, false);
        plain.body = "<title>400 The plain HTTP request was sent to HTTPS port</title>".into();
        let err = check(&expect, &plain).unwrap_err();
        assert!(err.0.starts_with("expected a body containing \"No required SSL certificate\""), "{err:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_mismatch_resets_the_streak() {
        let statuses = [200, 503, 200, 200, 200];
        let expect = ResponseExpectation { status: StatusCodes::Codes(vec![200]), ..Default::default() };
        let passed = until_consecutive(
            3,
            3,
            Duration::from_secs(30),
            Duration::ZERO,
            |n| std::future::ready(answer(statuses[n], false)),
            |a| check(&expect, a),
        )
        .await
        .unwrap();
        assert_eq!(passed.len(), 3);

        let failed = until_consecutive(
            3,
            3,
            Duration::ZERO,
            Duration::ZERO,
            |_| std::future::ready(answer(404, false)),
            |a| check(&expect, a),
        )
        .await
        .unwrap_err();
        assert_eq!(failed.attempts, 1);
        assert!(failed.last_mismatch.unwrap().0.contains("expected status 200"));
    }

    /// A setting that flips between two routes every few answers passes each route's own
    /// streak in turn, but no round that asks both.
    #[tokio::test(flavor = "current_thread")]
    async fn rounds_catch_what_flips_between_separate_streaks() {
        let ok = ResponseExpectation { status: StatusCodes::Codes(vec![200]), ..Default::default() };
        let refused = ResponseExpectation { status: StatusCodes::Codes(vec![502]), ..Default::default() };
        // One validation shared by both routes: the first route's for three answers (the
        // backend is served on both), then the second's (refused on both).
        let first_wins = |n: usize| (n / 3).is_multiple_of(2);
        let route = |n: usize| answer(if first_wins(n) { 200 } else { 502 }, false);
        let limit = Duration::from_secs(30);
        let own = until_consecutive(3, 3, limit, Duration::ZERO, |n| std::future::ready(route(n)), |a| check(&ok, a));
        let other =
            until_consecutive(3, 3, limit, Duration::ZERO, |n| std::future::ready(route(n)), |a| check(&refused, a));
        assert!(own.await.is_ok() && other.await.is_ok(), "each streak alone passes");

        let rounds = until_consecutive(
            3,
            3,
            Duration::from_millis(50),
            Duration::ZERO,
            |n| std::future::ready(vec![route(n), route(n)]),
            |round: &Vec<Answer>| check(&ok, &round[0]).and_then(|()| check(&refused, &round[1])),
        )
        .await
        .unwrap_err();
        assert!(rounds.attempts > 6 && rounds.last_answers.iter().all(|round| round.len() == 2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_beyond_the_paced_ones_come_without_pauses() {
        let expect = ResponseExpectation { status: StatusCodes::Codes(vec![200]), ..Default::default() };
        let hour = Duration::from_secs(3600);
        let streak = |paced| {
            until_consecutive(
                20,
                paced,
                2 * hour,
                hour,
                |_| std::future::ready(answer(200, false)),
                |a| check(&expect, a),
            )
        };
        // Paced for the first answer only: twenty answers, no hour-long pause between them.
        let passed = tokio::time::timeout(Duration::from_secs(60), streak(1)).await.expect("no pauses");
        assert_eq!(passed.unwrap().len(), 20);
        // Paced for three: the second answer waits the interval.
        assert!(tokio::time::timeout(Duration::from_millis(100), streak(3)).await.is_err());
    }

    #[test]
    fn pauses_grow_while_answers_fail_and_shrink_once_one_passes() {
        let interval = Duration::from_millis(100);
        let mut pause = interval;
        let mut pauses = Vec::new();
        for failing in [true, true, true, true, true, true, false, true] {
            pauses.push(pause.as_millis());
            pause = next_pause(pause, interval, failing);
        }
        assert_eq!(pauses, [100, 150, 225, 337, 500, 500, 500, 100]);
        // A longer interval than the cap stays as it is.
        assert_eq!(next_pause(Duration::from_secs(2), Duration::from_secs(2), true), Duration::from_secs(2));

        // A condition that never holds, 30 s: a few dozen attempts instead of 300.
        let (mut elapsed, mut attempts, mut pause) = (Duration::ZERO, 1, interval);
        while elapsed < Duration::from_secs(30) {
            elapsed += pause;
            attempts += 1;
            pause = next_pause(pause, interval, true);
        }
        assert!((60..=70).contains(&attempts), "{attempts} attempts");
    }
}
