//! The outside programs a loopback cluster runs beside its backends (the real Contour, Envoy):
//! [`Supervised`], the one way they are started, watched, logged and stopped.
//!
//! Each runs in its own process group, so stopping it stops whatever it started, and with the
//! parent-death signal set, so it never outlives a loopback that died without stopping it. Its
//! standard output and error pass through loopback on their way to its log file, a line at a
//! time, so that loopback can act on what it says (Contour's rebuilds, its xDS listener) as it
//! says it. Backends (nginx) are started by the kubelet, which restarts them as a kubelet
//! restarts containers; their start-up is cheaper without a thread each (`kubelet::pods`).

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;

/// How long an exited program's last lines may take to reach its log.
const LOG_COMPLETION_LIMIT: Duration = Duration::from_secs(2);

/// How long a killed program may take to be gone.
const KILL_LIMIT: Duration = Duration::from_secs(5);

/// A running outside program. Dropping it kills the program's process group.
///
/// The program is started, and waited for, by a thread of its own that lives exactly as long
/// as the program: the kernel's parent-death signal fires when the *thread* that started a
/// process ends, and the thread that asks for a cluster may end long before the cluster does
/// (a test harness's worker, say).
pub struct Supervised {
    name: &'static str,
    pid: i32,
    /// Set once the program has exited, with how, after its log is complete.
    exited: watch::Receiver<Option<String>>,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` as `name`, its output written to `log` (created anew) and each of its
    /// lines shown to `on_line` first, as it comes.
    ///
    /// # Errors
    /// The log cannot be created, or the program cannot be started.
    pub async fn start(
        name: &'static str,
        mut command: Command,
        log: PathBuf,
        mut on_line: impl FnMut(&[u8]) + Send + 'static,
    ) -> std::io::Result<Self> {
        let log_file = std::fs::File::create(&log)?;
        let (output, output_end) = std::io::pipe()?;
        let output_err = output_end.try_clone()?;
        command.stdin(Stdio::null()).stdout(output_end).stderr(output_err).process_group(0);
        // What `cleanup` recognises its own by: the directory the program's log is in.
        if let Some(dir) = log.parent() {
            command.env(crate::cluster::PROCESS_DIR_ENV, dir);
        }
        // SAFETY: prctl is async-signal-safe; it makes the kernel stop the program when the
        // thread below ends, which is only when the program has exited or loopback is gone.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (exited_tx, exited) = watch::channel(None);
        // Closed when the log is complete: the exit is told only after that, so the last lines
        // are in the log when someone reads why the program exited.
        let (log_complete_tx, log_complete) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new().name(format!("{name}-log")).spawn(move || {
            copy_lines(output, log_file, &mut on_line);
            drop(log_complete_tx);
        })?;
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let spawned = command.spawn();
            // The program holds the output's write ends now; the log ends when it exits.
            drop(command);
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(child.id()));
            let status = child.wait().map_or_else(|e| format!("could not be waited for: {e}"), |s| s.to_string());
            let _ = log_complete.recv_timeout(LOG_COMPLETION_LIMIT);
            exited_tx.send_replace(Some(status));
        })?;
        let pid = match started_rx.await {
            Ok(Ok(pid)) => pid as i32,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other(format!("the thread starting {name} ended"))),
        };
        Ok(Supervised { name, pid, exited, log })
    }

    /// The program's process id (it leads its process group).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its output so far.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has.
    pub fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// The CPU time it has used so far, user and system, its own and that of the children it
    /// waited for; `None` once it has exited (or where /proc does not say).
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        cpu_of_stat(&stat)
    }

    /// Sends `signal` to its process group, unless it has exited.
    fn signal(&self, signal: i32) {
        if self.exit_status().is_none() {
            // SAFETY: plain kill(2) on the process group the program leads.
            unsafe {
                libc::kill(-self.pid, signal);
            }
        }
    }

    /// Stops it: SIGTERM, then SIGKILL once `grace` has passed.
    pub async fn stop(mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let exited = self.exited.wait_for(Option::is_some);
        if tokio::time::timeout(grace, exited).await.is_err() {
            tracing::debug!(program = self.name, "did not stop within {grace:?}; killing it");
            self.signal(libc::SIGKILL);
            let _ = tokio::time::timeout(KILL_LIMIT, self.exited.wait_for(Option::is_some)).await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Copies `output` to `log` line by line until it ends, showing each line to `on_line` first.
fn copy_lines(output: impl std::io::Read, mut log: std::fs::File, on_line: &mut impl FnMut(&[u8])) {
    let mut output = std::io::BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match output.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                // Never leave the program writing to a closed pipe (it would die of SIGPIPE):
                // what is left goes to the log as it comes, without looking at it.
                let _ = std::io::copy(&mut output, &mut log);
                return;
            }
        }
        on_line(&line);
        // A log that cannot be written loses lines; the program must go on all the same.
        let _ = log.write_all(&line);
    }
}

/// utime + stime + cutime + cstime of a `/proc/<pid>/stat` line (fields 14 to 17, after the
/// command name in parentheses, which may hold spaces).
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from the third on: state is the first here, utime the twelfth.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum::<Option<u64>>()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|t| *t > 0)?;
    Some(
        Duration::from_secs(ticks / per_second)
            + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second),
    )
}

/// For tests that need an outside program: whether `binary` is there. When it is not, this
/// says so on stderr (naming the `script` that provides it) and returns false, so the test can
/// pass as not run; unless the environment variable `required_by` is `1` (CI sets it), which
/// makes a missing program a failure.
///
/// # Panics
/// The program is missing and required.
pub fn present_for_tests(program: &str, binary: &Path, script: &str, required_by: &str) -> bool {
    if binary.is_file() {
        return true;
    }
    let required = std::env::var(required_by).is_ok_and(|v| v == "1");
    assert!(!required, "{program} is required ({required_by}=1) but missing at {}; run {script}", binary.display());
    eprintln!("NOT RUN: {program} is missing at {}; run {script}", binary.display());
    false
}

/// Whether `line` contains `message`.
pub fn says(line: &[u8], message: &str) -> bool {
    line.windows(message.len()).any(|w| w == message.as_bytes())
}

/// The last lines of a log, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `N` distinct free ports on 127.0.0.1: the listeners are closed again before the program
/// binds them, so a program given them must be started again when one was taken meanwhile.
///
/// # Errors
/// No port can be bound.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_log_whole_after_each_line_is_shown() {
        let output = "first line\nsecond line\nno newline at the end";
        let dir = std::env::temp_dir().join(format!("loopback-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("program.log");
        let mut seen = Vec::new();
        copy_lines(output.as_bytes(), std::fs::File::create(&path).unwrap(), &mut |line: &[u8]| {
            seen.push(String::from_utf8_lossy(line).into_owned());
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), output);
        assert_eq!(seen, ["first line\n", "second line\n", "no newline at the end"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_program_is_logged_told_exited_and_stopped() {
        let dir = std::env::temp_dir().join(format!("loopback-supervise-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 30"]);
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let program = Supervised::start("sleeper", command, dir.join("sleeper.log"), move |line| {
            let _ = lines_tx.send(String::from_utf8_lossy(line).into_owned());
        })
        .await
        .unwrap();
        assert_eq!(lines.recv().await.as_deref(), Some("started\n"));
        assert_eq!(program.exit_status(), None);
        let pid = program.pid();
        program.stop(Duration::from_secs(5)).await;
        // SAFETY: kill with signal 0 only asks whether the process exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the program is gone");
        assert_eq!(log_tail(&dir.join("sleeper.log")), "started");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let stat =
            format!("42 (a (strange) name) S 1 42 42 0 -1 4194560 100 0 0 0 {} {} {} {} 20 0 1", hz, hz / 2, hz, 0);
        assert_eq!(cpu_of_stat(&stat), Some(Duration::from_millis(2500)));
        assert_eq!(cpu_of_stat("42 (cut short) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_of_stat(&own).is_some());
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }
}
