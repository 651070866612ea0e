//! Printing a command's output when the reader may have gone (`pim-operator crds | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and `print!`
//! panics on it. A reader that stops early is not a failure of the command: the commands end
//! quietly with the exit code they would have had, as if all was read. (Dying by SIGPIPE, as
//! coreutils do, would need `unsafe` to restore the signal, and would turn `set -o pipefail`
//! scripts' `| head` into failures.)

use std::io::Write;

/// Writes `text` to stdout and flushes it. A closed pipe counts as written; other errors are
/// returned.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Err(e) if is_closed_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether a write failed only because the reader closed its end.
pub fn is_closed_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
