//! The machine's real `kubectl` against a whole loopback cluster: reading every kind, server-side
//! apply of a TLS nginx backend (Secret, ConfigMap, Deployment) with a Service, an HTTPProxy, a
//! TLSCertificateDelegation and an Ingress, `kubectl wait`, `kubectl logs` after one request
//! to the pod, namespace deletion, and a shutdown that leaves no nginx and no files behind.
//!
//! Skipped (with a note) when /usr/bin/kubectl is not installed; needs nginx.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopback::{Loopback, LoopbackConfig};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KUBECTL: &str = "/usr/bin/kubectl";

/// Far longer than anything here takes; only there so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(90);

const NAMESPACE: &str = "kubectl-round-trip";

/// The name the backend's certificate is issued for; the test's TLS client checks it.
const BACKEND_HOST: &str = "backend.loopback.test";

/// kubectl with the cluster's kubeconfig and a discovery cache of its own.
struct Kubectl {
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    /// Runs kubectl and returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = tokio::process::Command::new(KUBECTL);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command.env("KUBECACHEDIR", self.dir.join("cache")).kill_on_drop(true);
        let output = tokio::time::timeout(LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {LIMIT:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    }

    /// Runs kubectl and returns its standard output; panics when it fails.
    async fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.run(args).await;
        assert!(success, "kubectl {args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
        stdout
    }

    /// Writes `text` to a file in the test's directory and returns its path.
    fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn nginx_conf() -> &'static str {
    r#"worker_processes 1;
pid nginx.pid;
events {
    worker_connections 64;
}
http {
    client_body_temp_path tmp-body;
    proxy_temp_path tmp-proxy;
    fastcgi_temp_path tmp-fastcgi;
    uwsgi_temp_path tmp-uwsgi;
    scgi_temp_path tmp-scgi;
    log_format line '$remote_addr "$request" $status sni=$ssl_server_name';
    access_log /dev/stdout line;
    server {
        listen 8443 ssl;
        ssl_certificate tls.crt;
        ssl_certificate_key tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            return 200 'hello from loopback\n';
        }
    }
}
"#
}

/// The backend and the objects in front of it, as one multi-document manifest.
fn manifest(cert_pem: &str, key_pem: &str) -> String {
    let indent = |text: &str| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: v1
kind: Secret
metadata:
  name: backend-tls
  namespace: {NAMESPACE}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}  tls.key: |
{key}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: backend-nginx
  namespace: {NAMESPACE}
data:
  nginx.conf: |
{conf}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
  namespace: {NAMESPACE}
  labels:
    app: backend
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
        command: ["nginx", "-p", "/var/run/fixture/", "-c", "/etc/fixture/nginx.conf", "-e", "stderr", "-g", "daemon off;"]
        ports:
        - name: https
          containerPort: 8443
        readinessProbe:
          tcpSocket:
            port: 8443
          periodSeconds: 1
        volumeMounts:
        - name: config
          mountPath: /etc/fixture
          readOnly: true
        - name: run
          mountPath: /var/run/fixture
      volumes:
      - name: config
        projected:
          sources:
          - configMap:
              name: backend-nginx
          - secret:
              name: backend-tls
      - name: run
        emptyDir: {{}}
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: {NAMESPACE}
spec:
  selector:
    app: backend
  ports:
  - name: https
    port: 443
    targetPort: 8443
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata:
  name: backend
  namespace: {NAMESPACE}
spec:
  virtualhost:
    fqdn: {BACKEND_HOST}
  routes:
  - services:
    - name: backend
      port: 443
      protocol: tls
---
apiVersion: projectcontour.io/v1
kind: TLSCertificateDelegation
metadata:
  name: delegation
  namespace: {NAMESPACE}
spec:
  delegations:
  - secretName: backend-tls
    targetNamespaces: ["*"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: backend
  namespace: {NAMESPACE}
spec:
  rules:
  - host: ingress.loopback.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: backend
            port:
              number: 443
"#,
        cert = indent(cert_pem),
        key = indent(key_pem),
        conf = indent(nginx_conf()),
    )
}

/// One HTTPS request to the pod, verifying its certificate against `cert_der`; returns the
/// response text.
async fn request_pod(address: Ipv4Addr, cert_der: &rustls::pki_types::CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect((address, 8443)).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from(BACKEND_HOST).unwrap(), tcp).await.unwrap();
    let request = format!("GET /hello HTTP/1.1\r\nHost: {BACKEND_HOST}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // nginx may close without close_notify after `Connection: close`; what arrived is enough.
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Waits until `check` (re-run each time) returns `Some`, or panics after [`LIMIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < LIMIT, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every process, as (pid, process group, command line).
fn processes() -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let (Ok(stat), Ok(cmdline)) =
            (std::fs::read_to_string(entry.path().join("stat")), std::fs::read(entry.path().join("cmdline")))
        else {
            continue; // exited meanwhile
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after the `)`.
        let Some(pgrp) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push((pid, pgrp.parse().unwrap_or(0), cmdline));
    }
    found
}

/// The process groups of nginx masters started for pods under `work_dir`.
fn nginx_groups(work_dir: &Path) -> BTreeSet<u32> {
    let dir = work_dir.to_string_lossy();
    processes()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains("nginx") && cmd.contains(dir.as_ref()))
        .map(|p| p.1)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_round_trips_against_a_loopback_cluster() {
    if !Path::new(KUBECTL).exists() {
        println!("note: /usr/bin/kubectl is not installed; skipping the kubectl round-trip test");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = Loopback::start(LoopbackConfig::default()).await.expect("loopback starts (is nginx installed?)");
    let work_dir = cluster.kubeconfig().parent().unwrap().to_path_buf();
    let dir = std::env::temp_dir().join(format!("loopback-kubectl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubectl = Kubectl { kubeconfig: cluster.kubeconfig().to_path_buf(), dir: dir.clone() };

    // Reading every kind works on an (almost) empty cluster, in tables and as YAML.
    let kinds = "ns,secrets,configmaps,services,pods,deployments,ingresses,httpproxies,tlscertificatedelegations";
    for kind in kinds.split(',') {
        kubectl.ok(&["get", kind, "-A"]).await;
        kubectl.ok(&["get", kind, "-A", "-o", "yaml"]).await;
    }
    assert!(kubectl.ok(&["get", "ns", "-o", "name"]).await.contains("namespace/default"));

    // Server-side apply of the backend and what fronts it, with kubectl's default validation.
    let certified = rcgen::generate_simple_self_signed(vec![BACKEND_HOST.to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let objects = kubectl.manifest("backend.yaml", &manifest(&cert_pem, &certified.signing_key.serialize_pem()));
    let applied = kubectl.ok(&["apply", "--server-side", "-f", &objects]).await;
    for object in [
        "namespace/kubectl-round-trip",
        "secret/backend-tls",
        "configmap/backend-nginx",
        "deployment.apps/backend",
        "service/backend",
        "httpproxy.projectcontour.io/backend",
        "tlscertificatedelegation.projectcontour.io/delegation",
        "ingress.networking.k8s.io/backend",
    ] {
        assert!(applied.contains(&format!("{object} serverside-applied")), "{object} in:\n{applied}");
    }
    let again = kubectl.ok(&["apply", "--server-side", "-f", &objects]).await;
    assert!(again.contains("deployment.apps/backend serverside-applied"), "{again}");

    kubectl.ok(&["wait", "-n", NAMESPACE, "--for=condition=Available", "deployment/backend", "--timeout=90s"]).await;
    for kind in kinds.split(',') {
        kubectl.ok(&["get", kind, "-n", NAMESPACE]).await;
        let yaml = kubectl.ok(&["get", kind, "-n", NAMESPACE, "-o", "yaml"]).await;
        assert!(yaml.contains("kind: List"), "{kind}: {yaml}");
    }
    let printed = kubectl.ok(&["get", "httpproxy", "-n", NAMESPACE]).await;
    assert!(printed.contains("FQDN") && printed.contains("STATUS DESCRIPTION"), "Contour's columns: {printed}");
    assert!(printed.contains(BACKEND_HOST), "{printed}");
    let deployments = kubectl.ok(&["get", "deployments", "-n", NAMESPACE]).await;
    assert!(deployments.lines().any(|l| l.starts_with("backend") && l.contains("1/1")), "{deployments}");
    let proxy = kubectl.ok(&["get", "httpproxy", "backend", "-n", NAMESPACE, "-o", "yaml"]).await;
    assert!(proxy.contains(&format!("fqdn: {BACKEND_HOST}")), "{proxy}");
    let secret =
        kubectl.ok(&["get", "secret", "backend-tls", "-n", NAMESPACE, "-o", "jsonpath={.data.tls\\.crt}"]).await;
    assert!(!secret.is_empty(), "stringData was stored as data");

    // One request to the pod, then its log shows it.
    let pod = kubectl
        .ok(&["get", "pods", "-n", NAMESPACE, "-l", "app=backend", "-o", "jsonpath={.items[0].metadata.name}"])
        .await;
    let pod_ip = kubectl.ok(&["get", "pod", &pod, "-n", NAMESPACE, "-o", "jsonpath={.status.podIP}"]).await;
    let pod_ip: Ipv4Addr = pod_ip.trim().parse().unwrap_or_else(|_| panic!("pod IP {pod_ip:?}"));
    let response = request_pod(pod_ip, certified.cert.der()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("hello from loopback"), "{response}");
    let log = eventually("the request in the pod's log", || async {
        let log = kubectl.ok(&["logs", &pod, "-n", NAMESPACE]).await;
        log.contains("\"GET /hello HTTP/1.1\" 200").then_some(log)
    })
    .await;
    assert!(log.contains(&format!("sni={BACKEND_HOST}")), "{log}");

    // Deleting the namespace takes everything in it, pods included.
    let groups = nginx_groups(&work_dir);
    assert!(!groups.is_empty(), "the backend runs as an nginx under {}", work_dir.display());
    kubectl.ok(&["delete", "ns", NAMESPACE, "--timeout=90s"]).await;
    let (found, _, stderr) = kubectl.run(&["get", "ns", NAMESPACE]).await;
    assert!(!found && stderr.contains("NotFound"), "{stderr}");
    eventually("the pod's nginx stopping with its namespace", || async {
        let alive = processes().into_iter().any(|(_, group, _)| groups.contains(&group));
        (!alive).then_some(())
    })
    .await;

    // Shutdown leaves no nginx from this cluster and removes the work directory.
    let second = kubectl.manifest(
        "second.yaml",
        &manifest(&cert_pem, &certified.signing_key.serialize_pem()).replace(NAMESPACE, "second"),
    );
    kubectl.ok(&["apply", "--server-side", "-f", &second]).await;
    kubectl.ok(&["wait", "-n", "second", "--for=condition=Available", "deployment/backend", "--timeout=90s"]).await;
    let groups = nginx_groups(&work_dir);
    assert!(!groups.is_empty());
    tokio::time::timeout(LIMIT, cluster.shutdown()).await.expect("shutdown finishes");
    let left: Vec<(u32, u32, String)> = processes()
        .into_iter()
        .filter(|(_, group, cmd)| groups.contains(group) || cmd.contains(work_dir.to_string_lossy().as_ref()))
        .collect();
    assert!(left.is_empty(), "processes left after shutdown: {left:?}");
    assert!(!work_dir.exists(), "{} is removed", work_dir.display());
    let _ = std::fs::remove_dir_all(&dir);
}
