//! Which protocol the proxy speaks to a Service port: [`UpstreamProtocol`] (docs/contract.md P1-P6).
//!
//! Order of precedence: the route service's `protocol` field, then the Service port's
//! `appProtocol`, then the `projectcontour.io/upstream-protocol.*` annotations (port name,
//! then port number); with none of them, plaintext HTTP/1.1.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{Fault, LoopbackConfig};

/// How the proxy talks to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// Plaintext HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS.
    H2c,
    /// TLS, HTTP/1.1; Envoy's HTTP/1 pool offers ALPN http/1.1.
    Tls,
    /// TLS with ALPN h2, HTTP/2.
    H2,
}

impl UpstreamProtocol {
    /// Whether TLS is spoken (and so whether `validation` applies, docs/contract.md V5).
    pub fn is_tls(self) -> bool {
        matches!(self, UpstreamProtocol::Tls | UpstreamProtocol::H2)
    }

    fn from_annotation_suffix(suffix: &str) -> Option<Self> {
        match suffix {
            "tls" => Some(UpstreamProtocol::Tls),
            "h2" => Some(UpstreamProtocol::H2),
            "h2c" => Some(UpstreamProtocol::H2c),
            _ => None,
        }
    }
}

const ANNOTATION_PREFIX: &str = "projectcontour.io/upstream-protocol.";
/// Removed in Contour 1.11; has no effect (docs/contract.md P2).
const LEGACY_ANNOTATION_PREFIX: &str = "contour.heptio.com/upstream-protocol.";

/// The protocol for `port` of `service`, given the route service's `protocol` field
/// (`None` for Ingress backends, which have none).
pub fn resolve(
    protocol_field: Option<&str>,
    service: &Service,
    port: &ServicePort,
    config: &LoopbackConfig,
) -> UpstreamProtocol {
    let field = protocol_field
        .filter(|_| !config.has(Fault::IgnoreProtocolField))
        .and_then(UpstreamProtocol::from_annotation_suffix);
    let annotation = from_annotations(service, port, config);
    if config.has(Fault::AnnotationBeatsProtocolField)
        && let Some(annotated) = annotation
    {
        return annotated;
    }
    if let Some(field) = field {
        return field;
    }
    if let Some(app_protocol) = port.app_protocol.as_ref().filter(|_| !config.has(Fault::IgnoreAppProtocol)) {
        return match app_protocol.as_str() {
            "https" => UpstreamProtocol::Tls,
            "kubernetes.io/h2c" => UpstreamProtocol::H2c,
            _ => UpstreamProtocol::Http1,
        };
    }
    let fallback = if config.has(Fault::DefaultToTls) { UpstreamProtocol::Tls } else { UpstreamProtocol::Http1 };
    annotation.unwrap_or(fallback)
}

/// The protocol the annotations give the port: by port name first, then by port number.
fn from_annotations(service: &Service, port: &ServicePort, config: &LoopbackConfig) -> Option<UpstreamProtocol> {
    let annotated = annotated_ports(service, config);
    let number = if config.has(Fault::AnnotationMatchesTargetPort) {
        match &port.target_port {
            Some(IntOrString::Int(n)) => n.to_string(),
            _ => port.port.to_string(),
        }
    } else {
        port.port.to_string()
    };
    port.name.as_ref().and_then(|name| annotated.get(name.as_str())).or_else(|| annotated.get(number.as_str())).copied()
}

/// Port name or number -> protocol, from the annotations; `tls` wins over `h2c`, which wins
/// over `h2` (docs/contract.md P1).
fn annotated_ports(service: &Service, config: &LoopbackConfig) -> BTreeMap<String, UpstreamProtocol> {
    let mut ports = BTreeMap::new();
    if config.has(Fault::IgnoreUpstreamProtocolAnnotation) {
        return ports;
    }
    let Some(annotations) = &service.metadata.annotations else { return ports };
    let mut prefixes = vec![ANNOTATION_PREFIX];
    if config.has(Fault::HonourLegacyAnnotation) {
        prefixes.insert(0, LEGACY_ANNOTATION_PREFIX);
    }
    // Later protocols overwrite earlier ones, in Contour's order: h2, h2c, tls.
    let order = if config.has(Fault::H2BeatsH2c) {
        ["h2c", "h2", "tls"]
    } else if config.has(Fault::TlsAnnotationReadFirst) {
        ["tls", "h2", "h2c"]
    } else {
        ["h2", "h2c", "tls"]
    };
    for prefix in prefixes {
        for suffix in order {
            let Some(value) = annotations.get(&format!("{prefix}{suffix}")) else { continue };
            let Some(protocol) = UpstreamProtocol::from_annotation_suffix(suffix) else { continue };
            for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                ports.insert(entry.to_string(), protocol);
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(annotations: serde_json::Value) -> (Service, ServicePort) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "annotations": annotations},
            "spec": {"ports": [{"name": "https", "port": 8443}]},
        }))
        .unwrap();
        let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].clone();
        (svc, port)
    }

    fn resolved(annotations: serde_json::Value) -> UpstreamProtocol {
        let (svc, port) = service(annotations);
        resolve(None, &svc, &port, &LoopbackConfig::default())
    }

    #[test]
    fn annotation_matches_name_number_and_trimmed_lists() {
        let key = "projectcontour.io/upstream-protocol.tls";
        assert_eq!(resolved(json!({key: "8443"})), UpstreamProtocol::Tls);
        assert_eq!(resolved(json!({key: "https"})), UpstreamProtocol::Tls);
        assert_eq!(resolved(json!({key: "80, https "})), UpstreamProtocol::Tls);
        assert_eq!(resolved(json!({key: "443"})), UpstreamProtocol::Http1);
        assert_eq!(resolved(json!({})), UpstreamProtocol::Http1);
    }

    #[test]
    fn tls_wins_and_legacy_prefix_is_ignored() {
        let both = json!({
            "projectcontour.io/upstream-protocol.h2c": "8443",
            "projectcontour.io/upstream-protocol.tls": "8443",
        });
        assert_eq!(resolved(both), UpstreamProtocol::Tls);
        assert_eq!(resolved(json!({"contour.heptio.com/upstream-protocol.tls": "8443"})), UpstreamProtocol::Http1);
    }

    #[test]
    fn fault_ignores_the_annotation() {
        let (svc, port) = service(json!({"projectcontour.io/upstream-protocol.tls": "8443"}));
        let config = LoopbackConfig { faults: vec![Fault::IgnoreUpstreamProtocolAnnotation], ..Default::default() };
        assert_eq!(resolve(None, &svc, &port, &config), UpstreamProtocol::Http1);
    }

    fn with(fault: Fault) -> LoopbackConfig {
        LoopbackConfig { faults: vec![fault], ..Default::default() }
    }

    #[test]
    fn faults_change_precedence_and_matching() {
        let (svc, mut port) = service(json!({"projectcontour.io/upstream-protocol.tls": "8443"}));
        assert_eq!(
            resolve(Some("h2c"), &svc, &port, &with(Fault::AnnotationBeatsProtocolField)),
            UpstreamProtocol::Tls
        );
        assert_eq!(resolve(Some("h2c"), &svc, &port, &LoopbackConfig::default()), UpstreamProtocol::H2c);
        port.app_protocol = Some("http".into());
        assert_eq!(resolve(None, &svc, &port, &with(Fault::IgnoreAppProtocol)), UpstreamProtocol::Tls);

        let (svc, mut port) = service(json!({"projectcontour.io/upstream-protocol.tls": "9443"}));
        port.name = None;
        port.target_port = Some(IntOrString::Int(9443));
        assert_eq!(resolve(None, &svc, &port, &LoopbackConfig::default()), UpstreamProtocol::Http1);
        assert_eq!(resolve(None, &svc, &port, &with(Fault::AnnotationMatchesTargetPort)), UpstreamProtocol::Tls);

        let (svc, port) = service(json!({"contour.heptio.com/upstream-protocol.tls": "8443"}));
        assert_eq!(resolve(None, &svc, &port, &with(Fault::HonourLegacyAnnotation)), UpstreamProtocol::Tls);
    }

    #[test]
    fn a_port_under_several_annotations_gets_tls_over_h2c_over_h2() {
        let both = json!({"projectcontour.io/upstream-protocol.h2": "8443", "projectcontour.io/upstream-protocol.h2c": "8443"});
        let (svc, port) = service(both);
        assert_eq!(resolve(None, &svc, &port, &LoopbackConfig::default()), UpstreamProtocol::H2c);
        assert_eq!(resolve(None, &svc, &port, &with(Fault::H2BeatsH2c)), UpstreamProtocol::H2);
        let all = json!({
            "projectcontour.io/upstream-protocol.h2": "8443",
            "projectcontour.io/upstream-protocol.h2c": "8443",
            "projectcontour.io/upstream-protocol.tls": "8443",
        });
        let (svc, port) = service(all.clone());
        assert_eq!(resolve(None, &svc, &port, &LoopbackConfig::default()), UpstreamProtocol::Tls);
        assert_eq!(resolve(None, &svc, &port, &with(Fault::TlsAnnotationReadFirst)), UpstreamProtocol::H2c);
    }

    #[test]
    fn field_beats_app_protocol_beats_annotation() {
        let (svc, mut port) = service(json!({"projectcontour.io/upstream-protocol.tls": "8443"}));
        port.app_protocol = Some("http".into());
        let config = LoopbackConfig::default();
        assert_eq!(resolve(None, &svc, &port, &config), UpstreamProtocol::Http1);
        assert_eq!(resolve(Some("tls"), &svc, &port, &config), UpstreamProtocol::Tls);
    }
}
