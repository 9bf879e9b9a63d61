//! SQPOLL: ops complete after the kernel's polling thread has gone idle,
//! submitted from the home thread and from a foreign thread; while it is
//! awake, ops need no enter of ours.

pub mod support;

use std::time::Duration;

use aioctx::Context;

#[test]
fn ops_complete_after_the_poller_went_idle() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            .sqpoll(Duration::from_millis(5)),
    ) else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    if !ctx.ring_flags().sqpoll {
        return eprintln!(
            "skipping: the kernel refused SQPOLL ({:?})",
            ctx.ring_flags()
        );
    }
    assert!(
        !ctx.ring_flags().defer_taskrun,
        "SQPOLL excludes DEFER_TASKRUN"
    );
    let path = support::TempPath::new("sqpoll");
    std::fs::write(&path.0, b"polled").unwrap();
    for _ in 0..3 {
        // Past the idle time: the poller sleeps and must be woken.
        std::thread::sleep(Duration::from_millis(30));
        ctx.block_on(ctx.nop()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let inner = ctx.clone();
        let path = path.0.clone();
        let data = ctx
            .spawn(async move {
                let file = aioctx::fs::File::open(&inner, &path).await.unwrap();
                let (n, data) = file.read_at(Vec::with_capacity(8), 0).await;
                n.unwrap();
                data
            })
            .join()
            .unwrap();
        assert_eq!(data, b"polled");
    }
}

/// While the poller is awake, ops from the home thread reach the kernel with
/// no `io_uring_enter` of ours, and the driver collects their completions by
/// polling the CQ rather than sleeping on the eventfd between them.
#[test]
fn an_awake_poller_takes_ops_without_enters() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            // Long enough that the poller never sleeps during the test.
            .sqpoll(Duration::from_secs(2)),
    ) else {
        return;
    };
    if !support::on_ring(&ctx) || !ctx.ring_flags().sqpoll {
        return eprintln!("skipping: no SQPOLL ring here ({:?})", ctx.ring_flags());
    }
    const OPS: u64 = 2_000;
    let inner = ctx.clone();
    let (submits, ops) = ctx
        .spawn(async move {
            // The first NOP wakes the poller from its start.
            inner.nop().await.unwrap();
            let before = inner.metrics();
            for _ in 0..OPS {
                inner.nop().await.unwrap();
            }
            let after = inner.metrics();
            (
                after.submits - before.submits,
                after.ops_local - before.ops_local,
            )
        })
        .join()
        .unwrap();
    assert_eq!(ops, OPS);
    // An enter per op (or per two) would mean the submit policy enters for
    // SQEs the poller takes anyway; a handful is the poller having slept.
    assert!(
        submits <= OPS / 100,
        "{submits} io_uring_enter calls for {OPS} NOPs on an awake SQPOLL ring"
    );
}
