//! Ops are `Send` futures that complete from any thread and any runtime: the
//! home thread, a multi-thread Tokio runtime, `spawn_blocking`, plain threads.

pub mod support;

use std::time::Duration;

#[test]
fn from_multi_thread_runtime_tasks() {
    let Some(ctx) = support::context() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        ctx.nop().await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(ctx.metrics().ops_foreign, 800);
}

#[test]
fn from_spawn_blocking_and_plain_threads() {
    let Some(ctx) = support::context() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blocking = {
        let ctx = ctx.clone();
        rt.spawn_blocking(move || ctx.block_on(ctx.nop()))
    };
    rt.block_on(blocking).unwrap().unwrap();
    let plain = {
        let ctx = ctx.clone();
        std::thread::spawn(move || ctx.block_on(ctx.timeout(Duration::from_millis(1))))
    };
    plain.join().unwrap().unwrap();
}

#[test]
fn from_the_home_thread_without_syscalls_per_op() {
    let Some(ctx) = support::context() else {
        return;
    };
    let home = ctx.clone();
    ctx.spawn(async move {
        let ops: Vec<_> = (0..32).map(|_| home.nop()).collect();
        for result in futures::future::join_all(ops).await {
            result.unwrap();
        }
    })
    .join()
    .unwrap();
    let m = ctx.metrics();
    assert_eq!(m.ops_local, 32);
    assert_eq!(m.ops_foreign, 0);
    // 32 SQEs queued during one task poll go to the kernel in one enter.
    assert!(m.submits < 32, "{m:?}");
}

#[test]
fn raw_sqe_with_owned_resources() {
    let Some(ctx) = support::context() else {
        return;
    };
    let (reader, writer) = std::io::pipe().unwrap();
    use std::io::Write;
    let mut writer = writer;
    writer.write_all(b"raw").unwrap();
    let buf = vec![0u8; 8];
    use std::os::fd::AsRawFd;
    let entry = io_uring::opcode::Read::new(
        io_uring::types::Fd(reader.as_raw_fd()),
        buf.as_ptr() as *mut u8,
        buf.len() as u32,
    )
    .build();
    // SAFETY: the SQE points only into `buf`'s heap block, owned by the op,
    // and at `reader`, which the op owns too.
    let done = ctx.block_on(unsafe { ctx.submit_raw(entry, (buf, reader)) });
    if ctx.backend() != "io_uring" {
        let err = done.result.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
        return;
    }
    assert_eq!(done.result.unwrap(), 3);
    assert_eq!(&done.resources.0[..3], b"raw");
}

#[test]
fn home_thread_is_the_only_one_entering_the_ring() {
    let Some(ctx) = support::context() else {
        return;
    };
    // Foreign submitters push; the home thread enters. Ring::enter asserts
    // its thread and would panic the home thread (failing every op after).
    nops_from_threads(&ctx, 4, 100);
    let m = ctx.metrics();
    assert_eq!(m.sqes_submitted, 400, "{m:?}");
    if ctx.backend() == "io_uring" {
        assert!(m.submits > 0, "{m:?}");
    }
}

#[test]
fn dwell_is_timed_for_each_foreign_op_and_no_home_op() {
    let Some(ctx) = support::context() else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    // Home ops, cancels of dropped home ops, and foreign ops share the SQ;
    // the dwell histogram must count exactly the foreign ones.
    let home = ctx.clone();
    let home_task = ctx.spawn(async move {
        for _ in 0..50 {
            home.nop().await.unwrap();
            let mut timeout = std::pin::pin!(home.timeout(Duration::from_secs(60)));
            assert!(futures::poll!(timeout.as_mut()).is_pending());
            // Dropped in flight: its cancel SQE goes through the SQ too.
        }
    });
    nops_from_threads(&ctx, 2, 100);
    home_task.join().unwrap();
    support::eventually("the cancelled timeouts complete", || {
        ctx.metrics().cqes_reaped >= ctx.metrics().sqes_submitted
    });
    let m = ctx.metrics();
    assert_eq!(m.ops_foreign, 200, "{m:?}");
    assert_eq!(m.ops_local, 100, "{m:?}");
    assert_eq!(m.cancels_sent, 50, "{m:?}");
    assert_eq!(m.dwell.count, 200, "{m:?}");
}

/// Runs `each` NOPs from each of `threads` plain threads, one `block_on` per
/// NOP, and waits for them all.
fn nops_from_threads(ctx: &aioctx::Context, threads: usize, each: usize) {
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let ctx = ctx.clone();
            std::thread::spawn(move || (0..each).for_each(|_| ctx.block_on(ctx.nop()).unwrap()))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}
