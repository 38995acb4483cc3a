//! What a long command is doing, on standard error. On a terminal: a spinner per step (or a
//! k/N bar), each finished step left as one line with its time. Elsewhere (a log, a pipe, a
//! test) and with `--json`: the steps go to the log (`-v`), and only the events a command
//! always reported (restore's phases, the agent's stages) are printed as `dormouse: ...`
//! lines. With `--quiet`: nothing but warnings. Standard output is untouched: it carries the
//! command's result.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`, for the whole process.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

enum Mode {
    Spinner,
    Lines,
    Silent,
}

/// The steps of one command.
pub(crate) struct Steps {
    mode: Mode,
    bar: Option<ProgressBar>,
    step: Option<(String, Instant)>,
}

impl Steps {
    /// Progress for a command whose `--json` is `json`.
    pub(crate) fn new(json: bool) -> Steps {
        let mode = if QUIET.load(Ordering::Relaxed) {
            Mode::Silent
        } else if !json && std::io::stderr().is_terminal() {
            Mode::Spinner
        } else {
            Mode::Lines
        };
        Steps {
            mode,
            bar: None,
            step: None,
        }
    }

    /// Ends the current step, if any, and starts `name`.
    pub(crate) fn step(&mut self, name: impl Into<String>) {
        self.finish_step();
        let name = name.into();
        if let Mode::Spinner = self.mode {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        }
        tracing::debug!("{name}");
        self.step = Some((name, Instant::now()));
    }

    /// A step of `len` units (images, files); [`Steps::advance`] moves it.
    pub(crate) fn counted(&mut self, name: impl Into<String>, len: u64) {
        self.finish_step();
        let name = name.into();
        if let Mode::Spinner = self.mode {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.clone());
            self.bar = Some(bar);
        }
        self.step = Some((name, Instant::now()));
    }

    /// One more unit of a counted step done; `what` says which.
    pub(crate) fn advance(&mut self, what: &str) {
        match (&self.mode, &self.bar) {
            (Mode::Spinner, Some(bar)) => {
                bar.inc(1);
                bar.set_message(what.to_owned());
            }
            (Mode::Lines, _) => {
                if let Some((name, _)) = &self.step {
                    tracing::info!("{name}: {what}");
                }
            }
            _ => {}
        }
    }

    /// What the current step is at (e.g. the agent's apply stage).
    pub(crate) fn detail(&mut self, text: &str) {
        match (&self.mode, &self.bar) {
            (Mode::Spinner, Some(bar)) => {
                if let Some((name, _)) = &self.step {
                    bar.set_message(format!("{name}: {text}"));
                }
            }
            (Mode::Lines, _) => eprintln!("dormouse: {text}"),
            _ => {}
        }
    }

    /// A line worth keeping (a warning), above the spinner; `--quiet` does not silence it.
    pub(crate) fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("dormouse: {line}")),
            None => eprintln!("dormouse: {line}"),
        }
    }

    /// Ends the current step and draws nothing until the next: another program writes to the
    /// terminal meanwhile (the guest's package manager).
    pub(crate) fn pause(&mut self, doing: &str) {
        self.finish_step();
        match self.mode {
            Mode::Spinner => eprintln!("dormouse: {doing}"),
            _ => tracing::info!("{doing}"),
        }
    }

    /// Ends the current step, leaving it as a line with its time.
    pub(crate) fn finish_step(&mut self) {
        let Some((name, started)) = self.step.take() else {
            return;
        };
        let seconds = started.elapsed().as_secs_f64();
        match (&self.mode, self.bar.take()) {
            (Mode::Spinner, Some(bar)) => {
                bar.finish_and_clear();
                eprintln!("dormouse: {name} ({seconds:.1} s)");
            }
            _ => tracing::info!("{name} ({seconds:.1} s)"),
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        // A step cut short by an error: clear its spinner, print no time for it.
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
