//! Standard output that cannot take the CLI's output: a reader that goes away early (`list |
//! head -1`) ends the output quietly with the command's own exit code, and a device that
//! refuses writes (`schema > /dev/full`) is said in one line with exit code 3, never a panic.

use std::process::{Command, Stdio};

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_upstream-tls-conformance"));
    command.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    command
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    for args in [&["list"][..], &["schema"], &["differential", "--show", "3"]] {
        let mut child = cli().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The read end closes before the command has written: its first write meets a closed pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_full_device_is_an_error_in_one_line() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("NOT RUN: no /dev/full on this machine");
        return;
    };
    let output = cli().arg("schema").stdout(full).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr, "error: cannot write to standard output: No space left on device (os error 28)\n");
}
