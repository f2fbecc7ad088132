//! Server-side printing for `kubectl get`: [`TableRequest`] (what an `Accept: ...;as=Table`
//! request asks for) and [`TableRequest::render`], a `meta.k8s.io/v1 Table`.
//!
//! The columns are the ones a real cluster prints: the built-in printers for core kinds and
//! Contour's `additionalPrinterColumns` for HTTPProxy (FQDN, TLS Secret, Status, Status
//! Description); a custom resource without printer columns gets Name and Age. Columns with a
//! priority above 0 show with `-o wide`. Each row carries the object as `includeObject` asks
//! (`Metadata` by default, as `PartialObjectMetadata`), which kubectl reads for `-A` and labels.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::kinds::ResourceKind;

/// What a table request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRequest {
    include: Include,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Include {
    None,
    Metadata,
    Object,
}

impl TableRequest {
    /// A table request when the `Accept` header asks for one (`as=Table` in any entry);
    /// `include_object` is the `includeObject` query parameter.
    pub fn from_accept(accept: &str, include_object: Option<&str>) -> Option<Self> {
        let wants_table = accept.split(',').any(|entry| entry.split(';').any(|p| p.trim() == "as=Table"));
        let include = match include_object {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        };
        wants_table.then_some(TableRequest { include })
    }

    /// The table of `objects` of `kind`, one row each.
    pub fn render(&self, kind: &ResourceKind, objects: &[&Value], resource_version: Option<u64>) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let columns: Vec<Value> = columns(kind)
            .iter()
            .map(|(name, priority)| {
                let format = if *name == "Name" { "name" } else { "" };
                json!({"name": name, "type": "string", "format": format, "description": "", "priority": priority})
            })
            .collect();
        let rows: Vec<Value> = objects
            .iter()
            .map(|object| {
                let mut row = json!({"cells": cells(kind, object, now)});
                match self.include {
                    Include::None => {}
                    Include::Metadata => {
                        row["object"] = json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        });
                    }
                    Include::Object => row["object"] = (*object).clone(),
                }
                row
            })
            .collect();
        let mut metadata = json!({});
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv.to_string());
        }
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "columnDefinitions": columns,
            "rows": rows,
        })
    }
}

/// Column names and priorities per kind.
fn columns(kind: &ResourceKind) -> &'static [(&'static str, u8)] {
    match kind.kind {
        "Namespace" => &[("Name", 0), ("Status", 0), ("Age", 0)],
        "Secret" => &[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
        "ConfigMap" => &[("Name", 0), ("Data", 0), ("Age", 0)],
        "Service" => &[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ],
        "Pod" => &[("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1)],
        "Deployment" => &[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
        ],
        "Ingress" => &[("Name", 0), ("Class", 0), ("Hosts", 0), ("Address", 0), ("Ports", 0), ("Age", 0)],
        "Event" => &[("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Message", 0)],
        "HTTPProxy" => &[("Name", 0), ("FQDN", 0), ("TLS Secret", 0), ("Status", 0), ("Status Description", 0)],
        _ => &[("Name", 0), ("Age", 0)],
    }
}

fn cells(kind: &ResourceKind, object: &Value, now: u64) -> Vec<Value> {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let count = |pointer: &str| object.pointer(pointer).and_then(Value::as_object).map_or(0, |m| m.len());
    let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let name = text("/metadata/name");
    let age = age(&text("/metadata/creationTimestamp"), now);
    let cells: Vec<String> = match kind.kind {
        "Namespace" => vec![name, text("/status/phase"), age],
        "Secret" => vec![name, text("/type"), count("/data").to_string(), age],
        "ConfigMap" => vec![name, (count("/data") + count("/binaryData")).to_string(), age],
        "Service" => vec![
            name,
            or(text("/spec/type"), "ClusterIP"),
            or(text("/spec/clusterIP"), "<none>"),
            "<none>".into(),
            service_ports(object),
            age,
            selector(object.pointer("/spec/selector")),
        ],
        "Pod" => {
            let containers = object.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = has_true_condition(object, "Ready");
            let status = if object.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                or(text("/status/phase"), "Pending")
            };
            let ip = or(text("/status/podIP"), "<none>");
            let node = or(text("/spec/nodeName"), "<none>");
            vec![
                name,
                format!("{}/{containers}", if ready { containers } else { 0 }),
                status,
                "0".into(),
                age,
                ip,
                node,
            ]
        }
        "Deployment" => {
            let desired = object.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
            let containers = object.pointer("/spec/template/spec/containers").and_then(Value::as_array);
            let join = |field: &str| {
                containers.into_iter().flatten().filter_map(|c| c[field].as_str()).collect::<Vec<_>>().join(",")
            };
            vec![
                name,
                format!("{}/{desired}", number("/status/readyReplicas")),
                number("/status/updatedReplicas").to_string(),
                number("/status/availableReplicas").to_string(),
                age,
                join("name"),
                join("image"),
            ]
        }
        "Ingress" => {
            let rules = object.pointer("/spec/rules").and_then(Value::as_array);
            let hosts: Vec<&str> = rules.into_iter().flatten().map(|r| r["host"].as_str().unwrap_or("*")).collect();
            let tls = object.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
            let ports = if tls { "80, 443" } else { "80" };
            vec![
                name,
                or(text("/spec/ingressClassName"), "<none>"),
                or(hosts.join(","), "*"),
                String::new(),
                ports.into(),
                age,
            ]
        }
        "Event" => {
            let seen = or(text("/lastTimestamp"), &text("/eventTime"));
            let involved = format!("{}/{}", text("/involvedObject/kind").to_lowercase(), text("/involvedObject/name"));
            vec![self::age(&seen, now), text("/type"), text("/reason"), involved, text("/message")]
        }
        "HTTPProxy" => vec![
            name,
            text("/spec/virtualhost/fqdn"),
            text("/spec/virtualhost/tls/secretName"),
            text("/status/currentStatus"),
            text("/status/description"),
        ],
        _ => vec![name, age],
    };
    cells.into_iter().map(Value::String).collect()
}

fn or(text: String, default: &str) -> String {
    if text.is_empty() { default.to_string() } else { text }
}

fn has_true_condition(object: &Value, condition: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == condition && c["status"] == "True"))
}

/// `443/TCP,80:30080/TCP`, or `<none>`.
fn service_ports(service: &Value) -> String {
    let ports: Vec<String> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    or(ports.join(","), "<none>")
}

/// `app=web,tier=front`, or `<none>`.
fn selector(selector: Option<&Value>) -> String {
    let pairs: Vec<String> = selector
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    or(pairs.join(","), "<none>")
}

/// The age of an RFC 3339 timestamp, as Kubernetes' `duration.HumanDuration` prints it.
fn age(timestamp: &str, now: u64) -> String {
    match parse_rfc3339(timestamp) {
        Some(then) => human_duration(now.saturating_sub(then)),
        None => "<unknown>".into(),
    }
}

/// `2026-11-27T11:19:05Z` (or with a fraction) as seconds since the epoch.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = seconds / 3_600;
    let days = hours / 24;
    let with = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
    };
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 => with(minutes, "m", seconds % 60, "s"),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => with(hours, "h", minutes % 60, "m"),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 24 * 8 => with(days, "d", hours % 24, "h"),
        () if hours < 24 * 365 * 2 => format!("{days}d"),
        () if hours < 24 * 365 * 8 => with(days / 365, "y", days % 365, "d"),
        () => format!("{}y", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinds;

    #[test]
    fn accept_headers_ask_for_tables() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(TableRequest::from_accept(kubectl, None).is_some());
        assert!(TableRequest::from_accept("application/json", None).is_none());
    }

    #[test]
    fn http_proxies_print_contours_columns() {
        let proxy = json!({
            "metadata": {"name": "web", "namespace": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"virtualhost": {"fqdn": "web.example.com", "tls": {"secretName": "cert"}}},
            "status": {"currentStatus": "valid", "description": "Valid HTTPProxy"},
        });
        let table = TableRequest::from_accept("application/json;as=Table", None).unwrap().render(
            &kinds::HTTP_PROXY,
            &[&proxy],
            Some(7),
        );
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "FQDN", "TLS Secret", "Status", "Status Description"]);
        assert_eq!(table["rows"][0]["cells"], json!(["web", "web.example.com", "cert", "valid", "Valid HTTPProxy"]));
        assert_eq!(table["rows"][0]["object"]["metadata"]["namespace"], "a");
        assert_eq!(table["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(parse_rfc3339("nonsense"), None);
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(303), "5m3s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 3_600), "3d1h");
        assert_eq!(human_duration(100 * 86_400), "100d");
    }
}
