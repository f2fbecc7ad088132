//! An interrupted `run` as a user sees it: Ctrl-C (SIGINT) or SIGTERM once the first scenario
//! has finished stops the run, removes the loopback cluster (its backends and files), writes
//! reports marked interrupted with the unfinished scenarios skipped, and exits 130 or 143; a
//! second Ctrl-C exits at once. A run that reaches its time limit (`timeouts.runSeconds`) stops
//! the same way and exits 124.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::leftovers;

/// Far longer than stopping takes; only there so a bug fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(120);

/// Kills the run when the test ends, passed or not.
struct Run {
    child: Child,
    reports: PathBuf,
    stderr: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.reports);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// Starts the whole catalog against loopback one scenario at a time (so that plenty is left
/// when the first one finishes), and returns once it has printed its first result.
fn start_and_wait_for_a_result(purpose: &str) -> Run {
    start_with_and_wait_for_a_result(purpose, &[])
}

/// [`start_and_wait_for_a_result`], with more `run` arguments (such as a cluster to run
/// against instead of the built-in loopback cluster).
fn start_with_and_wait_for_a_result(purpose: &str, arguments: &[&str]) -> Run {
    let reports = std::env::temp_dir().join(format!("utls-interrupt-{purpose}-{}", std::process::id()));
    let stderr = reports.with_extension("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["run", "--parallel", "1", "--reports"])
        .arg(&reports)
        .args(arguments)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("the CLI starts");
    let mut run = Run { child, reports, stderr };
    let stdout = run.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("PASS ") || l.starts_with("FAIL "));
    assert!(first.is_some(), "a scenario finished");
    // Keep reading so the run never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    run
}

fn signal(run: &Run, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(run.child.id() as i32, signal) };
}

fn wait(run: &mut Run) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return status.code().expect("the run exits rather than dying of the signal");
        }
        assert!(started.elapsed() < LIMIT, "the run did not stop within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stops_cleans_up_and_reports(which: i32, name: &str, code: i32) {
    let mut run = start_and_wait_for_a_result(name);
    let pid = run.child.id();
    signal(&run, which);
    assert_eq!(wait(&mut run), code);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["interrupted"], name);
    let scenarios = json["scenarios"].as_array().unwrap();
    let finished = scenarios.iter().filter(|s| s["verdict"] != "skipped").count();
    let interrupted = scenarios
        .iter()
        .filter(|s| s["skipReason"].as_str().is_some_and(|r| r.contains("interrupted before this scenario finished")))
        .count();
    assert!(finished >= 1, "the scenario that finished is reported");
    assert!(interrupted >= 1, "the scenarios that did not finish are reported as interrupted");
    let summary = std::fs::read_to_string(run.reports.join("summary.md")).unwrap();
    assert!(summary.contains(&format!("Interrupted by {name}")), "{summary}");
    let certification = std::fs::read_to_string(run.reports.join("certification.yaml")).unwrap();
    assert!(!certification.contains("result: success"), "{certification}");

    let started = Instant::now();
    while !leftovers(pid).is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing of the run is left");
}

#[test]
fn ctrl_c_stops_the_run_cleans_up_and_writes_reports() {
    stops_cleans_up_and_reports(libc::SIGINT, "SIGINT", 130);
}

#[test]
fn sigterm_stops_the_run_cleans_up_and_writes_reports() {
    stops_cleans_up_and_reports(libc::SIGTERM, "SIGTERM", 143);
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    // Against a cluster at kind's pace (loopback served as a real cluster would be), where
    // deleting the run's namespaces, the clean-up the first Ctrl-C starts, takes seconds: the
    // second Ctrl-C arrives while it is still going, however fast the machine.
    harness::init_crypto();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = loopback::LoopbackConfig { latency: loopback::LatencyProfile::Kind, ..Default::default() };
    let cluster = runtime.block_on(loopback::Loopback::start(config)).expect("loopback starts");
    let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_string();
    let proxy = cluster.proxy_address().to_string();
    let mut run = start_with_and_wait_for_a_result("twice", &["--kubeconfig", &kubeconfig, "--proxy", &proxy]);
    let pid = run.child.id();
    let stderr = run.stderr.clone();
    let said = |text: &str| std::fs::read_to_string(&stderr).unwrap_or_default().contains(text);
    signal(&run, libc::SIGINT);
    let started = Instant::now();
    while !said("SIGINT: stopping") {
        assert!(started.elapsed() < LIMIT, "the first Ctrl-C was not acknowledged");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&run, libc::SIGINT);
    assert_eq!(wait(&mut run), 130);
    assert!(said("exiting at once"), "{}", std::fs::read_to_string(&stderr).unwrap());
    // Exiting at once leaves the clean-up undone: what the `cleanup` command is for.
    for path in leftovers(pid).iter().filter(|n| !n.starts_with("process")) {
        let _ = std::fs::remove_dir_all(path);
    }
    drop(run);
    runtime.block_on(cluster.shutdown());
}

#[test]
fn a_run_stops_at_its_time_limit_cleans_up_and_reports() {
    let reports = std::env::temp_dir().join(format!("utls-run-limit-{}", std::process::id()));
    let config = reports.with_extension("yaml");
    std::fs::write(&config, "timeouts:\n  runSeconds: 2\n").unwrap();
    let stderr = reports.with_extension("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["run", "--parallel", "1", "--config"])
        .arg(&config)
        .arg("--reports")
        .arg(&reports)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("the CLI starts");
    let mut run = Run { child, reports, stderr };
    let pid = run.child.id();
    // The whole catalog, one at a time, takes far longer than 2 s.
    assert_eq!(wait(&mut run), 124, "{}", std::fs::read_to_string(&run.stderr).unwrap());
    std::fs::remove_file(&config).unwrap();
    let said = std::fs::read_to_string(&run.stderr).unwrap();
    assert!(said.contains("the run's time limit of 2 s is reached: stopping"), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["interrupted"], "the run's time limit");
    let skipped = json["scenarios"].as_array().unwrap().iter().filter(|s| s["verdict"] == "skipped").count();
    assert!(skipped >= 1, "the scenarios that did not finish are reported as skipped");
    let summary = std::fs::read_to_string(run.reports.join("summary.md")).unwrap();
    assert!(summary.contains("Interrupted by the run's time limit"), "{summary}");
    let started = Instant::now();
    while !leftovers(pid).is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers(pid), Vec::<String>::new(), "nothing of the run is left");
}

fn cleanup(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .arg("cleanup")
        .args(args)
        .env_remove("UPSTREAM_TLS_KUBECONFIG")
        .output()
        .expect("the CLI starts");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn cleanup_removes_what_dead_runs_left_and_nothing_else() {
    // A loopback work directory whose process is gone, and one whose process runs (ours).
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    // Stale ones in every place loopback makes them (memory first, then the temporary directory).
    let roots = loopback::work_roots();
    let stale: Vec<PathBuf> = roots.iter().map(|root| root.join(format!("loopback-{dead_pid}-18ed5abc-0"))).collect();
    let live = roots[0].join(format!("loopback-{}-18ed5abc-0", std::process::id()));
    // Named like one, but without the marker its cluster would have written: not provably ours.
    let unmarked = roots[0].join(format!("loopback-{dead_pid}-18ed5abc-1"));
    for dir in stale.iter().chain([&live, &unmarked]) {
        std::fs::create_dir_all(dir.join("pods/team/web")).unwrap();
        std::fs::write(dir.join("pods/team/web/tls.key"), "key").unwrap();
    }
    for dir in &stale {
        std::fs::write(dir.join(loopback::WORK_DIR_MARKER), format!("{dead_pid}\n")).unwrap();
    }
    let (code, text) = cleanup(&[]);
    assert_eq!(code, 0, "{text}");
    for dir in &stale {
        assert!(text.contains(&format!("removed {}", dir.display())), "{text}");
        assert!(!dir.exists(), "the dead run's directory {} is gone", dir.display());
    }
    assert!(live.exists(), "a running loopback's directory is kept");
    assert!(text.contains(&format!("skipped {}: it holds no", unmarked.display())), "{text}");
    assert!(unmarked.exists(), "a directory that cannot be shown to be a loopback's is kept");
    std::fs::remove_dir_all(&live).unwrap();
    std::fs::remove_dir_all(&unmarked).unwrap();

    // Namespaces on a cluster: only those the harness labelled, only the run asked for.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let loopback = runtime.block_on(loopback::Loopback::start(Default::default())).expect("loopback starts");
    let kubeconfig = loopback.kubeconfig().to_str().unwrap().to_string();
    let client = runtime.block_on(harness::cluster::ClusterClient::connect(Some(loopback.kubeconfig()), None)).unwrap();
    let namespaces = || {
        let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.client().clone());
        let list = runtime.block_on(api.list(&Default::default())).unwrap();
        list.items.into_iter().filter_map(|n| n.metadata.name).collect::<Vec<_>>()
    };
    runtime.block_on(client.create_namespace("utls-first", "run-one")).unwrap();
    runtime.block_on(client.create_namespace("utls-second", "run-two")).unwrap();
    let before = namespaces();
    assert!(before.contains(&"utls-first".to_string()) && before.contains(&"utls-second".to_string()));

    // Namespaces younger than the age given are left to the run that may still use them.
    let (code, text) = cleanup(&["--cluster", "--kubeconfig", &kubeconfig, "--older-than", "1h"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no namespace on the cluster is labelled"), "{text}");
    assert_eq!(namespaces(), before);

    let (code, text) = cleanup(&["--cluster", "--kubeconfig", &kubeconfig, "--run-id", "run-one"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("deleted namespaces: utls-first"), "{text}");
    let after_one = namespaces();
    assert!(!after_one.contains(&"utls-first".to_string()) && after_one.contains(&"utls-second".to_string()));

    let (code, text) = cleanup(&["--cluster", "--kubeconfig", &kubeconfig]);
    assert_eq!(code, 0, "{text}");
    let after_all = namespaces();
    assert!(!after_all.contains(&"utls-second".to_string()), "{after_all:?}");
    assert!(after_all.contains(&"default".to_string()), "unlabelled namespaces stay: {after_all:?}");

    let (code, text) = cleanup(&["--run-id", "x"]);
    assert_eq!(code, 2, "--run-id needs --cluster: {text}");
    runtime.block_on(loopback.shutdown());
}
