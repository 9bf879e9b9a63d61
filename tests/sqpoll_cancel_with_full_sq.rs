//! Defect N1 of the second reliability round: on an SQPOLL ring, a cancel
//! that found the SQ full waited for a turn that never came. The kernel's
//! poller drains the SQ on its own time, so making room returned at once,
//! the cancel stayed pending, the turn reported idle, and the driver parked
//! with nothing to wake it: every op queued behind waited forever.

pub mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use aioctx::Context;
use aioctx::fs::OpenOptions;

/// Runs `f` on a thread of its own; a hang fails the test (after a minute)
/// instead of hanging the suite.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(f())));
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

#[test]
fn dropped_reads_of_a_fifo_on_a_full_sqpoll_ring_do_not_stall_the_driver() {
    for entries in [1, 2] {
        let Some(ctx) = support::build(
            Context::builder()
                .backend(aioctx::Backend::Uring)
                .entries(entries)
                .sqpoll(Duration::from_millis(50)),
        ) else {
            return;
        };
        if !support::on_ring(&ctx) || !ctx.ring_flags().sqpoll {
            return eprintln!("skipping: no SQPOLL ring here ({:?})", ctx.ring_flags());
        }
        let fifo = support::TempPath::new("sqpoll-fifo");
        let path = CString::new(fifo.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let inner = ctx.clone();
        let fifo_path = fifo.0.clone();
        within_a_minute(&format!("{entries}-entry SQPOLL ring"), move || {
            for round in 0..50 {
                let ctx = inner.clone();
                let path = fifo_path.clone();
                inner
                    .spawn(async move {
                        // Read and write, so the open returns at once; the
                        // FIFO stays empty, so no read completes by itself.
                        let file = OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&ctx, &path)
                            .await
                            .unwrap();
                        // More reads than the SQ holds, each polled once (in
                        // the kernel, or backlogged), then all dropped.
                        let mut reads: Vec<_> = (0..8)
                            .map(|_| Box::pin(file.read_at(Vec::with_capacity(8), 0)))
                            .collect();
                        for read in &mut reads {
                            assert!(futures::poll!(read.as_mut()).is_pending());
                        }
                        drop(reads);
                        // The driver must come back for the cancels and for
                        // this op queued behind them.
                        ctx.nop().await.unwrap();
                    })
                    .join()
                    .unwrap_or_else(|_| panic!("round {round} failed"));
            }
            inner.block_on(inner.nop()).unwrap();
        });
    }
}
