//! The backend fixture: [`BackendFixture`] renders the objects that run one TLS nginx backend
//! (a Secret with its certificate, a ConfigMap with nginx.conf, a Deployment).
//!
//! They are not under test, so scenarios do not spell them out; the Service in front of them
//! is under test and stays in the scenario file. nginx answers every request with a JSON
//! [`BackendEcho`] of what it saw, and logs the same facts to stdout, so the harness can prove
//! both what reached the backend and what did not.
//!
//! Paths in nginx.conf are relative (certificates to the config's directory, temporary files to
//! the `-p` prefix), so the same file runs in a pod and as a loopback process.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::pki::Material;

/// The TLS port every backend listens on (HTTP/1.1, or HTTP/2 when ALPN asks), named `https`.
pub const BACKEND_PORT: u16 = 8443;
/// The plaintext HTTP/1.1 port, named `http`.
pub const PLAINTEXT_PORT: u16 = 8080;
/// The plaintext HTTP/2 (prior knowledge, h2c) port, named `h2c`.
pub const H2C_PORT: u16 = 8081;
/// The header carrying the harness's request id; the backend echoes and logs it.
pub const REQUEST_ID_HEADER: &str = "x-conformance-request-id";
/// The label selecting a backend's pods.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Default container image on real clusters; loopback runs the local nginx whatever it says.
pub const DEFAULT_IMAGE: &str = "nginx:1.27";

/// What a backend saw of a request, as it answers it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendEcho {
    pub backend: String,
    pub request_id: String,
    /// `https` when the connection was TLS.
    pub scheme: String,
    /// Empty when the client sent no SNI.
    pub sni: String,
    pub tls_version: String,
    pub cipher: String,
    pub alpn: String,
    pub http_version: String,
    pub host: String,
    pub path: String,
    /// The port the request arrived on.
    pub port: String,
    pub client_verify: String,
    pub client_subject: String,
    pub client_issuer: String,
    pub client_serial: String,
    pub client_sha1: String,
}

impl BackendEcho {
    /// What the backend saw, as fields: `from backend `web`: TLSv1.3 (TLS_AES_128_GCM_SHA256),
    /// SNI none, ALPN none, HTTP/1.1, Host a.test, no client certificate`.
    pub fn seen(&self) -> String {
        let or_none = |value: &str| if value.is_empty() { "none".to_string() } else { format!("{value:?}") };
        let transport = if self.scheme == "https" {
            format!("{} ({}), SNI {}, ALPN {}", self.tls_version, self.cipher, or_none(&self.sni), or_none(&self.alpn))
        } else {
            "plaintext".to_string()
        };
        let client = if self.client_subject.is_empty() {
            "no client certificate".to_string()
        } else {
            format!(
                "client certificate {:?} serial {} (verify {})",
                self.client_subject, self.client_serial, self.client_verify
            )
        };
        format!(
            "from backend `{}`: {transport}, {}, Host {}, {client}",
            self.backend,
            self.http_version,
            or_none(&self.host)
        )
    }
}

/// Whether and how a backend asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificateMode {
    /// Asks, accepts a connection without one (nginx `ssl_verify_client optional`).
    Optional,
    /// Asks and rejects requests without one (nginx `ssl_verify_client on`: the handshake
    /// completes, then nginx answers 400 "No required SSL certificate was sent").
    Require,
}

/// The objects for one backend.
pub struct BackendFixture<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub certificate: &'a Material,
    /// Intermediates served after the certificate.
    pub chain: Vec<&'a Material>,
    /// The mode and the CA that client certificates must chain to.
    pub client_certificate: Option<(ClientCertificateMode, &'a Material)>,
    /// TLS versions nginx accepts; both when `None`.
    pub tls_versions: Option<Vec<TlsVersion>>,
    /// The TLS 1.2 cipher suites nginx accepts, OpenSSL's names; nginx's own when `None`.
    pub tls_ciphers: Option<Vec<&'static str>>,
    /// Whether the TLS port speaks HTTP/2 (offers `h2` by ALPN).
    pub http2: bool,
    pub image: &'a str,
}

/// A TLS version a backend may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn nginx_name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl BackendFixture<'_> {
    /// Secret, ConfigMap and Deployment, in the order they must be applied.
    pub fn objects(&self) -> Vec<Value> {
        vec![self.secret(), self.config_map(), self.deployment()]
    }

    fn labels(&self) -> Value {
        json!({
            NAME_LABEL: self.name,
            "app.kubernetes.io/part-of": "upstream-tls-conformance",
        })
    }

    fn secret(&self) -> Value {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let chain: String =
            std::iter::once(self.certificate).chain(self.chain.iter().copied()).map(|m| m.cert_pem.as_str()).collect();
        let mut data = json!({
            "tls.crt": b64(&chain),
            "tls.key": b64(&self.certificate.key_pem),
        });
        if let Some((_, ca)) = self.client_certificate {
            data["client-ca.crt"] = json!(b64(&ca.cert_pem));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("{}-tls", self.name), "namespace": self.namespace, "labels": self.labels()},
            "type": "kubernetes.io/tls",
            "data": data,
        })
    }

    fn config_map(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("{}-nginx", self.name), "namespace": self.namespace, "labels": self.labels()},
            "data": {"nginx.conf": nginx_conf(
                self.name,
                self.client_certificate.map(|(mode, _)| mode),
                self.tls_versions.as_deref().unwrap_or(&[TlsVersion::Tls12, TlsVersion::Tls13]),
                self.tls_ciphers.as_deref(),
                self.http2,
            )},
        })
    }

    fn deployment(&self) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels()},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {NAME_LABEL: self.name}},
                "template": {
                    "metadata": {"labels": self.labels()},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": self.image,
                            "command": [
                                "nginx", "-p", "/var/run/fixture/", "-c", "/etc/fixture/nginx.conf",
                                "-e", "stderr", "-g", "daemon off;",
                            ],
                            "ports": [
                                {"name": "https", "containerPort": BACKEND_PORT},
                                {"name": "http", "containerPort": PLAINTEXT_PORT},
                                {"name": "h2c", "containerPort": H2C_PORT},
                            ],
                            "readinessProbe": {"tcpSocket": {"port": BACKEND_PORT}, "periodSeconds": 1},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/fixture", "readOnly": true},
                                {"name": "run", "mountPath": "/var/run/fixture"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "projected": {"sources": [
                                {"configMap": {"name": format!("{}-nginx", self.name)}},
                                {"secret": {"name": format!("{}-tls", self.name)}},
                            ]}},
                            {"name": "run", "emptyDir": {}},
                        ],
                    },
                },
            },
        })
    }
}

/// The echo document, as an nginx string with variables. Values are nginx variables that
/// cannot hold a double quote except the client DNs, which nginx prints RFC 2253-escaped.
const ECHO_FIELDS: [(&str, &str); 15] = [
    ("requestId", "$http_x_conformance_request_id"),
    ("scheme", "$scheme"),
    ("sni", "$ssl_server_name"),
    ("tlsVersion", "$ssl_protocol"),
    ("cipher", "$ssl_cipher"),
    ("alpn", "$ssl_alpn_protocol"),
    ("httpVersion", "$server_protocol"),
    ("host", "$host"),
    ("path", "$request_uri"),
    ("port", "$server_port"),
    ("clientVerify", "$ssl_client_verify"),
    ("clientSubject", "$ssl_client_s_dn"),
    ("clientIssuer", "$ssl_client_i_dn"),
    ("clientSerial", "$ssl_client_serial"),
    ("clientSha1", "$ssl_client_fingerprint"),
];

fn echo_template(backend: &str) -> String {
    let fields: Vec<String> = std::iter::once(format!("\"backend\":\"{backend}\""))
        .chain(ECHO_FIELDS.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// nginx.conf for a backend: TLS on 8443 (TLS 1.2 and 1.3, HTTP/2 by ALPN unless `http2` is
/// false, when nginx refuses a handshake that offers only `h2`), plaintext HTTP/1.1 on 8080 and
/// h2c on 8081, every one echoing what it saw. `ciphers` (OpenSSL names) narrows the TLS 1.2
/// suites nginx accepts.
pub fn nginx_conf(
    backend: &str,
    client_certificate: Option<ClientCertificateMode>,
    versions: &[TlsVersion],
    ciphers: Option<&[&str]>,
    http2: bool,
) -> String {
    let echo = echo_template(backend);
    let protocols: Vec<&str> = versions.iter().map(|v| v.nginx_name()).collect();
    let protocols = protocols.join(" ");
    let ciphers = ciphers.map_or(String::new(), |names| format!("\n        ssl_ciphers {};", names.join(":")));
    let verify = match client_certificate {
        None => "ssl_verify_client off;".to_string(),
        Some(mode) => {
            let mode = if mode == ClientCertificateMode::Require { "on" } else { "optional" };
            format!(
                "ssl_verify_client {mode};\n        ssl_client_certificate client-ca.crt;\n        ssl_verify_depth 3;"
            )
        }
    };
    format!(
        r#"# Backend fixture "{backend}" of the upstream TLS conformance harness.
worker_processes 1;
pid nginx.pid;
events {{
    worker_connections 256;
}}
http {{
    client_body_temp_path tmp-body;
    proxy_temp_path tmp-proxy;
    fastcgi_temp_path tmp-fastcgi;
    uwsgi_temp_path tmp-uwsgi;
    scgi_temp_path tmp-scgi;
    log_format echo escape=json '{echo}';
    access_log /dev/stdout echo;
    default_type application/json;
    server {{
        listen {tls_port} ssl{tls_http2};
        ssl_certificate tls.crt;
        ssl_certificate_key tls.key;
        ssl_protocols {protocols};{ciphers}
        {verify}
        location / {{
            return 200 '{echo}\n';
        }}
    }}
    server {{
        listen {plain_port};
        location / {{
            return 200 '{echo}\n';
        }}
    }}
    server {{
        listen {h2c_port} http2;
        location / {{
            return 200 '{echo}\n';
        }}
    }}
}}
"#,
        tls_port = BACKEND_PORT,
        plain_port = PLAINTEXT_PORT,
        h2c_port = H2C_PORT,
        tls_http2 = if http2 { " http2" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_template_is_json_once_variables_are_filled() {
        let filled = echo_template("echo").replace('$', "");
        let echo: BackendEcho = serde_json::from_str(&filled).unwrap();
        assert_eq!(echo.backend, "echo");
        assert_eq!(echo.sni, "ssl_server_name");
    }

    #[test]
    fn nginx_conf_uses_only_relative_file_paths() {
        let conf = nginx_conf("echo", Some(ClientCertificateMode::Optional), &[TlsVersion::Tls12], None, true);
        assert!(nginx_conf("echo", None, &[TlsVersion::Tls12], None, false).contains("listen 8443 ssl;"));
        assert!(conf.contains("ssl_protocols TLSv1.2;"));
        assert!(conf.contains("ssl_certificate tls.crt;"));
        assert!(conf.contains("listen 8443 ssl http2;"));
        assert!(conf.contains("ssl_verify_client optional;"));
        assert!(!conf.contains("ssl_ciphers"), "nginx's own suites unless the backend names some");
        let narrowed = nginx_conf("echo", None, &[TlsVersion::Tls12], Some(&["A-B", "C-D"]), true);
        assert!(narrowed.contains("ssl_protocols TLSv1.2;\n        ssl_ciphers A-B:C-D;\n"));
        let file_directives = ["pid", "ssl_certificate", "ssl_certificate_key", "client_body_temp_path", "include"];
        for line in conf.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            let (Some(directive), Some(arg)) = (words.next(), words.next()) else { continue };
            if file_directives.contains(&directive) || directive.ends_with("_temp_path") {
                assert!(!arg.starts_with('/'), "absolute path in {line:?}");
            }
        }
    }
}
