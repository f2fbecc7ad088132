//! What the harness's integration tests share.

/// What loopback clusters of process `pid` left in their work roots
/// ([`loopback::work_roots`]) and among processes: loopback's work directories carry the pid
/// of the process that made them (found by their paths), and backends run with their paths on
/// the command line (found as `process <pid>`).
pub fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("loopback-{pid}-");
    let mut found: Vec<String> = loopback::work_roots()
        .into_iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().display().to_string())
        .collect();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(&prefix) {
            found.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    found
}
