//! A backlog overflow (ops waiting because the SQ or the in-flight limit is
//! full) is warned about once per episode, with counts, not once per op:
//! two bursts of a hundred NOPs into an eight-entry ring give two warnings,
//! each followed by one "drained" event that counts the ops that waited.

pub mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use aioctx::{Context, LocalContext};
use tracing::Level;

use support::trace;

const WARNED: &str = "aioctx ops wait in the backlog";
const DRAINED: &str = "aioctx backlog drained";
const BURST: usize = 100;
const ENTRIES: u32 = 8;

/// Queues `count` NOPs from the home thread before the driver turns (each
/// polled once, in one go), then waits for all of them.
fn burst(local: &LocalContext, count: usize) {
    let ctx = local.context().clone();
    local.block_on(async move {
        let mut ops: Vec<_> = (0..count).map(|_| ctx.nop()).collect();
        std::future::poll_fn(|cx| {
            for op in &mut ops {
                assert!(Pin::new(op).poll(cx).is_pending(), "queued, not run");
            }
            Poll::Ready(())
        })
        .await;
        for op in ops {
            op.await.unwrap();
        }
    });
}

#[test]
fn two_bursts_warn_twice_whatever_the_number_of_ops() {
    trace::install();
    let Some(local) = support::build_local(Context::builder().entries(ENTRIES)) else {
        return;
    };
    let ctx = local.context().clone();
    if !support::on_ring(&ctx) {
        return;
    }
    // Fits in the SQ: no overflow, no warning.
    burst(&local, ENTRIES as usize / 2);
    assert!(trace::named(ctx.id(), WARNED).is_empty());
    burst(&local, BURST);
    burst(&local, BURST);

    let warned = trace::named(ctx.id(), WARNED);
    assert_eq!(warned.len(), 2, "once per episode: {warned:#?}");
    for warning in &warned {
        assert_eq!(warning.level, Level::WARN);
        // All but the SQ's first eight wait after the first turn's flush.
        let waiting = BURST - ENTRIES as usize;
        assert_eq!(warning.field("waiting"), Some(&*waiting.to_string()));
        assert_eq!(warning.field("cause"), Some("the submission queue is full"));
        assert!(warning.field("in_flight").is_some() && warning.field("cq_entries").is_some());
    }
    let drained = trace::named(ctx.id(), DRAINED);
    assert_eq!(drained.len(), 2, "{drained:#?}");
    let waited: u64 = drained
        .iter()
        .map(|e| e.field("waited").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        waited,
        ctx.metrics().backlogged,
        "every backlogged op counted"
    );
    assert!(waited >= 2 * (BURST - ENTRIES as usize) as u64);
}
