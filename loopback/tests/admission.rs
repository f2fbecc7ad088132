//! Admission and schema checks of the loopback API server, through HTTP: the 422 `Invalid`
//! Status kube-rs receives for an HTTPProxy the CRD would refuse, what `fieldValidation` does
//! with unknown fields, the OpenAPI documents, and the real kubectl validating with them.

use std::path::Path;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use loopback::api::kinds;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KUBECTL: &str = "/usr/bin/kubectl";

mod support;

use support::{LIMIT, Server};

/// Requests the tests make beyond kube-rs.
trait ServerExt {
    async fn proxies(&self) -> Api<DynamicObject>;
    async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Vec<(String, String)>, Value);
}

impl ServerExt for Server {
    async fn proxies(&self) -> Api<DynamicObject> {
        let kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        let gvk = GroupVersionKind::gvk("projectcontour.io", "v1", "HTTPProxy");
        Api::namespaced_with(client, "team", &ApiResource::from_gvk_with_plural(&gvk, "httpproxies"))
    }

    /// One HTTP/1.1 request written by hand, with the token; returns the status code, the headers and the body.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Vec<(String, String)>, Value) {
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: loopback\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.credentials.token,
            body.len()
        );
        let mut stream = self.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(LIMIT, stream.read_to_string(&mut response)).await.unwrap().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let code = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers =
            lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        (code, headers, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

fn proxy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy", "metadata": {"name": name}, "spec": spec})
}

fn api_status(error: kube::Error) -> Box<kube::core::Status> {
    match error {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

const RULES_SKIPPED: &str = r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_validation_errors_reach_kube_rs_as_422_invalid() {
    let server = Server::start(&["default", "team"]).await;
    let proxies = server.proxies().await;
    let nine: Vec<String> = (0..9).map(|i| format!("n{i}.example")).collect();
    let spec = json!({
        "virtualhost": {"fqdn": "web.example.com"},
        "routes": [{"services": [{"name": "backend", "port": 443, "protocol": "tls",
            "validation": {"caSecret": "ca", "subjectName": "n0.example", "subjectNames": nine}}]}],
    });
    let object: DynamicObject = serde_json::from_value(proxy("web", spec)).unwrap();
    let refused = proxies.patch("web", &PatchParams::apply("test"), &Patch::Apply(&object)).await.unwrap_err();
    let status = api_status(refused);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        format!(
            r#"HTTPProxy.projectcontour.io "web" is invalid: [spec.routes[0].services[0].validation.subjectNames: Too many: 9: must have at most 8 items, {RULES_SKIPPED}]"#
        )
    );
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.group.as_str(), details.kind.as_str()),
        ("web", "projectcontour.io", "HTTPProxy")
    );
    assert_eq!(details.causes[0].field, "spec.routes[0].services[0].validation.subjectNames");
    assert_eq!(details.causes[0].reason, "FieldValueTooMany");
    assert_eq!(details.causes[0].message, "Too many: 9: must have at most 8 items");
    assert!(server.store.get(&kinds::HTTP_PROXY, "team", "web").is_none(), "nothing was stored");

    // A create, and a merge patch that would break a stored proxy, are refused alike.
    let mismatch = json!({"virtualhost": {"fqdn": "web.example.com"}, "routes": [{"services": [{"name": "b", "port": 443,
        "validation": {"caSecret": "ca", "subjectName": "a", "subjectNames": ["b"]}}]}]});
    let object: DynamicObject = serde_json::from_value(proxy("web", mismatch)).unwrap();
    let status = api_status(proxies.create(&PostParams::default(), &object).await.unwrap_err());
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        r#"HTTPProxy.projectcontour.io "web" is invalid: spec.routes[0].services[0].validation: Invalid value: "object": subjectNames[0] must equal subjectName if set"#
    );
    let good: DynamicObject =
        serde_json::from_value(proxy("web", json!({"virtualhost": {"fqdn": "web.example.com"}}))).unwrap();
    let made = proxies.create(&PostParams::default(), &good).await.unwrap();
    assert_eq!(made.data["status"]["currentStatus"], "NotReconciled", "the CRD's status default shows");
    let breaking = json!({"spec": {"virtualhost": {"fqdn": null, "tls": {"secretName": "s"}}}});
    let status = api_status(proxies.patch("web", &PatchParams::default(), &Patch::Merge(&breaking)).await.unwrap_err());
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        format!(
            r#"HTTPProxy.projectcontour.io "web" is invalid: [spec.virtualhost.fqdn: Required value, {RULES_SKIPPED}]"#
        )
    );
    let stored = server.store.get(&kinds::HTTP_PROXY, "team", "web").unwrap();
    assert_eq!(stored["spec"]["virtualhost"], json!({"fqdn": "web.example.com"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_warned_about_or_dropped_as_field_validation_says() {
    let server = Server::start(&["default", "team"]).await;
    let collection = "/apis/projectcontour.io/v1/namespaces/team/httpproxies";
    let misspelt = |name: &str| proxy(name, json!({"virtualhosts": {"fqdn": "a.example.com"}}));

    let (code, _, status) =
        server.raw("POST", &format!("{collection}?fieldValidation=Strict"), "application/json", &misspelt("a")).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(
        status["message"],
        r#"HTTPProxy in version "v1" cannot be handled as a HTTPProxy: strict decoding error: unknown field "spec.virtualhosts""#
    );

    let (code, headers, made) = server.raw("POST", collection, "application/json", &misspelt("b")).await;
    assert_eq!(code, 201, "Warn is the default: {made}");
    let warnings: Vec<&str> = headers.iter().filter(|(k, _)| k == "warning").map(|(_, v)| v.as_str()).collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.virtualhosts\"""#]);
    assert_eq!(made["spec"], json!({}), "the unknown field is dropped");

    let (code, headers, _) =
        server.raw("POST", &format!("{collection}?fieldValidation=Ignore"), "application/json", &misspelt("c")).await;
    assert_eq!(code, 201);
    assert!(headers.iter().all(|(k, _)| k != "warning"));

    let (code, _, status) =
        server.raw("POST", &format!("{collection}?fieldValidation=strict"), "application/json", &misspelt("d")).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn""#
    );

    let patch = json!({"spec": {"virtualhost": {"fqdn": "b.example.com", "fdqn": "x"}}});
    let (code, _, status) = server
        .raw("PATCH", &format!("{collection}/b?fieldValidation=Strict"), "application/merge-patch+json", &patch)
        .await;
    assert_eq!(code, 422);
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with(r#" "" is invalid: patch: Invalid value: "{"#), "{message}");
    assert!(message.ends_with(r#"strict decoding error: unknown field "spec.virtualhost.fdqn""#), "{message}");

    // Server-side apply refuses unknown fields whatever fieldValidation says.
    let apply = format!("{collection}/e?fieldManager=test&fieldValidation=Ignore");
    let (code, _, status) = server.raw("PATCH", &apply, "application/apply-patch+yaml", &misspelt("e")).await;
    assert_eq!(code, 500);
    assert!(status.get("reason").is_none(), "{status}");
    assert_eq!(
        status["message"],
        "failed to create typed patch object (team/e; projectcontour.io/v1, Kind=HTTPProxy): .spec.virtualhosts: field not declared in schema"
    );
    assert!(server.store.get(&kinds::HTTP_PROXY, "team", "e").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v3_documents_describe_every_kind() {
    let server = Server::start(&["default", "team"]).await;
    let (code, _, index) = server.raw("GET", "/openapi/v3", "application/json", &json!(null)).await;
    assert_eq!(code, 200);
    let paths = index["paths"].as_object().unwrap();
    for key in ["api/v1", "apis/apps/v1", "apis/networking.k8s.io/v1", "apis/projectcontour.io/v1"] {
        let url = paths[key]["serverRelativeURL"].as_str().unwrap();
        let (code, _, document) = server.raw("GET", url, "application/json", &json!(null)).await;
        assert_eq!((code, document["openapi"].as_str()), (200, Some("3.0.0")), "{key}");
    }
    let (_, _, contour) =
        server.raw("GET", "/openapi/v3/apis/projectcontour.io/v1", "application/json", &json!(null)).await;
    let proxy = &contour["components"]["schemas"]["io.projectcontour.v1.HTTPProxy"];
    assert_eq!(
        proxy["x-kubernetes-group-version-kind"],
        json!([{"group": "projectcontour.io", "version": "v1", "kind": "HTTPProxy"}])
    );
    let service = &proxy["properties"]["spec"]["properties"]["routes"]["items"]["properties"]["services"]["items"];
    assert_eq!(service["properties"]["protocol"]["enum"], json!(["h2", "h2c", "tls"]));
    let (code, _, _) = server.raw("GET", "/openapi/v2", "application/json", &json!(null)).await;
    assert_eq!(code, 404, "kubectl 1.32 only needs v3");
}

/// Runs kubectl against `server`; returns (success, stdout, stderr).
async fn kubectl(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(KUBECTL);
    command.arg("--kubeconfig").arg(server.dir.join("kubeconfig")).args(args);
    command.env("KUBECACHEDIR", server.dir.join("cache")).kill_on_drop(true);
    let output = tokio::time::timeout(LIMIT, command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_validates_with_the_served_schemas() {
    if !Path::new(KUBECTL).exists() {
        println!("note: /usr/bin/kubectl is not installed; skipping the kubectl validation test");
        return;
    }
    let server = Server::start(&["default", "team"]).await;
    let file = |name: &str, text: &str| {
        let path = server.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let objects = file(
        "objects.yaml",
        "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Secret
metadata:
  name: ca
  namespace: shop
stringData:
  ca.crt: not really
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: shop
spec:
  selector:
    app: backend
  ports:
  - port: 443
    targetPort: 8443
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels:
      app: backend
  template:
    metadata:
      labels:
        app: backend
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata:
  name: web
  namespace: shop
spec:
  virtualhost:
    fqdn: web.example.com
  routes:
  - services:
    - name: backend
      port: 443
      protocol: tls
      validation:
        caSecret: ca
        subjectName: backend.shop
",
    );
    let (ok, stdout, stderr) = kubectl(&server, &["apply", "--server-side", "-f", &objects]).await;
    assert!(ok, "default validation passes with the served schemas\nstdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.matches("serverside-applied").count(), 5, "{stdout}");
    let (_, status, _) =
        kubectl(&server, &["get", "httpproxy", "web", "-n", "shop", "-o", "jsonpath={.status.currentStatus}"]).await;
    assert_eq!(status, "NotReconciled");

    let misspelt = file(
        "misspelt.yaml",
        "apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata:
  name: typo
  namespace: shop
spec:
  virtualhosts:
    fqdn: typo.example.com
",
    );
    let (ok, _, stderr) = kubectl(&server, &["apply", "--server-side", "-f", &misspelt]).await;
    assert!(!ok);
    assert!(
        stderr.contains("Error from server: failed to create typed patch object (shop/typo; projectcontour.io/v1, Kind=HTTPProxy): .spec.virtualhosts: field not declared in schema"),
        "{stderr}"
    );
    let (ok, _, stderr) = kubectl(&server, &["create", "-f", &misspelt]).await;
    assert!(!ok);
    assert!(stderr.contains(r#"strict decoding error: unknown field "spec.virtualhosts""#), "{stderr}");
    let (ok, _, stderr) = kubectl(&server, &["create", "--validate=warn", "-f", &misspelt]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains(r#"Warning: unknown field "spec.virtualhosts""#), "{stderr}");
    assert_eq!(server.store.get(&kinds::HTTP_PROXY, "shop", "typo").unwrap()["spec"], json!({}));

    let unsupported = file(
        "unsupported.yaml",
        "apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata:
  name: h3
  namespace: shop
spec:
  virtualhost:
    fqdn: h3.example.com
  routes:
  - services:
    - name: backend
      port: 443
      protocol: h3
",
    );
    let (ok, _, stderr) = kubectl(&server, &["apply", "--server-side", "-f", &unsupported]).await;
    assert!(!ok);
    assert!(stderr.contains(r#"The HTTPProxy "h3" is invalid"#), "{stderr}");
    assert!(
        stderr.contains(
            r#"spec.routes[0].services[0].protocol: Unsupported value: "h3": supported values: "h2", "h2c", "tls""#
        ),
        "{stderr}"
    );

    let (ok, explained, stderr) = kubectl(&server, &["explain", "httpproxy.spec.routes.services.validation"]).await;
    assert!(ok, "{stderr}");
    assert!(explained.contains("subjectNames") && explained.contains("caSecret"), "{explained}");
}
