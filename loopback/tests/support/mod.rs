//! Shared by the loopback integration tests: a bare API server with a kubeconfig, and a
//! client of a whole loopback cluster.

// Each test file uses part of this module; the rest would warn in that test crate.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use loopback::api::{Credentials, Store, kinds, serve, write_kubeconfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Far longer than anything here takes; only there so a bug fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A running API server with a kubeconfig pointing at it, stopped on drop.
pub struct Server {
    pub store: Store,
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    pub dir: PathBuf,
    pub credentials: std::sync::Arc<Credentials>,
}

impl Server {
    /// Starts a server holding the given namespaces.
    pub async fn start(namespaces: &[&str]) -> Server {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let store = Store::new();
        for ns in namespaces {
            store.create(&kinds::NAMESPACE, "", json!({"metadata": {"name": ns}})).unwrap();
        }
        let (stop, shutdown) = watch::channel(false);
        let credentials = std::sync::Arc::new(Credentials::generate().unwrap());
        let task = tokio::spawn(serve(
            listener,
            store.clone(),
            Default::default(),
            credentials.clone(),
            Default::default(),
            shutdown,
        ));
        let dir = temp_dir("api");
        write_kubeconfig(&dir.join("kubeconfig"), &format!("https://{address}"), &credentials).unwrap();
        Server { store, address, stop, task: Some(task), dir, credentials }
    }

    /// A TLS connection to the server, trusting its CA, for requests written by hand.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.credentials.ca_pem.as_bytes()).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        connector.connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }

    /// Stops the server and waits until it has closed every connection.
    pub async fn shut_down(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(LIMIT, task).await.expect("server stops").unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(purpose: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loopback-{purpose}-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client of a running loopback cluster, through the kubeconfig it wrote.
pub async fn client_of(loopback: &loopback::Loopback) -> Client {
    let kubeconfig = Kubeconfig::read_from(loopback.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// Creates `object`, of `kind` in `group`/`version` (served as `plural`), in namespace
/// `default`; a refusal fails the test.
pub async fn create(client: &Client, group: &str, version: &str, kind: &str, plural: &str, object: serde_json::Value) {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk_with_plural(&gvk, plural));
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    if let Err(e) = api.create(&PostParams::default(), &object).await {
        panic!("creating {kind}: {e}");
    }
}

/// Waits until `condition` holds for the object `name` (`None`: it does not exist) and returns
/// it, as a client of a real cluster does: a list of that one object, then a watch from the
/// list's resourceVersion. No retries: any error is the API server's, and fails the test.
pub async fn until<K>(api: &kube::Api<K>, name: &str, condition: impl Fn(Option<&K>) -> bool) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::TryStreamExt;
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let selector = format!("metadata.name={name}");
    let list = api.list(&ListParams::default().fields(&selector)).await.expect("the API server lists");
    let object = list.items.into_iter().next();
    if condition(object.as_ref()) {
        return object;
    }
    let from = list.metadata.resource_version.expect("a list has a resourceVersion");
    let events = api.watch(&WatchParams::default().fields(&selector), &from).await.expect("the API server watches");
    let mut events = Box::pin(events);
    while let Some(event) = events.try_next().await.expect("the watch goes on") {
        let object = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => Some(o),
            WatchEvent::Deleted(_) => None,
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(status) => panic!("the watch reported {status:?}"),
        };
        if condition(object.as_ref()) {
            return object;
        }
    }
    panic!("the API server ended the watch of {name}")
}
