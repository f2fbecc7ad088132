//! Which protocol the proxy speaks to a Service port: [`UpstreamProtocol`] (CONTRACT P1-P6).
//!
//! Order of precedence: the route service's `protocol` field, then the Service port's
//! `appProtocol`, then the `projectcontour.io/upstream-protocol.*` annotations (port name,
//! then port number); with none of them, plaintext HTTP/1.1.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};

use crate::config::{Fault, LoopbackConfig};

/// How the proxy talks to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// Plaintext HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS.
    H2c,
    /// TLS without ALPN, HTTP/1.1.
    Tls,
    /// TLS with ALPN h2, HTTP/2.
    H2,
}

impl UpstreamProtocol {
    /// Whether TLS is spoken (and so whether `validation` applies, CONTRACT V5).
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

/// The protocol for `port` of `service`, given the route service's `protocol` field.
pub fn resolve(
    protocol_field: Option<&str>,
    service: &Service,
    port: &ServicePort,
    config: &LoopbackConfig,
) -> UpstreamProtocol {
    if let Some(field) = protocol_field.and_then(UpstreamProtocol::from_annotation_suffix) {
        return field;
    }
    if let Some(app_protocol) = &port.app_protocol {
        return match app_protocol.as_str() {
            "https" => UpstreamProtocol::Tls,
            "kubernetes.io/h2c" => UpstreamProtocol::H2c,
            _ => UpstreamProtocol::Http1,
        };
    }
    let annotated = annotated_ports(service, config);
    port.name
        .as_ref()
        .and_then(|name| annotated.get(name.as_str()))
        .or_else(|| annotated.get(port.port.to_string().as_str()))
        .copied()
        .unwrap_or(UpstreamProtocol::Http1)
}

/// Port name or number -> protocol, from the annotations; `tls` wins over `h2` and `h2c`.
fn annotated_ports(service: &Service, config: &LoopbackConfig) -> BTreeMap<String, UpstreamProtocol> {
    let mut ports = BTreeMap::new();
    if config.has(Fault::IgnoreUpstreamProtocolAnnotation) {
        return ports;
    }
    let Some(annotations) = &service.metadata.annotations else { return ports };
    // Later protocols overwrite earlier ones: this order makes tls win.
    for suffix in ["h2c", "h2", "tls"] {
        let Some(value) = annotations.get(&format!("{ANNOTATION_PREFIX}{suffix}")) else { continue };
        let Some(protocol) = UpstreamProtocol::from_annotation_suffix(suffix) else { continue };
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            ports.insert(entry.to_string(), protocol);
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

    #[test]
    fn field_beats_app_protocol_beats_annotation() {
        let (svc, mut port) = service(json!({"projectcontour.io/upstream-protocol.tls": "8443"}));
        port.app_protocol = Some("http".into());
        let config = LoopbackConfig::default();
        assert_eq!(resolve(None, &svc, &port, &config), UpstreamProtocol::Http1);
        assert_eq!(resolve(Some("tls"), &svc, &port, &config), UpstreamProtocol::Tls);
    }
}
