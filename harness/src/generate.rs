//! Generated cases for the differential runs ([`crate::differential`]): scenario-shaped
//! combinations of the upstream-TLS surface that nobody wrote a scenario for.
//!
//! A [`Case`] is one choice per [`DIMENSIONS`] entry: the backend certificate's names, its
//! chain, its validity, how the CA bundle is encoded, the CA Secret's key and type, how the
//! route names it (namespaces, delegations), the subject names to validate, the Service's
//! port, how its protocol is declared, Host rewrites on the route and the service, what else
//! shares the backend (a second route or a weighted service with other validation, an
//! include), and whether the backend asks for the proxy's client certificate. Option
//! 0 of every dimension is the plainest, so a case shrinks by moving choices toward 0
//! ([`Case::simpler`]). A case renders to a scenario
//! file whose last step observes instead of asserting ([`Case::render`]); once the arbiter has
//! answered, it renders to a catalog-shaped scenario that asserts what the arbiter did
//! ([`Case::render_asserting`]).
//!
//! Cases come from a seed with a generator of our own ([`SplitMix64`]): the same seed and index
//! give the same case on every machine and release, so a finding's seed reproduces it.

use std::fmt::Write as _;

/// One axis of the generated surface: its name and its options, plainest first.
pub struct Dimension {
    pub name: &'static str,
    pub options: &'static [&'static str],
}

/// The backend certificate's names.
const NAMES: usize = 0;
/// Who issued the backend certificate, what the backend serves and what the bundle holds.
const CHAIN: usize = 1;
const VALIDITY: usize = 2;
/// How the CA bundle's text is laid out.
const BUNDLE: usize = 3;
const KEY: usize = 4;
const SECRET_TYPE: usize = 5;
/// How the route names the CA Secret, and where the Secret lives.
const REFERENCE: usize = 6;
const SUBJECT: usize = 7;
const PORT: usize = 8;
/// How the Service says the port speaks TLS.
const PROTOCOL: usize = 9;
/// Host rewrites on the route and on the service (the SNI and the Host header, N1).
const HOST: usize = 10;
/// What else routes to the backend, and how the case's route is reached.
const ROUTES: usize = 11;
/// Whether and how the backend asks for the proxy's client certificate (C1-C3).
const CLIENT: usize = 12;

/// Every dimension, in the order of a case's choices.
pub const DIMENSIONS: &[Dimension] = &[
    Dimension {
        name: "names",
        options: &[
            "dns",
            "wildcard",
            "partial-wildcard",
            "idn-wildcard",
            "cn-only",
            "uri",
            "other-dns",
            "two-dns",
            "ip",
        ],
    },
    Dimension {
        name: "chain",
        options: &[
            "root",
            "intermediate-served",
            "intermediate-unserved",
            "intermediate-in-bundle",
            "intermediate-only-in-bundle",
            "other-root",
        ],
    },
    Dimension { name: "validity", options: &["valid", "expired", "not-yet-valid"] },
    Dimension {
        name: "bundle",
        options: &[
            "plain",
            "unrelated-first",
            "unrelated-last",
            "text-around",
            "garbage-block-after",
            "garbage-block-before",
            "unknown-block-after",
            "key-block-after",
            "no-final-newline",
            "indented",
            "one-line-base64",
            "pem-header",
        ],
    },
    Dimension { name: "key", options: &["ca.crt", "tls.crt", "ca.crt-and-tls.crt"] },
    Dimension { name: "secret-type", options: &["opaque", "unset", "custom"] },
    Dimension {
        name: "reference",
        options: &[
            "name",
            "own-namespace",
            "delegated-star",
            "delegated-named",
            "not-delegated",
            "delegated-elsewhere",
            "empty-namespace",
            "missing",
        ],
    },
    Dimension {
        name: "subject",
        options: &[
            "name",
            "list",
            "second-in-list",
            "uppercase",
            "trailing-dot",
            "uri",
            "wildcard",
            "idn",
            "mismatch",
            "ip",
        ],
    },
    Dimension { name: "port", options: &["8443-https", "443-tls"] },
    Dimension {
        name: "protocol",
        options: &[
            "annotation-number",
            "annotation-name",
            "annotation-list",
            "none",
            "annotation-other-port",
            "app-protocol",
            "annotation-h2",
        ],
    },
    Dimension { name: "host", options: &["none", "service", "route", "route-and-service"] },
    Dimension {
        name: "routes",
        options: &[
            "one",
            "second-route-same",
            "second-route-other-ca",
            "second-route-other-subject",
            "second-route-no-validation",
            "weighted-second-service",
            "include",
        ],
    },
    Dimension { name: "client", options: &["none", "optional", "require", "require-other-ca"] },
];

/// A small, fast generator with a fixed output for a seed (Steele, Lea and Flood's SplitMix64).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (> 0), without modulo bias worth the name for small bounds.
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }
}

/// One generated case: a label (its scenario's name) and one option index per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub label: String,
    pub choices: Vec<usize>,
}

impl Case {
    /// Case `index` of `seed`: the same on every run.
    pub fn generate(seed: u64, index: u64) -> Case {
        let mut rng = SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Two dimensions in three stay plain, so that most cases are near a working set-up and
        // the departures meet each other in twos and threes, not all at once.
        let choices =
            DIMENSIONS.iter().map(|d| if rng.below(3) < 2 { 0 } else { 1 + rng.below(d.options.len() - 1) }).collect();
        Case { label: format!("gen-{index}"), choices }
    }

    /// The case with the given option names (`names=dns`, ...); dimensions not named take
    /// option 0.
    ///
    /// # Errors
    /// An unknown dimension or option.
    pub fn from_options(label: &str, options: &[(&str, &str)]) -> Result<Case, String> {
        let mut choices = vec![0; DIMENSIONS.len()];
        for (name, option) in options {
            let d = DIMENSIONS.iter().position(|d| d.name == *name).ok_or_else(|| format!("no dimension {name:?}"))?;
            choices[d] = DIMENSIONS[d]
                .options
                .iter()
                .position(|o| o == option)
                .ok_or_else(|| format!("dimension {name} has no option {option:?}"))?;
        }
        Ok(Case { label: label.to_string(), choices })
    }

    fn option(&self, dimension: usize) -> &'static str {
        DIMENSIONS[dimension].options[self.choices[dimension]]
    }

    /// `names=dns chain=root ...`, every dimension.
    pub fn describe(&self) -> String {
        DIMENSIONS
            .iter()
            .zip(&self.choices)
            .map(|(d, &c)| format!("{}={}", d.name, d.options[c]))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Only the dimensions away from their plainest option: what a shrunk case is about.
    pub fn describe_departures(&self) -> String {
        let parts: Vec<String> = DIMENSIONS
            .iter()
            .zip(&self.choices)
            .filter(|(_, c)| **c != 0)
            .map(|(d, &c)| format!("{}={}", d.name, d.options[c]))
            .collect();
        if parts.is_empty() { "the plainest case".to_string() } else { parts.join(" ") }
    }

    /// Whether `other` makes every choice this case makes away from the plainest options:
    /// a shrunk case is "within" the cases that carry its cause.
    pub fn within(&self, other: &Case) -> bool {
        self.choices.iter().zip(&other.choices).all(|(mine, theirs)| *mine == 0 || mine == theirs)
    }

    /// Every case one step plainer: one dimension moved to a lower option, plainest first.
    /// Labels are this one's with `-N` appended.
    pub fn simpler(&self) -> Vec<Case> {
        let mut out = Vec::new();
        for (d, &choice) in self.choices.iter().enumerate() {
            for lower in 0..choice {
                let mut choices = self.choices.clone();
                choices[d] = lower;
                out.push(choices);
            }
        }
        out.into_iter().enumerate().map(|(n, choices)| Case { label: shrunk_label(&self.label, n), choices }).collect()
    }

    /// The paths the case observes: `/`, and `/second` when a second route shares the backend.
    pub fn paths(&self) -> &'static [&'static str] {
        if self.option(ROUTES).starts_with("second-route") { &["/", "/second"] } else { &["/"] }
    }

    /// The scenario file that sets the case up and observes what it settles to.
    pub fn render(&self) -> String {
        let mut text = self.render_setup("observed by the differential runs, asserting nothing");
        let _ = writeln!(text, "  - observe: [{}]", self.paths().join(", "));
        text
    }

    /// The scenario file that asserts what the arbiter did: each HTTPProxy's `currentStatus`
    /// and `description`, and for each path whether the backend answered over TLS or the
    /// request failed with what status.
    pub fn render_asserting(&self, name: &str, statuses: &[AnsweredStatus], answers: &[PathAnswer]) -> String {
        let mut text = self.render_setup("found by the differential runs");
        text = text.replacen(&format!("name: {}\n", self.label), &format!("name: {name}\n"), 1);
        for status in statuses {
            let _ = write!(
                text,
                "  - expectStatus:\n      name: {}\n      status:\n        currentStatus: {}\n        description: {}\n",
                status.proxy,
                yaml_string(&status.current_status),
                yaml_string(&status.description)
            );
        }
        for (path, answer) in answers {
            text.push_str("  - request:\n");
            if path != "/" {
                let _ = writeln!(text, "      path: {path}");
            }
            let _ = write!(text, "      expect:\n        status: {}\n", answer.status);
            if answer.backend_tls {
                text.push_str("        backend:\n          name: echo\n          tls: true\n");
            } else if matches!(answer.status.as_str(), "404" | "502" | "503" | "none") {
                text.push_str("        backendReached: false\n");
            }
        }
        text
    }

    fn render_setup(&self, what: &str) -> String {
        let port = match self.option(PORT) {
            "443-tls" => ("tls", 443),
            _ => ("https", 8443),
        };
        let mut t = String::new();
        let _ = writeln!(t, "# Generated case ({what}): {}", self.describe());
        let _ = writeln!(t, "name: {}", self.label);
        let _ = writeln!(t, "description: >-\n  Generated: {}.", self.describe());
        t.push_str("contract: [V3, S1]\n");
        let client = if self.option(CLIENT) == "none" { "" } else { ", envoy-client-certificate" };
        let _ = writeln!(
            t,
            "features: [upstream-tls, upstream-validation, tls-certificate-delegation, app-protocol{client}]"
        );
        t.push_str("namespaces: [ca-store]\n");
        if matches!(self.option(BUNDLE), "garbage-block-after" | "garbage-block-before" | "pem-header") {
            // Contour accepts such a bundle and Envoy cannot load it, which can leave the
            // upstreams of other cases without TLS (docs/contract.md S1, S7).
            t.push_str("alone: >-\n  A CA bundle Envoy cannot load can leave other upstreams without TLS (S7).\n");
        }
        t.push_str(&self.pki());
        t.push_str("backends:\n  - name: echo\n    certificate: backend\n");
        if self.option(CHAIN) == "intermediate-served" || self.option(CHAIN) == "intermediate-only-in-bundle" {
            t.push_str("    chain: [intermediate]\n");
        }
        let client_mode = match self.option(CLIENT) {
            "optional" => Some(("optional", "install.envoy-client-ca")),
            "require" => Some(("require", "install.envoy-client-ca")),
            "require-other-ca" => Some(("require", "other-root")),
            _ => None,
        };
        if let Some((mode, ca)) = client_mode {
            let _ = writeln!(t, "    clientCertificate:\n      mode: {mode}\n      ca: {ca}");
        }
        t.push_str("steps:\n  - apply: |\n");
        let mut objects = vec![self.secret()];
        if matches!(self.option(ROUTES), "second-route-other-ca" | "weighted-second-service") {
            objects.push(SECOND_CA.to_string());
        }
        objects.extend(self.delegation());
        objects.push(self.service("echo", port));
        if self.option(ROUTES) == "weighted-second-service" {
            objects.push(self.service("echo-second", port));
        }
        objects.extend(self.proxies(port.1));
        let body = objects.join("---\n");
        for line in body.lines() {
            if line.is_empty() {
                t.push('\n');
            } else {
                let _ = writeln!(t, "      {line}");
            }
        }
        t
    }

    fn pki(&self) -> String {
        let mut t = String::from("pki:\n  - name: root\n    ca: true\n  - name: other-root\n    ca: true\n");
        let chain = self.option(CHAIN);
        let issuer = match chain {
            "root" => "root",
            "other-root" => "other-root",
            _ => {
                t.push_str("  - name: intermediate\n    issuer: root\n    ca: true\n");
                "intermediate"
            }
        };
        let _ = writeln!(t, "  - name: backend\n    issuer: {issuer}");
        match self.option(NAMES) {
            "wildcard" => t.push_str("    dnsNames: [\"*.backend.test\"]\n"),
            // A partial wildcard, whose `*` also stands for an empty run (V4): `echo*` names
            // `echo.backend.test`.
            "partial-wildcard" => t.push_str("    dnsNames: [\"echo*.backend.test\"]\n"),
            // A wildcard in an internationalized label names nothing (V4), not even the
            // subject `idn` asks for.
            "idn-wildcard" => t.push_str("    dnsNames: [\"xn--ec*.backend.test\"]\n"),
            "cn-only" => t.push_str("    commonName: echo.backend.test\n"),
            "uri" => t.push_str("    commonName: \"\"\n    uris: [\"spiffe://backend.test/echo\"]\n"),
            "other-dns" => t.push_str("    dnsNames: [other.backend.test]\n"),
            "two-dns" => t.push_str("    dnsNames: [first.backend.test, echo.backend.test]\n"),
            "ip" => t.push_str("    commonName: \"\"\n    ipAddresses: [\"10.0.0.1\"]\n"),
            _ => t.push_str("    dnsNames: [echo.backend.test]\n"),
        }
        match self.option(VALIDITY) {
            "expired" => t.push_str("    expired: true\n"),
            "not-yet-valid" => t.push_str("    notYetValid: true\n"),
            _ => {}
        }
        t
    }

    /// The PKI entries the bundle trusts.
    fn trusted(&self) -> Vec<&'static str> {
        match self.option(CHAIN) {
            "intermediate-in-bundle" => vec!["root", "intermediate"],
            "intermediate-only-in-bundle" => vec!["intermediate"],
            _ => vec!["root"],
        }
    }

    fn bundle_lines(&self) -> (Vec<String>, bool) {
        const GARBAGE: &str =
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUsIGp1c3QgdGV4dA==\n-----END CERTIFICATE-----";
        const UNKNOWN: &str = "-----BEGIN TRUST NOTE-----\nbm90ZQ==\n-----END TRUST NOTE-----";
        // Not a key: a PEM block of that type around bytes that are none.
        const KEY: &str = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5LCBqdXN0IHRleHQ=\n-----END PRIVATE KEY-----";
        let pem = |name: &str| format!("${{pki.{name}.cert}}");
        let trusted: Vec<String> = self.trusted().into_iter().map(pem).collect();
        let unrelated = pem("other-root");
        let lines: Vec<String> = match self.option(BUNDLE) {
            "unrelated-first" => [vec![unrelated], trusted].concat(),
            "unrelated-last" => [trusted, vec![unrelated]].concat(),
            "text-around" => {
                let mut lines = vec!["Trusted CAs for the backend:".to_string(), String::new()];
                for cert in trusted {
                    lines.push(cert);
                    lines.push(String::new());
                }
                lines.push("end of bundle".to_string());
                lines
            }
            "garbage-block-after" => [trusted, vec![GARBAGE.to_string()]].concat(),
            "garbage-block-before" => [vec![GARBAGE.to_string()], trusted].concat(),
            "unknown-block-after" => [trusted, vec![UNKNOWN.to_string()]].concat(),
            "key-block-after" => [trusted, vec![KEY.to_string()]].concat(),
            // YAML takes a block's indentation from its first line: a line of text first, so
            // that the certificates' own indentation stays in the value.
            "indented" => std::iter::once("Trusted CAs for the backend:".to_string())
                .chain(trusted.into_iter().map(|cert| format!("  {cert}")))
                .collect(),
            // The whole DER on one line, where PEM writers wrap at 64 characters.
            "one-line-base64" => self
                .trusted()
                .into_iter()
                .map(|name| format!("-----BEGIN CERTIFICATE-----\n${{pki.{name}.certDer}}\n-----END CERTIFICATE-----"))
                .collect(),
            // RFC 1421 header lines inside the block, then the blank line that ends them.
            "pem-header" => self
                .trusted()
                .into_iter()
                .map(|name| {
                    format!(
                        "-----BEGIN CERTIFICATE-----\nComment: trusted for the backend\n\n${{pki.{name}.certDer}}\n\
                         -----END CERTIFICATE-----"
                    )
                })
                .collect(),
            _ => trusted,
        };
        let lines = lines.join("\n").split('\n').map(String::from).collect();
        (lines, self.option(BUNDLE) != "no-final-newline")
    }

    fn secret(&self) -> String {
        let namespace = match self.option(REFERENCE) {
            "delegated-star" | "delegated-named" | "not-delegated" | "delegated-elsewhere" => {
                "  namespace: ${namespaces.ca-store}\n"
            }
            _ => "",
        };
        let kind = match self.option(SECRET_TYPE) {
            "unset" => "",
            "custom" => "type: example.com/ca-bundle\n",
            _ => "type: Opaque\n",
        };
        let mut t =
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: backend-ca\n{namespace}{kind}stringData:\n");
        let (lines, final_newline) = self.bundle_lines();
        let keys: &[&str] = match self.option(KEY) {
            "tls.crt" => &["tls.crt"],
            "ca.crt-and-tls.crt" => &["ca.crt", "tls.crt"],
            _ => &["ca.crt"],
        };
        for key in keys {
            let _ = writeln!(t, "  {key}: |{}", if final_newline { "" } else { "-" });
            for line in &lines {
                if line.is_empty() {
                    t.push('\n');
                } else {
                    let _ = writeln!(t, "    {line}");
                }
            }
        }
        t
    }

    fn delegation(&self) -> Option<String> {
        let targets = match self.option(REFERENCE) {
            "delegated-star" => "[\"*\"]",
            "delegated-named" => "[\"${namespace}\"]",
            "delegated-elsewhere" => "[default]",
            _ => return None,
        };
        Some(format!(
            "apiVersion: projectcontour.io/v1\nkind: TLSCertificateDelegation\nmetadata:\n  name: backend-ca\n  \
             namespace: ${{namespaces.ca-store}}\nspec:\n  delegations:\n    - secretName: backend-ca\n      \
             targetNamespaces: {targets}\n"
        ))
    }

    fn service(&self, service: &str, (name, number): (&str, u16)) -> String {
        let annotation = match self.option(PROTOCOL) {
            "annotation-number" => Some(format!("\"{number}\"")),
            "annotation-name" => Some(name.to_string()),
            "annotation-list" => Some(format!("\"{name}, {number}\"")),
            "annotation-other-port" => Some("\"9443\"".to_string()),
            _ => None,
        };
        let (protocol, annotation) = match self.option(PROTOCOL) {
            "annotation-h2" => ("h2", Some(format!("\"{number}\""))),
            _ => ("tls", annotation),
        };
        let annotations = annotation.map_or(String::new(), |value| {
            format!("  annotations:\n    projectcontour.io/upstream-protocol.{protocol}: {value}\n")
        });
        let app_protocol = if self.option(PROTOCOL) == "app-protocol" { "      appProtocol: https\n" } else { "" };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {service}\n{annotations}spec:\n  selector:\n    \
             app.kubernetes.io/name: echo\n  ports:\n    - port: {number}\n      targetPort: https\n      name: \
             {name}\n{app_protocol}"
        )
    }

    /// The case's own validation block's lines.
    fn validation(&self) -> Vec<String> {
        let ca_secret = match self.option(REFERENCE) {
            "own-namespace" => "${namespace}/backend-ca",
            "delegated-star" | "delegated-named" | "not-delegated" | "delegated-elsewhere" => {
                "${namespaces.ca-store}/backend-ca"
            }
            "empty-namespace" => "/backend-ca",
            "missing" => "absent-ca",
            _ => "backend-ca",
        };
        let mut lines = vec![format!("caSecret: {ca_secret}")];
        lines.extend(self.subject().iter().map(|line| (*line).to_string()));
        lines
    }

    fn subject(&self) -> &'static [&'static str] {
        match self.option(SUBJECT) {
            "list" => &["subjectName: echo.backend.test", "subjectNames: [echo.backend.test, other.backend.test]"],
            "second-in-list" => {
                &["subjectName: other.backend.test", "subjectNames: [other.backend.test, echo.backend.test]"]
            }
            "uppercase" => &["subjectName: ECHO.Backend.Test"],
            "trailing-dot" => &["subjectName: echo.backend.test."],
            "uri" => &["subjectName: spiffe://backend.test/echo"],
            "wildcard" => &["subjectName: \"*.backend.test\""],
            "idn" => &["subjectName: xn--echo.backend.test"],
            "mismatch" => &["subjectName: other.backend.test"],
            "ip" => &["subjectName: 10.0.0.1"],
            _ => &["subjectName: echo.backend.test"],
        }
    }

    /// One entry of a route's `services`.
    fn service_entry(&self, service: &str, port: u16, weight: Option<u32>, validation: &[String]) -> String {
        let mut t = format!("- name: {service}\n  port: {port}\n");
        if let Some(weight) = weight {
            let _ = writeln!(t, "  weight: {weight}");
        }
        if self.option(HOST).ends_with("service") {
            t.push_str("  requestHeadersPolicy:\n    set:\n      - name: Host\n        value: echo.backend.test\n");
        }
        if !validation.is_empty() {
            t.push_str("  validation:\n");
            for line in validation {
                let _ = writeln!(t, "    {line}");
            }
        }
        t
    }

    /// One route: its prefix (none: `/`) and its services' entries.
    fn route(&self, prefix: Option<&str>, services: &[String]) -> String {
        let mut t = String::new();
        if let Some(prefix) = prefix {
            let _ = writeln!(t, "- conditions:\n    - prefix: {prefix}");
        }
        for (n, service) in services.iter().enumerate() {
            let lead = match (n, prefix) {
                (0, None) => "- services:\n",
                (0, Some(_)) => "  services:\n",
                _ => "",
            };
            t.push_str(lead);
            t.push_str(&indent(service, 4));
        }
        if self.option(HOST).starts_with("route") {
            t.push_str("  requestHeadersPolicy:\n    set:\n      - name: Host\n        value: route.backend.test\n");
        }
        t
    }

    /// The HTTPProxies: `proxy` with the virtual host, and `child` holding the routes when
    /// the case includes one. A second route or service differs from the case's own only in
    /// its validation, and in what Contour names its cluster by (the CA Secret's name or the
    /// first subject name): cases whose validations differ only past those are the known
    /// cluster-name collision (docs/findings/cluster-name-collision.md), not generated.
    fn proxies(&self, port: u16) -> Vec<String> {
        let own = self.validation();
        let echo = self.service_entry("echo", port, None, &own);
        let second_ca: Vec<String> = std::iter::once("caSecret: second-ca".to_string())
            .chain(self.subject().iter().map(|l| l.to_string()))
            .collect();
        let mut routes = vec![self.route(None, std::slice::from_ref(&echo))];
        match self.option(ROUTES) {
            "second-route-same" => routes.push(self.route(Some("/second"), &[echo])),
            "second-route-other-ca" => {
                routes.push(self.route(Some("/second"), &[self.service_entry("echo", port, None, &second_ca)]));
            }
            "second-route-other-subject" => {
                let other = vec![own[0].clone(), "subjectName: first.backend.test".to_string()];
                routes.push(self.route(Some("/second"), &[self.service_entry("echo", port, None, &other)]));
            }
            "second-route-no-validation" => {
                routes.push(self.route(Some("/second"), &[self.service_entry("echo", port, None, &[])]));
            }
            "weighted-second-service" => {
                routes = vec![self.route(
                    None,
                    &[
                        self.service_entry("echo", port, Some(100), &own),
                        self.service_entry("echo-second", port, Some(0), &second_ca),
                    ],
                )];
            }
            _ => {}
        }
        let routes = indent(&routes.concat(), 4);
        let header = "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata:\n";
        if self.option(ROUTES) == "include" {
            vec![
                format!(
                    "{header}  name: proxy\nspec:\n  virtualhost:\n    fqdn: ${{host}}\n  includes:\n    - name: child\n"
                ),
                format!("{header}  name: child\nspec:\n  routes:\n{routes}"),
            ]
        } else {
            vec![format!("{header}  name: proxy\nspec:\n  virtualhost:\n    fqdn: ${{host}}\n  routes:\n{routes}")]
        }
    }
}

/// The Secret `second-ca`, trusting only the other root: the second route's or service's CA.
const SECOND_CA: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: second-ca\ntype: Opaque\nstringData:\n  \
                         ca.crt: |\n    ${pki.other-root.cert}\n";

/// `text` with every non-empty line indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    text.lines().map(|line| if line.is_empty() { "\n".to_string() } else { format!("{:by$}{line}\n", "") }).collect()
}

/// A path and what the arbiter answered on it.
pub type PathAnswer = (String, Answered);

/// What the arbiter's status for one HTTPProxy was, for [`Case::render_asserting`].
#[derive(Debug, Clone)]
pub struct AnsweredStatus {
    /// The HTTPProxy's name.
    pub proxy: String,
    pub current_status: String,
    pub description: String,
}

/// What the arbiter's answer to a path was, for [`Case::render_asserting`].
#[derive(Debug, Clone)]
pub struct Answered {
    /// The status code, or `none` for no answer.
    pub status: String,
    /// The backend answered over TLS.
    pub backend_tls: bool,
}

/// `label` with a shrink step's number, kept within the 40 characters of a scenario name.
fn shrunk_label(label: &str, n: usize) -> String {
    let base = label.split("-s").next().unwrap_or(label);
    let mut out = format!("{base}-s{n}");
    out.truncate(40);
    out
}

/// A YAML scalar for `text`, quoted.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::load::parse_generated;

    #[test]
    fn the_same_seed_gives_the_same_cases_and_seeds_differ() {
        let a: Vec<Case> = (0..50).map(|i| Case::generate(7, i)).collect();
        let b: Vec<Case> = (0..50).map(|i| Case::generate(7, i)).collect();
        let c: Vec<Case> = (0..50).map(|i| Case::generate(8, i)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Every option of every dimension comes up within a few hundred cases.
        let many: Vec<Case> = (0..500).map(|i| Case::generate(7, i)).collect();
        for (d, dimension) in DIMENSIONS.iter().enumerate() {
            for o in 0..dimension.options.len() {
                assert!(
                    many.iter().any(|c| c.choices[d] == o),
                    "{}={} never comes up",
                    dimension.name,
                    dimension.options[o]
                );
            }
        }
    }

    #[test]
    fn every_option_renders_a_case_that_loads() {
        for (d, dimension) in DIMENSIONS.iter().enumerate() {
            for o in 0..dimension.options.len() {
                let mut case = Case::from_options("gen-0", &[]).unwrap();
                case.choices[d] = o;
                let text = case.render();
                let loaded = parse_generated(Path::new("generated"), &text);
                assert!(loaded.is_ok(), "{}={}:\n{text}\n{:?}", dimension.name, dimension.options[o], loaded.err());
                let status = AnsweredStatus {
                    proxy: "proxy".into(),
                    current_status: "invalid".into(),
                    description: "Spec: \"x\"".into(),
                };
                let answers: Vec<(String, Answered)> = case
                    .paths()
                    .iter()
                    .map(|path| (path.to_string(), Answered { status: "503".into(), backend_tls: false }))
                    .collect();
                let asserting = case.render_asserting("found-0", &[status], &answers);
                let loaded = crate::scenario::load::parse(Path::new("found"), &asserting);
                assert!(
                    loaded.is_ok(),
                    "{}={}:\n{asserting}\n{:?}",
                    dimension.name,
                    dimension.options[o],
                    loaded.err()
                );
            }
        }
    }

    #[test]
    fn what_shares_the_backend_differs_only_in_validation_and_is_observed_on_its_own_path() {
        let one = Case::from_options("gen-1", &[]).unwrap();
        assert_eq!(one.paths(), ["/"]);
        let other_ca = Case::from_options("gen-1", &[("routes", "second-route-other-ca")]).unwrap();
        assert_eq!(other_ca.paths(), ["/", "/second"]);
        let text = other_ca.render();
        assert!(text.contains("prefix: /second") && text.contains("caSecret: second-ca"), "{text}");
        assert!(text.ends_with("  - observe: [/, /second]\n"), "{text}");
        let answers = [
            ("/".to_string(), Answered { status: "200".into(), backend_tls: true }),
            ("/second".to_string(), Answered { status: "503".into(), backend_tls: false }),
        ];
        let asserting = other_ca.render_asserting("found-1", &[], &answers);
        assert!(asserting.contains("  - request:\n      path: /second\n      expect:\n        status: 503\n"));
        // The include puts the routes in a child, both HTTPProxies asserted by name.
        let include = Case::from_options("gen-1", &[("routes", "include")]).unwrap();
        let status = |proxy: &str| AnsweredStatus {
            proxy: proxy.into(),
            current_status: "valid".into(),
            description: "Valid HTTPProxy".into(),
        };
        let asserting = include.render_asserting("found-1", &[status("child"), status("proxy")], &answers[..1]);
        assert!(asserting.contains("includes:\n          - name: child"), "{asserting}");
        assert!(asserting.contains("  - expectStatus:\n      name: child\n"), "{asserting}");
        // The weighted service gets no traffic and its own validation.
        let weighted = Case::from_options("gen-1", &[("routes", "weighted-second-service")]).unwrap().render();
        assert!(
            weighted.contains("name: echo-second\n                port: 8443\n                weight: 0"),
            "{weighted}"
        );
    }

    #[test]
    fn simpler_cases_move_one_dimension_toward_the_plainest() {
        let case = Case::from_options("gen-3", &[("chain", "intermediate-unserved"), ("subject", "list")]).unwrap();
        let simpler = case.simpler();
        assert_eq!(simpler.len(), 2 + 1);
        assert!(simpler.iter().all(|c| c.choices.iter().zip(&case.choices).filter(|(a, b)| a != b).count() == 1));
        assert_eq!(simpler[0].describe_departures(), "subject=list");
        assert!(Case::from_options("gen-0", &[]).unwrap().simpler().is_empty());
        assert_eq!(case.describe_departures(), "chain=intermediate-unserved subject=list");
        assert!(simpler[0].within(&case) && !case.within(&simpler[0]) && !simpler[1].within(&case));
    }
}
