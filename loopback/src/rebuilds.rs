//! When the controller rebuilt, and how long changes waited for it: [`Rebuilds`].
//!
//! Contour does not act on a change at once: its event handler holds changes off while they
//! keep coming (see [`crate::latency`]), which a suite run pays for on every step. To report
//! how much, loopback records two things:
//! - when each change that can call for a rebuild was written: the store's own write time of
//!   HTTPProxies, Ingresses, Services, Secrets, delegations and Namespaces ([`Rebuilds::follow`]);
//!   a write that leaves `metadata.generation` and the annotations as they were (a status
//!   write, say) is not one. That is close to Contour's own test, not the same: Contour also
//!   rebuilds for a Namespace's labels and ignores a Secret's annotations, and the catalog
//!   changes neither on its own;
//! - when the controller began each rebuild: the reference controller says so itself, the real
//!   Contour in its log (`performing delayed update`), stamped as loopback reads the line.
//!
//! [`Rebuilds::held_off`] then measures, for a scenario's namespaces and while it ran, the time
//! during which one of its changes was written and no rebuild had begun since. With no
//! hold-off that is the time a change takes to reach the controller (well under a
//! millisecond when it is idle); under Contour's it is up to half a second per change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::api::kinds::{HTTP_PROXY, INGRESS, NAMESPACE, ResourceKind, SECRET, SERVICE, TLS_CERTIFICATE_DELEGATION};
use crate::api::{Batch, EventType, Store, WatchEvent};

/// The kinds whose changes can call for a rebuild, in Contour and in the reference
/// controller alike (Pods and EndpointSlices only change endpoints, which Contour sends
/// without a rebuild).
static CAN_CALL_FOR_REBUILD: [&ResourceKind; 6] =
    [&HTTP_PROXY, &INGRESS, &SERVICE, &SECRET, &TLS_CERTIFICATE_DELEGATION, &NAMESPACE];

/// A change that no rebuild began to take in within this long is taken as one the controller
/// did not act on, and counts nothing: Contour acts on a change within its hold-off delay
/// (100 ms) after the longest hold-off (500 ms) at most. Two consequences: a change the
/// controller ignored still counts when another change's rebuild follows within this long,
/// and a wait longer than this (a controller stalled for a second) counts nothing.
pub const ANSWERED_WITHIN: Duration = Duration::from_secs(1);

/// How many rebuilds, and how many changes, are kept: a long-lived cluster (`loopback serve`)
/// forgets the oldest, a suite run (a few thousand changes) keeps them all.
const KEPT: usize = 1 << 16;

/// Drops the oldest quarter of `items` once they are more than [`KEPT`].
fn forget_oldest<T>(items: &mut Vec<T>) {
    if items.len() > KEPT {
        items.drain(..KEPT / 4);
    }
}

/// One change that can call for a rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub at: Instant,
    /// The namespace written to; a Namespace's own name for a Namespace.
    pub namespace: String,
}

/// The record of one loopback cluster's rebuilds and of the changes they took in.
#[derive(Debug, Default)]
pub struct Rebuilds {
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    /// When each rebuild began, oldest first.
    rebuilds: Vec<Instant>,
    writes: Vec<Write>,
    /// The store outran [`Rebuilds::follow`] and some writes are not recorded.
    missed_writes: bool,
    /// Each object's generation and annotations as last written (`kind/namespace/name`).
    generations: HashMap<String, Value>,
}

impl Rebuilds {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // Every update is a single push or insert: a poisoned lock still holds a whole record.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller began a rebuild at `at`.
    pub fn rebuilt(&self, at: Instant) {
        let mut record = self.lock();
        // Each teller reads the clock as it tells, but two of them (a Contour's start-up
        // attempts, say) may overlap: the record stays in order regardless.
        let position = record.rebuilds.partition_point(|r| *r <= at);
        record.rebuilds.insert(position, at);
        forget_oldest(&mut record.rebuilds);
    }

    /// When each rebuild began, oldest first.
    pub fn rebuild_times(&self) -> Vec<Instant> {
        self.lock().rebuilds.clone()
    }

    /// The changes recorded so far, in the order written.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// Whether some writes went unrecorded (the store outran the recording).
    pub fn missed_writes(&self) -> bool {
        self.lock().missed_writes
    }

    /// Records the store's changes that can call for a rebuild, from now (the call) until
    /// `shutdown` turns true.
    pub fn follow(
        self: Arc<Self>,
        store: &Store,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut changes = store.changes(&CAN_CALL_FOR_REBUILD);
        async move {
            loop {
                let batch = tokio::select! {
                    batch = changes.next() => batch,
                    _ = shutdown.changed() => return,
                };
                match batch {
                    None => return,
                    Some(Batch::Missed) => self.lock().missed_writes = true,
                    Some(Batch::Events(events)) => {
                        let mut record = self.lock();
                        for event in &events {
                            record.observe(event);
                        }
                    }
                }
            }
        }
    }

    /// How long, between `from` and `to`, some change to `namespaces` waited for the
    /// controller to begin the rebuild that took it in ([`waiting_time`]); `None` when the
    /// recording missed writes, so that no figure is too low without saying so.
    pub fn held_off(&self, namespaces: &[String], from: Instant, to: Instant) -> Option<Duration> {
        let record = self.lock();
        if record.missed_writes {
            return None;
        }
        let writes = record.writes.iter().filter(|w| namespaces.contains(&w.namespace)).map(|w| w.at);
        Some(waiting_time(writes, &record.rebuilds, from, to))
    }
}

impl Record {
    fn observe(&mut self, event: &WatchEvent) {
        let name = event.object["metadata"]["name"].as_str().unwrap_or_default();
        let key = format!("{}/{}/{name}", event.kind.plural, event.namespace);
        let metadata = &event.object["metadata"];
        let generation = serde_json::json!([metadata["generation"], metadata["annotations"]]);
        let changed = match event.event_type {
            EventType::Deleted => {
                self.generations.remove(&key);
                true
            }
            EventType::Added | EventType::Modified => {
                self.generations.insert(key, generation.clone()).is_none_or(|before| before != generation)
            }
        };
        if changed {
            let namespace = if event.kind == &NAMESPACE { name.to_string() } else { event.namespace.clone() };
            self.writes.push(Write { at: event.at, namespace });
            forget_oldest(&mut self.writes);
        }
    }
}

/// The time within `from..to` during which at least one of `writes` had been written and the
/// first of `rebuilds` (sorted) at or after it had not begun. A write no rebuild followed
/// within [`ANSWERED_WITHIN`] waited for nothing: the controller did not act on it. A write
/// still unanswered at `to`, and for less than that, is waiting: it counts until `to`.
///
/// A change written just before a rebuild began (or, for the real Contour, before loopback
/// read the rebuild's log line) may be counted as taken in by it when it was not: the
/// measure errs short, by at most one hold-off for such a change.
pub fn waiting_time(
    writes: impl Iterator<Item = Instant>,
    rebuilds: &[Instant],
    from: Instant,
    to: Instant,
) -> Duration {
    let mut spans: Vec<(Instant, Instant)> = writes
        .filter(|at| (from..=to).contains(at))
        .filter_map(|at| match rebuilds.get(rebuilds.partition_point(|r| *r < at)) {
            Some(rebuild) => (*rebuild - at <= ANSWERED_WITHIN).then_some((at, (*rebuild).min(to))),
            None => (to - at <= ANSWERED_WITHIN).then_some((at, to)),
        })
        .collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut covered_until = from;
    for (start, end) in spans {
        let start = start.max(covered_until);
        if end > start {
            total += end - start;
            covered_until = end;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_change_waits_until_the_next_rebuild_begins() {
        let t = Instant::now();
        let rebuilds = [t + ms(10), t + ms(300)];
        assert_eq!(waiting_time([t + ms(200)].into_iter(), &rebuilds, t, t + ms(1000)), ms(100));
        // A rebuild that began with the write took it in.
        assert_eq!(waiting_time([t + ms(10)].into_iter(), &rebuilds, t, t + ms(1000)), Duration::ZERO);
    }

    #[test]
    fn overlapping_waits_count_once_and_only_inside_the_window() {
        let t = Instant::now();
        let rebuilds = [t + ms(300), t + ms(700)];
        let writes = [t + ms(100), t + ms(200), t + ms(600)];
        assert_eq!(waiting_time(writes.into_iter(), &rebuilds, t, t + ms(1000)), ms(200 + 100));
        assert_eq!(waiting_time(writes.into_iter(), &rebuilds, t + ms(150), t + ms(650)), ms(100 + 50));
    }

    #[test]
    fn a_change_no_rebuild_answered_waited_for_nothing() {
        let t = Instant::now();
        assert_eq!(waiting_time([t].into_iter(), &[], t, t + ms(5000)), Duration::ZERO);
        let late = [t + ANSWERED_WITHIN + ms(1)];
        assert_eq!(waiting_time([t].into_iter(), &late, t, t + ms(5000)), Duration::ZERO);
    }

    #[test]
    fn a_change_still_waiting_at_the_end_counts_until_then() {
        let t = Instant::now();
        assert_eq!(waiting_time([t + ms(900)].into_iter(), &[], t, t + ms(1000)), ms(100));
        assert_eq!(waiting_time([t + ms(900)].into_iter(), &[t + ms(1500)], t, t + ms(1000)), ms(100));
    }

    #[test]
    fn nothing_is_measured_once_writes_were_missed() {
        let rebuilds = Rebuilds::new();
        let t = Instant::now();
        assert_eq!(rebuilds.held_off(&["a".into()], t, t + ms(10)), Some(Duration::ZERO));
        rebuilds.lock().missed_writes = true;
        assert_eq!(rebuilds.held_off(&["a".into()], t, t + ms(10)), None);
    }

    #[test]
    fn status_writes_are_not_changes_and_namespaces_count_as_their_own() {
        let event = |kind: &'static ResourceKind, event_type, namespace: &str, generation: u64| WatchEvent {
            resource_version: 1,
            kind,
            namespace: namespace.into(),
            event_type,
            object: Arc::new(json!({"metadata": {"name": "demo", "generation": generation}})),
            at: Instant::now(),
        };
        let mut record = Record::default();
        record.observe(&event(&HTTP_PROXY, EventType::Added, "a", 1));
        record.observe(&event(&HTTP_PROXY, EventType::Modified, "a", 1));
        record.observe(&event(&HTTP_PROXY, EventType::Modified, "a", 2));
        record.observe(&event(&HTTP_PROXY, EventType::Deleted, "a", 2));
        record.observe(&event(&NAMESPACE, EventType::Added, "", 1));
        let namespaces: Vec<&str> = record.writes.iter().map(|w| w.namespace.as_str()).collect();
        assert_eq!(namespaces, ["a", "a", "a", "demo"], "the status write (generation 1 again) is left out");
    }

    #[test]
    fn a_long_lived_cluster_forgets_the_oldest() {
        let rebuilds = Rebuilds::new();
        let t = Instant::now();
        for n in 0..=KEPT as u64 {
            rebuilds.rebuilt(t + Duration::from_micros(n));
        }
        let kept = rebuilds.rebuild_times();
        assert_eq!(kept.len(), KEPT + 1 - KEPT / 4);
        assert_eq!(kept.last(), Some(&(t + Duration::from_micros(KEPT as u64))), "the newest stay");
    }

    #[test]
    fn rebuilds_stay_in_order_whoever_tells_them() {
        let rebuilds = Rebuilds::new();
        let t = Instant::now();
        rebuilds.rebuilt(t + ms(20));
        rebuilds.rebuilt(t + ms(10));
        assert_eq!(rebuilds.rebuild_times(), [t + ms(10), t + ms(20)]);
    }
}
