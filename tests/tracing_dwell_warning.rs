//! An op pushed from another thread that waits longer than the context's
//! dwell threshold before the kernel takes its SQE is warned about. The
//! dwell is made long by construction, not by timing: on a local context the
//! driver runs only while the home thread runs `block_on`, so a foreign push
//! made while it does not waits at least as long as the test then sleeps.

pub mod support;

use std::time::Duration;

use aioctx::{Builder, Context};

use support::trace;

const LATE: &str = "aioctx ops from other threads waited long";
/// How long the foreign op waits, at least: over both thresholds below.
const SLEEP: Duration = Duration::from_millis(30);

/// Pushes one NOP from another thread while the home does not run, sleeps
/// [`SLEEP`], then runs the home until both it and a local NOP complete.
/// Returns the context's id, or `None` when skipped.
fn foreign_op_left_waiting(builder: Builder) -> Option<u64> {
    let local = support::build_local(builder)?;
    let ctx = local.context().clone();
    if !support::on_ring(&ctx) {
        return None;
    }
    let (pushed_tx, pushed_rx) = std::sync::mpsc::channel();
    let foreign = std::thread::spawn({
        let ctx = ctx.clone();
        move || {
            ctx.block_on(async {
                let mut op = ctx.nop();
                assert!(futures::poll!(&mut op).is_pending(), "queued in the inbox");
                pushed_tx.send(()).unwrap();
                op.await.unwrap();
            })
        }
    });
    pushed_rx.recv().unwrap();
    std::thread::sleep(SLEEP);
    // The local NOP's turn drains the inbox, so the foreign SQE goes in with it.
    local.block_on(ctx.nop()).unwrap();
    foreign.join().unwrap();
    assert_eq!(ctx.metrics().dwell.count, 1, "the foreign op was timed");
    Some(ctx.id())
}

#[test]
fn a_dwell_over_the_threshold_warns() {
    trace::install();
    let builder = Context::builder().dwell_warning(Duration::from_millis(1));
    let Some(id) = foreign_op_left_waiting(builder) else {
        return;
    };
    let late = trace::named(id, LATE);
    assert_eq!(late.len(), 1, "{late:#?}");
    assert_eq!(late[0].level, tracing::Level::WARN);
    assert_eq!(late[0].field("late"), Some("1"));
    assert_eq!(late[0].field("threshold"), Some("1ms"));
}

#[test]
fn the_default_threshold_is_on() {
    trace::install();
    let Some(id) = foreign_op_left_waiting(Context::builder()) else {
        return;
    };
    assert_eq!(trace::named(id, LATE).len(), 1);
}

#[test]
fn no_threshold_no_warning() {
    trace::install();
    for builder in [
        Context::builder().dwell_warning(None),
        Context::builder().dwell_warning(Duration::ZERO),
    ] {
        let Some(id) = foreign_op_left_waiting(builder) else {
            return;
        };
        assert!(trace::named(id, LATE).is_empty());
    }
}
