//! `${...}` references in scenario text: finding them ([`references`]), knowing which names a
//! scenario offers ([`known_names`]) and filling them in ([`Bindings::expand`]).
//!
//! References available in every scenario:
//! - `${namespace}`: the scenario's own namespace.
//! - `${host}`: the scenario's own virtual host name.
//! - `${pki.NAME.cert}` (PEM), `${pki.NAME.certBase64}` (base64 of the PEM, for Secret
//!   `data`), `${pki.NAME.certDer}` (base64 of the DER on one line: a PEM block's contents,
//!   for bundles laid out by hand), `${pki.NAME.key}`, `${pki.NAME.keyBase64}`, `${pki.NAME.serial}` (hex, as nginx
//!   prints it), `${pki.NAME.sha1}` (hex fingerprint, as nginx prints it).
//! - `${namespaces.NAME}`: the scenario's extra namespaces.
//! - `${install.envoy-client.FIELD}`, `${install.envoy-client-ca.FIELD}`: the installation's
//!   Envoy client certificate and its CA, and `${install.secret}`, the `namespace/name` of the
//!   Secret holding it (scenarios with `envoy-client-certificate`).
//!
//! `$${` stands for a literal `${`. A value with several lines, put where the reference
//! stands on a line of its own after some indentation, keeps that indentation on every line,
//! so PEM fits a YAML block scalar.

use std::collections::{BTreeMap, BTreeSet};

/// The suffixes each PKI entry offers, after `pki.NAME.`.
pub const PKI_FIELDS: [&str; 7] = ["cert", "certBase64", "certDer", "key", "keyBase64", "serial", "sha1"];

/// A `${...}` found in text: the name inside and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    /// 1-based line and column (in characters) of the `$`.
    pub line: usize,
    pub column: usize,
}

/// A `${` without its closing `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    pub line: usize,
    pub column: usize,
}

/// Every reference in `text`, skipping comment lines (first non-blank character `#`).
///
/// # Errors
/// The first `${` with no `}` on the same line.
pub fn references(text: &str) -> Result<Vec<Reference>, Unterminated> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = line;
        let mut offset = 0;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                offset += at + 2;
                rest = &rest[at + 2..];
                continue;
            }
            let after = &rest[at + 2..];
            let column = line[..offset + at].chars().count() + 1;
            let Some(end) = after.find('}') else {
                return Err(Unterminated { line: index + 1, column });
            };
            found.push(Reference { name: after[..end].trim().to_string(), line: index + 1, column });
            offset += at + 2 + end + 1;
            rest = &after[end + 1..];
        }
    }
    Ok(found)
}

/// The install-wide PKI entries, offered as `${install.NAME.FIELD}` to scenarios with the
/// `envoy-client-certificate` feature.
pub const INSTALL_PKI: [&str; 2] = ["envoy-client-ca", "envoy-client"];

/// The installation's Gateway, offered as `${gateway.FIELD}` to scenarios with the
/// `gateway-api-backend-tls` feature.
pub const GATEWAY_FIELDS: [&str; 2] = ["name", "namespace"];

/// Every name a scenario offers: built-ins, its PKI entries, its extra namespaces, when
/// `install` is set the installation's client certificate and CA, and when `gateway` is set
/// the installation's Gateway.
pub fn known_names<'a>(
    pki_names: impl IntoIterator<Item = &'a str>,
    namespaces: impl IntoIterator<Item = &'a str>,
    install: bool,
    gateway: bool,
) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["namespace", "host"].map(String::from).into();
    for pki in pki_names {
        for field in PKI_FIELDS {
            names.insert(format!("pki.{pki}.{field}"));
        }
    }
    for namespace in namespaces {
        names.insert(format!("namespaces.{namespace}"));
    }
    if gateway {
        names.extend(GATEWAY_FIELDS.map(|field| format!("gateway.{field}")));
    }
    if install {
        names.insert("install.secret".to_string());
        for entry in INSTALL_PKI {
            for field in PKI_FIELDS {
                names.insert(format!("install.{entry}.{field}"));
            }
        }
    }
    names
}

/// The closest known name to an unknown one, for "did you mean" hints.
pub fn suggestion<'a>(unknown: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { previous } else { 1 + previous.min(row[j]).min(row[j + 1]) };
            previous = current;
        }
    }
    row[b.len()]
}

/// Values for every known name, for one run of one scenario.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    values: BTreeMap<String, String>,
}

/// A reference with no value: only possible if loading was skipped.
#[derive(Debug, thiserror::Error)]
#[error("no value for ${{{0}}}")]
pub struct Unbound(pub String);

impl Bindings {
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// `text` with every reference replaced and `$${` turned into `${`.
    ///
    /// # Errors
    /// A reference without a value (loading checks them, so this means a harness bug) or an
    /// unterminated `${`.
    pub fn expand(&self, text: &str) -> Result<String, Unbound> {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let mut rest = line;
            while let Some(at) = rest.find("${") {
                if rest[..at].ends_with('$') {
                    out.push_str(&rest[..at - 1]);
                    out.push_str("${");
                    rest = &rest[at + 2..];
                    continue;
                }
                out.push_str(&rest[..at]);
                let after = &rest[at + 2..];
                let end = after.find('}').ok_or_else(|| Unbound(after.trim_end().to_string()))?;
                let name = after[..end].trim();
                let value = self.values.get(name).ok_or_else(|| Unbound(name.to_string()))?;
                let line_start = out.rfind('\n').map_or(0, |p| p + 1);
                let prefix = &out[line_start..];
                let indent = if prefix.chars().all(|c| c == ' ') { prefix.to_string() } else { String::new() };
                let value = value.trim_end_matches('\n');
                for (n, value_line) in value.split('\n').enumerate() {
                    if n > 0 {
                        out.push('\n');
                        out.push_str(&indent);
                    }
                    out.push_str(value_line);
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
        }
        Ok(out)
    }

    /// Expands an optional string.
    ///
    /// # Errors
    /// As [`Bindings::expand`].
    pub fn expand_option(&self, text: &Option<String>) -> Result<Option<String>, Unbound> {
        text.as_deref().map(|t| self.expand(t)).transpose()
    }

    /// Expands every string inside a JSON value.
    ///
    /// # Errors
    /// As [`Bindings::expand`].
    pub fn expand_json(&self, value: &serde_json::Value) -> Result<serde_json::Value, Unbound> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) => Value::String(self.expand(s)?),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.expand_json(v)).collect::<Result<_, _>>()?),
            Value::Object(map) => Value::Object(
                map.iter().map(|(k, v)| Ok((k.clone(), self.expand_json(v)?))).collect::<Result<_, Unbound>>()?,
            ),
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_with_positions_and_skips_comments() {
        let text = "a: ${host}\n# ${ignored}\n  b: x-${pki.ca.cert} $${literal}\n";
        let refs = references(text).unwrap();
        let names: Vec<_> = refs.iter().map(|r| (r.name.as_str(), r.line, r.column)).collect();
        assert_eq!(names, vec![("host", 1, 4), ("pki.ca.cert", 3, 8)]);
        assert_eq!(references("x: ${open\n").unwrap_err(), Unterminated { line: 1, column: 4 });
    }

    #[test]
    fn multi_line_values_keep_indentation() {
        let mut b = Bindings::default();
        b.insert("pem", "L1\nL2\n");
        b.insert("host", "h.test");
        let text = "data: |\n    ${pem}\nhost: ${host} $${x}\n";
        assert_eq!(b.expand(text).unwrap(), "data: |\n    L1\n    L2\nhost: h.test ${x}\n");
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let known = known_names(["backend-ca"], ["store"], false, false);
        assert!(known.contains("namespaces.store"));
        assert!(!known.contains("install.envoy-client.serial"));
        assert_eq!(suggestion("pki.backend-ca.crt", &known), Some("pki.backend-ca.cert"));
        assert_eq!(suggestion("zzzzzzzzzzzzzzzzzzzzzz", &known), None);
        assert!(Bindings::default().expand("${nope}").is_err());
    }
}
