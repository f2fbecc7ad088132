//! Contour's config file, made from the implementation config: [`contour_config`].
//!
//! The implementation config's `installation` section says what the installation under test
//! has configured install-wide; on a kind cluster the harness's scripts make that
//! installation, so the same section is the one source of both: the harness reads it to know
//! which scenarios can run, and `contour-config` writes it into Contour's own config file.
//!
//! The file is edited as data, never as text: Contour reads it with a YAML reader that refuses
//! duplicate keys, and its quickstart already has a `tls:` block, so appending a second one
//! would keep Contour from starting.

use loopback::config::{GatewayRef, SecretName, UpstreamTlsConfig};
use serde_json::{Value, json};

use crate::config::InstallationSection;
use crate::install::SecretRef;

/// `base` (the text of Contour's config file, e.g. its quickstart ConfigMap's `contour.yaml`)
/// with `tls.envoy-client-certificate`, `cluster.upstream-tls`'s protocol versions and
/// cipher suites, and `enableExternalNameService` set as `installation` says, or removed
/// where it says nothing: the settings of [`loopback::contour::contour_settings`], the table
/// loopback configures the real Contour from. Every other setting is kept; comments are not.
///
/// # Errors
/// `base` is not YAML, or not a mapping where Contour has one; or the installation's Secret
/// is not `namespace/name`.
pub fn contour_config(base: &str, installation: &InstallationSection) -> Result<String, String> {
    let mut root: Value =
        serde_saphyr::from_str(base).map_err(|e| format!("Contour's config is not YAML Contour can read: {e}"))?;
    if root.is_null() {
        root = json!({});
    }
    let certificate = match &installation.envoy_client_certificate {
        Some(text) => {
            let secret: SecretRef = text.parse().map_err(|e| format!("installation.envoyClientCertificate: {e}"))?;
            Some(SecretName { name: secret.name, namespace: secret.namespace })
        }
        None => None,
    };
    let upstream = &installation.upstream_tls;
    let upstream = UpstreamTlsConfig {
        minimum_protocol_version: upstream.minimum_protocol_version,
        maximum_protocol_version: upstream.maximum_protocol_version,
        cipher_suites: upstream.cipher_suites.clone(),
    };
    let gateway = installation
        .gateway
        .as_ref()
        .map(|gateway| GatewayRef { namespace: gateway.namespace.clone(), name: gateway.name.clone() });
    let settings = loopback::contour::contour_settings(
        certificate.as_ref(),
        &upstream,
        installation.enable_external_name_service,
        gateway.as_ref(),
    );
    for setting in settings {
        loopback::contour::set_path(&mut root, setting.file_path, setting.value)
            .map_err(|e| format!("Contour's config has {e}"))?;
    }
    serde_saphyr::to_string(&root).map_err(|e| format!("cannot write Contour's config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTlsSection;
    use loopback::config::TlsVersion;

    /// The shape of Contour's quickstart config: comments, a `tls:` block whose keys are
    /// empty, other settings around it.
    const QUICKSTART_SHAPE: &str = "\
# should contour expect to be running inside a k8s cluster
# incluster: true
disablePermitInsecure: false
tls:
# minimum TLS version that Contour will negotiate
# minimum-protocol-version: \"1.2\"
  fallback-certificate:
#   name: fallback-secret-name
  envoy-client-certificate:
#   name: envoy-client-cert-secret-name
accesslog-format: envoy
";

    fn installation() -> InstallationSection {
        InstallationSection {
            envoy_client_certificate: Some("upstream-tls-conformance/envoy-client".into()),
            upstream_tls: UpstreamTlsSection {
                minimum_protocol_version: Some(TlsVersion::V1_2),
                maximum_protocol_version: Some(TlsVersion::V1_3),
                cipher_suites: Some(vec!["ECDHE-ECDSA-CHACHA20-POLY1305".into()]),
            },
            enable_external_name_service: true,
            gateway: None,
        }
    }

    /// Reads `text` as Contour does: duplicate keys are an error.
    fn read(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("Contour could not read it: {e}\n{text}"))
    }

    #[test]
    fn the_installation_is_set_in_the_existing_blocks_and_the_rest_is_kept() {
        let written = contour_config(QUICKSTART_SHAPE, &installation()).unwrap();
        let config = read(&written);
        assert_eq!(
            config["tls"]["envoy-client-certificate"],
            json!({"name": "envoy-client", "namespace": "upstream-tls-conformance"})
        );
        assert_eq!(config["tls"]["fallback-certificate"], Value::Null);
        assert_eq!(config["cluster"]["upstream-tls"]["minimum-protocol-version"], json!("1.2"));
        assert_eq!(config["cluster"]["upstream-tls"]["maximum-protocol-version"], json!("1.3"));
        assert_eq!(config["disablePermitInsecure"], json!(false));
        assert_eq!(config["accesslog-format"], json!("envoy"));
        assert_eq!(config["enableExternalNameService"], json!(true));
        assert_eq!(config["cluster"]["upstream-tls"]["cipher-suites"], json!(["ECDHE-ECDSA-CHACHA20-POLY1305"]));
        assert_eq!(written.matches("tls:").count(), 2, "one tls block, one upstream-tls: {written}");
        // Applying it again changes nothing.
        assert_eq!(contour_config(&written, &installation()).unwrap(), written);
    }

    #[test]
    fn what_the_installation_does_not_set_is_removed() {
        let written = contour_config(&contour_config(QUICKSTART_SHAPE, &installation()).unwrap(), &Default::default());
        let config = read(&written.unwrap());
        assert!(config["tls"].get("envoy-client-certificate").is_none(), "{config}");
        assert!(config["cluster"]["upstream-tls"].as_object().is_some_and(|m| m.is_empty()), "{config}");
        assert!(config.get("enableExternalNameService").is_none(), "Contour's default is off: {config}");
        let empty = read(&contour_config("", &Default::default()).unwrap());
        assert_eq!(empty, json!({}), "nothing is added for nothing");
    }

    #[test]
    fn unusable_input_is_refused_in_words() {
        let duplicate = contour_config("tls: {}\ntls: {}\n", &installation()).unwrap_err();
        assert!(duplicate.contains("Contour's config is not YAML Contour can read"), "{duplicate}");
        let scalar = contour_config("tls: 3\n", &installation()).unwrap_err();
        assert_eq!(scalar, "Contour's config has no mapping at `tls`");
        let bad = InstallationSection { envoy_client_certificate: Some("no-slash".into()), ..Default::default() };
        assert!(contour_config("", &bad).unwrap_err().starts_with("installation.envoyClientCertificate: "));
    }

    /// Contour's real quickstart, from the Go module `scripts/ensure-contour` fetched, when
    /// it is on this machine (CI builds Contour, so it is there).
    #[test]
    fn contour_s_own_quickstart_config_is_edited_without_duplicate_keys() {
        let Some(quickstart) = quickstart_config() else {
            assert!(
                std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").as_deref() != Ok("1"),
                "Contour's Go module is not in the module cache"
            );
            eprintln!("skipped: Contour's Go module is not in the module cache");
            return;
        };
        assert!(
            quickstart.contains("\ntls:") && quickstart.contains("envoy-client-certificate:"),
            "the quickstart has a tls block already: the reason text edits fail"
        );
        let config = read(&contour_config(&quickstart, &installation()).unwrap());
        assert_eq!(config["tls"]["envoy-client-certificate"]["name"], json!("envoy-client"));
        assert_eq!(config["cluster"]["upstream-tls"]["maximum-protocol-version"], json!("1.3"));
        assert_eq!(config["enableExternalNameService"], json!(true));
        let original = read(&quickstart);
        for (key, value) in original.as_object().unwrap() {
            if key != "tls" && key != "cluster" && key != "enableExternalNameService" {
                assert_eq!(&config[key], value, "{key} is kept");
            }
        }
    }

    /// The `contour.yaml` of the ConfigMap in Contour's `examples/render/contour.yaml`.
    fn quickstart_config() -> Option<String> {
        let version = loopback::config::contour_versions().first()?.to_string();
        let cache = std::env::var("GOMODCACHE").ok().or_else(|| {
            let home =
                std::env::var("GOPATH").ok().or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/go")))?;
            Some(format!("{home}/pkg/mod"))
        })?;
        let path = format!("{cache}/github.com/projectcontour/contour@{version}/examples/render/contour.yaml");
        let text = std::fs::read_to_string(path).ok()?;
        let documents: Vec<Value> = serde_saphyr::from_str_multiple(&text).ok()?;
        let config_map = documents.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "contour")?;
        config_map["data"]["contour.yaml"].as_str().map(str::to_string)
    }
}
