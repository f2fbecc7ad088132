//! How slow a loopback cluster is: [`LatencyProfile`]s.
//!
//! Loopback answers in microseconds and starts a pod in milliseconds, so a suite run against
//! it says nothing about how the harness schedules its waits on a real cluster. The `kind`
//! profile gives loopback a real cluster's pace, so that the harness's behaviour there (what it
//! waits for, in series or side by side) can be measured on this machine.
//!
//! The `kind` values are estimates for a kind cluster on a developer machine with the backend
//! image already loaded, not measurements (no kind runs here):
//! - every API request: 3 ms (kube-apiserver and etcd in a container, over loopback TCP);
//! - a pod: 1.5 s from creation to its container running (scheduling, the kubelet's sync,
//!   sandbox and container creation by containerd);
//! - the controller: Contour's rebuild hold-off (`HoldoffDelay` 100 ms and `HoldoffMaxDelay`
//!   500 ms in Contour's `serve.go`): a change more than 500 ms after the last rebuild is acted
//!   on at once, any other waits until no change has come for 100 ms or one comes 500 ms after
//!   the last rebuild;
//! - a namespace: 5 s from deletion to gone (its pods stopping, then the namespace controller
//!   emptying and finalizing it).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A named set of [`Latency`] values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatencyProfile {
    /// As fast as loopback goes.
    #[default]
    None,
    /// A kind cluster's pace (estimates; see the module's documentation).
    Kind,
}

impl LatencyProfile {
    pub const ALL: [LatencyProfile; 2] = [LatencyProfile::None, LatencyProfile::Kind];

    pub fn name(self) -> &'static str {
        match self {
            LatencyProfile::None => "none",
            LatencyProfile::Kind => "kind",
        }
    }

    pub fn latency(self) -> Latency {
        match self {
            LatencyProfile::None => Latency::default(),
            LatencyProfile::Kind => Latency {
                api: Duration::from_millis(3),
                pod_start: Duration::from_millis(1500),
                holdoff: Duration::from_millis(100),
                holdoff_max: Duration::from_millis(500),
                namespace_deletion: Duration::from_secs(5),
            },
        }
    }
}

impl fmt::Display for LatencyProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LatencyProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LatencyProfile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown latency profile {s:?} (expected none or kind)"))
    }
}

impl<'de> Deserialize<'de> for LatencyProfile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// How long the parts of a loopback cluster take; all zero by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Added to every authenticated API answer.
    pub api: Duration,
    /// From a pod's creation to its process starting.
    pub pod_start: Duration,
    /// The reference controller rebuilds once no change has come for this long...
    pub holdoff: Duration,
    /// ...or at once for a change this long after its last rebuild.
    pub holdoff_max: Duration,
    /// From a namespace's deletion to it being gone (at the least).
    pub namespace_deletion: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_named_and_none_adds_nothing() {
        for profile in LatencyProfile::ALL {
            assert_eq!(profile.name().parse::<LatencyProfile>(), Ok(profile));
        }
        assert_eq!(LatencyProfile::None.latency(), Latency::default());
        assert!(LatencyProfile::Kind.latency().namespace_deletion > LatencyProfile::Kind.latency().pod_start);
        assert!("slow".parse::<LatencyProfile>().unwrap_err().contains("expected none or kind"));
    }
}
