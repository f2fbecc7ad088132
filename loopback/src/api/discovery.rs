//! API discovery documents, built from the kind table: [`document`].
//!
//! Only the plain (non-aggregated) discovery format is served, as `application/json`, whatever
//! the `Accept` header asks for: kube-rs asks for it directly, and kubectl, which prefers the
//! aggregated `apidiscovery.k8s.io/v2` format, reads the response's content type and falls back
//! to plain discovery (`/api`, `/apis`, then one `APIResourceList` per group version).

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::kinds::{self, Kinds, ResourceKind};

/// The verbs every kind supports on its main resource.
const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The kinds `kubectl get all` lists.
const CATEGORY_ALL: [&str; 3] = ["pods", "services", "deployments"];

/// The discovery document at `path` (without a trailing slash), if `path` is a discovery path:
/// `/api`, `/apis`, `/api/v1`, `/apis/{group}` or `/apis/{group}/{version}`.
pub fn document(kinds: &Kinds, path: &str, address: SocketAddr) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api"] => Some(api_versions(address)),
        ["apis"] => Some(api_group_list(kinds)),
        ["api", version] => resource_list(kinds, "", version),
        ["apis", group] => api_group(kinds, group),
        ["apis", group, version] => resource_list(kinds, group, version),
        _ => None,
    }
}

/// `/api`: the core group's versions.
fn api_versions(address: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address.to_string()}],
    })
}

/// `/apis`: every named group with its versions.
fn api_group_list(kinds: &Kinds) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (group, _) in kinds.group_versions() {
        if !group.is_empty() && !names.contains(&group) {
            names.push(group);
        }
    }
    let groups: Vec<Value> = names.into_iter().filter_map(|group| api_group_body(kinds, group)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
fn api_group(kinds: &Kinds, group: &str) -> Option<Value> {
    let mut body = api_group_body(kinds, group)?;
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Some(body)
}

fn api_group_body(kinds: &Kinds, group: &str) -> Option<Value> {
    let versions: Vec<Value> = kinds
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    // The table lists versions oldest first only by convention; the first one is preferred.
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
fn resource_list(kinds: &Kinds, group: &str, version: &str) -> Option<Value> {
    let served = kinds.in_group_version(group, version);
    let first = served.first()?;
    let mut resources = Vec::new();
    for kind in &served {
        resources.push(json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            "shortNames": kind.short_names,
        }));
        if CATEGORY_ALL.contains(&kind.plural)
            && let Some(resource) = resources.last_mut()
        {
            resource["categories"] = json!(["all"]);
        }
        if kind.status_subresource {
            resources.push(subresource(kind, "status", kind.kind, &["get", "patch", "update"]));
        }
        if *kind == &kinds::POD {
            resources.push(subresource(kind, "log", "Pod", &["get"]));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": first.api_version(),
        "resources": resources,
    }))
}

fn subresource(kind: &ResourceKind, name: &str, sub_kind: &str, verbs: &[&str]) -> Value {
    json!({
        "name": format!("{}/{name}", kind.plural),
        "singularName": "",
        "namespaced": kind.namespaced,
        "kind": sub_kind,
        "verbs": verbs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6443))
    }

    #[test]
    fn core_versions_name_the_server() {
        let doc = document(&Kinds::built_in(), "/api", address()).unwrap();
        assert_eq!(doc["versions"], json!(["v1"]));
        assert_eq!(doc["serverAddressByClientCIDRs"][0]["serverAddress"], "127.0.0.1:6443");
    }

    #[test]
    fn groups_have_a_preferred_version() {
        let doc = document(&Kinds::built_in(), "/apis", address()).unwrap();
        let contour = doc["groups"].as_array().unwrap().iter().find(|g| g["name"] == "projectcontour.io").unwrap();
        assert_eq!(contour["preferredVersion"]["groupVersion"], "projectcontour.io/v1");
        assert!(doc["groups"].as_array().unwrap().iter().all(|g| g["name"] != ""));
        assert_eq!(document(&Kinds::built_in(), "/apis/apps", address()).unwrap()["kind"], "APIGroup");
    }

    #[test]
    fn resource_lists_have_status_and_log_subresources() {
        let core = document(&Kinds::built_in(), "/api/v1", address()).unwrap();
        let names: Vec<&str> =
            core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"pods/log"));
        assert!(names.contains(&"namespaces/status"));
        assert!(!names.contains(&"secrets/status"));
        let contour = document(&Kinds::built_in(), "/apis/projectcontour.io/v1", address()).unwrap();
        assert_eq!(contour["groupVersion"], "projectcontour.io/v1");
        let proxy = &contour["resources"][0];
        assert_eq!(proxy["name"], "httpproxies");
        assert_eq!(proxy["shortNames"], json!(["proxy", "proxies"]));
        assert_eq!(contour["resources"][1]["name"], "httpproxies/status");
        assert_eq!(document(&Kinds::built_in(), "/apis/projectcontour.io/v2", address()), None);
        assert_eq!(document(&Kinds::built_in(), "/apis/nope", address()), None);
    }
}
