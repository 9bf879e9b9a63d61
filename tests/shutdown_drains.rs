//! Invariant 7, every future resolves: shutting down with ops that never
//! complete (pipe reads) resolves each with an error, joins the home thread,
//! and leaks no fd.

pub mod support;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use aioctx::fs::File;

#[test]
fn shutdown_resolves_every_pending_op_and_leaks_nothing() {
    // One full lifecycle first: process-wide lazy state (the test harness,
    // std's thread machinery) opens fds of its own the first time.
    drop(support::context());
    let fds_before = support::open_fds();
    {
        let Some(ctx) = support::context() else {
            return;
        };
        let mut pipes = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let (reader, writer) = std::io::pipe().unwrap();
            pipes.push(writer);
            let file = Arc::new(File::from_fd(&ctx, OwnedFd::from(reader)));
            // Half entered (continuing on the home thread), half blocking
            // foreign threads.
            let read_file = file.clone();
            handles.push(
                ctx.enter(async move { read_file.read_at(Vec::with_capacity(8), 0).await.0 }),
            );
        }
        let blocked: Vec<_> = (0..4)
            .map(|_| {
                let (reader, writer) = std::io::pipe().unwrap();
                pipes.push(writer);
                let file = File::from_fd(&ctx, OwnedFd::from(reader));
                let inner = ctx.clone();
                std::thread::spawn(move || inner.block_on(file.read_at(Vec::with_capacity(8), 0)).0)
            })
            .collect();
        support::eventually("12 reads in the kernel", || {
            ctx.metrics().sqes_submitted >= 12
        });
        futures::executor::block_on(ctx.shutdown());
        for handle in handles {
            // Either the op resolved with an error and the future returned
            // it, or the future was dropped with the runtime: both resolve.
            if let Ok(result) = handle.join() {
                assert!(result.is_err());
            }
        }
        for thread in blocked {
            let err = thread.join().unwrap().unwrap_err();
            assert!(
                err.raw_os_error() == Some(libc::ECANCELED) || aioctx::is_shutdown(&err),
                "{err}"
            );
        }
        // After shutdown, new ops fail at once with a clear error.
        let err = ctx.block_on(ctx.nop()).unwrap_err();
        assert!(aioctx::is_shutdown(&err));
        // Of kind `Other`, as Tokio's runtime-shutdown error: never
        // `BrokenPipe`, which a service mixing sockets and disk would read as
        // a peer hanging up.
        assert_eq!(err.kind(), std::io::ErrorKind::Other, "{err}");
        assert!(ctx.is_shutdown());
        drop(pipes);
    }
    // On the fallback, pool threads blocked in those reads hold their fds
    // until the reads return (the writers just closed): shortly after.
    support::eventually("no fd leaked by shutdown", || {
        support::open_fds() == fds_before
    });
}
