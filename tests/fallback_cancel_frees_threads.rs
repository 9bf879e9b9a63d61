//! The fallback never lets a dropped op hold a pool thread. Timeouts are
//! Tokio timers, cancelled when their future is dropped; before the fix each
//! slept on a pool thread, so sixteen dropped 30 s timeouts starved every
//! other op for 30 s. And a pool thread skips a queued call whose future is
//! already gone.

pub mod support;

use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use aioctx::fs::{File, OpenOptions};
use aioctx::{Backend, Context};

fn fallback(threads: usize) -> Context {
    Context::builder()
        .backend(Backend::Fallback)
        .fallback_threads(threads)
        .build()
        .unwrap()
}

fn poll_once<F: Future>(future: &mut std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
}

#[test]
fn dropped_timeouts_hold_no_pool_thread() {
    let ctx = fallback(1);
    for _ in 0..16 {
        let mut timeout = pin!(ctx.timeout(Duration::from_secs(30)));
        assert!(poll_once(&mut timeout).is_pending());
    }
    assert_eq!(
        ctx.metrics().cancels_sent,
        16,
        "each dropped timeout is cancelled"
    );
    let path = support::TempPath::new("fallback-timeouts");
    std::fs::write(&path.0, b"data").unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn({
        let ctx = ctx.clone();
        let path = path.0.clone();
        move || {
            let read = ctx.block_on(async {
                let file = File::open(&ctx, &path).await?;
                let (n, buf) = file.read_at(Vec::with_capacity(8), 0).await;
                n.map(|n| buf[..n].to_vec())
            });
            sender.send(read).unwrap();
        }
    });
    // A liveness guard, far below the 30 s the timeouts would have held the
    // only pool thread for.
    let read = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("a read waited behind dropped timeouts");
    assert_eq!(read.unwrap(), b"data");
}

#[test]
fn a_queued_call_whose_future_is_gone_is_skipped() {
    let ctx = fallback(1);
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh fds on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    let (reader, mut writer) = unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let path = support::TempPath::new("fallback-skip");
    std::fs::write(&path.0, b"before").unwrap();
    let file = ctx
        .block_on(OpenOptions::new().write(true).open(&ctx, &path.0))
        .unwrap();
    let pipe = File::from_fd(&ctx, reader);
    // The only pool thread blocks in this read until the pipe is written.
    let mut blocker = pin!(pipe.read_at(Vec::with_capacity(4), 0));
    assert!(poll_once(&mut blocker).is_pending());
    {
        // Queued behind the blocked thread, then dropped.
        let mut write = pin!(file.write_at(b"AFTER!".to_vec(), 0));
        assert!(poll_once(&mut write).is_pending());
    }
    writer.write_all(b"go").unwrap();
    support::eventually("the blocking read completes", || {
        matches!(poll_once(&mut blocker), Poll::Ready(_))
    });
    // Let the pool thread reach the dropped write, then make sure it skipped it.
    ctx.block_on(file.sync_all()).unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap(), b"before");
}
