//! Progress of a run on the console: [`Progress`] listens to the runner's events and shows a
//! live bar on a terminal (indicatif), or plain lines otherwise (CI logs, pipes). Either way
//! every finished scenario gets its line ([`suite::line`]).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runner::{Event, Observer};
use crate::suite;

pub struct Progress {
    /// `None` when stdout is not a terminal.
    bar: Option<ProgressBar>,
    /// Where plain lines go without a bar.
    plain: Mutex<Box<dyn Write + Send>>,
    /// Scenarios running now, in start order, for the bar's message.
    running: Mutex<Vec<String>>,
}

impl Progress {
    /// A bar for `total` scenarios when stdout is a terminal, plain lines otherwise.
    pub fn new(total: usize) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, plain: Mutex::new(Box::new(std::io::stdout())), running: Mutex::default() }
    }

    /// Plain lines to `out`, never a bar.
    pub fn plain(out: impl Write + Send + 'static) -> Self {
        Progress { bar: None, plain: Mutex::new(Box::new(out)), running: Mutex::default() }
    }

    /// Removes the bar, leaving the lines printed above it.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn show_running(&self, bar: &ProgressBar, running: &[String], detail: Option<String>) {
        let message = match (running.len(), detail) {
            (0, _) => String::new(),
            (_, Some(detail)) => format!("{} running; {detail}", running.len()),
            (n, None) => format!("{n} running: {}", running.join(", ")),
        };
        bar.set_message(message);
    }
}

impl Observer for Progress {
    fn event(&self, event: Event<'_>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::ScenarioStarted { scenario } => {
                running.push(scenario.to_string());
                if let Some(bar) = &self.bar {
                    self.show_running(bar, &running, None);
                }
            }
            Event::StepFinished { scenario, step } => {
                if let Some(bar) = &self.bar {
                    let verdict = if step.passed { "done" } else { "failed" };
                    let detail = format!("{scenario}: step {} ({}) {verdict}", step.index, step.kind);
                    self.show_running(bar, &running, Some(detail));
                }
            }
            Event::ScenarioFinished { outcome } => {
                running.retain(|name| *name != outcome.name);
                match &self.bar {
                    Some(bar) => {
                        bar.println(suite::line(outcome));
                        bar.inc(1);
                        self.show_running(bar, &running, None);
                    }
                    None => {
                        let mut out = self.plain.lock().unwrap_or_else(|e| e.into_inner());
                        // A closed stdout must not stop the run; the reports still say everything.
                        let _ = writeln!(out, "{}", suite::line(outcome));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::runner::{ScenarioOutcome, StepOutcome};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn off_a_terminal_each_finished_scenario_gets_one_line() {
        let out = Shared::default();
        let progress = Progress::plain(out.clone());
        let step =
            StepOutcome { index: 1, kind: "request", summary: "GET /".into(), duration: Duration::ZERO, passed: true };
        progress.event(Event::ScenarioStarted { scenario: "demo" });
        progress.event(Event::StepFinished { scenario: "demo", step: &step });
        assert!(out.0.lock().unwrap().is_empty(), "nothing before a scenario finishes");
        let mut outcome = ScenarioOutcome::skipped(
            &crate::scenario::load::parse(std::path::Path::new("s.yaml"), SCENARIO).unwrap(),
            crate::install::SkipReason { text: "not claimed".into(), not_applicable: false },
        );
        progress.event(Event::ScenarioFinished { outcome: &outcome });
        outcome.skipped = None;
        outcome.duration = Duration::from_millis(1200);
        progress.event(Event::ScenarioFinished { outcome: &outcome });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "SKIP demo: not claimed\nPASS demo (1.2s)\n");
        assert!(progress.running.lock().unwrap().is_empty(), "finished scenarios are no longer running");
    }

    const SCENARIO: &str = "name: demo\ndescription: d\ncontract: [P1]\nfeatures: [upstream-tls]\nsteps:\n  - request:\n      expect:\n        status: 200\n";
}
