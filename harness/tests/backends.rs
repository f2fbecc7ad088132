//! A backend whose pods cannot start fails the wait at once, with the container's reason,
//! instead of after the whole ready limit: checked on loopback, whose kubelet reports a pod
//! it cannot run as `CreateContainerConfigError` and an nginx that exits as `CrashLoopBackOff`.

use std::time::{Duration, Instant};

use harness::cluster::{ClusterClient, ClusterError};
use serde_json::json;

fn backend(name: &str, config: &str) -> [serde_json::Value; 2] {
    [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"nginx.conf": config}}),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx",
                            "command": ["nginx", "-c", "/etc/web/nginx.conf"],
                            "ports": [{"containerPort": 8080}],
                            "volumeMounts": [{"name": "conf", "mountPath": "/etc/web"}],
                        }],
                        "volumes": [{"name": "conf", "configMap": {"name": name}}],
                    },
                },
            },
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_cannot_start_fail_the_wait_at_once_with_their_reason() {
    harness::init_crypto();
    let loopback = loopback::Loopback::start(Default::default()).await.expect("loopback starts");
    let cluster = ClusterClient::connect(Some(loopback.kubeconfig()), None).await.unwrap();
    cluster.create_namespace("team", "run").await.unwrap();
    let limit = Duration::from_secs(120);
    let cases = [
        ("refused", "include /etc/nginx/mime.types;\nevents {}\n", "CreateContainerConfigError"),
        ("crashes", "events {}\nhttp { server { listen 8080; unknown_directive on; } }\n", "CrashLoopBackOff"),
    ];
    for (name, config, reason) in cases {
        for object in backend(name, config) {
            cluster.apply(&object, "team").await.unwrap();
        }
        let started = Instant::now();
        let error = cluster.wait_deployment_available("team", name, limit).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30), "{name}: it failed after {:?}", started.elapsed());
        assert!(matches!(error, ClusterError::CannotStart { .. }), "{name}: {error}");
        let message = error.to_string();
        assert!(message.contains(reason) && message.contains("a pod cannot start"), "{name}: {message}");
    }
    loopback.shutdown().await;
}
