//! Standard output that cannot take the CLI's output: a reader that goes away early (`list |
//! head -1`) ends the output quietly with the command's own exit code, and a device that
//! refuses writes (`schema > /dev/full`) is said in one line with exit code 3 (unless the
//! command failed anyway), never a panic; every subcommand is tried both ways.

use std::process::{Command, Stdio};

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"));
    command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    command
}

/// Every subcommand, with arguments that make it print and finish soon, and the exit code it
/// gives when its output is taken. `run`, `bench` and `catalog` run one quick scenario on
/// loopback; `contour-config` reads Contour's config from standard input (empty here).
fn every_subcommand(reports: &std::path::Path) -> Vec<(Vec<String>, i32)> {
    let quick = "ca-secret-empty-namespace-reference";
    let words = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    vec![
        (words("list"), 0),
        (words("check"), 0),
        (words("schema"), 0),
        (words("schema --report"), 0),
        (words("differential --show 3"), 0),
        (words("explain validation-wrong-ca"), 0),
        (words("certify schema"), 0),
        (words("contour-config --config examples/implementation.yaml"), 0),
        (words("cleanup"), 0),
        (words(&format!("run --filter {quick} --reports {}", reports.display())), 0),
        (words(&format!("bench --runs 1 --filter {quick}")), 0),
        // One scenario cannot catch every fault: the catalog's own verdict is a failure.
        (words(&format!("catalog --filter {quick}")), 1),
    ]
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let reports = std::env::temp_dir().join(format!("utls-output-pipe-{}", std::process::id()));
    for (args, code) in every_subcommand(&reports) {
        let mut child =
            cli().args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The read end closes before the command has written: its first write meets a closed pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&reports);
}

#[test]
fn a_full_device_is_an_error_in_one_line() {
    if std::fs::OpenOptions::new().write(true).open("/dev/full").is_err() {
        eprintln!("NOT RUN: no /dev/full on this machine");
        return;
    }
    let reports = std::env::temp_dir().join(format!("utls-output-full-{}", std::process::id()));
    for (args, code) in every_subcommand(&reports) {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let output = cli().args(&args).stdin(Stdio::null()).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A command that would have succeeded fails for its output; one that failed says so.
        let expected = if code == 0 { 3 } else { code };
        assert_eq!(output.status.code(), Some(expected), "{args:?}: {stderr}");
        let said: Vec<&str> = stderr.lines().filter(|l| l.contains("standard output")).collect();
        assert_eq!(
            said,
            ["error: cannot write to standard output: No space left on device (os error 28)"],
            "{args:?}: said once, in one line: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&reports);
}
