//! Disruptions as a client of loopback meets them: a backend killed under `backend-crash` is
//! started again in place (same pod, same address, restartCount 1) and serves again; API
//! requests under `api-errors` fail now and then with the statuses kube-apiserver gives.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use loopback::{Disruption, Loopback, LoopbackConfig};
use serde_json::json;

/// Far longer than anything here takes; only there so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

async fn client(loopback: &Loopback, retry: bool) -> Client {
    let kubeconfig = Kubeconfig::read_from(loopback.kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.default_retry = retry;
    Client::try_from(config).unwrap()
}

async fn start(disruptions: &[Disruption]) -> Loopback {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = LoopbackConfig { disruptions: disruptions.to_vec(), ..Default::default() };
    Loopback::start(config).await.expect("loopback starts (is nginx installed?)")
}

/// An nginx answering `ok` on 8080, as Deployment `web` in `default`.
async fn deploy_backend(client: &Client) {
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "data": {"nginx.conf": "worker_processes 1;\nevents {}\nhttp {\n  server { listen 8080; location / { return 200 \"ok\\n\"; } }\n}\n"},
    }))
    .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "command": ["nginx", "-c", "/etc/web/nginx.conf"],
                        "ports": [{"containerPort": 8080}],
                        "volumeMounts": [{"name": "conf", "mountPath": "/etc/web"}],
                    }],
                    "volumes": [{"name": "conf", "configMap": {"name": "web"}}],
                },
            },
        },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&PostParams::default(), &config).await.unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default").create(&PostParams::default(), &deployment).await.unwrap();
}

/// The pod's address, restart count and readiness, once it has an address.
async fn pod_state(pods: &Api<Pod>) -> Option<(String, i32, bool)> {
    let listed = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
    let status = listed.items.into_iter().next()?.status?;
    let address = status.pod_ip?;
    let container = status.container_statuses.unwrap_or_default().into_iter().next();
    let restarts = container.as_ref().map_or(0, |c| c.restart_count);
    let ready = container.is_some_and(|c| c.ready);
    Some((address, restarts, ready))
}

/// The pod's address once it is ready with `restarts` restarts, or `None` after [`LIMIT`].
async fn ready_after(pods: &Api<Pod>, restarts: i32) -> Option<String> {
    let ready = async {
        loop {
            match pod_state(pods).await {
                Some((address, n, true)) if n == restarts => return address,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(LIMIT, ready).await.ok()
}

async fn answers(address: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((address, 8080)).await else { return false };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backend_is_started_again_in_place() {
    let loopback = start(&[Disruption::BackendCrash]).await;
    let client = client(&loopback, true).await;
    deploy_backend(&client).await;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");

    let first_ready = ready_after(&pods, 0).await.expect("the pod becomes ready");
    let restarted = ready_after(&pods, 1).await.expect("the killed nginx is started again and the pod is ready again");
    assert_eq!(restarted, first_ready, "a restarted container keeps its pod's address");
    assert!(answers(&restarted).await, "the restarted nginx serves");
    assert_eq!(loopback.disruption_counts(), [(Disruption::BackendCrash, 1)]);
    loopback.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_come_as_kubernetes_words_them() {
    let loopback = start(&[Disruption::ApiErrors]).await;
    let client = client(&loopback, false).await;
    let config_maps = Api::<ConfigMap>::namespaced(client, "default");
    let mut failures = Vec::new();
    for _ in 0..12 {
        if let Err(kube::Error::Api(status)) = config_maps.list(&ListParams::default()).await {
            failures.push((status.code, status.reason.clone()));
        }
    }
    assert_eq!(
        failures,
        [(429, "TooManyRequests".to_string()), (500, "InternalError".into()), (503, "ServiceUnavailable".into())]
    );
    loopback.shutdown().await;
}
