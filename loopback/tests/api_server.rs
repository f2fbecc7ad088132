//! The loopback API server against real clients: kube-rs through a kubeconfig, and the
//! machine's `kubectl` when it is installed.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use loopback::api::Subresource;
use loopback::api::kinds;
use serde_json::{Value, json};

mod support;

use support::{LIMIT, Server};

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn proxy(name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

async fn apply(api: &Api<DynamicObject>, name: &str, object: Value) -> DynamicObject {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.patch(name, &PatchParams::apply("x").force(), &Patch::Apply(&object)).await.unwrap()
}

fn api_status(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_works_against_the_loopback_api_server() {
    let server = Server::start(&[]).await;
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let made = namespaces.create(&PostParams::default(), &namespace("team")).await.unwrap();
    let namespace_uid = made.metadata.uid.clone().unwrap();

    // Discovery.
    let secret_gvk = GroupVersionKind::gvk("", "v1", "Secret");
    let (secret_resource, secret_caps) = pinned_kind(&client, &secret_gvk).await.unwrap();
    assert_eq!(secret_resource.plural, "secrets");
    assert_eq!(secret_caps.scope, Scope::Namespaced);
    let proxy_gvk = GroupVersionKind::gvk("projectcontour.io", "v1", "HTTPProxy");
    let (proxy_resource, proxy_caps) = pinned_kind(&client, &proxy_gvk).await.unwrap();
    assert_eq!(proxy_resource.plural, "httpproxies");
    assert!(proxy_caps.subresources.iter().any(|(r, _)| r.plural == "status"));

    // Server-side apply: create, then re-apply without a label and a spec field.
    let proxies: Api<DynamicObject> = Api::namespaced_with(client.clone(), "team", &proxy_resource);
    let spec =
        json!({"virtualhost": {"fqdn": "a.example.com"}, "routes": [{"services": [{"name": "s", "port": 443}]}]});
    let first = apply(&proxies, "web", proxy("web", json!({"app": "web", "extra": "x"}), spec.clone())).await;
    assert_eq!(first.metadata.generation, Some(1));
    let mut smaller_spec = spec.clone();
    smaller_spec["virtualhost"] = json!({"fqdn": "b.example.com"});
    smaller_spec.as_object_mut().unwrap().remove("routes");
    let second = apply(&proxies, "web", proxy("web", json!({"app": "web"}), smaller_spec)).await;
    assert_eq!(second.metadata.generation, Some(2));
    let labels = second.metadata.labels.clone().unwrap();
    assert!(!labels.contains_key("extra"), "the dropped label is gone: {labels:?}");
    assert!(second.data["spec"].get("routes").is_none(), "the dropped field is gone");

    // Get and list with label selectors.
    let got = proxies.get("web").await.unwrap();
    assert_eq!(got.data["spec"]["virtualhost"]["fqdn"], "b.example.com");
    let other = proxy("other", json!({"app": "db"}), json!({}));
    apply(&proxies, "other", other).await;
    let web = proxies.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(web.items.len(), 1);
    let both = proxies.list(&ListParams::default().labels("app in (web,db),!extra")).await.unwrap();
    assert_eq!(both.items.len(), 2);
    let missing = proxies.get("nope").await.unwrap_err();
    assert_eq!(api_status(missing).0, 404);

    // A raw watch: the server answers once it is subscribed, so a later write is seen.
    let from = got.metadata.resource_version.clone().unwrap();
    let latest = server.store.resource_version().to_string();
    let stream =
        tokio::time::timeout(LIMIT, proxies.watch(&WatchParams::default().fields("metadata.name=web"), &latest))
            .await
            .expect("watch response headers arrive before any event")
            .unwrap();
    let mut stream = Box::pin(stream);
    let watched = proxies.clone();
    let condition = tokio::spawn(async move {
        support::until(&watched, "web", |o: Option<&DynamicObject>| {
            o.is_some_and(|o| o.data["status"]["currentStatus"] == "valid")
        })
        .await
    });
    server
        .store
        .modify(&kinds::HTTP_PROXY, "team", "web", Subresource::Status, |o| {
            o["status"] = json!({"currentStatus": "valid", "description": "Valid HTTPProxy"});
        })
        .unwrap();
    let event = tokio::time::timeout(LIMIT, stream.try_next()).await.unwrap().unwrap().unwrap();
    let WatchEvent::Modified(modified) = event else { panic!("expected MODIFIED, got {event:?}") };
    assert_eq!(modified.data["status"]["currentStatus"], "valid");
    assert_ne!(modified.metadata.resource_version.unwrap(), from);
    let valid = tokio::time::timeout(LIMIT, condition).await.unwrap().unwrap().unwrap();
    assert_eq!(valid.data["status"]["description"], "Valid HTTPProxy");

    // Status patches touch only status; the main resource keeps it.
    let patched = proxies
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"currentStatus": "invalid"}, "spec": {"x": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["currentStatus"], "invalid");
    assert!(patched.data["spec"].get("x").is_none());
    let merged = proxies
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})))
        .await
        .unwrap();
    assert_eq!(merged.metadata.labels.unwrap()["m"], "1");
    assert_eq!(merged.data["status"]["currentStatus"], "invalid");

    // Requests Kubernetes would refuse.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    let wrong_ns: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "elsewhere"}})).unwrap();
    let (code, message) = api_status(secrets.create(&PostParams::default(), &wrong_ns).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(message.contains("does not match the namespace sent on the request"), "{message}");
    let no_manager = proxies.patch("web", &PatchParams::default(), &Patch::Apply(json!({}))).await.unwrap_err();
    assert_eq!(api_status(no_manager).0, 400);
    let wrong_kind = ApiResource::from_gvk_with_plural(&proxy_gvk, "httpproxies");
    let wrong_kind = DynamicObject::new("web", &wrong_kind).data(json!({}));
    let mut wrong_kind = serde_json::to_value(wrong_kind).unwrap();
    wrong_kind["kind"] = json!("Secret");
    let wrong_kind: DynamicObject = serde_json::from_value(wrong_kind).unwrap();
    let refused = proxies.patch("web", &PatchParams::apply("x"), &Patch::Apply(&wrong_kind)).await.unwrap_err();
    assert_eq!(api_status(refused).0, 400);

    // Deleting the namespace takes everything in it; with no pods it goes at once.
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap())
        .await
        .unwrap();
    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    let deleted =
        |ns: Option<&Namespace>| ns.is_none_or(|ns| ns.metadata.uid.as_deref() != Some(namespace_uid.as_str()));
    tokio::time::timeout(LIMIT, support::until(&namespaces, "team", deleted)).await.unwrap();
    assert!(server.store.get(&kinds::SECRET, "team", "s").is_none());
    assert_eq!(api_status(namespaces.get("team").await.unwrap_err()).0, 404);

    // Shutdown ends the open watch stream and closes connections.
    server.shut_down().await;
    let rest: Vec<_> = tokio::time::timeout(LIMIT, stream.collect::<Vec<_>>()).await.unwrap();
    assert!(rest.iter().all(|e| !matches!(e, Ok(WatchEvent::Error(_)))), "{rest:?}");
}

const KUBECTL: &str = "/usr/bin/kubectl";

/// Runs kubectl against `server` and returns its standard output; panics when it fails.
async fn kubectl(server: &Server, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(KUBECTL);
    command.arg("--kubeconfig").arg(server.kubeconfig()).args(args);
    // kubectl caches discovery under $HOME; keep this test's cache to itself.
    command.env("KUBECACHEDIR", server.dir.join("cache"));
    let output = tokio::time::timeout(LIMIT, command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "kubectl {args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_the_loopback_api_server() {
    if !Path::new(KUBECTL).exists() {
        println!("note: /usr/bin/kubectl is not installed; skipping the kubectl test");
        return;
    }
    let server = Server::start(&[]).await;
    server.store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": "default"}})).unwrap();
    let names = kubectl(&server, &["get", "ns", "-o", "name"]).await;
    assert_eq!(names.trim(), "namespace/default");

    let manifest = server.dir.join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  a: \"1\"
---
apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: hello
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata:
  name: web
  labels:
    app: web
spec:
  virtualhost:
    fqdn: web.example.com
  routes:
  - services:
    - name: backend
      port: 443
",
    )
    .unwrap();
    let manifest = manifest.to_string_lossy().into_owned();
    let applied = kubectl(&server, &["apply", "--server-side", "--validate=false", "-f", &manifest]).await;
    assert!(applied.contains("serverside-applied"), "{applied}");
    let proxy = server.store.get(&kinds::HTTP_PROXY, "default", "web").unwrap();
    assert_eq!(proxy["spec"]["virtualhost"]["fqdn"], "web.example.com");
    assert_eq!(server.store.get(&kinds::CONFIG_MAP, "default", "settings").unwrap()["data"]["a"], "1");
    let secret = server.store.get(&kinds::SECRET, "default", "token").unwrap();
    assert_eq!(secret["data"], json!({"token": "aGVsbG8="}), "stringData is encoded");
    let again = kubectl(&server, &["apply", "--server-side", "--validate=false", "-f", &manifest]).await;
    assert!(again.contains("serverside-applied"), "{again}");

    let listed = kubectl(&server, &["get", "httpproxies", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(listed.trim(), "httpproxy.projectcontour.io/web");
    let table = kubectl(&server, &["get", "proxy"]).await;
    assert!(table.contains("web"), "{table}");

    let log = server.dir.join("pod.log");
    std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
    let pod = json!({
        "metadata": {"name": "p", "annotations": {"loopback.dev/log-file": log}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:stable"}]},
    });
    server.store.create(&kinds::POD, "default", pod).unwrap();
    let tail = kubectl(&server, &["logs", "p", "--tail=2"]).await;
    assert_eq!(tail, "two\nthree\n");

    kubectl(&server, &["delete", "configmap", "settings"]).await;
    assert!(server.store.get(&kinds::CONFIG_MAP, "default", "settings").is_none());
    server.shut_down().await;
}

/// Sends `request` over `stream` and returns the status line and the body.
async fn exchange(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut response)).await.expect("the server answers or closes");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_the_token_get_in_and_only_over_tls() {
    let server = Server::start(&["team"]).await;
    let get = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: loopback\r\n{auth}Connection: close\r\n\r\n")
    };
    let token = server.credentials.token.clone();

    let refused = exchange(server.connect().await, &get("/api/v1/namespaces/team/secrets", None)).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let status: Value = serde_json::from_str(refused.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!((status["reason"].as_str(), status["message"].as_str()), (Some("Unauthorized"), Some("Unauthorized")));
    let wrong = exchange(server.connect().await, &get("/api/v1/namespaces", Some("not-the-token"))).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let pods = get("/api/v1/namespaces/team/pods", None).replace("GET", "POST");
    assert!(exchange(server.connect().await, &pods).await.starts_with("HTTP/1.1 401"), "writes are refused too");

    let admitted = exchange(server.connect().await, &get("/api/v1/namespaces", Some(&token))).await;
    assert!(admitted.starts_with("HTTP/1.1 200"), "{admitted}");
    for public in ["/healthz", "/version"] {
        let answer = exchange(server.connect().await, &get(public, None)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{public} is public: {answer}");
    }

    // Plain HTTP gets no HTTP answer at all.
    let plain = tokio::net::TcpStream::connect(server.address).await.unwrap();
    let answer = exchange(plain, &get("/api/v1/namespaces", Some(&token))).await;
    assert!(!answer.contains("HTTP/1.1 200") && !answer.contains("NamespaceList"), "{answer}");
    server.shut_down().await;
}
