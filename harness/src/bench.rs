//! The benchmark: the catalog run several times against loopback, each run measured for wall
//! time, CPU time, peak memory and its critical path ([`run_bench`]), and printed as a table
//! whose columns stay the same from release to release, so that two runs can be compared
//! ([`render`]).
//!
//! The critical path is computed from the run's own timings: setting up the target, then the
//! longest scenario among those that run side by side, then every scenario that must run
//! alone, one after the other ([`critical_path`]), then the wait for the run's namespaces to
//! be deleted. A run can never be faster than that, so
//! the ratio of wall time to critical path says how much the scheduling costs.
//!
//! Each scenario's changes wait for the controller to rebuild: Contour holds a change off for
//! up to half a second while others keep coming (see `loopback::latency`), and the reference
//! controller does so under the `kind` latency profile. Loopback measures that wait per
//! scenario ([`loopback::Rebuilds`]), and the table says how much of the critical path it
//! is, and how much of all the scenarios' time.

use std::time::{Duration, Instant};

use crate::runner::{RunSettings, ScenarioOutcome};
use crate::scenario::LoadedScenario;
use crate::suite::run_all;
use crate::target::{Environment, TargetConfig, TargetError};

/// One measured run of the suite.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From starting the target to having stopped it.
    pub wall: Duration,
    /// Starting the target and connecting to it.
    pub setup: Duration,
    /// CPU time of this process and of the processes it waited for (backends), user and
    /// system together.
    pub cpu: Duration,
    /// The most memory this process held at once during the run, in bytes (`None` where the
    /// system does not say).
    pub peak_rss: Option<u64>,
    pub critical_path: Duration,
    pub scenarios: usize,
    pub failed: usize,
    /// The time the scenarios on the critical path waited for the controller's rebuilds
    /// (`None` where it was not measured).
    pub critical_held_off: Option<Duration>,
    /// The same over every scenario that ran, and (`scenario_time`) their durations summed.
    pub held_off: Option<Duration>,
    pub scenario_time: Duration,
    /// [`Sample::cpu`] by who spent it: the real Contour and Envoy (zero when they did not
    /// run), the backends (nginx: the rest of the waited-for processes), and this process
    /// (the harness and loopback's in-process parts: API server, kubelet, reference
    /// controller, loopback's proxy).
    pub cpu_by_program: CpuByProgram,
}

/// Where a run's CPU time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuByProgram {
    pub contour: Duration,
    pub envoy: Duration,
    pub nginx: Duration,
    pub harness: Duration,
}

/// How long a run waits at its end for its namespaces to be deleted.
const NAMESPACE_DELETION_LIMIT: Duration = Duration::from_secs(300);

/// Runs `scenarios` `runs` times on a fresh target each time, `parallelism` at a time.
///
/// # Errors
/// The target cannot be started.
pub async fn run_bench(
    config: &TargetConfig,
    settings: &RunSettings,
    scenarios: &[LoadedScenario],
    parallelism: usize,
    runs: usize,
) -> Result<Vec<Sample>, TargetError> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        reset_peak_rss();
        let cpu_before = cpu_time();
        let (self_before, children_before) = (cpu_of(libc::RUSAGE_SELF), cpu_of(libc::RUSAGE_CHILDREN));
        let started = Instant::now();
        let environment = Environment::connect(config, settings.clone()).await?;
        let setup = started.elapsed();
        let outcomes = run_all(&environment, scenarios, parallelism, &()).await;
        // As `run` does: the namespaces' deletion is waited for once, at the end, in series.
        let deleting = Instant::now();
        environment.await_namespace_deletion(NAMESPACE_DELETION_LIMIT).await?;
        let deletion = deleting.elapsed();
        let alone: Vec<bool> = outcomes
            .iter()
            .map(|o| scenarios.iter().find(|s| s.name() == o.name).is_some_and(|s| environment.needs_alone(s)))
            .collect();
        let programs = environment.program_cpu();
        environment.shutdown().await;
        let of = |name: &str| programs.iter().filter(|(p, _)| *p == name).map(|(_, cpu)| *cpu).sum::<Duration>();
        let (contour, envoy) = (of("contour"), of("envoy"));
        let children = cpu_of(libc::RUSAGE_CHILDREN).saturating_sub(children_before);
        let cpu_by_program = CpuByProgram {
            contour,
            envoy,
            nginx: children.saturating_sub(contour + envoy),
            harness: cpu_of(libc::RUSAGE_SELF).saturating_sub(self_before),
        };
        let ran: Vec<&ScenarioOutcome> = outcomes.iter().filter(|o| o.skipped.is_none()).collect();
        samples.push(Sample {
            wall: started.elapsed(),
            setup,
            cpu: cpu_time().saturating_sub(cpu_before),
            peak_rss: peak_rss(),
            critical_path: critical_path(setup, &outcomes, &alone) + deletion,
            scenarios: outcomes.len(),
            failed: outcomes.iter().filter(|o| !o.passed()).count(),
            critical_held_off: on_critical_path(&outcomes, &alone)
                .into_iter()
                .filter(|o| o.skipped.is_none())
                .map(|o| o.held_off)
                .sum(),
            held_off: ran.iter().map(|o| o.held_off).sum(),
            scenario_time: ran.iter().map(|o| o.duration).sum(),
            cpu_by_program,
        });
    }
    Ok(samples)
}

/// `setup`, then the longest of the outcomes that ran side by side, then all those that ran
/// alone (`alone[i]` for `outcomes[i]`), one after the other.
pub fn critical_path(setup: Duration, outcomes: &[ScenarioOutcome], alone: &[bool]) -> Duration {
    setup + on_critical_path(outcomes, alone).into_iter().map(|o| o.duration).sum::<Duration>()
}

/// The outcomes [`critical_path`] goes through: the longest of those side by side, then every
/// one that ran alone.
fn on_critical_path<'a>(outcomes: &'a [ScenarioOutcome], alone: &[bool]) -> Vec<&'a ScenarioOutcome> {
    let side_by_side = outcomes.iter().zip(alone).filter(|(_, a)| !**a).map(|(o, _)| o).max_by_key(|o| o.duration);
    let one_by_one = outcomes.iter().zip(alone).filter(|(_, a)| **a).map(|(o, _)| o);
    side_by_side.into_iter().chain(one_by_one).collect()
}

/// The table: a header line, one line per run, then the medians. Times in seconds, memory in
/// MiB; the columns and their order are part of the format (later columns are only ever
/// added at the end). `cpu_per_core_s` is the CPU time spread over this machine's cores: the
/// other floor of the wall time, besides the critical path, when the run is CPU-bound.
/// `critical_holdoff_s` is the time the critical path's scenarios waited for the controller
/// to rebuild, `critical_holdoff_share` that over the critical path, and
/// `scenario_holdoff_share` the same wait over every scenario's time (`-` when not measured).
/// `contour_cpu_s`, `envoy_cpu_s`, `nginx_cpu_s` and `harness_cpu_s` split `cpu_s` by who
/// spent it ([`CpuByProgram`]).
pub fn render(samples: &[Sample]) -> String {
    render_on(samples, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn render_on(samples: &[Sample], cores: usize) -> String {
    let mut out = String::from(
        "run\twall_s\tsetup_s\tcpu_s\tcpu_per_core_s\tpeak_rss_mib\tcritical_path_s\twall_per_critical\tscenarios\tfailed\t\
         critical_holdoff_s\tcritical_holdoff_share\tscenario_holdoff_share\t\
         contour_cpu_s\tenvoy_cpu_s\tnginx_cpu_s\tharness_cpu_s\n",
    );
    let line = |label: &str, s: &Sample| {
        let rss = s.peak_rss.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)));
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
        let critical_holdoff = or_dash(s.critical_held_off.map(|d| format!("{:.2}", d.as_secs_f64())));
        let critical_share = or_dash(s.critical_held_off.map(|d| format!("{:.2}", ratio(d, s.critical_path))));
        let scenario_share = or_dash(s.held_off.map(|d| format!("{:.2}", ratio(d, s.scenario_time))));
        let by = s.cpu_by_program;
        let programs =
            [by.contour, by.envoy, by.nginx, by.harness].map(|d| format!("{:.2}", d.as_secs_f64())).join("\t");
        format!(
            "{label}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{rss}\t{:.2}\t{:.2}\t{}\t{}\t{critical_holdoff}\t{critical_share}\t{scenario_share}\t{programs}\n",
            s.wall.as_secs_f64(),
            s.setup.as_secs_f64(),
            s.cpu.as_secs_f64(),
            s.cpu.as_secs_f64() / cores as f64,
            s.critical_path.as_secs_f64(),
            ratio(s.wall, s.critical_path),
            s.scenarios,
            s.failed
        )
    };
    for (i, sample) in samples.iter().enumerate() {
        out.push_str(&line(&(i + 1).to_string(), sample));
    }
    if let Some(median) = median(samples) {
        out.push_str(&line("median", &median));
    }
    out
}

/// Each column's median on its own (so the line need not be any one run).
fn median(samples: &[Sample]) -> Option<Sample> {
    fn mid<T: Ord + Copy>(mut values: Vec<T>) -> T {
        values.sort();
        values[values.len() / 2]
    }
    let first = samples.first()?;
    Some(Sample {
        wall: mid(samples.iter().map(|s| s.wall).collect()),
        setup: mid(samples.iter().map(|s| s.setup).collect()),
        cpu: mid(samples.iter().map(|s| s.cpu).collect()),
        peak_rss: samples.iter().map(|s| s.peak_rss).collect::<Option<Vec<u64>>>().map(mid),
        critical_path: mid(samples.iter().map(|s| s.critical_path).collect()),
        scenarios: first.scenarios,
        failed: mid(samples.iter().map(|s| s.failed).collect()),
        critical_held_off: samples.iter().map(|s| s.critical_held_off).collect::<Option<Vec<_>>>().map(mid),
        held_off: samples.iter().map(|s| s.held_off).collect::<Option<Vec<_>>>().map(mid),
        scenario_time: mid(samples.iter().map(|s| s.scenario_time).collect()),
        cpu_by_program: CpuByProgram {
            contour: mid(samples.iter().map(|s| s.cpu_by_program.contour).collect()),
            envoy: mid(samples.iter().map(|s| s.cpu_by_program.envoy).collect()),
            nginx: mid(samples.iter().map(|s| s.cpu_by_program.nginx).collect()),
            harness: mid(samples.iter().map(|s| s.cpu_by_program.harness).collect()),
        },
    })
}

/// User and system CPU time of this process and of its children that have been waited for.
fn cpu_time() -> Duration {
    cpu_of(libc::RUSAGE_SELF) + cpu_of(libc::RUSAGE_CHILDREN)
}

/// User and system CPU time of `who` (`RUSAGE_SELF`, or `RUSAGE_CHILDREN`: the descendants
/// waited for).
fn cpu_of(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Starts the peak-memory count again from the current size (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    // Without it the peak is the process's so far, which only overstates.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size since the last reset (Linux: `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(seconds: u64) -> ScenarioOutcome {
        let mut outcome = ScenarioOutcome::set_up_failed(
            &crate::scenario::load_file(&crate::suite::default_scenario_dir().join("validation/right-ca.yaml"))
                .unwrap(),
            String::new(),
            String::new(),
        );
        outcome.failure = None;
        outcome.duration = Duration::from_secs(seconds);
        outcome
    }

    #[test]
    fn the_critical_path_is_set_up_then_the_longest_side_by_side_then_the_ones_alone() {
        let outcomes = [outcome(3), outcome(5), outcome(2), outcome(4)];
        let setup = Duration::from_secs(1);
        assert_eq!(critical_path(setup, &outcomes, &[false, false, false, false]), Duration::from_secs(6));
        assert_eq!(critical_path(setup, &outcomes, &[false, true, false, true]), Duration::from_secs(1 + 3 + 5 + 4));
        assert_eq!(critical_path(setup, &[], &[]), setup);
    }

    #[test]
    fn the_table_keeps_its_columns_and_adds_medians() {
        let sample = |wall: u64, rss: Option<u64>, held_off: Option<u64>| Sample {
            wall: Duration::from_secs(wall),
            setup: Duration::from_millis(250),
            cpu: Duration::from_secs(wall * 2),
            peak_rss: rss,
            critical_path: Duration::from_secs(2),
            scenarios: 64,
            failed: 0,
            critical_held_off: held_off.map(Duration::from_millis),
            held_off: held_off.map(|ms| Duration::from_millis(ms * 8)),
            scenario_time: Duration::from_secs(40),
            cpu_by_program: CpuByProgram {
                contour: Duration::from_millis(wall * 100),
                envoy: Duration::from_millis(500),
                nginx: Duration::from_secs(1),
                harness: Duration::from_secs(wall),
            },
        };
        let samples =
            [sample(4, Some(80 << 20), Some(500)), sample(3, Some(90 << 20), Some(300)), sample(5, None, None)];
        let table = render_on(&samples, 2);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "run\twall_s\tsetup_s\tcpu_s\tcpu_per_core_s\tpeak_rss_mib\tcritical_path_s\twall_per_critical\tscenarios\tfailed\t\
             critical_holdoff_s\tcritical_holdoff_share\tscenario_holdoff_share\t\
             contour_cpu_s\tenvoy_cpu_s\tnginx_cpu_s\tharness_cpu_s"
        );
        assert_eq!(
            lines[1],
            "1\t4.00\t0.25\t8.00\t4.00\t80.0\t2.00\t2.00\t64\t0\t0.50\t0.25\t0.10\t0.40\t0.50\t1.00\t4.00"
        );
        assert_eq!(
            lines[3], "3\t5.00\t0.25\t10.00\t5.00\t-\t2.00\t2.50\t64\t0\t-\t-\t-\t0.50\t0.50\t1.00\t5.00",
            "not measured"
        );
        assert_eq!(
            lines[4], "median\t4.00\t0.25\t8.00\t4.00\t-\t2.00\t2.00\t64\t0\t-\t-\t-\t0.40\t0.50\t1.00\t4.00",
            "memory and hold-off unknown in one run"
        );
        let measured = render_on(&samples[..2], 2);
        assert!(
            measured.ends_with(
                "median\t4.00\t0.25\t8.00\t4.00\t90.0\t2.00\t2.00\t64\t0\t0.50\t0.25\t0.10\t0.40\t0.50\t1.00\t4.00\n"
            ),
            "{measured}"
        );
    }

    #[test]
    fn the_hold_off_on_the_critical_path_is_that_of_its_scenarios() {
        let held = |seconds: u64, held_off: u64| ScenarioOutcome {
            held_off: Some(Duration::from_millis(held_off)),
            ..outcome(seconds)
        };
        let outcomes = [held(3, 100), held(5, 200), held(2, 400), held(4, 800)];
        let on_path = |alone: &[bool]| -> Duration {
            on_critical_path(&outcomes, alone).into_iter().map(|o| o.held_off.unwrap()).sum()
        };
        assert_eq!(on_path(&[false; 4]), Duration::from_millis(200), "the longest of those side by side");
        assert_eq!(on_path(&[false, true, false, true]), Duration::from_millis(100 + 200 + 800));
    }

    #[test]
    fn this_process_has_spent_cpu_and_holds_memory() {
        assert!(cpu_time() > Duration::ZERO);
        reset_peak_rss();
        assert!(peak_rss().is_some_and(|b| b > 0));
    }
}
