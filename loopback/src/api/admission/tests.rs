//! Every HTTPProxy rule the CRD enforces, with the message a real API server gives.

use serde_json::{Value, json};

use super::*;

const RULES_SKIPPED: &str = r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#;

fn proxy(spec: Value) -> Value {
    json!({
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": spec,
    })
}

/// A proxy with one route to one service built from `service`.
fn proxy_to(service: Value) -> Value {
    proxy(json!({"virtualhost": {"fqdn": "web.example.com"}, "routes": [{"services": [service]}]}))
}

fn validation(block: Value) -> Value {
    proxy_to(json!({"name": "backend", "port": 443, "protocol": "tls", "validation": block}))
}

/// The message of the 422 `admit` returns for `object`.
fn refusal(object: &Value) -> String {
    let error = admit(&kinds::HTTP_PROXY, object).unwrap_err();
    assert_eq!((error.code, error.reason), (422, "Invalid"), "{error:?}");
    error.message
}

fn invalid(causes: &[&str]) -> String {
    match causes {
        [one] => format!(r#"HTTPProxy.projectcontour.io "web" is invalid: {one}"#),
        many => format!(r#"HTTPProxy.projectcontour.io "web" is invalid: [{}]"#, many.join(", ")),
    }
}

const SERVICE: &str = "spec.routes[0].services[0]";

#[test]
fn a_complete_proxy_is_admitted() {
    let object = validation(json!({"caSecret": "ca", "subjectName": "a.example", "subjectNames": ["a.example", "b"]}));
    admit(&kinds::HTTP_PROXY, &object).unwrap();
    let mut tcp = proxy(json!({
        "virtualhost": {"fqdn": "*.example.com", "tls": {"passthrough": true}},
        "tcpproxy": {"services": [{"name": "db", "port": 5432, "weight": 10}]},
        "includes": [{"name": "child", "conditions": [{"prefix": "/"}]}],
    }));
    admit(&kinds::HTTP_PROXY, &tcp).unwrap();
    tcp["spec"]["routes"] = json!([{"timeoutPolicy": {"anything": "goes"}, "services": [{"name": "s", "port": 1}]}]);
    admit(&kinds::HTTP_PROXY, &tcp).unwrap();
    admit(&kinds::SECRET, &json!({"spec": 1})).unwrap();
}

#[test]
fn spec_is_required() {
    let mut object = proxy(json!({}));
    object.as_object_mut().unwrap().remove("spec");
    assert_eq!(refusal(&object), invalid(&["spec: Required value", RULES_SKIPPED]));
}

#[test]
fn protocol_must_be_h2_h2c_or_tls() {
    let object = proxy_to(json!({"name": "backend", "port": 443, "protocol": "h3"}));
    let message = refusal(&object);
    assert_eq!(
        message,
        invalid(&[
            &format!(r#"{SERVICE}.protocol: Unsupported value: "h3": supported values: "h2", "h2c", "tls""#),
            RULES_SKIPPED,
        ])
    );
    for protocol in ["h2", "h2c", "tls"] {
        admit(&kinds::HTTP_PROXY, &proxy_to(json!({"name": "b", "port": 443, "protocol": protocol}))).unwrap();
    }
}

#[test]
fn ca_secret_and_subject_name_are_required() {
    let message = refusal(&validation(json!({})));
    assert_eq!(
        message,
        invalid(&[
            &format!("{SERVICE}.validation.caSecret: Required value"),
            &format!("{SERVICE}.validation.subjectName: Required value"),
            RULES_SKIPPED,
        ])
    );
}

#[test]
fn ca_secret_and_subject_name_must_not_be_empty() {
    let message = refusal(&validation(json!({"caSecret": "", "subjectName": ""})));
    assert_eq!(
        message,
        invalid(&[
            &format!(
                r#"{SERVICE}.validation.caSecret: Invalid value: "": {SERVICE}.validation.caSecret in body should be at least 1 chars long"#
            ),
            &format!(
                r#"{SERVICE}.validation.subjectName: Invalid value: "": {SERVICE}.validation.subjectName in body should be at least 1 chars long"#
            ),
        ])
    );
    let long = "x".repeat(251);
    let message = refusal(&validation(json!({"caSecret": "ca", "subjectName": long})));
    assert!(
        message.contains(&format!("{SERVICE}.validation.subjectName: Too long: may not be longer than 250")),
        "{message}"
    );
}

#[test]
fn subject_names_has_one_to_eight_entries() {
    let nine: Vec<String> = (0..9).map(|i| format!("n{i}")).collect();
    let message = refusal(&validation(json!({"caSecret": "ca", "subjectName": "n0", "subjectNames": nine})));
    assert_eq!(
        message,
        invalid(&[
            &format!("{SERVICE}.validation.subjectNames: Too many: 9: must have at most 8 items"),
            RULES_SKIPPED
        ])
    );
    let message = refusal(&validation(json!({"caSecret": "ca", "subjectName": "n0", "subjectNames": []})));
    assert_eq!(
        message,
        invalid(&[
            &format!(
                "{SERVICE}.validation.subjectNames: Invalid value: 0: {SERVICE}.validation.subjectNames in body should have at least 1 items"
            ),
            &format!(
                r#"{SERVICE}.validation: Invalid value: "object": index out of bounds: 0 evaluating rule: subjectNames[0] must equal subjectName if set"#
            ),
        ])
    );
    let eight: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    admit(&kinds::HTTP_PROXY, &validation(json!({"caSecret": "ca", "subjectName": "n0", "subjectNames": eight})))
        .unwrap();
}

#[test]
fn first_subject_name_must_equal_subject_name() {
    let object = validation(json!({"caSecret": "ca", "subjectName": "a", "subjectNames": ["b", "a"]}));
    assert_eq!(
        refusal(&object),
        invalid(&[&format!(
            r#"{SERVICE}.validation: Invalid value: "object": subjectNames[0] must equal subjectName if set"#
        )])
    );
}

#[test]
fn ports_are_between_1_and_65535_and_names_required() {
    let message = refusal(&proxy_to(json!({"name": "b", "port": 0})));
    assert_eq!(
        message,
        invalid(&[&format!(
            "{SERVICE}.port: Invalid value: 0: {SERVICE}.port in body should be greater than or equal to 1"
        )])
    );
    let message = refusal(&proxy_to(json!({"name": "b", "port": 65536})));
    assert_eq!(
        message,
        invalid(&[&format!("{SERVICE}.port: Invalid value: 65536: {SERVICE}.port in body should be less than 65536")])
    );
    admit(&kinds::HTTP_PROXY, &proxy_to(json!({"name": "b", "port": 65535}))).unwrap();
    let message = refusal(&proxy_to(json!({"port": 443})));
    assert_eq!(message, invalid(&[&format!("{SERVICE}.name: Required value"), RULES_SKIPPED]));
    let message = refusal(&proxy_to(json!({"name": "b", "port": "443"})));
    assert_eq!(
        message,
        invalid(&[
            &format!(
                r#"{SERVICE}.port: Invalid value: "string": {SERVICE}.port in body must be of type integer: "string""#
            ),
            RULES_SKIPPED,
        ])
    );
}

#[test]
fn a_virtual_host_needs_a_valid_fqdn() {
    let message = refusal(&proxy(json!({"virtualhost": {"tls": {"secretName": "s"}}})));
    assert_eq!(message, invalid(&["spec.virtualhost.fqdn: Required value", RULES_SKIPPED]));
    let message = refusal(&proxy(json!({"virtualhost": {"fqdn": "Web.Example.com"}})));
    assert!(message.starts_with(&invalid(&[
        r#"spec.virtualhost.fqdn: Invalid value: "Web.Example.com": spec.virtualhost.fqdn in body should match '^(\*\.)?[a-z0-9]"#
    ])), "{message}");
}

#[test]
fn all_causes_are_reported_together_with_details() {
    let object = proxy(json!({
        "virtualhost": {},
        "routes": [{"services": [{"name": "a", "port": 0, "protocol": "tls"}, {"port": 80}]}],
    }));
    let error = admit(&kinds::HTTP_PROXY, &object).unwrap_err();
    let fields: Vec<&str> = error.details.as_ref().unwrap().causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.routes[0].services[0].port", "spec.routes[0].services[1].name", "spec.virtualhost.fqdn", "<nil>"]
    );
    let status = error.to_status();
    assert_eq!(
        status["details"]["causes"][1],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.routes[0].services[1].name"})
    );
    assert_eq!(status["details"]["name"], "web");
    assert_eq!(status["details"]["group"], "projectcontour.io");
}

#[test]
fn delegations_need_secret_and_target_namespaces() {
    let delegation = |entry: Value| {
        json!({"apiVersion": "projectcontour.io/v1", "kind": "TLSCertificateDelegation",
               "metadata": {"name": "d"}, "spec": {"delegations": [entry]}})
    };
    admit(&kinds::TLS_CERTIFICATE_DELEGATION, &delegation(json!({"secretName": "ca", "targetNamespaces": ["*"]})))
        .unwrap();
    let error = admit(&kinds::TLS_CERTIFICATE_DELEGATION, &delegation(json!({"secretName": "ca"}))).unwrap_err();
    assert_eq!(
        error.message,
        r#"TLSCertificateDelegation.projectcontour.io "d" is invalid: spec.delegations[0].targetNamespaces: Required value"#
    );
}

#[test]
fn unknown_fields_follow_the_directive() {
    let mut object = proxy(json!({"virtualhosts": {"fqdn": "a"}, "routes": [{"service": []}]}));
    let unknown = drop_unknown_fields(&kinds::HTTP_PROXY, &mut object.clone(), FieldValidation::Strict, &mut vec![]);
    assert_eq!(unknown.unwrap_err(), ["spec.routes[0].service", "spec.virtualhosts"]);
    let error = strict_decoding_error(&kinds::HTTP_PROXY, &["spec.virtualhosts".into()]);
    assert_eq!(error.code, 400);
    assert_eq!(
        error.message,
        r#"HTTPProxy in version "v1" cannot be handled as a HTTPProxy: strict decoding error: unknown field "spec.virtualhosts""#
    );
    let mut warnings = vec![];
    drop_unknown_fields(&kinds::HTTP_PROXY, &mut object, FieldValidation::Warn, &mut warnings).unwrap();
    assert_eq!(warnings, [r#"unknown field "spec.routes[0].service""#, r#"unknown field "spec.virtualhosts""#]);
    assert_eq!(object["spec"], json!({"routes": [{}]}));
    let mut secret = json!({"metadata": {"name": "s", "labelz": {}}, "data": {}, "dta": {}});
    drop_unknown_fields(&kinds::SECRET, &mut secret, FieldValidation::Ignore, &mut warnings).unwrap();
    assert_eq!(secret, json!({"metadata": {"name": "s"}, "data": {}}));
}

#[test]
fn apply_refuses_unknown_fields_like_structured_merge_diff() {
    let object = proxy(json!({"virtualhosts": {"fqdn": "a"}}));
    let error = check_applied_fields(&kinds::HTTP_PROXY, "team", "web", &object).unwrap_err();
    assert_eq!((error.code, error.reason), (500, ""));
    assert_eq!(
        error.message,
        "failed to create typed patch object (team/web; projectcontour.io/v1, Kind=HTTPProxy): .spec.virtualhosts: field not declared in schema"
    );
    let two = json!({"metadata": {"name": "s", "labelz": {}}, "dta": {}});
    let error = check_applied_fields(&kinds::SECRET, "team", "s", &two).unwrap_err();
    assert_eq!(
        error.message,
        "failed to create typed patch object (team/s; /v1, Kind=Secret): errors:\n  .dta: field not declared in schema\n  .metadata.labelz: field not declared in schema"
    );
    check_applied_fields(&kinds::HTTP_PROXY, "team", "web", &proxy_to(json!({"name": "b", "port": 1}))).unwrap();
}

#[test]
fn the_admission_fault_stores_what_the_crd_rejects() {
    let object = proxy_to(json!({"name": "b", "port": 1, "protocol": "tcp"}));
    assert!(Admission::default().admit(&kinds::HTTP_PROXY, &object).is_err());
    let faulty = Admission { validate_custom_resources: false, ..Admission::default() };
    assert!(faulty.admit(&kinds::HTTP_PROXY, &object).is_ok());
    let bad_secret = json!({"metadata": {"name": 7}});
    assert_eq!(
        faulty.admit(&kinds::SECRET, &bad_secret).is_ok(),
        Admission::default().admit(&kinds::SECRET, &bad_secret).is_ok(),
        "built-in kinds are unaffected"
    );
}

#[test]
fn data_keys_that_are_not_file_names_are_refused_like_kubernetes() {
    let secret = json!({
        "metadata": {"name": "keys", "namespace": "team"},
        "data": {"tls.crt": "", "../../tmp/x": ""},
        "stringData": {"..hidden": "x", "ok_KEY-1": "y"},
    });
    let error = admit(&kinds::SECRET, &secret).unwrap_err();
    assert_eq!((error.code, error.reason), (422, "Invalid"));
    assert_eq!(
        error.message,
        "Secret \"keys\" is invalid: [data[../../tmp/x]: Invalid value: \"../../tmp/x\": a valid config key must \
         consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', \
         regex used for validation is '[-._a-zA-Z0-9]+'), data[../../tmp/x]: Invalid value: \"../../tmp/x\": must \
         not start with '..', data[..hidden]: Invalid value: \"..hidden\": must not start with '..']"
    );
    for key in [".", "..", "", "a/b", "a b", &"k".repeat(254)] {
        let config_map = json!({"metadata": {"name": "c"}, "binaryData": {key: ""}});
        assert!(admit(&kinds::CONFIG_MAP, &config_map).is_err(), "{key:?} was accepted");
    }
    for key in ["nginx.conf", ".hidden", "a..b", "KEY_1-x", &"k".repeat(253)] {
        let config_map = json!({"metadata": {"name": "c"}, "data": {key: ""}});
        admit(&kinds::CONFIG_MAP, &config_map).unwrap();
    }
}

#[test]
fn names_are_checked_per_kind_like_kubernetes() {
    let named = |name: &str| json!({"metadata": {"name": name, "namespace": "team"}});
    let error = admit(&kinds::POD, &named("../../etc")).unwrap_err();
    assert_eq!(
        error.message,
        "Pod \"../../etc\" is invalid: metadata.name: Invalid value: \"../../etc\": a lowercase RFC 1123 subdomain \
         must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an \
         alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    for (kind, good, bad) in [
        (&kinds::POD, vec!["web-5d9c.x", "0a"], vec!["Web", "a..b", "-a", "a/b", ""]),
        (&kinds::NAMESPACE, vec!["team-1", "1team"], vec!["a.b", "a_b", "..", &"n".repeat(64)]),
        (&kinds::SERVICE, vec!["backend", "b-1"], vec!["1backend", "b.c", "b-"]),
        (&kinds::HTTP_PROXY, vec!["web.example"], vec!["web/x"]),
    ] {
        for name in good {
            let errors = name_errors(kind, &named(name));
            assert!(errors.is_empty(), "{} {name:?}: {errors:?}", kind.kind);
        }
        for name in bad {
            assert!(!name_errors(kind, &named(name)).is_empty(), "{} {name:?} was accepted", kind.kind);
        }
    }
    let faulty = Admission { validate_custom_resources: false, ..Admission::default() };
    assert!(faulty.admit(&kinds::HTTP_PROXY, &named("../x")).is_err(), "the fault keeps name checks");
}

#[test]
fn the_status_fault_rewrites_gateway_api_condition_messages_only() {
    let widget = crate::api::crds::kinds_from_crds(&serde_saphyr::to_string(&crate::api::crds::widget_crd()).unwrap())
        .unwrap()[0];
    let policy = ResourceKind { group: GATEWAY_API_GROUP, ..*widget };
    let written = json!({"status": {
        "conditions": [{"type": "Programmed", "reason": "Programmed", "message": "Valid Gateway"}],
        "ancestors": [{"conditions": [{"type": "Accepted", "reason": "Accepted", "message": "Accepted BackendTLSPolicy"}]}],
    }});
    let faulty = Admission { rewrite_gateway_status_messages: true, ..Admission::default() };
    let mut object = written.clone();
    faulty.status_write(&policy, &mut object);
    assert_eq!(object["status"]["conditions"][0]["message"], "Programmed");
    assert_eq!(object["status"]["ancestors"][0]["conditions"][0]["message"], "Accepted");
    let mut untouched = written.clone();
    faulty.status_write(&kinds::HTTP_PROXY, &mut untouched);
    Admission::default().status_write(&policy, &mut untouched);
    assert_eq!(untouched, written);
}

#[test]
fn labels_and_annotations_are_held_to_the_api_server_s_limits() {
    let with = |labels: Value, annotations: Value| json!({"metadata": {"name": "c", "namespace": "team", "labels": labels, "annotations": annotations}});
    let accepted = with(
        json!({"app.kubernetes.io/name": "echo", "run": "", "a_b.c-d": "V1.0_x"}),
        json!({"projectcontour.io/upstream-protocol.tls": "8443", "Note": "anything at all, even\nlines"}),
    );
    admit(&kinds::CONFIG_MAP, &accepted).unwrap();

    let error = admit(&kinds::CONFIG_MAP, &with(json!({"app": "v".repeat(1 << 20)}), json!({}))).unwrap_err();
    assert_eq!((error.code, error.reason), (422, "Invalid"));
    assert!(
        error.message.starts_with(&format!(
            "ConfigMap \"c\" is invalid: metadata.labels: Invalid value: \"{}...\": must be no more than 63 characters",
            "v".repeat(64)
        )),
        "a long value is quoted cut short: {}",
        &error.message[..200.min(error.message.len())]
    );
    assert!(error.message.len() < 1000, "{} bytes", error.message.len());
    for bad_key in ["-app", "a/b/c", "/x", "Example.com/x", &"k".repeat(64), "bad key"] {
        let object = with(json!({bad_key: "x"}), json!({}));
        assert!(admit(&kinds::CONFIG_MAP, &object).is_err(), "label key {bad_key:?} was accepted");
    }
    for not_a_string in [json!({"version": 1}), json!({"on": true})] {
        assert!(admit(&kinds::CONFIG_MAP, &with(not_a_string.clone(), json!({}))).is_err(), "{not_a_string}");
        assert!(admit(&kinds::CONFIG_MAP, &with(json!({}), not_a_string.clone())).is_err(), "{not_a_string}");
    }
    for bad_value in ["-x", "a b", "x/y"] {
        let object = with(json!({"app": bad_value}), json!({}));
        assert!(admit(&kinds::CONFIG_MAP, &object).is_err(), "label value {bad_value:?} was accepted");
    }
    let error = admit(&kinds::POD, &with(json!({}), json!({"big": "x".repeat(256 * 1024)}))).unwrap_err();
    assert_eq!(
        error.message,
        "Pod \"c\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"
    );
}
