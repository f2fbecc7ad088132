//! The Gateway API CRDs each tested Contour release ships (`examples/gateway/00-crds.yaml`,
//! kept by `scripts/ensure-contour` as `gateway-crds.yaml`) serve the kinds and versions Contour
//! watches in Gateway mode, and loopback's structural defaulting fills in from them what
//! Contour reads unchecked: a listener's `allowedRoutes` (Contour dereferences it), a
//! backendRef's group and kind (a backendRef without them is `InvalidKind` to Contour), an
//! HTTPRoute rule's `matches` (a rule without them programs no route).
//! docs/research/gateway-api-backend-tls.md has the source lines.
//!
//! Without the CRDs (no Go) this test passes with a loud note, unless
//! `UPSTREAM_TLS_REQUIRE_CONTOUR=1` (as CI sets).

use loopback::api::admission::admit;
use loopback::api::crds::kinds_from_crds;
use loopback::api::validation::apply_defaults;
use loopback::config::{contour_cache_dir, contour_versions};
use serde_json::{Value, json};

/// The `openAPIV3Schema` of `kind` at `version`, which must be served.
fn schema(crds: &[Value], kind: &str, version: &str) -> Value {
    let crd = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == kind && c["spec"]["group"] == "gateway.networking.k8s.io")
        .unwrap_or_else(|| panic!("no {kind} CRD"));
    let served = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == version && v["served"] == true))
        .unwrap_or_else(|| panic!("{kind} {version} is not served"));
    served["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_gateway_api_crds_serve_what_contour_watches_and_default_what_it_reads() {
    let mut checked = 0;
    for version in contour_versions() {
        let path = contour_cache_dir(version).join("gateway-crds.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            let required = std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").is_ok_and(|v| v == "1");
            assert!(!required, "Contour {version}'s Gateway API CRDs are required but missing at {}", path.display());
            eprintln!(
                "NOT RUN for {version}: no Gateway API CRDs at {}; run scripts/ensure-contour --all",
                path.display()
            );
            continue;
        };
        let crds: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("the Gateway API CRD file parses");
        // What Contour's informers need served (cmd/contour/serve.go setupGatewayAPI).
        for (kind, api_version) in [
            ("GatewayClass", "v1"),
            ("Gateway", "v1"),
            ("HTTPRoute", "v1"),
            ("GRPCRoute", "v1"),
            ("ReferenceGrant", "v1beta1"),
            ("TLSRoute", "v1alpha2"),
            ("TCPRoute", "v1alpha2"),
            ("BackendTLSPolicy", "v1alpha3"),
        ] {
            schema(&crds, kind, api_version);
        }

        let mut gateway = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "contour", "namespace": "projectcontour"},
            "spec": {"gatewayClassName": "contour", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
        });
        apply_defaults(&schema(&crds, "Gateway", "v1"), &mut gateway);
        assert_eq!(gateway["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"], "Same", "{version}");

        let mut route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "route", "namespace": "app"},
            "spec": {
                "parentRefs": [{"name": "contour", "namespace": "projectcontour"}],
                "rules": [{"backendRefs": [{"name": "echo", "port": 443}]}],
            },
        });
        apply_defaults(&schema(&crds, "HTTPRoute", "v1"), &mut route);
        let rule = &route["spec"]["rules"][0];
        assert_eq!(rule["backendRefs"][0]["kind"], "Service", "{version}: {route}");
        assert_eq!(rule["backendRefs"][0]["group"], "", "{version}: {route}");
        assert_eq!(rule["matches"], json!([{"path": {"type": "PathPrefix", "value": "/"}}]), "{version}: {route}");
        assert_eq!(route["spec"]["parentRefs"][0]["kind"], "Gateway", "{version}: {route}");

        // Served from the file, each kind at the version Contour watches, and a BackendTLSPolicy
        // hostname checked against the CRD's PreciseHostname pattern, as a real API server does.
        let kinds = kinds_from_crds(&text).expect("the CRD file is served");
        let policy_kind = kinds.iter().find(|k| k.kind == "BackendTLSPolicy").expect("BackendTLSPolicy is served");
        assert_eq!(policy_kind.version, "v1alpha3", "{version}");
        let policy = |hostname: &str| {
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "BackendTLSPolicy",
                "metadata": {"name": "p", "namespace": "app"},
                "spec": {
                    "targetRefs": [{"group": "", "kind": "Service", "name": "echo"}],
                    "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}], "hostname": hostname},
                },
            })
        };
        admit(policy_kind, &policy("echo.backend.test")).unwrap_or_else(|e| panic!("{version}: {e:?}"));
        let refused = admit(policy_kind, &policy("*.backend.test")).unwrap_err();
        assert!(refused.message.contains("spec.validation.hostname in body should match"), "{version}: {refused:?}");
        checked += 1;
    }
    eprintln!("checked the Gateway API CRDs of {checked} Contour release(s)");
}
