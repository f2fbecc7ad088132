//! The resource kinds the loopback API server knows: [`ResourceKind`], the built-in table
//! [`KINDS`], and [`Kinds`], what one server serves: the table plus the kinds its
//! CustomResourceDefinitions add (`super::crds`).
//!
//! One row per kind is the single place that decides a kind's group, version, plural,
//! scope and whether it has a status subresource; discovery, routing and the store all read it.

/// One kind of object the API server stores and serves.
#[derive(Debug)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The lowercase plural used in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether `status` is a subresource: then writes to the main resource keep the stored
    /// status and writes to `/status` change nothing else.
    pub status_subresource: bool,
    /// For a kind served from a CustomResourceDefinition: the schema of the version served,
    /// which admission defaults and validates against. Built-in kinds have theirs in
    /// `super::openapi`.
    pub crd_schema: Option<&'static serde_json::Value>,
}

/// A kind is its group, version and kind.
impl PartialEq for ResourceKind {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.version == other.version && self.kind == other.kind
    }
}

impl Eq for ResourceKind {}

impl ResourceKind {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `kind.group` as Kubernetes names a resource in messages (`httpproxies.projectcontour.io`).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

// One positional argument per column of the table keeps the rows below on one line each.
#[allow(clippy::too_many_arguments)]
const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status_subresource: bool,
) -> ResourceKind {
    ResourceKind {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        status_subresource,
        crd_schema: None,
    }
}

pub static NAMESPACE: ResourceKind = kind("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], true);
pub static SECRET: ResourceKind = kind("", "v1", "Secret", "secrets", "secret", true, &[], false);
pub static CONFIG_MAP: ResourceKind = kind("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], false);
pub static SERVICE: ResourceKind = kind("", "v1", "Service", "services", "service", true, &["svc"], true);
pub static POD: ResourceKind = kind("", "v1", "Pod", "pods", "pod", true, &["po"], true);
pub static EVENT: ResourceKind = kind("", "v1", "Event", "events", "event", true, &["ev"], false);
pub static DEPLOYMENT: ResourceKind =
    kind("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], true);
pub static INGRESS: ResourceKind =
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], true);
pub static ENDPOINT_SLICE: ResourceKind =
    kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, &[], false);
pub static HTTP_PROXY: ResourceKind =
    kind("projectcontour.io", "v1", "HTTPProxy", "httpproxies", "httpproxy", true, &["proxy", "proxies"], true);
pub static TLS_CERTIFICATE_DELEGATION: ResourceKind = kind(
    "projectcontour.io",
    "v1",
    "TLSCertificateDelegation",
    "tlscertificatedelegations",
    "tlscertificatedelegation",
    true,
    &["tlscerts"],
    true,
);

/// Contour watches ExtensionServices; loopback stores them and nothing else reads them.
pub static EXTENSION_SERVICE: ResourceKind = kind(
    "projectcontour.io",
    "v1alpha1",
    "ExtensionService",
    "extensionservices",
    "extensionservice",
    true,
    &["extensionservice", "extensionservices"],
    true,
);

/// Contour's install-wide settings as an object, read by `contour serve --contour-config-name`.
pub static CONTOUR_CONFIGURATION: ResourceKind = kind(
    "projectcontour.io",
    "v1alpha1",
    "ContourConfiguration",
    "contourconfigurations",
    "contourconfiguration",
    true,
    &["contourconfig"],
    true,
);

/// Every kind served, in discovery order.
pub static KINDS: [&ResourceKind; 13] = [
    &NAMESPACE,
    &SECRET,
    &CONFIG_MAP,
    &SERVICE,
    &POD,
    &EVENT,
    &DEPLOYMENT,
    &INGRESS,
    &ENDPOINT_SLICE,
    &HTTP_PROXY,
    &TLS_CERTIFICATE_DELEGATION,
    &EXTENSION_SERVICE,
    &CONTOUR_CONFIGURATION,
];

/// The kinds one API server serves: the built-in [`KINDS`], then those of the
/// CustomResourceDefinitions it was started with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Kinds {
    all: std::sync::Arc<[&'static ResourceKind]>,
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds::built_in()
    }
}

impl Kinds {
    /// The built-in table alone.
    pub fn built_in() -> Self {
        Kinds { all: KINDS.to_vec().into() }
    }

    /// The built-in table and `extra` after it.
    ///
    /// # Errors
    /// A kind of `extra` whose plural is already served: the store keys objects by plural.
    pub fn with(extra: &[&'static ResourceKind]) -> Result<Self, String> {
        let mut all = KINDS.to_vec();
        for kind in extra {
            if let Some(served) = all.iter().find(|k| k.plural == kind.plural) {
                return Err(format!(
                    "{} cannot be served: {} is already served as {}",
                    kind.qualified_plural(),
                    kind.plural,
                    served.qualified_plural()
                ));
            }
            all.push(kind);
        }
        Ok(Kinds { all: all.into() })
    }

    /// Every kind served, in discovery order.
    pub fn iter(&self) -> impl Iterator<Item = &'static ResourceKind> + '_ {
        self.all.iter().copied()
    }

    /// The kind served at `group/version/plural`, if any.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceKind> {
        self.iter().find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// The kind whose objects the store keeps under `plural` (plurals are unique).
    pub fn by_store_plural(&self, plural: &str) -> Option<&'static ResourceKind> {
        self.iter().find(|k| k.plural == plural)
    }

    /// The kind named by an object's `apiVersion` and `kind`, if served.
    pub fn by_api_version_kind(&self, api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
        self.iter().find(|k| k.api_version() == api_version && k.kind == kind)
    }

    /// The group versions served, as `(group, version)`, each once, core first.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for k in self.iter() {
            if !out.contains(&(k.group, k.version)) {
                out.push((k.group, k.version));
            }
        }
        out
    }

    /// The kinds served in one group version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&'static ResourceKind> {
        self.iter().filter(|k| k.group == group && k.version == version).collect()
    }
}
