//! Trouble a real cluster gives its clients, on demand: [`Disruption`]s.
//!
//! [`Fault`](crate::Fault)s make loopback break the upstream TLS contract, to show that the
//! scenarios catch bugs in an implementation. Disruptions keep the contract but make the
//! cluster hard to work with — API errors, slow answers, cut connections, a backend that
//! crashes, a proxy that restarts — to show that the harness itself copes: it retries what
//! passes, fails precisely on what does not, never hangs and leaves nothing behind.
//!
//! Each disruption is deterministic where it can be (which request fails is counted, not
//! drawn), so a run under it can be repeated. [`Disruptions`] is what the cluster's parts
//! consult, and counts what they injected.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::latency::Latency;

/// Trouble to inject. [`transient`](Disruption::transient) ones are what a client must ride
/// out; the others are what it must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disruption {
    /// One authenticated API request in [`API_ERROR_PERIOD`] is answered 429 (with
    /// `Retry-After: 1`), 500 or 503, in turn.
    ApiErrors,
    /// Every authenticated API answer comes [`API_DELAY`] late.
    ApiSlow,
    /// Every API connection is cut [`CONNECTION_LIFETIME`] after it opens, mid-request or
    /// mid-watch if it comes to that.
    ApiConnectionsCut,
    /// Once a client has created a namespace, every authenticated API request is answered
    /// 503: an API server that went away for good.
    ApiOutage,
    /// Every backend's nginx is killed once, [`CRASH_AFTER`] after its pod is first Ready; the
    /// kubelet restarts it, as Kubernetes restarts a crashed container.
    BackendCrash,
    /// Every [`PROXY_UPTIME`], the proxy closes every connection and stops listening for
    /// [`PROXY_DOWNTIME`], as a restarting Envoy does.
    ProxyRestart,
}

/// Of every this many authenticated API requests, the last fails under [`Disruption::ApiErrors`].
pub const API_ERROR_PERIOD: u64 = 4;
/// How late API answers are under [`Disruption::ApiSlow`].
pub const API_DELAY: Duration = Duration::from_millis(200);
/// How long an API connection lives under [`Disruption::ApiConnectionsCut`].
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(1);
/// How long after its pod is Ready a backend is killed under [`Disruption::BackendCrash`].
pub const CRASH_AFTER: Duration = Duration::from_millis(700);
/// How long the proxy serves between restarts under [`Disruption::ProxyRestart`].
pub const PROXY_UPTIME: Duration = Duration::from_secs(2);
/// How long the proxy is gone at each restart under [`Disruption::ProxyRestart`].
pub const PROXY_DOWNTIME: Duration = Duration::from_millis(300);

impl Disruption {
    pub const ALL: [Disruption; 6] = [
        Disruption::ApiErrors,
        Disruption::ApiSlow,
        Disruption::ApiConnectionsCut,
        Disruption::ApiOutage,
        Disruption::BackendCrash,
        Disruption::ProxyRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Disruption::ApiErrors => "api-errors",
            Disruption::ApiSlow => "api-slow",
            Disruption::ApiConnectionsCut => "api-connections-cut",
            Disruption::ApiOutage => "api-outage",
            Disruption::BackendCrash => "backend-crash",
            Disruption::ProxyRestart => "proxy-restart",
        }
    }

    /// Whether a client should ride it out (true) or report it (false).
    pub fn transient(self) -> bool {
        self != Disruption::ApiOutage
    }

    pub fn description(self) -> String {
        match self {
            Disruption::ApiErrors => format!(
                "one authenticated API request in {API_ERROR_PERIOD} is answered 429 (Retry-After: 1), 500 or 503, in turn"
            ),
            Disruption::ApiSlow => format!("every authenticated API answer comes {} ms late", API_DELAY.as_millis()),
            Disruption::ApiConnectionsCut => format!(
                "every API connection is cut {} ms after it opens, mid-request or mid-watch",
                CONNECTION_LIFETIME.as_millis()
            ),
            Disruption::ApiOutage => "once a client has created a namespace, every authenticated API request is \
                                      answered 503, for good"
                .into(),
            Disruption::BackendCrash => format!(
                "every backend's nginx is killed once, {} ms after its pod is Ready; the kubelet restarts it",
                CRASH_AFTER.as_millis()
            ),
            Disruption::ProxyRestart => format!(
                "every {} ms the proxy drops its connections and stops listening for {} ms",
                PROXY_UPTIME.as_millis(),
                PROXY_DOWNTIME.as_millis()
            ),
        }
    }
}

impl fmt::Display for Disruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A disruption name that is not one of [`Disruption::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown disruption {0:?}; known disruptions: {known}", known = Disruption::ALL.map(Disruption::name).join(", "))]
pub struct UnknownDisruption(pub String);

impl FromStr for Disruption {
    type Err = UnknownDisruption;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Disruption::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| UnknownDisruption(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Disruption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The disruptions as a Markdown table (name, ridden out or reported, what happens).
pub fn disruption_table() -> String {
    let mut table = String::from("| disruption | a client should | what happens |\n|---|---|---|\n");
    for disruption in Disruption::ALL {
        let should = if disruption.transient() { "ride it out" } else { "report it" };
        table.push_str(&format!("| `{}` | {should} | {} |\n", disruption.name(), disruption.description()));
    }
    table
}

/// What an API request meets under the disruptions switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTrouble {
    /// Answer with this status code.
    Fail(u16),
}

/// The disruptions of one cluster, shared by its parts, with a count of what each injected;
/// and the delays of its [`Latency`] profile that are not the controller's or the store's.
#[derive(Debug, Default)]
pub struct Disruptions {
    on: Vec<Disruption>,
    latency: Latency,
    requests: AtomicU64,
    outage: AtomicBool,
    injected: [AtomicU64; Disruption::ALL.len()],
}

impl Disruptions {
    pub fn new(on: &[Disruption]) -> Self {
        Disruptions { on: on.to_vec(), ..Default::default() }
    }

    /// [`Disruptions::new`], in a cluster with `latency`.
    pub fn with_latency(on: &[Disruption], latency: Latency) -> Self {
        Disruptions { latency, ..Disruptions::new(on) }
    }

    pub fn has(&self, disruption: Disruption) -> bool {
        self.on.contains(&disruption)
    }

    /// Counts one injection of `disruption`.
    pub fn injected(&self, disruption: Disruption) {
        self.injected[disruption as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many times each disruption switched on was injected so far.
    pub fn counts(&self) -> Vec<(Disruption, u64)> {
        self.on.iter().map(|d| (*d, self.injected[*d as usize].load(Ordering::Relaxed))).collect()
    }

    /// A client created a namespace: [`Disruption::ApiOutage`] starts.
    pub fn namespace_created(&self) {
        if self.has(Disruption::ApiOutage) {
            self.outage.store(true, Ordering::Relaxed);
        }
    }

    /// What the next authenticated API request meets, counted as injected: a failure status,
    /// or nothing (go on, after [`Disruptions::api_delay`]).
    pub fn api_request(&self) -> Option<ApiTrouble> {
        if self.outage.load(Ordering::Relaxed) {
            self.injected(Disruption::ApiOutage);
            return Some(ApiTrouble::Fail(503));
        }
        if !self.has(Disruption::ApiErrors) {
            return None;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if n % API_ERROR_PERIOD != API_ERROR_PERIOD - 1 {
            return None;
        }
        self.injected(Disruption::ApiErrors);
        Some(ApiTrouble::Fail([429, 500, 503][(n / API_ERROR_PERIOD % 3) as usize]))
    }

    /// How late the next authenticated API answer comes (zero when nothing slows it); counted
    /// as injected under [`Disruption::ApiSlow`].
    pub fn api_delay(&self) -> Duration {
        if self.has(Disruption::ApiSlow) {
            self.injected(Disruption::ApiSlow);
            return API_DELAY + self.latency.api;
        }
        self.latency.api
    }

    /// How long after a pod's creation its process starts.
    pub fn pod_start_delay(&self) -> Duration {
        self.latency.pod_start
    }

    /// How long an API connection may live.
    pub fn connection_lifetime(&self) -> Option<Duration> {
        self.has(Disruption::ApiConnectionsCut).then_some(CONNECTION_LIFETIME)
    }

    /// How long after Ready a backend is killed (once).
    pub fn backend_crash_after(&self) -> Option<Duration> {
        self.has(Disruption::BackendCrash).then_some(CRASH_AFTER)
    }

    /// How long the proxy serves between restarts, and how long each restart takes.
    pub fn proxy_restarts(&self) -> Option<(Duration, Duration)> {
        self.has(Disruption::ProxyRestart).then_some((PROXY_UPTIME, PROXY_DOWNTIME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_fail_every_fourth_request_with_each_code_in_turn() {
        let disruptions = Disruptions::new(&[Disruption::ApiErrors]);
        let answers: Vec<Option<ApiTrouble>> = (0..12).map(|_| disruptions.api_request()).collect();
        let failures: Vec<(usize, u16)> =
            answers.iter().enumerate().filter_map(|(i, a)| a.map(|ApiTrouble::Fail(code)| (i, code))).collect();
        assert_eq!(failures, [(3, 429), (7, 500), (11, 503)]);
        assert_eq!(disruptions.counts(), [(Disruption::ApiErrors, 3)]);
    }

    #[test]
    fn the_outage_starts_with_the_first_namespace_a_client_creates() {
        let disruptions = Disruptions::new(&[Disruption::ApiOutage]);
        assert_eq!(disruptions.api_request(), None);
        disruptions.namespace_created();
        assert_eq!(disruptions.api_request(), Some(ApiTrouble::Fail(503)));
        assert_eq!(disruptions.api_request(), Some(ApiTrouble::Fail(503)));
        assert_eq!(disruptions.counts(), [(Disruption::ApiOutage, 2)]);
    }

    #[test]
    fn nothing_happens_when_nothing_is_switched_on() {
        let disruptions = Disruptions::new(&[]);
        disruptions.namespace_created();
        assert!((0..10).all(|_| disruptions.api_request().is_none()));
        assert_eq!(disruptions.api_delay(), Duration::ZERO);
        assert_eq!(disruptions.connection_lifetime(), None);
        assert_eq!(disruptions.backend_crash_after(), None);
        assert_eq!(disruptions.proxy_restarts(), None);
    }

    #[test]
    fn the_book_shows_the_current_disruption_table() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../book/src/loopback.md")).unwrap();
        assert!(
            page.contains(&disruption_table()),
            "book/src/loopback.md's disruption table is out of date; replace it with the output of `cargo run -p loopback -- disruptions`"
        );
    }

    #[test]
    fn names_round_trip() {
        for disruption in Disruption::ALL {
            assert_eq!(disruption.name().parse::<Disruption>().unwrap(), disruption);
        }
        let error = "api-sloth".parse::<Disruption>().unwrap_err().to_string();
        assert!(error.contains("unknown disruption \"api-sloth\"") && error.contains("api-slow"), "{error}");
    }
}
