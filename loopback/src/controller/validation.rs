//! Upstream validation (docs/contract.md V2-V4, S1, S3, S6): the CA Secret a `validation` block
//! names, checked as Contour checks it (delegation first, then the Secret), turned into
//! [`PeerValidation`] for the proxy.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::Value;

use super::Context;
use crate::api::kinds::TLS_CERTIFICATE_DELEGATION;
use crate::config::Fault;
use crate::dataplane::table::{PeerValidation, ValidationFaults};
use crate::x509;

/// `spec.routes[].services[].validation` of an HTTPProxy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamValidation {
    #[serde(default)]
    pub ca_secret: String,
    #[serde(default)]
    pub subject_name: String,
    #[serde(default)]
    pub subject_names: Vec<String>,
}

pub const CA_KEY: &str = "ca.crt";

/// Why a validation block cannot be honoured; each renders as Contour's status error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// A CA Secret in another namespace without a delegation to the proxy's namespace.
    NotDelegated { namespace: String, name: String },
    /// The CA Secret is missing or unusable; the detail follows `TLS upstream validation
    /// policy error: `.
    InvalidSecret(String),
}

/// The validation the proxy must apply. `None` means validation is switched off by a fault.
///
/// A name without a namespace resolves in `default_namespace`; a Secret outside
/// `proxy_namespace` needs a delegation to it. Both are the namespace of the HTTPProxy that
/// holds the validation block, included or not (docs/contract.md I1); they differ only under
/// faults.
///
/// # Errors
/// The Secret is not delegated, missing or invalid.
pub fn lookup(
    ctx: &Context<'_>,
    default_namespace: &str,
    proxy_namespace: &str,
    validation: &UpstreamValidation,
) -> Result<Option<PeerValidation>, ValidationError> {
    // Split at the first '/'; an empty namespace is the default one (docs/contract.md S6).
    let (namespace, name) = match validation.ca_secret.split_once('/') {
        Some(("", name)) if !ctx.config.has(Fault::EmptyNamespaceNotDefaulted) => (default_namespace, name),
        Some((ns, name)) => (ns, name),
        None => (default_namespace, validation.ca_secret.as_str()),
    };
    if namespace != proxy_namespace
        && !ctx.config.has(Fault::IgnoreDelegation)
        && !delegated(ctx, namespace, name, proxy_namespace)
    {
        return Err(ValidationError::NotDelegated { namespace: namespace.into(), name: name.into() });
    }
    let secret = ctx.secrets.get(namespace, name);
    let key = format!("{namespace}/{name}");
    if ctx.config.has(Fault::OpaqueCaSecretOnly)
        && secret.as_ref().is_some_and(|s| s["type"].as_str().is_some_and(|t| t != "Opaque"))
    {
        return Err(ValidationError::InvalidSecret(format!(
            "invalid CA Secret \"{key}\": secret type is not \"Opaque\""
        )));
    }
    let mut bundle = ca_bundle(secret.as_deref(), ctx.config.has(Fault::ParseCaBundleDer));
    if let Ok(bundle) = &mut bundle
        && ctx.config.has(Fault::LoadPemHeaders)
        && bundle.envoy_refuses == Some(x509::HEADERS_REFUSED)
    {
        bundle.envoy_refuses = None;
    }
    if ctx.config.has(Fault::KeepLastCaBundle) {
        let mut cache = ctx.ca_cache.lock().unwrap_or_else(|e| e.into_inner());
        match &bundle {
            Ok(certificates) => {
                cache.insert(key.clone(), certificates.clone());
            }
            // The key is gone from a Secret that still exists: the last bundle stays.
            Err(_) if secret.as_ref().is_some_and(|s| secret_data(s, CA_KEY).is_empty()) => {
                if let Some(last) = cache.get(&key) {
                    bundle = Ok(last.clone());
                }
            }
            Err(_) => {}
        }
    }
    let bundle = match bundle {
        Ok(certificates) if ctx.config.has(Fault::StaleCaBundle) => {
            let mut cache = ctx.ca_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(key).or_insert(certificates).clone()
        }
        Ok(certificates) => certificates,
        Err(detail) => {
            let detail = if ctx.config.has(Fault::Pre14StatusMessage) {
                "upstreamValidation requested but secret not found or misconfigured".to_string()
            } else {
                format!("invalid CA Secret \"{key}\": {detail}")
            };
            return Err(ValidationError::InvalidSecret(detail));
        }
    };
    if ctx.config.has(Fault::SkipCaVerification) {
        return Ok(None);
    }
    let CaBundle { certificates: mut ca_certificates, envoy_refuses } = bundle;
    if ctx.config.has(Fault::FirstCaInBundleOnly) {
        ca_certificates.truncate(1);
    }
    let mut subject_names = if validation.subject_names.is_empty() {
        vec![validation.subject_name.clone()]
    } else {
        validation.subject_names.clone()
    };
    if ctx.config.has(Fault::FirstSubjectNameOnly) {
        subject_names.truncate(1);
    }
    Ok(Some(PeerValidation {
        ca_certificates,
        envoy_refuses,
        subject_names,
        faults: ValidationFaults {
            accept_common_name: ctx.config.has(Fault::AcceptNameFromCn),
            ignore_expiry: ctx.config.has(Fault::IgnoreCertificateExpiry),
            ignore_intermediates: ctx.config.has(Fault::IgnoreServedIntermediates),
            exact_names: ctx.config.has(Fault::ExactSubjectNames),
        },
    }))
}

/// Whether a TLSCertificateDelegation in `namespace` lets `target` use Secret `name`.
pub fn delegated(ctx: &Context<'_>, namespace: &str, name: &str, target: &str) -> bool {
    let grant = format!("{namespace}/{name} -> {target}");
    let remember = ctx.config.has(Fault::DelegationNeverWithdrawn);
    if remember && ctx.delegation_grants.lock().unwrap_or_else(|e| e.into_inner()).contains(&grant) {
        return true;
    }
    let (delegations, _) = ctx.store.list(&TLS_CERTIFICATE_DELEGATION, Some(namespace));
    let granted =
        delegations.iter().flat_map(|d| d["spec"]["delegations"].as_array().cloned().unwrap_or_default()).any(|d| {
            d["secretName"] == name
                && d["targetNamespaces"].as_array().is_some_and(|targets| {
                    // "*" is a wildcard only as the sole entry (docs/contract.md S6).
                    let wildcard = if ctx.config.has(Fault::StarAmongTargetsIsWildcard) {
                        targets.iter().any(|t| t == "*")
                    } else {
                        targets.len() == 1 && targets[0] == "*"
                    };
                    targets.iter().any(|t| t == target)
                        || (wildcard && !ctx.config.has(Fault::IgnoreWildcardDelegation))
                })
        });
    if granted && remember {
        ctx.delegation_grants.lock().unwrap_or_else(|e| e.into_inner()).insert(grant);
    }
    granted
}

/// A CA bundle as Contour accepts it, and whether Envoy loads it too.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub certificates: Vec<CertificateDer<'static>>,
    /// Why Envoy would refuse the bundle Contour accepted ([`x509::envoy_ca_bundle`]).
    pub envoy_refuses: Option<&'static str>,
}

/// The certificates of a valid CA Secret (docs/contract.md S1), or why it is not one.
fn ca_bundle(secret: Option<&Value>, parse_der: bool) -> Result<CaBundle, String> {
    let secret = secret.ok_or("Secret not found")?;
    let secret_type = secret["type"].as_str().unwrap_or("Opaque");
    if secret_type != "Opaque" && secret_type != "kubernetes.io/tls" {
        return Err("secret type is not \"kubernetes.io/tls\" or \"Opaque\"".into());
    }
    let data = secret_data(secret, CA_KEY);
    if data.is_empty() {
        return Err(format!("empty {CA_KEY:?} key"));
    }
    let certificates =
        parse_bundle(&data, parse_der).map_err(|detail| format!("invalid CA certificate bundle: {detail}"))?;
    Ok(CaBundle { certificates, envoy_refuses: x509::envoy_ca_bundle(&data).err() })
}

/// A Secret's value for `key`: `data` (base64) or, before the API server folds it in,
/// `stringData`.
pub fn secret_data(secret: &Value, key: &str) -> Vec<u8> {
    if let Some(encoded) = secret["data"][key].as_str() {
        return BASE64.decode(encoded).unwrap_or_default();
    }
    secret["stringData"][key].as_str().unwrap_or_default().as_bytes().to_vec()
}

/// PEM blocks, at least one, each a CERTIFICATE; what is inside is not checked, as Contour does
/// not (docs/contract.md S1). Under [`Fault::ParseCaBundleDer`] the DER must parse too.
fn parse_bundle(pem: &[u8], parse_der: bool) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certificates = Vec::new();
    for block in x509::pem_blocks(pem)? {
        if block.label != "CERTIFICATE" {
            return Err(format!("unexpected block type '{}'", block.label));
        }
        if parse_der {
            x509::Names::read(&block.der)?;
        }
        certificates.push(CertificateDer::from(block.der));
    }
    if certificates.is_empty() {
        return Err("failed to locate certificate".into());
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn secret(secret_type: &str, ca: &str) -> Value {
        json!({"type": secret_type, "data": {"ca.crt": BASE64.encode(ca)}})
    }

    #[test]
    fn opaque_and_tls_secrets_with_certificates_are_valid() {
        let pem = ca_pem();
        assert_eq!(ca_bundle(Some(&secret("Opaque", &pem)), false).unwrap().certificates.len(), 1);
        let two = format!("{pem}{}", ca_pem());
        assert_eq!(ca_bundle(Some(&secret("kubernetes.io/tls", &two)), false).unwrap().certificates.len(), 2);
    }

    #[test]
    fn invalid_secrets_say_why_in_contour_words() {
        assert_eq!(ca_bundle(None, false).unwrap_err(), "Secret not found");
        assert_eq!(
            ca_bundle(Some(&secret("kubernetes.io/dockerconfigjson", &ca_pem())), false).unwrap_err(),
            "secret type is not \"kubernetes.io/tls\" or \"Opaque\""
        );
        assert_eq!(ca_bundle(Some(&json!({"type": "Opaque", "data": {}})), false).unwrap_err(), "empty \"ca.crt\" key");
        assert_eq!(
            ca_bundle(Some(&secret("Opaque", "not pem")), false).unwrap_err(),
            "invalid CA certificate bundle: failed to locate certificate"
        );
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            ca_bundle(Some(&secret("Opaque", key)), false).unwrap_err(),
            "invalid CA certificate bundle: unexpected block type 'PRIVATE KEY'"
        );
    }

    #[test]
    fn der_inside_certificate_blocks_is_not_checked_unless_a_fault_asks() {
        let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
        let accepted = ca_bundle(Some(&secret("Opaque", garbage)), false).unwrap();
        assert_eq!(accepted.certificates.len(), 1);
        assert_eq!(accepted.envoy_refuses, Some("a certificate block holds no certificate"));
        assert_eq!(
            ca_bundle(Some(&secret("Opaque", garbage)), true).unwrap_err(),
            "invalid CA certificate bundle: x509: malformed certificate"
        );
    }
}
