//! The schemas of Contour's HTTPProxy and TLSCertificateDelegation, modelled on the CRDs in
//! projectcontour/contour `examples/contour/01-crds.yaml` (v1.33).
//!
//! Every object on the way to the fields the conformance scenarios use lists all of its real
//! properties, so a misspelt field is unknown as it is on a real cluster: the spec, virtual
//! host and its TLS, routes and their match conditions, services (protocol, port, weight,
//! `validation` with its CEL rule, header policies), includes and the TCP proxy. Policies
//! that play no part here (timeouts, retries, rate limits, CORS, ...) keep whatever they hold.
//! `tests/crds.rs` holds them against the CRDs of every release in `contour-versions`, which
//! `scripts/ensure-contour` copies from Contour's Go module.

use serde_json::{Value, json};

use super::components::{array, boolean, described, integer, loose_object, metadata, object, string};

/// The CEL rule Contour's CRD puts on `validation` (UpstreamValidation).
pub const SUBJECT_NAMES_RULE: &str = "has(self.subjectNames) ? self.subjectNames[0] == self.subjectName : true";

/// The message of [`SUBJECT_NAMES_RULE`].
const SUBJECT_NAMES_MESSAGE: &str = "subjectNames[0] must equal subjectName if set";

/// The pattern of `spec.virtualhost.fqdn`.
pub const FQDN_PATTERN: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// `HTTPProxy` (projectcontour.io/v1).
pub(super) fn http_proxy() -> Value {
    let spec = object(
        &[
            (
                "includes",
                described(
                    array(include()),
                    "Includes allow for specific routing configuration to be included from another HTTPProxy, possibly in another namespace.",
                ),
            ),
            ("ingressClassName", string()),
            (
                "routes",
                described(array(route()), "Routes are the ingress routes. If TCPProxy is present, Routes is ignored."),
            ),
            ("tcpproxy", described(tcp_proxy(), "TCPProxy holds TCP proxy information.")),
            (
                "virtualhost",
                described(
                    virtual_host(),
                    "Virtualhost appears at most once. If it is present, the object is considered to be a \"root\" HTTPProxy.",
                ),
            ),
        ],
        &[],
    );
    let mut status = loose_object();
    status["default"] = json!({"currentStatus": "NotReconciled", "description": "Waiting for controller"});
    let mut proxy = object(
        &[("apiVersion", string()), ("kind", string()), ("metadata", metadata()), ("spec", spec), ("status", status)],
        &["metadata", "spec"],
    );
    proxy["description"] = json!("HTTPProxy is an Ingress CRD specification.");
    proxy
}

/// `TLSCertificateDelegation` (projectcontour.io/v1).
pub(super) fn tls_certificate_delegation() -> Value {
    let delegation = object(
        &[
            ("secretName", described(string(), "The name of a secret in the current namespace.")),
            ("targetNamespaces", array(string())),
        ],
        &["secretName", "targetNamespaces"],
    );
    let spec = object(&[("delegations", array(delegation))], &["delegations"]);
    let mut schema = object(
        &[
            ("apiVersion", string()),
            ("kind", string()),
            ("metadata", metadata()),
            ("spec", spec),
            ("status", loose_object()),
        ],
        &["metadata", "spec"],
    );
    schema["description"] = json!("TLSCertificateDelegation is an TLS Certificate Delegation CRD specification.");
    schema
}

fn virtual_host() -> Value {
    let mut fqdn = described(
        string(),
        "The fully qualified domain name of the root of the ingress tree all leaves of the DAG rooted at this object relate to the fqdn.",
    );
    fqdn["pattern"] = json!(FQDN_PATTERN);
    let tls = object(
        &[
            ("clientValidation", loose_object()),
            ("enableFallbackCertificate", boolean()),
            ("maximumProtocolVersion", string()),
            ("minimumProtocolVersion", string()),
            ("passthrough", boolean()),
            ("secretName", string()),
        ],
        &[],
    );
    object(
        &[
            ("authorization", loose_object()),
            ("corsPolicy", loose_object()),
            ("fqdn", fqdn),
            ("ipAllowPolicy", array(loose_object())),
            ("ipDenyPolicy", array(loose_object())),
            ("jwtProviders", array(loose_object())),
            ("rateLimitPolicy", loose_object()),
            ("tls", described(tls, "If present the fields describes TLS properties of the virtual host.")),
        ],
        &["fqdn"],
    )
}

fn route() -> Value {
    object(
        &[
            ("authPolicy", loose_object()),
            ("conditions", array(match_condition())),
            ("cookieRewritePolicies", array(loose_object())),
            ("directResponsePolicy", loose_object()),
            ("enableWebsockets", boolean()),
            ("healthCheckPolicy", loose_object()),
            ("internalRedirectPolicy", loose_object()),
            ("ipAllowPolicy", array(loose_object())),
            ("ipDenyPolicy", array(loose_object())),
            ("jwtVerificationPolicy", loose_object()),
            ("loadBalancerPolicy", loose_object()),
            ("pathRewritePolicy", loose_object()),
            ("permitInsecure", boolean()),
            ("rateLimitPolicy", loose_object()),
            ("requestHeadersPolicy", headers_policy()),
            ("requestRedirectPolicy", loose_object()),
            ("responseHeadersPolicy", headers_policy()),
            ("retryPolicy", loose_object()),
            ("services", array(service())),
            ("timeoutPolicy", loose_object()),
        ],
        &[],
    )
}

/// A route's or a TCP proxy's service.
fn service() -> Value {
    let mut port = described(
        integer(),
        "Port (defined as Integer) to proxy traffic to since a service can have multiple defined.",
    );
    port["minimum"] = json!(1);
    port["maximum"] = json!(65536);
    port["exclusiveMaximum"] = json!(true);
    let mut health_port = integer();
    health_port["minimum"] = json!(1);
    health_port["maximum"] = json!(65535);
    let mut weight = json!({"type": "integer", "format": "int64", "minimum": 0});
    weight["description"] = json!("Weight defines percentage of traffic to balance traffic");
    let protocol = described(
        json!({"type": "string", "enum": ["h2", "h2c", "tls"]}),
        "Protocol may be used to specify (or override) the protocol used to reach this Service. Values may be tls, h2, h2c. If omitted, protocol-selection falls back on Service annotations.",
    );
    object(
        &[
            ("cookieRewritePolicies", array(loose_object())),
            ("healthPort", health_port),
            ("mirror", boolean()),
            ("name", described(string(), "Name is the name of Kubernetes service to proxy traffic.")),
            ("port", port),
            ("protocol", protocol),
            ("requestHeadersPolicy", headers_policy()),
            ("responseHeadersPolicy", headers_policy()),
            ("slowStartPolicy", loose_object()),
            (
                "validation",
                described(
                    upstream_validation(),
                    "UpstreamValidation defines how to verify the backend service's certificate",
                ),
            ),
            ("weight", weight),
        ],
        &["name", "port"],
    )
}

/// `validation`: how the proxy verifies the backend's certificate.
fn upstream_validation() -> Value {
    let bounded = |min: u64, max: u64| json!({"type": "string", "minLength": min, "maxLength": max});
    let names = json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8});
    let ca_secret = "Name or namespaced name of the Kubernetes secret used to validate the certificate presented by the backend. The secret must contain key named ca.crt. When cross-namespace reference is used, TLSCertificateDelegation resource must exist in the namespace to grant access to the secret.";
    let subject_name = "Key which is expected to be present in the 'subjectAltName' of the presented certificate. Deprecated: migrate to using the plural field subjectNames.";
    let subject_names = "List of keys, of which at least one is expected to be present in the 'subjectAltName of the presented certificate.";
    let mut validation = object(
        &[
            ("caSecret", described(bounded(1, 317), ca_secret)),
            ("subjectName", described(bounded(1, 250), subject_name)),
            ("subjectNames", described(names, subject_names)),
        ],
        &["caSecret", "subjectName"],
    );
    validation["x-kubernetes-validations"] = json!([{"message": SUBJECT_NAMES_MESSAGE, "rule": SUBJECT_NAMES_RULE}]);
    validation
}

fn headers_policy() -> Value {
    let non_empty = json!({"type": "string", "minLength": 1});
    let header = object(&[("name", non_empty.clone()), ("value", non_empty)], &["name", "value"]);
    object(&[("remove", array(string())), ("set", array(header))], &[])
}

fn match_condition() -> Value {
    let header = object(
        &[
            ("contains", string()),
            ("exact", string()),
            ("ignoreCase", boolean()),
            ("name", string()),
            ("notcontains", string()),
            ("notexact", string()),
            ("notpresent", boolean()),
            ("present", boolean()),
            ("regex", string()),
            ("treatMissingAsEmpty", boolean()),
        ],
        &["name"],
    );
    let query_parameter = object(
        &[
            ("contains", string()),
            ("exact", string()),
            ("ignoreCase", boolean()),
            ("name", string()),
            ("prefix", string()),
            ("present", boolean()),
            ("regex", string()),
            ("suffix", string()),
        ],
        &["name"],
    );
    object(
        &[
            ("exact", string()),
            ("header", header),
            ("prefix", string()),
            ("queryParameter", query_parameter),
            ("regex", string()),
        ],
        &[],
    )
}

fn include() -> Value {
    object(&[("conditions", array(match_condition())), ("name", string()), ("namespace", string())], &["name"])
}

fn tcp_proxy() -> Value {
    let include = || object(&[("name", string()), ("namespace", string())], &["name"]);
    object(
        &[
            ("healthCheckPolicy", loose_object()),
            ("include", include()),
            ("includes", include()),
            ("loadBalancerPolicy", loose_object()),
            ("services", array(service())),
        ],
        &[],
    )
}
