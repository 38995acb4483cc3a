//! Standard output for the commands' results. `println!` panics (exit 101) when the reader has
//! gone away (`dormouse ps IMAGE | head`): the Rust runtime ignores SIGPIPE, so the write fails
//! with EPIPE instead of killing us. Writes through [`Stdout`] return that failure as an error
//! marked [`ReaderGone`], which unwinds like any other error (scratch mounts, sandboxes and
//! temporary directories are still cleaned up) and which `main` turns into a quiet exit, as
//! ripgrep does.
//!
//! Only standard output is marked: a broken pipe elsewhere (the guest agent's channel, a child
//! tool) stays an error.

use std::io::{self, Write};

/// Standard output, locked for the command's lifetime.
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Self {
        Self(io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, ReaderGone)
    } else {
        io::Error::new(e.kind(), format!("writing to standard output: {e}"))
    }
}

/// Standard output's reader closed its end of the pipe.
#[derive(Debug)]
pub struct ReaderGone;

impl std::fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output's reader went away")
    }
}

impl std::error::Error for ReaderGone {}

/// Whether `e` is, or was caused by, standard output's reader going away.
pub fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(is_reader_gone))
}

/// `result`, with the reader going away counted as success: for output whose loss changes
/// nothing about the command's outcome.
pub fn reader_gone_is_ok(result: io::Result<()>) -> io::Result<()> {
    result.or_else(|e| if is_reader_gone(&e) { Ok(()) } else { Err(e) })
}

fn is_reader_gone(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ReaderGone>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn only_standard_outputs_broken_pipe_counts_as_the_reader_gone() {
        let ours: io::Result<()> = Err(mark(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(reader_gone(&ours.context("printing the snapshot").unwrap_err()));
        let elsewhere = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!reader_gone(&elsewhere));
        let full = anyhow::Error::from(mark(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!reader_gone(&full));
        assert!(full.to_string().starts_with("writing to standard output: "), "{full}");
    }
}
