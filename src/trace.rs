//! The crate's tracing vocabulary: each context's span and its id, which op
//! errors are worth an event, and the default dwell threshold. A leaf: it
//! imports nothing from the crate. What users see (every span and event, its
//! level and fields) is listed once, in the crate docs' "Tracing" section;
//! a change here changes that list.
//!
//! Nothing here runs per op unless an op fails: the span is made once per
//! context and entered once by its home thread (the home thread's own
//! spans stack under it), and [`op_failed`] is called only on an op's error
//! path and returns at once when no subscriber wants `debug`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::Span;

/// The name of every context's span.
pub(crate) const CONTEXT_SPAN: &str = "aioctx.context";

/// The default of [`Builder::dwell_warning`](crate::Builder::dwell_warning):
/// a foreign op that waits this long for the kernel waited through several
/// of a busy home thread's turns, or through a sleep it should not have.
pub(crate) const DEFAULT_DWELL_WARNING: Duration = Duration::from_millis(10);

/// Contexts made so far, for their ids.
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(0);

/// A fresh context id: small, unique in the process, in order of creation.
pub(crate) fn next_context_id() -> u64 {
    // Relaxed: ids only need to be distinct.
    NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed)
}

/// The span of context `id`, member `member` of a pool if it is one. Its
/// `backend` is recorded once the backend is chosen (an automatic choice may
/// fall back, and the fallback's warning is logged inside the span).
///
/// At level `ERROR`, the most severe, so that it is enabled whenever any of
/// the crate's events is: a warning always says which ring it comes from.
pub(crate) fn context_span(id: u64, member: Option<usize>) -> Span {
    tracing::error_span!(CONTEXT_SPAN, id, member, backend = tracing::field::Empty,)
}

/// Whether an op's error is one its caller expects and handles, so that an
/// event for it would be noise:
///
/// - `ECANCELED`: the op was cancelled (its future dropped, the context shut
///   down, a linked timeout);
/// - `ETIME`: a timeout op's normal end;
/// - `EAGAIN` (`EWOULDBLOCK`): a non-blocking fd with nothing ready.
///
/// The crate's own errors (the context has shut down, an input refused
/// before any backend saw it) are reported to the caller and never reach
/// [`op_failed`]; a read that returns 0 at end of file is a result, not an
/// error.
pub(crate) fn is_expected(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECANCELED | libc::ETIME | libc::EAGAIN)
    )
}

/// Reports an op that failed, at `debug`, unless its error is expected
/// ([`is_expected`]) or its future was dropped (`dropped`: nobody waits
/// for the outcome, and a cancel's `ECANCELED` or `EINTR` is the expected end
/// of it). `op` names the op's type; it is asked for only when the event is
/// logged. Called by the backends on an op's error path only, inside the
/// context's span.
#[cold]
#[inline(never)]
pub(crate) fn op_failed(op: impl FnOnce() -> &'static str, error: &io::Error, dropped: bool) {
    if !tracing::enabled!(tracing::Level::DEBUG) || dropped || is_expected(error) {
        return;
    }
    tracing::debug!(
        op = op(),
        errno = error.raw_os_error(),
        error = %error,
        "aioctx op failed"
    );
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::is_expected;

    #[test]
    fn the_expected_errors_are_cancels_timeouts_and_would_block() {
        let errno = io::Error::from_raw_os_error;
        for expected in [
            libc::ECANCELED,
            libc::ETIME,
            libc::EAGAIN,
            libc::EWOULDBLOCK,
        ] {
            assert!(is_expected(&errno(expected)), "{expected}");
        }
        for unexpected in [
            libc::EIO,
            libc::EINVAL,
            libc::EBADF,
            libc::ENOSPC,
            libc::EINTR,
        ] {
            assert!(!is_expected(&errno(unexpected)), "{unexpected}");
        }
        assert!(!is_expected(&io::Error::other("a crate error")));
    }
}
