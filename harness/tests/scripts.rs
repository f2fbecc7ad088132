//! The scripts a user or a nightly job runs: each answers --help; the kind scripts' dry runs
//! print every command in order (the clean-up trap set before the cluster is made, the image
//! pinned, the backend image loaded, Contour configured from the implementation config, two
//! passes, logs collected, the cluster deleted); shellcheck finds nothing; and the Contour
//! config they write is one the real Contour reads, where the old text edit was not.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every script in scripts/ (not the sourced library).
fn scripts() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// Runs a script; returns its exit code, stdout and stderr.
fn script(name: &str, args: &[&str]) -> (i32, String, String) {
    script_with_env(name, args, &[])
}

/// Runs a script with these environment variables set besides PATH.
fn script_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new("bash")
        .arg(root().join("scripts").join(name))
        .args(args)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The commands a dry run printed, without the `+ ` marks.
fn commands(stderr: &str) -> Vec<&str> {
    stderr.lines().filter_map(|l| l.strip_prefix("+ ")).collect()
}

fn position(commands: &[&str], prefix: &str) -> usize {
    commands
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no command starting with {prefix:?} in:\n{}", commands.join("\n")))
}

#[test]
fn every_script_answers_help() {
    assert!(scripts().len() >= 8, "{:?}", scripts());
    for path in scripts() {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (code, stdout, stderr) = script(name, &["--help"]);
        assert_eq!(code, 0, "{name} --help: {stderr}");
        assert!(stdout.lines().count() >= 2, "{name} --help says too little: {stdout}");
        assert!(!stdout.contains("#!/usr/bin/env"), "{name}: {stdout}");
    }
}

#[test]
fn the_kind_set_up_dry_run_shows_each_step_in_order() {
    // `run --provision k3s` points the installer at its own binary and kubeconfig context.
    let (code, _, stderr) = script_with_env(
        "install-contour",
        &["--dry-run"],
        &[("KUBE_CONTEXT", "default"), ("HARNESS_BIN", "/bin/upstream-tls-conformance")],
    );
    assert_eq!(code, 0, "{stderr}");
    let installer = commands(&stderr);
    position(
        &installer,
        "kubectl --context default apply -f https://raw.githubusercontent.com/projectcontour/contour/",
    );
    position(&installer, "/bin/upstream-tls-conformance contour-config --config examples/implementation.yaml");
    assert!(!installer.iter().any(|c| c.contains("cargo run")), "{installer:?}");

    let (code, stdout, stderr) = script("kind-up", &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    let commands = commands(&stderr);
    let create = position(&commands, "kind create cluster --name upstream-tls --image kindest/node:v1.34.0@sha256:");
    let install = position(
        &commands,
        "kubectl --context kind-upstream-tls apply -f https://raw.githubusercontent.com/projectcontour/contour/v1.33.6/examples/render/contour.yaml",
    );
    let configure =
        position(&commands, "cargo run --quiet -p harness -- contour-config --config examples/implementation.yaml");
    let restart =
        position(&commands, "kubectl --context kind-upstream-tls -n projectcontour rollout restart deployment/contour");
    let load = position(&commands, "docker exec upstream-tls-control-plane crictl pull nginx:1.27");
    let expose = position(&commands, "kubectl --context kind-upstream-tls -n projectcontour patch service envoy");
    // The image is in the node before Contour's pods start; Contour is installed by
    // scripts/install-contour, which `run --provision k3s` uses too.
    let installer = position(&commands, "scripts/install-contour --dry-run");
    assert!(create < load && load < installer && installer < install);
    assert!(install < configure && configure < restart && restart < expose);
    assert!(stdout.contains("UPSTREAM_TLS_PROXY=127.0.0.1:9080"), "{stdout}");
    assert!(stdout.contains("UPSTREAM_TLS_TLS_PROXY=127.0.0.1:9443"), "{stdout}");
}

#[test]
fn the_nightly_dry_run_cleans_up_whatever_happens_and_runs_both_installations() {
    let (code, _, stderr) = script("nightly", &["--dry-run", "--", "--filter", "validation"]);
    assert_eq!(code, 0, "{stderr}");
    let commands = commands(&stderr);
    let build = position(&commands, "cargo build --quiet -p harness");
    let up = position(&commands, "scripts/kind-up --dry-run");
    let first = position(
        &commands,
        "timeout --foreground --kill-after=60 1800 target/debug/upstream-tls-conformance run --config examples/implementation.yaml --context kind-upstream-tls --image nginx:1.27 --implementation-version v1.33.6 --reports reports/nightly/pass-1 --filter validation",
    );
    let logs_1 = position(
        &commands,
        "kubectl --context kind-upstream-tls -n projectcontour logs pod/contour-POD --all-containers --timestamps > reports/nightly/logs/pass-1/contour-POD.log",
    );
    let dump_1 =
        position(&commands, "envoy_config_dump pod/envoy-POD > reports/nightly/logs/pass-1/envoy-POD-config-dump.json");
    let reconfigure = position(
        &commands,
        "target/debug/upstream-tls-conformance contour-config --config examples/implementation-tls12.yaml",
    );
    let second = position(
        &commands,
        "timeout --foreground --kill-after=60 1800 target/debug/upstream-tls-conformance run --config examples/implementation-tls12.yaml",
    );
    let logs_2 = position(
        &commands,
        "kubectl --context kind-upstream-tls -n projectcontour logs pod/contour-POD --all-containers --timestamps > reports/nightly/logs/pass-2/contour-POD.log",
    );
    let kind_logs = position(&commands, "kind export logs reports/nightly/logs/kind --name upstream-tls");
    let delete = position(&commands, "kind delete cluster --name upstream-tls");
    assert!(build < up && up < first && first < logs_1 && logs_1 < dump_1 && dump_1 < reconfigure);
    assert!(reconfigure < second && second < logs_2 && logs_2 < kind_logs);
    assert!(kind_logs < delete && delete == commands.len() - 1);

    // The book's page on real clusters shows this dry run (temporary paths written as $TMP).
    let (_, _, plain) = script("nightly", &["--dry-run"]);
    let mut shown = String::new();
    for line in plain.lines() {
        let mut line = line.to_string();
        while let Some(start) = line.find("/tmp/tmp.") {
            let end = line[start + 9..].find('/').map_or(line.len(), |i| start + 9 + i);
            line.replace_range(start..end, "$TMP");
        }
        shown.push_str(&line);
        shown.push('\n');
    }
    let page = std::fs::read_to_string(root().join("book/src/real-cluster.md")).unwrap();
    assert!(
        page.contains(&shown),
        "book/src/real-cluster.md's nightly dry run is out of date; it should show:\n{shown}"
    );

    // The trap is set before anything is created: a failing set-up is still cleaned up.
    let text = std::fs::read_to_string(root().join("scripts/nightly")).unwrap();
    let trap = text.find("trap finish EXIT").expect("a clean-up trap");
    assert!(trap < text.find("run_script scripts/kind-up").unwrap(), "the trap comes first");
}

#[test]
fn each_mutation_judge_runs_its_own_tests_first_and_then_only_its_files() {
    let (code, _, stderr) = script("mutants", &["--dry-run", "--judge", "checkers"]);
    assert_eq!(code, 0, "{stderr}");
    let commands = commands(&stderr);
    // The checkers answer to the fault matrix: a check that lets a faulted run pass is caught.
    let baseline = position(
        &commands,
        "env UPSTREAM_TLS_REPORTS=reports/mutants/checkers/last-run cargo test -q -p harness --test conformance --test mutation",
    );
    let mutants =
        position(&commands, "env UPSTREAM_TLS_REPORTS=reports/mutants/checkers/last-run cargo mutants --in-place");
    assert!(baseline < mutants, "{commands:?}");
    let run = commands[mutants];
    assert!(run.contains("--baseline skip"), "{run}");
    assert!(
        run.ends_with("--file harness/src/traffic.rs --file harness/src/status_match.rs -- --test mutation"),
        "{run}"
    );

    // The xDS translation is judged through the real Contour, the model through the reference
    // controller.
    let (code, _, stderr) = script("mutants", &["--dry-run", "--judge", "xds"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("UPSTREAM_TLS_CONTROLLER=contour cargo mutants"), "{stderr}");
    let (code, _, stderr) = script("mutants", &["--dry-run", "--judge", "model", "--file", "loopback/src/x509.rs"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("UPSTREAM_TLS_CONTROLLER"), "{stderr}");
    assert!(stderr.contains("--timeout 240 --build-timeout 900 --file loopback/src/x509.rs\n"), "{stderr}");

    for (args, message) in [
        (&["--file", "loopback/src/x509.rs"][..], "error: --file needs --judge"),
        (&["--judge", "proxy"][..], "error: --judge takes model, xds, checkers or all, not 'proxy'"),
        (&["--shard", "4"][..], "error: --shard takes K/N (as 0/4), not '4'"),
        (&["--diff", "no-such-revision"][..], "error: --diff no-such-revision: no such revision here"),
    ] {
        let (code, _, stderr) = script("mutants", args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
    }
}

#[test]
fn scripts_without_a_dry_run_say_so() {
    let (code, _, stderr) = script("ensure-nginx", &["--dry-run"]);
    // It would install nginx: --dry-run is refused, not ignored.
    assert_eq!((code, stderr.trim()), (2, "error: ensure-nginx has no --dry-run (see --help)"));
}

#[test]
fn shellcheck_finds_nothing() {
    let shellcheck = std::env::var("UPSTREAM_TLS_SHELLCHECK").unwrap_or_else(|_| "shellcheck".into());
    let Ok(version) = Command::new(&shellcheck).arg("--version").output() else {
        assert!(
            std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").as_deref() != Ok("1"),
            "shellcheck is missing (scripts/test installs it into .cache/shellcheck)"
        );
        eprintln!("skipped: shellcheck is not installed");
        return;
    };
    assert!(version.status.success());
    let mut command = Command::new(&shellcheck);
    command.arg("-x").args(scripts()).arg(root().join("scripts/lib/common.sh")).arg(root().join(".ci/run"));
    let output = command.current_dir(root()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Contour's quickstart config text, from the Go module ensure-contour fetched.
fn quickstart_config(version: &str) -> Option<String> {
    let cache = std::env::var("GOMODCACHE")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|home| format!("{home}/go/pkg/mod")))?;
    let path = format!("{cache}/github.com/projectcontour/contour@{version}/examples/render/contour.yaml");
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(&std::fs::read_to_string(path).ok()?).ok()?;
    let config_map = documents.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "contour")?;
    config_map["data"]["contour.yaml"].as_str().map(str::to_string)
}

/// What `contour serve` says about a config file: it reads it before it needs a cluster.
fn contour_reads(contour: &Path, config: &Path) -> String {
    let output = Command::new(contour)
        .args(["serve", "--kubeconfig", "/nonexistent/kubeconfig", "--config-path"])
        .arg(config)
        .output()
        .expect("contour runs");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_real_contour_reads_the_config_the_scripts_write() {
    let settings = loopback::config::ContourSettings::default();
    let (contour, quickstart) = (settings.binary(), quickstart_config(settings.version()));
    let (true, Some(quickstart)) = (contour.exists(), quickstart) else {
        assert!(
            std::env::var("UPSTREAM_TLS_REQUIRE_CONTOUR").as_deref() != Ok("1"),
            "Contour is not built (scripts/ensure-contour)"
        );
        eprintln!("skipped: Contour is not built");
        return;
    };
    let dir = std::env::temp_dir().join(format!("utls-contour-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.yaml");
    std::fs::write(&base, &quickstart).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"))
        .args(["contour-config", "--config"])
        .arg(root().join("examples/implementation.yaml"))
        .arg("--base")
        .arg(&base)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = dir.join("contour.yaml");
    std::fs::write(&written, &output.stdout).unwrap();
    let said = contour_reads(&contour, &written);
    assert!(!said.contains("failed to parse configuration"), "{said}");
    assert!(said.contains("failed to create REST config"), "Contour read the file and went on: {said}");

    // What kind-up used to do: append a second `tls:` block to the quickstart's.
    let appended = dir.join("appended.yaml");
    let tls = "tls:\n  envoy-client-certificate:\n    name: envoy-client\n    namespace: upstream-tls-conformance\n";
    std::fs::write(&appended, format!("{quickstart}\n{tls}")).unwrap();
    let said = contour_reads(&contour, &appended);
    assert!(said.contains("mapping key \"tls\" already defined"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn both_nightly_installations_load_and_differ_as_the_catalog_needs() {
    use harness::config::ImplementationConfig;
    let first = ImplementationConfig::load(&root().join("examples/implementation.yaml")).unwrap();
    let second = ImplementationConfig::load(&root().join("examples/implementation-tls12.yaml")).unwrap();
    assert!(first.installation.envoy_client_certificate.is_some());
    assert!(second.installation.envoy_client_certificate.is_none());
    assert_eq!(second.installation.upstream_tls.maximum_protocol_version, Some(loopback::config::TlsVersion::V1_2));
}

#[test]
fn every_tested_contour_release_has_a_pinned_kind_node_image() {
    let pins = std::fs::read_to_string(root().join("kind-config/node-images")).unwrap();
    for version in loopback::config::contour_versions() {
        let image = pins
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(&format!("{version} ")))
            .unwrap_or_else(|| panic!("no node image for Contour {version}"));
        let (image, kind) = image.split_once(' ').unwrap_or_else(|| panic!("{version}: no kind release"));
        assert!(image.starts_with("kindest/node:v1.") && image.contains("@sha256:"), "{version}: {image}");
        let release = kind.strip_prefix("v0.").map(|rest| rest.split('.').all(|n| n.parse::<u32>().is_ok()));
        assert_eq!(release, Some(true), "{version}: kind {kind:?} is a release such as v0.30.0");
    }
    let env = [("CONTOUR_VERSION", "v1.32.1")];
    let output = Command::new("bash").arg(root().join("scripts/kind-up")).arg("--dry-run").envs(env).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--image kindest/node:v1.33.0@sha256:"), "{stderr}");
}

#[test]
fn the_nightly_workflow_runs_the_scripts_for_every_tested_release() {
    let text = std::fs::read_to_string(root().join(".github/workflows/nightly.yml")).unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).expect("the workflow parses");
    assert!(workflow["on"]["schedule"][0]["cron"].is_string(), "scheduled");
    assert!(workflow["on"].get("workflow_dispatch").is_some(), "and started by hand");
    let job = &workflow["jobs"]["kind"];
    assert!(job["timeout-minutes"].as_u64().is_some_and(|m| m <= 120), "a time limit");
    let matrix: Vec<&str> =
        job["strategy"]["matrix"]["contour"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(matrix, loopback::config::contour_versions(), "the releases of loopback/contour-versions");
    let kubectl = job["env"]["KUBECTL_VERSION"].as_str().unwrap_or_default();
    let pinned = kubectl.strip_prefix('v').is_some_and(|v| v.split('.').all(|n| n.parse::<u32>().is_ok()));
    assert!(pinned && kubectl.split('.').count() == 3, "kubectl pinned to a release: {kubectl:?}");
    let steps = job["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().map(|s| s["run"].as_str().unwrap_or_default()).collect();
    let index =
        |text: &str| runs.iter().position(|r| r.contains(text)).unwrap_or_else(|| panic!("no step runs {text}"));
    // kind is the release kind-config/node-images pairs with the matrix's Contour release.
    let install = index("kind.sigs.k8s.io/dl/${KIND_VERSION}");
    assert!(runs[install].contains("kind-config/node-images"), "{}", runs[install]);
    // Every action is pinned by commit, not by a tag that can move.
    for step in steps.iter().filter_map(|s| s["uses"].as_str()) {
        let (_, commit) = step.split_once('@').unwrap_or_default();
        assert!(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "{step} is pinned by commit");
    }
    let nightly = runs.iter().position(|r| r.trim() == "scripts/nightly").expect("a step runs scripts/nightly");
    assert!(index("cargo build") < nightly, "the harness is built before the cluster exists");
    // Compared with last night's reports of the same release, fetched into what BASELINE names.
    let previous = index("gh run download");
    assert!(previous < nightly && runs[previous].contains("\"nightly-contour-$CONTOUR_VERSION\" --dir baseline"));
    assert_eq!(steps[nightly]["env"]["BASELINE"], "baseline");
    assert_eq!(workflow["permissions"]["actions"], "read", "the token may read earlier runs' artifacts");
    for run in &runs {
        for word in run.split_whitespace().filter(|w| w.starts_with("scripts/")) {
            assert!(root().join(word).is_file(), "a step calls {word}, which does not exist");
        }
    }
    for step in
        steps.iter().filter(|s| s["name"].as_str().is_some_and(|n| n.contains("summary") || n.contains("Upload")))
    {
        assert_eq!(step["if"], "always()", "{step}");
    }
}

/// The scripts run for real against stand-ins for docker, kind, kubectl, crictl, curl and the
/// harness (`harness/tests/fake-tools/fake`), which record every call: what a dry run cannot
/// show (the order of calls as executed, loops over nodes and pods, exit paths).
struct Fakes {
    dir: PathBuf,
    log: PathBuf,
}

impl Fakes {
    fn new(name: &str) -> Fakes {
        let dir = std::env::temp_dir().join(format!("utls-fakes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let fake = root().join("harness/tests/fake-tools/fake");
        for tool in ["docker", "kind", "kubectl", "crictl", "curl", "cargo", "upstream-tls-conformance"] {
            std::os::unix::fs::symlink(&fake, dir.join("bin").join(tool)).unwrap();
        }
        Fakes { log: dir.join("calls.log"), dir }
    }

    /// Runs `script` with the fakes first on PATH; its exit code and the calls made, in order.
    fn run(&self, script: &str, env: &[(&str, &str)]) -> (i32, Vec<String>, String) {
        let output = Command::new(root().join("scripts").join(script))
            .env_clear()
            .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", self.dir.join("bin").display()))
            .env("HOME", &self.dir)
            .env("FAKE_LOG", &self.log)
            .env("HARNESS_BIN", self.dir.join("bin/upstream-tls-conformance"))
            .env("REPORTS", self.dir.join("reports"))
            .env("RETRY_PAUSE", "0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&self.log).unwrap_or_default();
        let calls = calls.lines().map(|l| l.replace(&self.dir.display().to_string(), "$FAKES")).collect();
        (output.status.code().unwrap_or(-1), calls, String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The index of the first call starting with `prefix` at or after `from`.
fn called(calls: &[String], prefix: &str, from: usize) -> usize {
    calls[from..]
        .iter()
        .position(|c| c.starts_with(prefix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no call `{prefix}` after call {from} in:\n{}", calls.join("\n")))
}

#[test]
fn kind_up_pulls_the_backend_image_in_every_node_and_retries_a_refused_pull() {
    let fakes = Fakes::new("kind-up");
    // The first pull is refused (a registry's 429): it is made again.
    let (code, calls, stderr) = fakes.run("kind-up", &[("FAKE_EXIT_DOCKER_1", "1")]);
    assert_eq!(code, 0, "{stderr}\n{calls:#?}");
    let create = called(&calls, "kind create cluster --name upstream-tls --image kindest/node:v1.34.0@sha256:", 0);
    let nodes = called(&calls, "kind get nodes --name upstream-tls", create);
    let first = called(&calls, "docker exec upstream-tls-control-plane crictl pull nginx:1.27", nodes);
    let again = called(&calls, "docker exec upstream-tls-control-plane crictl pull nginx:1.27", first + 1);
    let worker = called(&calls, "docker exec upstream-tls-worker crictl pull nginx:1.27", again);
    let install =
        called(&calls, "kubectl --context kind-upstream-tls apply -f https://raw.githubusercontent.com/", worker);
    called(&calls, "kubectl --context kind-upstream-tls -n projectcontour patch service envoy", install);
    // Never through the host's Docker image store, which breaks `kind load` for multi-platform
    // images under Docker 29's containerd store.
    assert!(!calls.iter().any(|c| c.starts_with("kind load") || c.starts_with("docker pull")), "{calls:#?}");
}

#[test]
fn the_nightly_collects_every_pod_s_logs_after_each_pass_and_always_deletes_the_cluster() {
    let fakes = Fakes::new("nightly");
    // Pass 1 fails (a scenario failed): pass 2 still runs, and the job says 1.
    let (code, calls, stderr) = fakes.run("nightly", &[("FAKE_EXIT_UPSTREAM_TLS_CONFORMANCE_2", "1")]);
    assert_eq!(code, 1, "{stderr}\n{calls:#?}");
    let pass_1 = called(&calls, "upstream-tls-conformance run --config examples/implementation.yaml", 0);
    let mut at = pass_1;
    for pod in ["pod/contour-a", "pod/contour-b", "pod/envoy-x"] {
        at = called(
            &calls,
            &format!("kubectl --context kind-upstream-tls -n projectcontour logs {pod} --all-containers"),
            at,
        );
    }
    // The config dump's port-forward runs in the background: its place in the log is not fixed.
    let reconfigure =
        called(&calls, "upstream-tls-conformance contour-config --config examples/implementation-tls12.yaml", at);
    let pass_2 =
        called(&calls, "upstream-tls-conformance run --config examples/implementation-tls12.yaml", reconfigure);
    let logs_2 = called(&calls, "kubectl --context kind-upstream-tls -n projectcontour logs pod/contour-a", pass_2);
    let digest = called(&calls, "docker exec upstream-tls-control-plane crictl inspecti nginx:1.27", logs_2);
    assert!(fakes.dir.join("reports/logs/backend-image.json").is_file(), "the pulled image's digest is kept");
    let export = called(&calls, "kind export logs $FAKES/reports/logs/kind --name upstream-tls", digest);
    assert_eq!(called(&calls, "kind delete cluster --name upstream-tls", export), calls.len() - 1);
    for pass in ["pass-1", "pass-2"] {
        for file in ["contour-a.log", "contour-b.log", "envoy-x.log", "envoy-x-config-dump.json"] {
            assert!(fakes.dir.join("reports/logs").join(pass).join(file).is_file(), "{pass}/{file}");
        }
    }
    // Each pass runs under its own time limit.
    assert!(calls.iter().all(|c| !c.starts_with("upstream-tls-conformance run") || c.contains("--reports")));
    let script = std::fs::read_to_string(root().join("scripts/nightly")).unwrap();
    assert!(
        script.contains("timeout --foreground --kill-after=60 \"$PASS_LIMIT\" \"$HARNESS_BIN\" run"),
        "a pass has a limit, and signals reach it"
    );
}

#[test]
fn each_nightly_pass_is_compared_with_the_same_pass_of_the_baseline_when_it_has_one() {
    let fakes = Fakes::new("nightly-baseline");
    let baseline = fakes.dir.join("baseline");
    std::fs::create_dir_all(baseline.join("pass-1")).unwrap();
    std::fs::write(baseline.join("pass-1/report.json"), "{}").unwrap();
    let (code, calls, stderr) = fakes.run("nightly", &[("BASELINE", baseline.to_str().unwrap())]);
    assert_eq!(code, 0, "{stderr}\n{calls:#?}");
    let pass_1 = called(&calls, "upstream-tls-conformance run --config examples/implementation.yaml", 0);
    assert!(calls[pass_1].contains("--reports $FAKES/reports/pass-1 --baseline $FAKES/baseline/pass-1/report.json"));
    let pass_2 = called(&calls, "upstream-tls-conformance run --config examples/implementation-tls12.yaml", pass_1);
    assert!(!calls[pass_2].contains("--baseline"), "last night had no second pass: {}", calls[pass_2]);
}

#[test]
fn a_nightly_pass_stopped_by_a_signal_ends_the_job_without_a_second_pass() {
    let fakes = Fakes::new("nightly-stopped");
    // Pass 1 is interrupted (130, SIGINT; 124 would be its time limit).
    let (code, calls, stderr) = fakes.run("nightly", &[("FAKE_EXIT_UPSTREAM_TLS_CONFORMANCE_2", "130")]);
    assert_eq!(code, 130, "{stderr}\n{calls:#?}");
    let pass_1 = called(&calls, "upstream-tls-conformance run --config examples/implementation.yaml", 0);
    called(&calls, "kubectl --context kind-upstream-tls -n projectcontour logs pod/contour-a", pass_1);
    assert!(!calls.iter().any(|c| c.contains("implementation-tls12")), "no second pass: {calls:#?}");
    assert!(stderr.contains("pass 1 was stopped (exit status 130): no second pass"), "{stderr}");
    assert_eq!(called(&calls, "kind delete cluster --name upstream-tls", pass_1), calls.len() - 1);
}

#[test]
fn a_rollout_that_does_not_finish_shows_the_pods_and_events() {
    let fakes = Fakes::new("rollout");
    // The first `rollout status` (Contour's deployment) times out.
    let calls_before = |calls: &[String], prefix: &str| calls.iter().filter(|c| c.contains(prefix)).count();
    let (code, calls, stderr) = fakes.run("install-contour", &[("FAKE_EXIT_KUBECTL_2", "1")]);
    assert_eq!(code, 1, "{stderr}\n{calls:#?}");
    let rollout =
        called(&calls, "kubectl --context kind-upstream-tls -n projectcontour rollout status deployment/contour", 0);
    let pods = called(&calls, "kubectl --context kind-upstream-tls -n projectcontour get pods -o wide", rollout);
    called(&calls, "kubectl --context kind-upstream-tls -n projectcontour get events --sort-by=.lastTimestamp", pods);
    assert!(stderr.contains("deployment/contour did not become ready within 180 s"), "{stderr}");
    assert_eq!(calls_before(&calls, "patch service envoy"), 0, "nothing runs after it");
}

/// The reports of `scripts/nightly --loopback`, as scripts/test leaves them.
fn rehearsal_reports() -> PathBuf {
    let dir = std::env::var_os("UPSTREAM_TLS_REHEARSAL_REPORTS").expect("UPSTREAM_TLS_REHEARSAL_REPORTS names them");
    root().join(dir)
}

#[test]
#[ignore = "reads what `scripts/nightly --loopback` left; scripts/test runs it after that rehearsal"]
fn the_loopback_rehearsal_left_the_nightly_s_artifacts_from_both_installations() {
    let reports = rehearsal_reports();
    let read = |path: &str| {
        std::fs::read_to_string(reports.join(path)).unwrap_or_else(|e| panic!("{}: {e}", reports.join(path).display()))
    };
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
    };
    let tls12_suite = "ECDHE-ECDSA-CHACHA20-POLY1305";
    let mut verdicts = Vec::new();
    for (pass, config) in [(1, "implementation.yaml"), (2, "implementation-tls12.yaml")] {
        // A real-cluster run of the whole catalog, as on kind: nothing failed, something ran.
        let report = json(&format!("pass-{pass}/report.json"));
        let target = report["target"].as_str().unwrap_or_default();
        assert!(target.starts_with("cluster from "), "pass {pass} reached the cluster as a real one: {target}");
        let totals = &report["totals"];
        assert_eq!(totals["failed"], 0, "pass {pass}: {totals}");
        assert!(totals["passed"].as_u64().is_some_and(|n| n > 20), "pass {pass} ran the catalog: {totals}");
        for file in ["junit.xml", "summary.md", "report.html", "certification.yaml"] {
            assert!(reports.join(format!("pass-{pass}/{file}")).is_file(), "pass-{pass}/{file}");
        }
        let verdict: std::collections::BTreeMap<String, String> = report["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["verdict"].as_str().unwrap().to_string()))
            .collect();
        verdicts.push(verdict);
        // Contour was configured from the pass's implementation config, as contour-configure
        // configures it on kind; Envoy's whole configuration was dumped after the pass.
        let rendered = read(&format!("logs/pass-{pass}/loopback-config.yaml"));
        assert_eq!(rendered.contains(tls12_suite), pass == 2, "{config}: the cipher suites: {rendered}");
        assert_eq!(rendered.contains("envoy-client-certificate"), pass == 1, "{config}: {rendered}");
        let dump = json(&format!("logs/pass-{pass}/envoy-config-dump.json"));
        let types: Vec<&str> = dump["configs"].as_array().unwrap().iter().filter_map(|c| c["@type"].as_str()).collect();
        for kind in ["ListenersConfigDump", "ClustersConfigDump", "RoutesConfigDump", "SecretsConfigDump"] {
            assert!(types.iter().any(|t| t.ends_with(kind)), "pass {pass}: no {kind} in {types:?}");
        }
        assert!(dump.to_string().contains("\"ingress_http\""), "pass {pass}: Contour's HTTP listener");
        assert!(!dump.to_string().contains("PRIVATE KEY"), "pass {pass}: Envoy redacts private keys");
        for log in ["contour.log", "envoy.log", "loopback.log"] {
            assert!(!read(&format!("logs/pass-{pass}/{log}")).is_empty(), "pass-{pass}/{log}");
        }
    }
    // Each installation ran what only it can: the reconfiguration between passes took effect.
    let verdict = |pass: usize, name: &str| verdicts[pass - 1].get(name).map_or("absent", String::as_str);
    for (name, first, second) in [
        ("client-certificate-presented", "passed", "skipped"),
        ("tls-versions-default-range", "passed", "skipped"),
        ("tls-versions-configured-maximum", "skipped", "passed"),
        ("tls-custom-cipher-suites", "skipped", "passed"),
        ("external-name-sni-defaults-to-the-name", "skipped", "passed"),
    ] {
        assert_eq!((verdict(1, name), verdict(2, name)), (first, second), "{name} in pass 1 and pass 2");
    }
}

#[test]
fn the_loopback_rehearsal_runs_the_nightly_s_sequence_without_docker() {
    let (code, _, stderr) = script("nightly", &["--loopback", "--dry-run", "--", "--filter", "validation"]);
    assert_eq!(code, 0, "{stderr}");
    let commands = commands(&stderr);
    assert!(!commands.iter().any(|c| ["kind ", "kubectl ", "docker "].iter().any(|t| c.starts_with(t))), "{stderr}");
    let contour = position(&commands, "scripts/ensure-contour v1.33.6 > /dev/null");
    let envoy = position(&commands, "scripts/ensure-envoy 1.38.3 > /dev/null");
    let mut at = contour.max(envoy);
    for pass in ["1", "2"] {
        let config = if pass == "1" { "implementation.yaml" } else { "implementation-tls12.yaml" };
        let step = |at: &mut usize, prefix: String| {
            let found = position(&commands[*at..], &prefix) + *at;
            *at = found;
        };
        step(
            &mut at,
            format!(
                "target/debug/upstream-tls-conformance contour-config --config examples/{config} --base reports/nightly/logs/pass-{pass}/loopback-base.yaml > reports/nightly/logs/pass-{pass}/loopback-config.yaml"
            ),
        );
        step(
            &mut at,
            format!(
                "target/debug/loopback serve --config reports/nightly/logs/pass-{pass}/loopback-config.yaml --contour-version v1.33.6"
            ),
        );
        step(
            &mut at,
            format!(
                "timeout --foreground --kill-after=60 1800 target/debug/upstream-tls-conformance run --config examples/{config} --kubeconfig KUBECONFIG --context loopback --proxy PROXY --tls-proxy TLS_PROXY --implementation-version v1.33.6 --reports reports/nightly/pass-{pass} --filter validation"
            ),
        );
        step(&mut at, format!("cp CONTOUR_LOG reports/nightly/logs/pass-{pass}/contour.log"));
        step(
            &mut at,
            format!(
                "curl -sf http://ENVOY_ADMIN/config_dump > reports/nightly/logs/pass-{pass}/envoy-config-dump.json"
            ),
        );
        step(&mut at, "kill -TERM LOOPBACK_PID".to_string());
    }
    assert_eq!(at, commands.len() - 1, "the cluster is stopped last: {stderr}");
}
