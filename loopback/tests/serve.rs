//! `loopback serve` as a user runs it: it prints where to reach it, and on Ctrl-C (SIGINT)
//! it stops every backend process it started and removes its files. And a loopback cluster
//! dropped without shutting down (a test that panics) leaves no backend process behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Processes whose command line mentions `needle` (nginx pods run from the work directory).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// `pids` and every process whose parent is one of them (nginx workers).
fn with_children(pids: Vec<u32>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    let mut all = pids.clone();
    for pid in entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the parenthesised command name: state, then parent pid.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent.is_some_and(|p| pids.contains(&p)) {
            all.push(pid);
        }
    }
    all
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

const BACKEND: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web, namespace: default}
data:
  nginx.conf: |
    worker_processes 1;
    pid nginx.pid;
    events {}
    http {
        client_body_temp_path tmp-body;
        proxy_temp_path tmp-proxy;
        fastcgi_temp_path tmp-fastcgi;
        uwsgi_temp_path tmp-uwsgi;
        scgi_temp_path tmp-scgi;
        access_log /dev/stdout;
        server { listen 8080; location / { return 200 "ok\n"; } }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: nginx
          image: nginx
          command: [nginx, -p, /run/web/, -c, /etc/web/nginx.conf, -e, stderr, -g, "daemon off;"]
          ports: [{containerPort: 8080}]
          volumeMounts:
            - {name: conf, mountPath: /etc/web}
            - {name: run, mountPath: /run/web}
      volumes:
        - {name: conf, configMap: {name: web}}
        - {name: run, emptyDir: {}}
"#;

/// Applies [`BACKEND`] with kubectl and returns its nginx processes once it is available.
fn deploy_backend(kubeconfig: &std::path::Path, work_dir: &std::path::Path) -> Vec<u32> {
    deploy(kubeconfig, work_dir, BACKEND)
}

/// Applies `manifest` (a Deployment `web` in `default`) and returns its nginx processes once
/// it is available.
fn deploy(kubeconfig: &std::path::Path, work_dir: &std::path::Path, manifest_text: &str) -> Vec<u32> {
    let manifest = work_dir.join("backend.yaml");
    std::fs::write(&manifest, manifest_text).unwrap();
    let kubectl = |args: &[&str]| {
        let output = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
        assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    kubectl(&["apply", "--server-side", "--validate=false", "-f", manifest.to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Available", "deployment/web", "--timeout=60s"]);
    // nginx listens (so the pod is ready) before it forks its worker.
    let nginx = || with_children(processes_mentioning(work_dir.to_str().unwrap()));
    assert!(wait_until(Duration::from_secs(10), || nginx().len() >= 2), "no nginx master and worker: {:?}", nginx());
    nginx()
}

/// Interrupts `loopback serve` when the test ends, passed or not.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; harmless if it has exited.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[test]
fn a_dropped_loopback_leaves_no_backend_behind() {
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(loopback::Loopback::start(Default::default())).expect("loopback starts");
    let work_dir = cluster.kubeconfig().parent().unwrap().to_path_buf();
    let nginx = deploy_backend(cluster.kubeconfig(), &work_dir);
    drop(cluster);
    drop(runtime);
    assert!(wait_until(Duration::from_secs(10), || !nginx.iter().any(|p| alive(*p))), "nginx left behind: {nginx:?}");
    assert!(!work_dir.exists(), "work directory left behind: {}", work_dir.display());
}

/// Which process group `pid` is in.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, parent pid, process group.
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn a_pod_config_cannot_escape_its_pod() {
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let stray_pid = std::env::temp_dir().join(format!("loopback-stray-{}.pid", std::process::id()));
    let hostile = BACKEND
        .replace(
            "worker_processes 1;\n    pid nginx.pid;",
            &format!("daemon on;\n    user root;\n    worker_processes 1;\n    pid {};", stray_pid.display()),
        )
        .replace("listen 8080;", "listen 0.0.0.0:8080;")
        .replace(", -g, \"daemon off;\"", "");
    assert!(hostile.contains("daemon on;") && hostile.contains("0.0.0.0:8080") && !hostile.contains("daemon off"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(loopback::Loopback::start(Default::default())).expect("loopback starts");
    let work_dir = cluster.kubeconfig().parent().unwrap().to_path_buf();
    let nginx = deploy(cluster.kubeconfig(), &work_dir, &hostile);

    // In the foreground, in one process group led by the process loopback started.
    let groups: Vec<_> = nginx.iter().map(|p| process_group(*p)).collect();
    assert!(groups.iter().all(|g| *g == groups[0] && g.is_some_and(|g| nginx.contains(&g))), "{nginx:?}: {groups:?}");
    // Bound to the pod's address only, its pid file in the pod.
    let pod_ip = String::from_utf8(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pod_ip: std::net::Ipv4Addr = pod_ip.parse().expect("the pod has an address");
    assert!(std::net::TcpStream::connect((pod_ip, 8080)).is_ok(), "the pod serves on {pod_ip}:8080");
    let elsewhere = std::net::Ipv4Addr::new(127, 0, 0, 1);
    assert!(std::net::TcpStream::connect((elsewhere, 8080)).is_err(), "nothing listens on 127.0.0.1:8080");
    assert!(!stray_pid.exists(), "the pid file stays in the pod: {}", stray_pid.display());

    drop(cluster);
    drop(runtime);
    assert!(wait_until(Duration::from_secs(10), || !nginx.iter().any(|p| alive(*p))), "nginx left behind: {nginx:?}");
}

#[test]
fn serve_prints_its_addresses_and_cleans_up_on_ctrl_c() {
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopback"))
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("loopback starts");
    let stdout = child.stdout.take().unwrap();
    let mut child = Serving(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut kubeconfig = None;
    let mut proxy = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("kubeconfig: ") {
            kubeconfig = Some(PathBuf::from(path.trim()));
        }
        if let Some(address) = line.strip_prefix("proxy: ") {
            proxy = Some(address.trim().to_string());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let kubeconfig = kubeconfig.expect("the kubeconfig path is printed");
    assert!(proxy.expect("the proxy address is printed").parse::<std::net::SocketAddr>().is_ok());
    let work_dir = kubeconfig.parent().unwrap().to_path_buf();

    let nginx = deploy_backend(&kubeconfig, &work_dir);

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit on Ctrl-C: {status:?}");
    assert!(wait_until(Duration::from_secs(10), || !nginx.iter().any(|p| alive(*p))), "nginx left behind: {nginx:?}");
    assert!(!work_dir.exists(), "work directory left behind: {}", work_dir.display());
}

/// A pod whose nginx config reaches for `host`: each must be refused, its pod left waiting.
fn hostile_pods(host: &std::path::Path) -> Vec<(&'static str, String)> {
    let host = host.display();
    vec![
        ("alias-root", format!("location / {{ alias {host}/; autoindex on; }}")),
        ("dav-absolute-root", format!("root {host}; location / {{ dav_methods PUT; }}")),
        ("proxy-store-path", format!("location / {{ proxy_store {host}$uri; proxy_pass http://127.0.0.1:9; }}")),
    ]
}

/// A Pod `name` in `default` running nginx with `server` as its one server's body, with no
/// access log of its own.
fn pod_manifest(name: &str, server: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: default}}
data:
  nginx.conf: |
    worker_processes 1;
    pid nginx.pid;
    events {{}}
    http {{
        client_body_temp_path tmp-body;
        proxy_temp_path tmp-proxy;
        fastcgi_temp_path tmp-fastcgi;
        uwsgi_temp_path tmp-uwsgi;
        scgi_temp_path tmp-scgi;
        server {{ listen 8080; {server} }}
    }}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}
spec:
  containers:
    - name: nginx
      image: nginx
      command: [nginx, -p, /run/web/, -c, /etc/web/nginx.conf, -e, stderr, -g, "daemon off;"]
      ports: [{{containerPort: 8080}}]
      volumeMounts:
        - {{name: conf, mountPath: /etc/web}}
        - {{name: run, mountPath: /run/web}}
  volumes:
    - {{name: conf, configMap: {{name: {name}}}}}
    - {{name: run, emptyDir: {{}}}}
"#
    )
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// One HTTP/1.0 exchange with `address`; the status line's code.
fn http(address: (std::net::Ipv4Addr, u16), request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The escapes found by trying a hostile scenario, run against the cluster of `kubeconfig`:
/// the pods that reach outside are refused and `host` stays as it was; the pod that may run
/// takes a WebDAV PUT into its own directory and logs nowhere on the host.
fn escapes_leave_the_host_untouched(kubeconfig: &std::path::Path, test: &str) {
    // One per test: the tests of a binary run at once.
    let host = std::env::temp_dir().join(format!("loopback-host-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    // Writable by anyone: only the confinement stands between a pod and it.
    std::fs::set_permissions(&host, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777))
        .unwrap();
    std::fs::write(host.join("secret"), "host file\n").unwrap();
    let host_log = std::path::Path::new("/var/log/nginx/access.log");
    let log_before = std::fs::metadata(host_log).map(|m| m.len()).ok();

    for (name, server) in hostile_pods(&host) {
        kubectl(
            kubeconfig,
            &["apply", "--server-side", "--validate=false", "-f", "-"],
            Some(&pod_manifest(name, &server)),
        );
    }
    let allowed = "root .; location / { dav_methods PUT; create_full_put_path on; }";
    kubectl(
        kubeconfig,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(&pod_manifest("allowed", allowed)),
    );
    kubectl(kubeconfig, &["wait", "--for=condition=Ready", "pod/allowed", "--timeout=60s"], None);

    for (name, _) in hostile_pods(&host) {
        let waiting = || {
            kubectl(
                kubeconfig,
                &["get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}"],
                None,
            )
        };
        assert!(
            wait_until(Duration::from_secs(30), || waiting() == "CreateContainerConfigError"),
            "{name}: the pod is refused, not run: {:?}",
            waiting()
        );
        let message = kubectl(
            kubeconfig,
            &["get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}"],
            None,
        );
        assert!(message.contains("outside the pod") || message.contains("with a path"), "{name}: {message}");
    }

    let ip: std::net::Ipv4Addr =
        kubectl(kubeconfig, &["get", "pod", "allowed", "-o", "jsonpath={.status.podIP}"], None).parse().unwrap();
    let put = "PUT /dir/put.txt HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(http((ip, 8080), put), 201, "the allowed pod takes a PUT");
    assert_eq!(http((ip, 8080), "GET /dir/put.txt HTTP/1.0\r\n\r\n"), 200, "and serves it back");
    assert_eq!(http((ip, 8080), "GET /../../../../etc/passwd HTTP/1.0\r\n\r\n") / 100, 4);

    let entries: Vec<_> = std::fs::read_dir(&host).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["secret"], "nothing was written to the host directory");
    assert_eq!(std::fs::read_to_string(host.join("secret")).unwrap(), "host file\n");
    assert_eq!(
        std::fs::metadata(host_log).map(|m| m.len()).ok(),
        log_before,
        "nothing logged to {}",
        host_log.display()
    );
    std::fs::remove_dir_all(&host).unwrap();
}

#[test]
fn pods_that_reach_for_the_host_are_refused_and_the_host_is_untouched() {
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(loopback::Loopback::start(Default::default())).expect("loopback starts");
    escapes_leave_the_host_untouched(cluster.kubeconfig(), "root");
    runtime.block_on(cluster.shutdown());
}

/// loopback run by an ordinary user, as most users run it: it starts, runs pods, keeps them
/// in their directories and cleans up on Ctrl-C. Run as root, the test runs it as `nobody`.
#[test]
fn an_unprivileged_user_runs_loopback_and_its_pods_stay_confined() {
    use std::os::unix::process::CommandExt;
    if !std::path::Path::new("/usr/bin/kubectl").exists() {
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_loopback"));
    command.arg("serve").stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        const NOBODY: u32 = 65534;
        command.uid(NOBODY).gid(NOBODY).env("HOME", "/nonexistent").env_remove("TMPDIR");
    }
    let mut child = command.spawn().expect("loopback starts");
    let stdout = child.stdout.take().unwrap();
    let mut child = Serving(child);
    let mut kubeconfig = None;
    // Kept open until the end: loopback's output must have somewhere to go.
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("kubeconfig: ") {
            kubeconfig = Some(PathBuf::from(path.trim()));
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        panic!("loopback serve did not start as an unprivileged user: {stderr}");
    };
    let work_dir = kubeconfig.parent().unwrap().to_path_buf();
    // SAFETY: getuid(2) has no preconditions.
    let me = unsafe { libc::getuid() };
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&work_dir).unwrap());
    assert!(me != 0 || owner == 65534, "the work directory belongs to the user running loopback: {owner}");

    escapes_leave_the_host_untouched(&kubeconfig, "unprivileged");

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit on Ctrl-C: {status:?}");
    assert!(!work_dir.exists(), "work directory left behind: {}", work_dir.display());
}
