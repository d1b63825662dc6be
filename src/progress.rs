//! Progress bars for long work: shown on a terminal, silent in CI and pipes.

use std::borrow::Cow;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over a count of requests (or rows), or a spinner when the total is
/// not known.
pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(message: impl Into<Cow<'static, str>>, total: Option<u64>) -> Self {
        let visible = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        if !visible {
            return Progress::hidden();
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} {elapsed} eta {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner()
                .with_style(ProgressStyle::with_template("{spinner} {msg} {human_pos} {elapsed}").expect("static template")),
        };
        Progress(bar.with_message(message))
    }

    /// A progress bar that never shows (library callers and tests).
    pub fn hidden() -> Self {
        Progress(ProgressBar::hidden())
    }

    pub fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
