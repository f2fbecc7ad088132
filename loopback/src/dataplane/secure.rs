//! The proxy's HTTPS listener: [`serve_tls`] picks a [`SecureHost`] by the SNI of each
//! client's ClientHello and proxies the connection as TCP to one of the host's clusters, as
//! Envoy's `ingress_https` listener does for an HTTPProxy `tcpproxy`.
//!
//! A terminating host completes the client's handshake with its certificate and forwards the
//! plaintext; a passthrough host forwards the client's TLS bytes unread. Either way the
//! upstream connection speaks the cluster's transport, so an upstream TLS cluster wraps what
//! it forwards in TLS of its own, with the cluster's validation and client certificate and no
//! ALPN (Envoy's TCP pool offers none; docs/contract.md P5, N4). A ClientHello whose SNI names
//! no host, a host with no cluster or endpoint, and a failed upstream connection all close the
//! client's connection without a word, as Envoy does; the client's handshake completes only
//! once the upstream connection is up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Turns;
use super::dns::ClusterDns;
use super::table::{DownstreamTls, RouteTable, SecureHost};
use super::upstream;

/// How long a client gets to send its whole ClientHello.
const CLIENT_HELLO_LIMIT: Duration = Duration::from_secs(10);

/// Serves the HTTPS listener on `listener` until `shutdown` turns true.
pub async fn serve_tls(
    listener: TcpListener,
    routes: watch::Receiver<Arc<RouteTable>>,
    dns: ClusterDns,
    mut shutdown: watch::Receiver<bool>,
) {
    let turns = Arc::new(Turns { endpoint: Default::default(), dns });
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("HTTPS listener accept failed: {err}");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => return,
        };
        let table = routes.borrow().clone();
        let turns = turns.clone();
        connections.spawn(async move {
            if let Err(why) = relay(stream, &table, &turns).await {
                tracing::debug!("TLS connection closed: {why}");
            }
        });
    }
}

/// Proxies one client connection, or says why it was closed.
async fn relay(stream: TcpStream, table: &RouteTable, turns: &Turns) -> Result<(), String> {
    let server_name = tokio::time::timeout(CLIENT_HELLO_LIMIT, client_hello_server_name(&stream))
        .await
        .map_err(|_| "no complete ClientHello in time".to_string())??;
    let Some(name) = server_name else { return Err("a ClientHello without SNI".into()) };
    let host = table.secure_hosts.get(&name.to_ascii_lowercase()).ok_or(format!("no TLS virtual host {name}"))?;
    let cluster = next_cluster(host).ok_or(format!("{name}: no cluster"))?;
    let endpoint = turns.endpoint_of(&cluster).ok_or(format!("{name}: no healthy upstream in {}", cluster.name))?;
    match &host.tls {
        DownstreamTls::Passthrough => {
            let mut upstream = upstream::connect(endpoint, &cluster.transport)
                .await
                .map_err(|e| format!("{name}: upstream {endpoint}: {e}"))?;
            let mut client = stream;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        DownstreamTls::Terminate(serving) => {
            let config = serving.server_config()?;
            // Envoy's TCP proxy reads nothing from the client until its upstream connection is
            // up, so the client's handshake completes only after the upstream one: a failed
            // upstream closes the connection mid-handshake.
            let mut upstream = upstream::connect(endpoint, &cluster.transport)
                .await
                .map_err(|e| format!("{name}: upstream {endpoint}: {e}"))?;
            let mut client =
                TlsAcceptor::from(config).accept(stream).await.map_err(|e| format!("{name}: client handshake: {e}"))?;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
    Ok(())
}

/// The host's next cluster in its rotation.
fn next_cluster(host: &SecureHost) -> Option<Arc<super::table::Cluster>> {
    let turn = host.turn.fetch_add(1, Ordering::Relaxed);
    host.tcp_proxy.get(turn % host.tcp_proxy.len().max(1)).cloned()
}

/// The SNI of the ClientHello waiting on `stream`, read without consuming it (`None` when the
/// client sent none).
///
/// # Errors
/// The client closed the connection, or sent something other than a TLS ClientHello.
async fn client_hello_server_name(stream: &TcpStream) -> Result<Option<String>, String> {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut seen = 0;
    loop {
        let read = stream.peek(&mut buffer).await.map_err(|e| format!("reading the ClientHello: {e}"))?;
        if read == 0 {
            return Err("closed before a ClientHello".into());
        }
        if read > seen {
            seen = read;
            let mut acceptor = rustls::server::Acceptor::default();
            let mut bytes = &buffer[..read];
            while !bytes.is_empty() {
                match acceptor.read_tls(&mut bytes) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading the ClientHello: {e}")),
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => return Ok(accepted.client_hello().server_name().map(str::to_string)),
                Ok(None) if read == buffer.len() => return Err("a ClientHello larger than 16 KiB".into()),
                Ok(None) => {}
                Err((e, _)) => return Err(format!("not a TLS ClientHello: {e}")),
            }
        }
        // The rest of the ClientHello is on its way: peeking again at once would find the
        // same bytes.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The bytes of a ClientHello for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut connection = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut bytes = Vec::new();
        connection.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[tokio::test]
    async fn the_server_name_is_read_from_a_client_hello_that_arrives_in_pieces_and_left_in_place() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let hello = client_hello("Tls.Example.Test");
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(&sent[..7]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream.write_all(&sent[7..]).await.unwrap();
            stream
        });
        let (server, _) = listener.accept().await.unwrap();
        let name = client_hello_server_name(&server).await.unwrap();
        assert_eq!(name.as_deref(), Some("tls.example.test"));
        // Nothing was consumed: a passthrough backend gets every byte.
        let mut buffer = vec![0u8; hello.len()];
        let _client = client.await.unwrap();
        server.peek(&mut buffer).await.unwrap();
        assert_eq!(buffer, hello);
    }

    #[tokio::test]
    async fn what_is_not_a_client_hello_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
            stream
        });
        let (server, _) = listener.accept().await.unwrap();
        let error = client_hello_server_name(&server).await.unwrap_err();
        assert!(error.starts_with("not a TLS ClientHello"), "{error}");
        drop(client.await.unwrap());
    }
}
