//! Defect N2 of the second reliability round: on an SQPOLL ring each foreign
//! push left a dwell entry that only an `io_uring_enter` of ours popped, and
//! SQPOLL rarely enters: memory grew with every op, and `Metrics` reported a
//! few thousand SQEs submitted against millions of CQEs reaped. The kernel's
//! progress is now read from the SQ, whoever took the SQE.

pub mod support;

use std::time::Duration;

use aioctx::Context;

#[test]
fn foreign_ops_on_an_sqpoll_ring_are_counted_and_timed() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            // The poller stays awake through the test: no enter is needed.
            .sqpoll(Duration::from_secs(2)),
    ) else {
        return;
    };
    if !support::on_ring(&ctx) || !ctx.ring_flags().sqpoll {
        return eprintln!("skipping: no SQPOLL ring here ({:?})", ctx.ring_flags());
    }
    const OPS: u64 = 3_000;
    ctx.block_on(ctx.nop()).unwrap();
    let before = ctx.metrics();
    for _ in 0..OPS {
        ctx.block_on(ctx.nop()).unwrap();
    }
    // One more turn, so the last op's SQE is seen taken too.
    ctx.block_on(ctx.nop()).unwrap();
    let after = ctx.metrics();
    let submitted = after.sqes_submitted - before.sqes_submitted;
    let reaped = after.cqes_reaped - before.cqes_reaped;
    let timed = after.dwell.count - before.dwell.count;
    assert!(
        submitted >= OPS && submitted <= reaped + 1,
        "{submitted} SQEs counted submitted for {reaped} CQEs reaped"
    );
    assert!(timed >= OPS, "{timed} of {OPS} foreign pushes timed");
}
