//! Progress of a run on the console: [`Progress`] listens to the runner's events and shows a
//! live bar on a terminal (indicatif), or plain lines otherwise (CI logs, pipes). Either way
//! every finished scenario gets its line ([`suite::line`]).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runner::{Event, Observer};
use crate::suite;

pub struct Progress {
    /// `None` when stdout is not a terminal.
    bar: Option<ProgressBar>,
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
        Progress { bar, running: Mutex::default() }
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
                    None => println!("{}", suite::line(outcome)),
                }
            }
        }
    }
}
