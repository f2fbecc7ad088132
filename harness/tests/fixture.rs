//! The backend fixture does what scenarios rely on, checked by talking TLS to it directly
//! rather than through a proxy (on loopback, each pod listens on its own 127.x address): it
//! refuses TLS versions it is not given, serves its chain, negotiates ALPN, asks for client
//! certificates as told, and echoes the SNI, version and client certificate it saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use harness::cluster::ClusterClient;
use harness::fixture::{BACKEND_PORT, BackendEcho, BackendFixture, ClientCertificateMode, NAME_LABEL, TlsVersion};
use harness::pki::{CertificateRequest, Material, Pki};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use loopback::{Loopback, LoopbackConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "fixture-probe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_does_what_scenarios_rely_on() {
    harness::init_crypto();
    let mut pki = Pki::default();
    let names = ["echo.backend.test".to_string()];
    issue(&mut pki, "ca", None, true, &[]);
    let intermediate = issue(&mut pki, "intermediate", Some("ca"), true, &[]);
    let leaf = issue(&mut pki, "leaf", Some("intermediate"), false, &names);
    let client_ca = issue(&mut pki, "client-ca", None, true, &[]);
    let client = issue(&mut pki, "client", Some("client-ca"), false, &[]);

    let fixture = |name: &'static str| BackendFixture {
        name,
        namespace: NAMESPACE,
        certificate: &leaf,
        chain: Vec::new(),
        client_certificate: None,
        tls_versions: None,
        tls_ciphers: None,
        http2: true,
        image: "nginx",
    };
    let fixtures = [
        fixture("plain"),
        BackendFixture { tls_versions: Some(vec![TlsVersion::Tls13]), ..fixture("tls13") },
        BackendFixture { chain: vec![&intermediate], ..fixture("chained") },
        BackendFixture { http2: false, ..fixture("no-h2") },
        BackendFixture {
            client_certificate: Some((ClientCertificateMode::Require, &client_ca)),
            ..fixture("requires")
        },
    ];
    let loopback = Loopback::start(LoopbackConfig::default()).await.expect("loopback starts (is nginx installed?)");
    let addresses = deploy(&loopback, &fixtures).await;
    let address = |name: &str| addresses.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap();
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];

    // Versions: both by default; only TLS 1.3 when limited to it.
    let tls12 = probe(address("plain"), None, &[&rustls::version::TLS12], &[], None).await.unwrap();
    assert_eq!(tls12.echo().tls_version, "TLSv1.2");
    let tls13 = probe(address("plain"), None, &all, &[], None).await.unwrap();
    assert_eq!(tls13.echo().tls_version, "TLSv1.3");
    let refused = probe(address("tls13"), None, &[&rustls::version::TLS12], &[], None).await;
    assert!(refused.is_err(), "a TLS 1.3 backend accepted TLS 1.2: {:?}", refused.map(|a| a.status));

    // SNI: echoed as sent, empty when none was sent.
    let named = probe(address("plain"), Some("probe.example.test"), &all, &[], None).await.unwrap();
    assert_eq!(named.echo().sni, "probe.example.test");
    assert_eq!(tls13.echo().sni, "", "no SNI was sent");

    // ALPN: h2 when offered, nothing when not.
    let h2 = probe(address("plain"), None, &all, &[b"h2".to_vec()], None).await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(tls13.alpn, None);
    // Without HTTP/2 on the TLS port: an offer of h2 alone is refused, http/1.1 beside it wins.
    let only_h2 = probe(address("no-h2"), None, &all, &[b"h2".to_vec()], None).await;
    assert!(only_h2.is_err(), "a backend without HTTP/2 accepted an offer of h2 alone");
    let both = [b"h2".to_vec(), b"http/1.1".to_vec()];
    let fallback = probe(address("no-h2"), None, &all, &both, None).await.unwrap();
    assert_eq!(fallback.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // The chain: the leaf, then the intermediate; without a chain, the leaf alone.
    assert_eq!(tls13.peer_certificates, 1);
    let chained = probe(address("chained"), None, &all, &[], None).await.unwrap();
    assert_eq!(chained.peer_certificates, 2);

    // A required client certificate: the handshake completes either way, then nginx refuses
    // the request without one, and verifies and echoes one from its CA.
    let without = probe(address("requires"), None, &all, &[], None).await.unwrap();
    assert_eq!(without.status, 400);
    assert!(without.body.contains("No required SSL certificate was sent"), "{}", without.body);
    let with = probe(address("requires"), None, &all, &[], Some(&client)).await.unwrap();
    let echo = with.echo();
    assert_eq!((echo.client_verify.as_str(), echo.client_subject.as_str()), ("SUCCESS", "CN=client"));
    assert_eq!(echo.client_serial, client.serial_hex);

    // Private keys on disk: only loopback's user can read them or list the directories
    // holding them, and nothing under the work directory can be listed by others.
    let work_dir = loopback.kubeconfig().parent().unwrap().to_path_buf();
    let keys = key_files_are_private(&work_dir);
    assert!(keys >= fixtures.len(), "each backend's key was found on disk ({keys} found)");

    loopback.shutdown().await;
}

/// Walks `dir`: every file holding a private key is mode 0600 in a 0700 directory, and no
/// directory but an emptyDir volume is readable by others. Returns the number of key files.
fn key_files_are_private(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir_mode = mode(dir);
    let is_empty_dir_volume = dir.parent().is_some_and(|p| p.ends_with("volumes")) && dir_mode == 0o777;
    assert!(is_empty_dir_volume || dir_mode & 0o044 == 0, "{} is readable by others: {dir_mode:o}", dir.display());
    let mut keys = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            keys += key_files_are_private(&path);
        } else if std::fs::read(&path).unwrap().windows(11).any(|w| w == b"PRIVATE KEY") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            assert_eq!(dir_mode, 0o700, "{}", dir.display());
            keys += 1;
        }
    }
    keys
}

fn issue(pki: &mut Pki, name: &str, issuer: Option<&str>, ca: bool, dns_names: &[String]) -> Material {
    let request = CertificateRequest {
        name,
        issuer,
        ca,
        common_name: name,
        dns_names: dns_names.to_vec(),
        uris: Vec::new(),
        expired: false,
        not_yet_valid: false,
        ip_addresses: Vec::new(),
        rsa: false,
    };
    pki.issue(&request).expect("rcgen issues test certificates").clone()
}

/// Applies the fixtures, waits until they are available, and returns each one's pod address.
async fn deploy(loopback: &Loopback, fixtures: &[BackendFixture<'_>]) -> Vec<(String, SocketAddr)> {
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    cluster.create_namespace(NAMESPACE, "probe").await.unwrap();
    for fixture in fixtures {
        for object in fixture.objects() {
            cluster.apply(&object, NAMESPACE).await.unwrap();
        }
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(loopback.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let pods = Api::<Pod>::namespaced(kube::Client::try_from(config).unwrap(), NAMESPACE);
    let mut addresses = Vec::new();
    for fixture in fixtures {
        cluster.wait_deployment_available(NAMESPACE, fixture.name, Duration::from_secs(60)).await.unwrap();
        let selector = format!("{NAME_LABEL}={}", fixture.name);
        let listed = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
        // The ready pod that is staying: not one a rollout is taking away.
        let ready = listed.items.iter().find(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        let ip = ready.and_then(|pod| pod.status.as_ref()?.pod_ip.clone()).expect("a ready pod has an address");
        addresses.push((fixture.name.to_string(), SocketAddr::new(ip.parse().unwrap(), BACKEND_PORT)));
    }
    addresses
}

/// What a direct request to a backend got back.
struct Probe {
    status: u16,
    body: String,
    alpn: Option<Vec<u8>>,
    peer_certificates: usize,
}

impl Probe {
    fn echo(&self) -> BackendEcho {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }
}

/// One TLS connection to `address` with exactly these parameters, and one HTTP/1.1 request
/// unless ALPN settled on h2. `Err` when the handshake fails.
async fn probe(
    address: SocketAddr,
    sni: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[Vec<u8>],
    client: Option<&Material>,
) -> Result<Probe, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)));
    let mut config = match client {
        Some(material) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(material.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap(),
                PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    // An IP address as server name sends no SNI.
    let server_name = match sni {
        Some(name) => ServerName::try_from(name.to_string()).unwrap(),
        None => ServerName::IpAddress(address.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, connection) = tls.get_ref();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    let peer_certificates = connection.peer_certificates().map_or(0, <[_]>::len);
    if alpn.as_deref() == Some(b"h2") {
        return Ok(Probe { status: 0, body: String::new(), alpn, peer_certificates });
    }
    let request = "GET /probe HTTP/1.1\r\nHost: probe\r\nx-conformance-request-id: probe\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // nginx may close without close_notify after Connection: close; what was read stands.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {response}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status: {head}"))?;
    Ok(Probe { status, body: body.to_string(), alpn, peer_certificates })
}

/// Accepts any server certificate (the probe checks the fixture, not its PKI), while still
/// checking handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where Debian's nginx is (scripts/ensure-nginx installs it).
fn nginx() -> std::path::PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(std::path::PathBuf::from).find(|p| p.exists()).expect("nginx")
}

/// The fixture's nginx.conf exactly as a pod runs it (not loopback's confined copy), checked by
/// `nginx -t` in a directory laid out as the pod's volumes are: the projected volume with the
/// config, certificate, key and client CA at /etc/fixture, the emptyDir prefix at
/// /var/run/fixture. Every variant the harness renders is checked.
/// Outside every range loopback's kubelet gives pods (127.64-243.x.y).
const UNUSED_ADDRESS: &str = "127.255.255.1";

#[test]
fn nginx_accepts_every_fixture_config_as_a_pod_runs_it() {
    harness::init_crypto();
    let mut pki = Pki::default();
    let leaf = issue(&mut pki, "leaf", None, false, &["echo.backend.test".to_string()]);
    let client_ca = issue(&mut pki, "client-ca", None, true, &[]);
    let dir = std::env::temp_dir().join(format!("utls-nginx-t-{}", std::process::id()));
    let (config, run) = (dir.join("etc-fixture"), dir.join("var-run-fixture"));
    let modes = [None, Some(ClientCertificateMode::Optional), Some(ClientCertificateMode::Require)];
    let versions: [&[TlsVersion]; 3] =
        [&[TlsVersion::Tls12, TlsVersion::Tls13], &[TlsVersion::Tls12], &[TlsVersion::Tls13]];
    let variants = modes.into_iter().flat_map(|mode| versions.into_iter().map(move |v| (mode, v)));
    for (index, (mode, versions)) in variants.enumerate() {
        // Every other variant without HTTP/2 on the TLS port, every third naming its TLS 1.2
        // suites (all the names a scenario can give).
        let http2 = index % 2 == 0;
        let ciphers: Option<&[&str]> = (index % 3 == 0).then_some(&[
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ]);
        {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&config).unwrap();
            std::fs::create_dir_all(&run).unwrap();
            // `nginx -t` binds every listener for a moment. The fixture's listen on every
            // address (a pod's copy is confined to the pod's), and a wildcard bind of 8443 would
            // take, for that moment, the connections meant for the pods of the test beside this
            // one (a readiness check connected to it, then found the port closed): here they
            // listen on an address no loopback cluster hands out.
            let conf = harness::fixture::nginx_conf("echo", mode, versions, ciphers, http2)
                .replace("listen ", &format!("listen {UNUSED_ADDRESS}:"));
            std::fs::write(config.join("nginx.conf"), conf).unwrap();
            std::fs::write(config.join("tls.crt"), &leaf.cert_pem).unwrap();
            std::fs::write(config.join("tls.key"), &leaf.key_pem).unwrap();
            std::fs::write(config.join("client-ca.crt"), &client_ca.cert_pem).unwrap();
            // The pod's command line (fixture.rs), its paths mapped to this directory.
            let output = std::process::Command::new(nginx())
                .arg("-t")
                .arg("-p")
                .arg(format!("{}/", run.display()))
                .arg("-c")
                .arg(config.join("nginx.conf"))
                .args(["-e", "stderr", "-g", "daemon off;"])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success() && said.contains("test is successful"), "{mode:?} {versions:?}: {said}");
            assert!(!said.contains("[warn]") && !said.contains("[emerg]"), "{mode:?} {versions:?}: {said}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
