//! Invariant 4, the kernel never writes freed memory: a read dropped while in
//! the kernel keeps its buffer alive until the op's CQE arrives.

pub mod support;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use aioctx::fs::File;
use futures::FutureExt;
use support::Tracked;

#[test]
fn dropped_read_keeps_its_buffer_until_the_kernel_is_done() {
    let Some(ctx) = support::context() else {
        return;
    };
    let (reader, mut writer) = std::io::pipe().unwrap();
    let file = File::from_fd(&ctx, OwnedFd::from(reader));
    let (buf, freed) = Tracked::new(64);

    // Keep the home thread busy so the driver cannot act while we check.
    let (busy_tx, busy_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();

    let mut read = file.read_at(buf, 0);
    // First poll submits; the pipe has no data, so the read stays in flight.
    assert!((&mut read).now_or_never().is_none());
    // Wait until the driver has put it in the kernel, or (on the fallback) a
    // pool thread runs it: a call still queued is taken back by the drop,
    // which rightly frees the buffer at once (a dwell is counted only once
    // the call runs).
    support::eventually("read submitted", || {
        let m = ctx.metrics();
        m.sqes_submitted >= 1 && (ctx.backend() != "fallback" || m.dwell.count >= 1)
    });
    let blocker = ctx.spawn(async move {
        busy_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    busy_rx.recv().unwrap();
    drop(read);
    assert!(
        !freed.load(Ordering::SeqCst),
        "buffer freed while the kernel may write it"
    );
    release_tx.send(()).unwrap();
    blocker.join().unwrap();
    if ctx.backend() == "io_uring" {
        // The driver cancels the read; when the CQE arrives the buffer goes.
        support::eventually("buffer freed after completion", || {
            freed.load(Ordering::SeqCst)
        });
        assert!(ctx.metrics().cancels_sent >= 1);
    } else {
        // A blocking read cannot be cancelled: the buffer stays until the
        // read returns, which takes data in the pipe.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !freed.load(Ordering::SeqCst),
            "buffer freed while the read runs"
        );
        writer.write_all(b"x").unwrap();
        support::eventually("buffer freed after completion", || {
            freed.load(Ordering::SeqCst)
        });
    }

    // The pipe and the context keep working.
    writer.write_all(b"after").unwrap();
    let (n, data) = ctx.block_on(file.read_at(Vec::with_capacity(16), 0));
    assert_eq!(n.unwrap(), 5);
    assert_eq!(&data[..], b"after");
}

/// A read dropped in the kernel by a task on the home thread, with nothing
/// else for the driver to do: its cancel goes to the kernel at the next
/// turn, which the drop schedules, and the buffer comes back. (The cancel
/// used to wait in the SQ for an unrelated op to bring a turn.)
#[test]
fn a_read_dropped_on_the_home_thread_is_cancelled_without_other_traffic() {
    let Some(local) = support::build_local(aioctx::Builder::default()) else {
        return;
    };
    let ctx = local.context().clone();
    let (reader, _writer) = std::io::pipe().unwrap();
    let (buf, freed) = Tracked::new(64);
    local.block_on(async {
        let file = File::from_fd(&ctx, OwnedFd::from(reader));
        let mut read = file.read_at(buf, 0);
        assert!((&mut read).now_or_never().is_none());
        assert!(support::yields_until(|| ctx.metrics().sqes_submitted > 0).await);
        drop(read);
        // Only this task and the driver run here: the driver's turns come
        // from the drop, or from nothing.
        assert!(
            support::yields_until(|| freed.load(Ordering::SeqCst)).await,
            "the dropped read's cancel never reached the kernel"
        );
    });
}
