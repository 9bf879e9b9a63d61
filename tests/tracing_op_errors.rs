//! Op errors the caller does not expect are logged at `debug`, inside the
//! context's span, with the op and the errno; the expected ones (a timeout's
//! ETIME, a cancel's ECANCELED, a dropped op's end) are not.

pub mod support;

use std::time::Duration;

use std::os::fd::{FromRawFd, OwnedFd};

use aioctx::fs::File;
use tracing::Level;

use support::trace;

const FAILED: &str = "aioctx op failed";

#[test]
fn an_unexpected_error_is_logged_at_debug_with_the_op_and_errno() {
    trace::install();
    let Some(ctx) = support::context() else {
        return;
    };
    // A read of a directory fails with EISDIR on every backend.
    let dir = File::from_fd(
        &ctx,
        std::fs::File::open(std::env::temp_dir()).unwrap().into(),
    );
    let (result, _) = ctx.block_on(dir.read_at(Vec::with_capacity(16), 0));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EISDIR));
    let failed = trace::named(ctx.id(), FAILED);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].level, Level::DEBUG);
    assert_eq!(failed[0].field("op"), Some("ReadAt"));
    assert_eq!(failed[0].field("errno"), Some(&*libc::EISDIR.to_string()));
}

#[test]
fn expected_errors_are_not_logged() {
    trace::install();
    let Some(ctx) = support::context() else {
        return;
    };
    // A timeout ends with ETIME; the op reports it as its normal end.
    ctx.block_on(ctx.timeout(Duration::from_millis(1))).unwrap();
    // A dropped op is cancelled: its ECANCELED (or EINTR) is nobody's news.
    let (reader, _writer) = pipe();
    let file = File::from_fd(&ctx, reader);
    ctx.block_on(async {
        let mut read = file.read_at(Vec::with_capacity(8), 0);
        assert!(futures::poll!(&mut read).is_pending());
        drop(read);
        ctx.nop().await.unwrap();
    });
    ctx.block_on(ctx.shutdown());
    assert!(trace::named(ctx.id(), FAILED).is_empty());
}

/// A pipe: its read end, which stays empty, and its write end.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh fds on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
