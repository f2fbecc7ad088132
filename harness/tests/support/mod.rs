//! What the harness's integration tests share.

/// What loopback clusters of process `pid` left in the temporary directory and among
/// processes: loopback's work directories carry the pid of the process that made them, and
/// backends run with their paths on the command line.
pub fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("loopback-{pid}-");
    let mut found: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(&prefix) {
            found.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    found
}
