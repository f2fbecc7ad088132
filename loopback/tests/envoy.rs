//! Envoy in loopback, on 127.0.0.0/8 only: with the real Contour and Envoy running, every
//! socket either program holds is bound to an address in 127.0.0.0/8 (and connected to one, if
//! connected), every listener Envoy reports is there too, and Envoy resolves an ExternalName
//! Service's name, which exists only in loopback's cluster DNS, through that server on
//! 127.0.0.1: the only resolver its bootstrap names.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use loopback::config::{ControllerKind, DataPlaneKind};
use loopback::{Loopback, LoopbackConfig};
use serde_json::{Value, json};

mod support;

use support::{client_of, create};

/// Where the hand-made EndpointSlice says the Service's pod is: nothing needs to listen there,
/// Envoy only has to resolve the name to it.
const POD: &str = "127.0.93.7";
/// Contour may take a while to build its first DAG after objects appear.
const LIMIT: Duration = Duration::from_secs(60);

/// A socket of a process: its protocol, local and remote address, and whether it listens.
#[derive(Debug)]
struct Socket {
    protocol: &'static str,
    local: IpAddr,
    remote: IpAddr,
    listening: bool,
}

/// The sockets process `pid` holds, from /proc: the inodes of its descriptors matched
/// against the kernel's socket tables.
fn sockets_of(pid: i32) -> Vec<Socket> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let mut sockets = Vec::new();
    for protocol in ["tcp", "tcp6", "udp", "udp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || !inodes.contains(fields[9]) {
                continue;
            }
            let address = |field: &str| parse_address(field.split(':').next().unwrap());
            // TCP state 0A is LISTEN; an unconnected UDP socket is, for this test, one too.
            let listening = if protocol.starts_with("tcp") {
                fields[3] == "0A"
            } else {
                fields[2].starts_with("00000000") || fields[2].starts_with("0000000000000000")
            };
            sockets.push(Socket { protocol, local: address(fields[1]), remote: address(fields[2]), listening });
        }
    }
    sockets
}

/// An address as /proc/net writes it: hex, 32-bit words in host (little-endian) order.
fn parse_address(hex: &str) -> IpAddr {
    let words: Vec<u32> =
        (0..hex.len() / 8).map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).unwrap().swap_bytes()).collect();
    match words.as_slice() {
        [v4] => IpAddr::V4(Ipv4Addr::from(*v4)),
        [a, b, c, d] => {
            let v6 = Ipv6Addr::from(
                (u128::from(*a) << 96) | (u128::from(*b) << 64) | (u128::from(*c) << 32) | u128::from(*d),
            );
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => panic!("unexpected address {hex}"),
    }
}

fn on_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

#[test]
fn proc_addresses_read_back() {
    assert_eq!(parse_address("0100007F"), "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(parse_address("0000000000000000FFFF00000100007F"), "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(parse_address("00000000"), "0.0.0.0".parse::<IpAddr>().unwrap());
    assert!(!on_loopback(parse_address("00000000")));
    assert!(on_loopback(parse_address("0A00507F")), "127.80.0.10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_listens_and_resolves_on_127_0_0_0_8_only() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !loopback::contour::built_for_tests() || !loopback::envoy::installed_for_tests() {
        return;
    }
    let config = LoopbackConfig {
        controller: ControllerKind::Contour,
        data_plane: DataPlaneKind::Envoy,
        enable_external_name_service: true,
        ..Default::default()
    };
    let loopback = match Loopback::start(config).await {
        Ok(loopback) => loopback,
        Err(e) => panic!("loopback with Contour and Envoy does not start: {e}"),
    };
    let envoy = loopback.envoy().expect("Envoy runs");
    assert!(on_loopback(loopback.proxy_address().ip()) && on_loopback(loopback.tls_proxy_address().ip()));

    let kube = client_of(&loopback).await;
    let service = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    let port = json!([{"name": "https", "port": 8443, "targetPort": 8443, "protocol": "TCP"}]);
    create(
        &kube,
        "",
        "v1",
        "Service",
        "services",
        service("target", json!({"selector": {"app": "target"}, "ports": port})),
    )
    .await;
    let external = json!({"type": "ExternalName", "externalName": "target.default.svc.cluster.local", "ports": port});
    create(&kube, "", "v1", "Service", "services", service("external", external)).await;
    create(
        &kube,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "target-abc12", "namespace": "default", "labels": {"kubernetes.io/service-name": "target"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [POD], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
        }),
    )
    .await;
    create(
        &kube,
        "projectcontour.io",
        "v1",
        "HTTPProxy",
        "httpproxies",
        json!({
            "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "external", "namespace": "default"},
            "spec": {
                "virtualhost": {"fqdn": "external.example.com"},
                "routes": [{"services": [{"name": "external", "port": 8443}]}],
            },
        }),
    )
    .await;

    // Envoy's cluster for the ExternalName Service resolves its name through loopback's DNS.
    let started = Instant::now();
    let resolved = format!("{POD}:8443");
    loop {
        let (_, clusters) = envoy.admin("/clusters").await.expect("Envoy's admin answers");
        if clusters.lines().any(|line| line.starts_with("default/external/8443/") && line.contains(&resolved)) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "Envoy never resolved the ExternalName Service to {resolved}:\n{clusters}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (_, listeners) = envoy.admin("/listeners?format=json").await.expect("Envoy's admin answers");
    let listeners: Value = serde_json::from_str(&listeners).unwrap();
    let addresses: Vec<&Value> = listeners["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|listener| &listener["local_address"]["socket_address"]["address"])
        .collect();
    assert!(addresses.len() >= 4, "HTTP, HTTPS, stats and admin listeners: {listeners}");
    for address in &addresses {
        let ip: IpAddr = address.as_str().unwrap().parse().unwrap();
        assert!(on_loopback(ip), "Envoy listens on {ip}: {listeners}");
    }

    for (program, pid) in loopback.programs() {
        let sockets = sockets_of(pid);
        assert!(sockets.iter().any(|s| s.listening && s.protocol == "tcp"), "{program} listens: {sockets:?}");
        for socket in &sockets {
            assert!(on_loopback(socket.local), "{program} has a socket on {}: {socket:?}", socket.local);
            assert!(
                socket.listening || on_loopback(socket.remote),
                "{program} talks to {} outside 127.0.0.0/8: {socket:?}",
                socket.remote
            );
        }
    }

    // The name resolved exists only in loopback's DNS; and the bootstrap Envoy runs names that
    // server alone, never the host's resolvers.
    let dump: Value = serde_json::from_str(&loopback::envoy::config_dump(envoy.admin_socket()).await.unwrap()).unwrap();
    let bootstrap = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|config| config["@type"].as_str().is_some_and(|t| t.ends_with("BootstrapConfigDump")))
        .expect("the dump holds the bootstrap");
    let resolver = &bootstrap["bootstrap"]["typed_dns_resolver_config"]["typed_config"];
    assert_eq!(resolver["use_resolvers_as_fallback"], Value::Null, "false, Envoy's default, is left out: {resolver}");
    let resolvers = resolver["resolvers"].as_array().expect("resolvers are named");
    assert_eq!(resolvers.len(), 1, "{resolver}");
    let ip: IpAddr = resolvers[0]["socket_address"]["address"].as_str().unwrap().parse().unwrap();
    assert!(on_loopback(ip), "Envoy resolves through {ip}");
    loopback.shutdown().await;
}
