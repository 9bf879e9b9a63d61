//! Invariant 5, slots are freed by completions, not by polls: more than a
//! ring's worth of ops complete while their futures are never polled again,
//! and new ops still go through.

pub mod support;

use aioctx::Context;
use futures::FutureExt;

#[test]
fn unpolled_completed_ops_do_not_block_new_ones() {
    let Some(ctx) = support::build(Context::builder().entries(8)) else {
        return;
    };
    // 8 SQ entries, 16 CQ entries: 64 ops is four times the in-flight limit.
    let mut parked = Vec::new();
    for _ in 0..64 {
        let mut nop = ctx.nop();
        assert!(
            (&mut nop).now_or_never().is_none(),
            "submitted, not yet complete"
        );
        parked.push(nop);
    }
    support::eventually("all 64 completions reaped", || {
        ctx.metrics().cqes_reaped >= 64
    });
    // None of those futures has been polled since; new ops still complete.
    for _ in 0..32 {
        ctx.block_on(ctx.nop()).unwrap();
    }
    // And the parked ones hold their results.
    for nop in parked {
        nop.now_or_never().expect("completed").unwrap();
    }
}
