//! What a loopback cluster is started with: [`LoopbackConfig`], and the [`Fault`] switches.
//!
//! The file form (`loopback serve --config FILE`) follows the shape of Contour's own config
//! file for install-wide settings, plus a `faults` list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// A deliberate deviation from the upstream TLS contract, each a realistic bug.
///
/// The harness runs its catalog against loopback with each fault switched on: every fault
/// must make at least one scenario fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Accept any backend certificate, even with `validation` set (breaks V3).
    SkipCaVerification,
    /// Treat `projectcontour.io/upstream-protocol.tls` as absent (breaks P1).
    IgnoreUpstreamProtocolAnnotation,
}

impl Fault {
    /// Every fault, in documentation order.
    pub const ALL: [Fault; 2] = [Fault::SkipCaVerification, Fault::IgnoreUpstreamProtocolAnnotation];

    /// The name used in config files, flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::SkipCaVerification => "skip-ca-verification",
            Fault::IgnoreUpstreamProtocolAnnotation => "ignore-upstream-protocol-annotation",
        }
    }

    /// One line saying what goes wrong, for docs and reports.
    pub fn description(self) -> &'static str {
        match self {
            Fault::SkipCaVerification => "the proxy accepts any backend certificate even when validation is configured",
            Fault::IgnoreUpstreamProtocolAnnotation => {
                "the controller ignores the upstream-protocol.tls Service annotation"
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of [`Fault::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown fault {0:?}; known faults: {known}", known = Fault::ALL.map(Fault::name).join(", "))]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| UnknownFault(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// How to start a loopback cluster.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoopbackConfig {
    /// Faults to switch on.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The nginx binary backend pods run; found on PATH (and in /usr/sbin) when unset.
    #[serde(default)]
    pub nginx: Option<PathBuf>,
    /// Where pods' files, logs and the kubeconfig go; a fresh temporary directory when unset.
    /// Removed at shutdown only when loopback created it.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
}

/// A loopback config file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<serde_saphyr::Error> },
}

impl LoopbackConfig {
    /// Reads a config file.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid config (the message carries line and column).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        serde_saphyr::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>().unwrap(), fault);
        }
        let err = "skip-everything".parse::<Fault>().unwrap_err().to_string();
        assert!(err.contains("skip-ca-verification"), "{err}");
    }

    #[test]
    fn config_file_rejects_unknown_fields_and_faults() {
        let ok: LoopbackConfig = serde_saphyr::from_str("faults: [skip-ca-verification]\n").unwrap();
        assert!(ok.has(Fault::SkipCaVerification));
        assert!(serde_saphyr::from_str::<LoopbackConfig>("fault: []\n").is_err());
        assert!(serde_saphyr::from_str::<LoopbackConfig>("faults: [nope]\n").is_err());
    }
}
