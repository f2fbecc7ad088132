//! The names the data plane can resolve: [`ClusterDns`], loopback's stand-in for a cluster's
//! DNS, and [`serve`], the same answers over DNS on 127.0.0.1 for a real Envoy.
//!
//! Envoy resolves the DNS name of an ExternalName Service's cluster (`STRICT_DNS`) through the
//! pod's resolver, which on a cluster is CoreDNS. Loopback has no Service addresses, so it
//! resolves the one kind of name a scenario can rely on everywhere: a Service's fully
//! qualified cluster name, `<service>.<namespace>.svc.cluster.local`, to the addresses of the
//! Service's ready pods, read from its EndpointSlices, as CoreDNS answers for a headless
//! Service. Every other name resolves to nothing, so its cluster has no endpoint (Envoy's 503
//! `no healthy upstream`). docs/contract.md, "Where loopback differs". Loopback's proxy asks
//! [`ClusterDns`] directly; Envoy asks [`serve`], which its bootstrap names as its only
//! resolver, so that no query leaves 127.0.0.0/8.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::api::kinds::ENDPOINT_SLICE;
use crate::api::store::Store;
use crate::kubelet::endpoint_slices::SERVICE_NAME_LABEL;

/// The cluster domain of every name [`ClusterDns`] resolves.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Resolves Services' cluster names against the API's EndpointSlices; with no store (tests of
/// the proxy alone) nothing resolves.
#[derive(Clone, Default)]
pub struct ClusterDns {
    store: Option<Store>,
}

impl ClusterDns {
    pub fn new(store: Store) -> Self {
        ClusterDns { store: Some(store) }
    }

    /// The addresses `name` stands for now: the ready pods of the Service it names, in a
    /// stable order; none for a name outside the cluster domain or a Service with no ready pod.
    pub fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let Some(store) = &self.store else { return Vec::new() };
        let Some((service, namespace)) = service_of(name) else { return Vec::new() };
        let (slices, _) = store.list(&ENDPOINT_SLICE, Some(&namespace));
        let mut addresses: Vec<IpAddr> = slices
            .iter()
            .filter(|slice| slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() == Some(service.as_str()))
            .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|endpoint| endpoint["conditions"]["ready"].as_bool() != Some(false))
            .flat_map(|endpoint| endpoint["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|address| address.as_str().and_then(|a| a.parse().ok()))
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }
}

/// `(service, namespace)` of `<service>.<namespace>.svc.cluster.local` (any case, an optional
/// final dot).
fn service_of(name: &str) -> Option<(String, String)> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let rest = name.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix('.')?;
    let (service, namespace) = rest.split_once('.')?;
    let label = |s: &str| !s.is_empty() && !s.contains('.');
    (label(service) && label(namespace)).then(|| (service.to_string(), namespace.to_string()))
}

/// How long a resolver may keep an answer, in seconds: short, since pods come and go; Envoy
/// resolves a `STRICT_DNS` cluster again every few seconds whatever the TTL says.
const ANSWER_TTL: u32 = 5;

/// Answers DNS queries that arrive on `socket` from `dns` until `shutdown` turns true.
pub async fn serve(socket: UdpSocket, dns: ClusterDns, mut shutdown: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    let mut query = [0u8; 512];
    loop {
        let (length, from) = tokio::select! {
            received = socket.recv_from(&mut query) => match received {
                Ok(received) => received,
                Err(err) => {
                    tracing::debug!("cluster DNS receive failed: {err}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if let Some(reply) = answer(&query[..length], |name| dns.resolve(name)) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

/// DNS record types and response codes used here (RFC 1035, RFC 3596).
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_FORMAT_ERROR: u16 = 1;
const RCODE_NAME_ERROR: u16 = 3;
const RCODE_NOT_IMPLEMENTED: u16 = 4;

/// The reply to one DNS `query`, resolving its name with `resolve`; `None` for what is not a
/// query at all (too short, or a response). A cluster name resolves to its addresses of the
/// asked family (an empty answer when it has only the other); a name outside the cluster
/// domain, or of a Service with no ready pod, to NXDOMAIN.
pub fn answer(query: &[u8], resolve: impl Fn(&str) -> Vec<IpAddr>) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags & 0x8000 != 0 {
        return None;
    }
    let opcode = (flags >> 11) & 0xf;
    // Answer flags: a response (QR), authoritative (AA), recursion as asked (RD) and available (RA).
    let reply_flags = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100) | 0x0080;
    let error = |rcode: u16| {
        let mut reply = header.to_vec();
        reply[2..4].copy_from_slice(&(reply_flags | rcode).to_be_bytes());
        reply[4..12].fill(0);
        Some(reply)
    };
    let questions = u16::from_be_bytes([header[4], header[5]]);
    if opcode != 0 {
        return error(RCODE_NOT_IMPLEMENTED);
    }
    if questions != 1 {
        return error(RCODE_FORMAT_ERROR);
    }
    let Some((name, end)) = read_name(query, 12) else { return error(RCODE_FORMAT_ERROR) };
    let Some(fixed) = query.get(end..end + 4) else { return error(RCODE_FORMAT_ERROR) };
    let (qtype, qclass) = (u16::from_be_bytes([fixed[0], fixed[1]]), u16::from_be_bytes([fixed[2], fixed[3]]));
    let question = &query[12..end + 4];
    let in_cluster = qclass == CLASS_IN && service_of(&name).is_some();
    let addresses: Vec<IpAddr> = if in_cluster { resolve(&name) } else { Vec::new() };
    let records: Vec<Vec<u8>> = addresses
        .iter()
        .filter_map(|address| match (qtype, address) {
            (TYPE_A, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
            (TYPE_AAAA, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    // Loopback's Services have no address of their own: a name is known while its Service has
    // a ready pod, of either family (an empty answer for the other, which makes Envoy ask for
    // the family it has). Envoy treats NXDOMAIN and an empty answer alike: no hosts.
    let rcode = if addresses.is_empty() { RCODE_NAME_ERROR } else { 0 };
    let mut reply = Vec::with_capacity(12 + question.len() + records.len() * 28);
    reply.extend_from_slice(&header[..2]);
    reply.extend_from_slice(&(reply_flags | rcode).to_be_bytes());
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for data in &records {
        // The name is the question's, by a pointer to offset 12.
        reply.extend_from_slice(&[0xc0, 0x0c]);
        reply.extend_from_slice(&qtype.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
        reply.extend_from_slice(data);
    }
    Some(reply)
}

/// The dotted name that starts at `offset` of `message`, and where it ends; compression
/// pointers are refused (a question's name never needs one).
fn read_name(message: &[u8], mut offset: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    loop {
        let length = usize::from(*message.get(offset)?);
        offset += 1;
        if length == 0 {
            return Some((labels.join("."), offset));
        }
        if length > 63 {
            return None;
        }
        let label = message.get(offset..offset + length)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        offset += length;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_fully_qualified_service_names_are_cluster_names() {
        let pair = |s: &str, n: &str| Some((s.to_string(), n.to_string()));
        assert_eq!(service_of("echo.ns.svc.cluster.local"), pair("echo", "ns"));
        assert_eq!(service_of("Echo.NS.svc.cluster.local."), pair("echo", "ns"));
        assert_eq!(service_of("echo.ns.svc"), None);
        assert_eq!(service_of("a.echo.ns.svc.cluster.local"), None);
        assert_eq!(service_of("ns.svc.cluster.local"), None);
        assert_eq!(service_of("echo.backend.test"), None);
        assert_eq!(service_of("localhost"), None);
    }

    #[test]
    fn a_service_name_resolves_to_its_ready_pods() {
        let store = Store::new();
        let slice = |name: &str, service: &str, addresses: &[(&str, bool)]| {
            let endpoints: Vec<_> = addresses
                .iter()
                .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
                .collect();
            json!({
                "metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            })
        };
        store.create(&crate::api::kinds::NAMESPACE, "", json!({"metadata": {"name": "ns"}})).unwrap();
        store
            .create(&ENDPOINT_SLICE, "ns", slice("echo-a", "echo", &[("127.0.3.2", true), ("127.0.3.9", false)]))
            .unwrap();
        store.create(&ENDPOINT_SLICE, "ns", slice("echo-b", "echo", &[("127.0.3.1", true)])).unwrap();
        store.create(&ENDPOINT_SLICE, "ns", slice("other", "other", &[("127.0.4.1", true)])).unwrap();
        let dns = ClusterDns::new(store);
        let ips = |list: &[&str]| list.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
        assert_eq!(dns.resolve("echo.ns.svc.cluster.local"), ips(&["127.0.3.1", "127.0.3.2"]));
        assert_eq!(dns.resolve("missing.ns.svc.cluster.local"), ips(&[]));
        assert_eq!(dns.resolve("echo.elsewhere.svc.cluster.local"), ips(&[]));
        assert_eq!(ClusterDns::default().resolve("echo.ns.svc.cluster.local"), ips(&[]));
    }

    /// A query as a stub resolver sends it: id 0x1234, recursion desired, one question.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(&qtype.to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        message
    }

    fn rcode(reply: &[u8]) -> u16 {
        u16::from_be_bytes([reply[2], reply[3]]) & 0xf
    }

    fn answers(reply: &[u8]) -> u16 {
        u16::from_be_bytes([reply[6], reply[7]])
    }

    #[test]
    fn cluster_names_get_their_addresses_of_the_asked_family() {
        let resolve = |name: &str| -> Vec<IpAddr> {
            if name == "echo.ns.svc.cluster.local" {
                vec!["127.0.3.1".parse().unwrap(), "127.0.3.2".parse().unwrap()]
            } else {
                Vec::new()
            }
        };
        let asked = query("echo.ns.svc.cluster.local", TYPE_A);
        let reply = answer(&asked, resolve).unwrap();
        assert_eq!(&reply[..2], &[0x12, 0x34], "the query's id");
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]) & 0x8000, 0x8000, "a response");
        assert_eq!((rcode(&reply), answers(&reply)), (0, 2));
        assert_eq!(&reply[12..asked.len()], &asked[12..], "the question, repeated");
        let first = &reply[asked.len()..];
        assert_eq!(&first[..4], &[0xc0, 0x0c, 0, 1], "the question's name, type A");
        assert_eq!(&first[10..16], &[0, 4, 127, 0, 3, 1], "four bytes: the first address");

        let reply = answer(&query("echo.ns.svc.cluster.local", TYPE_AAAA), resolve).unwrap();
        assert_eq!((rcode(&reply), answers(&reply)), (0, 0), "no IPv6 address, but the name exists");
        for missing in ["other.ns.svc.cluster.local", "echo.backend.test", "localhost"] {
            let reply = answer(&query(missing, TYPE_A), resolve).unwrap();
            assert_eq!((rcode(&reply), answers(&reply)), (RCODE_NAME_ERROR, 0), "{missing}");
        }
    }

    #[test]
    fn what_is_no_single_question_gets_an_error_or_nothing() {
        let resolve = |_: &str| Vec::new();
        assert_eq!(answer(&[0; 5], resolve), None, "too short");
        let mut response = query("a.b.svc.cluster.local", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(answer(&response, resolve), None, "a response is not answered");
        let mut two = query("a.b.svc.cluster.local", TYPE_A);
        two[5] = 2;
        assert_eq!(rcode(&answer(&two, resolve).unwrap()), RCODE_FORMAT_ERROR);
        let mut notify = query("a.b.svc.cluster.local", TYPE_A);
        notify[2] |= 4 << 3;
        assert_eq!(rcode(&answer(&notify, resolve).unwrap()), RCODE_NOT_IMPLEMENTED);
        let cut = query("a.b.svc.cluster.local", TYPE_A);
        assert_eq!(rcode(&answer(&cut[..cut.len() - 3], resolve).unwrap()), RCODE_FORMAT_ERROR);
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_on_127_0_0_1() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(socket, ClusterDns::default(), shutdown));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&query("echo.ns.svc.cluster.local", TYPE_A), address).await.unwrap();
        let mut reply = [0u8; 512];
        let (length, _) = client.recv_from(&mut reply).await.unwrap();
        assert_eq!(rcode(&reply[..length]), RCODE_NAME_ERROR, "nothing resolves without a store");
        stop.send_replace(true);
        server.await.unwrap();
    }
}
