//! Invariant 1, no lost kick: the seed bug's regression test.
//!
//! The home runtime runs on Tokio's paused clock with a housekeeping timer
//! pending ten virtual seconds out (when it fires, it uses the ring, as QEMU's
//! timers do in its main loop), so an idle home thread jumps straight to that
//! timer. An op queued from a plain `std::thread` must complete with zero
//! virtual time elapsed: the push itself wakes the driver. With the diagnostic
//! switch that disables the wake, the same op waits for the timer, which
//! proves the test can fail.

pub mod support;

use std::sync::mpsc;
use std::time::Duration;

use aioctx::Context;

const FAR_TIMER: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_millis(1);

/// Virtual time from just before this (foreign) thread queues a NOP until the
/// NOP resolves, observed on the home thread.
fn virtual_time_to_complete_foreign_op(kick: bool) -> Option<Duration> {
    let ctx = support::build(
        Context::builder()
            .start_paused(true)
            .kick_foreign_pushes(kick),
    )?;
    run_far_timer_scenario(ctx, kick)
}

/// The scenario above on any context whose home runtime runs paused.
fn run_far_timer_scenario(ctx: Context, kick: bool) -> Option<Duration> {
    // Without the kick only the ring's driver can miss a push.
    if !kick && !support::on_ring(&ctx) {
        return None;
    }
    let (asleep_tx, asleep_rx) = mpsc::channel();
    let (pushed_tx, pushed_rx) = mpsc::channel::<aioctx::JoinHandle<std::io::Result<()>>>();
    let home = ctx.clone();
    let elapsed = ctx.spawn(async move {
        // Arm the far timer, make a local round trip, pass once through the
        // reactor (consuming the wake that arming the timer and the round
        // trip's eventfd edge left behind), and yield so any turn that pass
        // scheduled runs now. Afterwards the driver sleeps with nothing
        // pending: only a kick can wake it.
        let housekeeping = home.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FAR_TIMER).await;
            housekeeping.nop().await.unwrap();
        });
        home.nop().await.unwrap();
        tokio::time::sleep(SETTLE).await;
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        // The home thread stays busy (blocked right here) while the foreign
        // thread queues its op, so the paused clock cannot jump to the timer
        // before the push.
        asleep_tx.send(()).unwrap();
        let nop = pushed_rx.recv().unwrap();
        nop.await.unwrap().unwrap();
        start.elapsed()
    });
    asleep_rx.recv().unwrap();
    pushed_tx.send(ctx.enter(ctx.nop())).unwrap();
    Some(elapsed.join().unwrap())
}

#[test]
fn foreign_push_completes_with_zero_virtual_time() {
    let Some(elapsed) = virtual_time_to_complete_foreign_op(true) else {
        return;
    };
    assert_eq!(
        elapsed,
        Duration::ZERO,
        "the op waited for the home thread's timer"
    );
}

#[test]
fn without_the_kick_the_op_waits_for_the_timer() {
    let Some(elapsed) = virtual_time_to_complete_foreign_op(false) else {
        return;
    };
    assert!(
        elapsed >= FAR_TIMER - SETTLE,
        "with the wake disabled the op should sit until the timer fires, took {elapsed:?}"
    );
}

#[test]
fn diagnostic_switch_is_counted_not_sent() {
    let Some(ctx) = support::build(Context::builder().kick_foreign_pushes(false)) else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    // Give the driver time to park; the timer below keeps this bounded.
    std::thread::sleep(Duration::from_millis(20));
    let before = ctx.metrics();
    let handle = ctx.enter(ctx.nop());
    // The driver turns for a reason of its own (a home-thread op), and
    // drains the foreign op with it.
    let home = ctx.clone();
    ctx.spawn(async move { home.nop().await })
        .join()
        .unwrap()
        .unwrap();
    handle.join().unwrap().unwrap();
    let after = ctx.metrics();
    assert_eq!(after.kicks_sent, before.kicks_sent);
    assert!(after.kicks_suppressed > before.kicks_suppressed);
}

#[test]
fn foreign_push_completes_with_zero_virtual_time_on_the_sim() {
    // Built outside any runtime, the sim gets a home thread like the ring;
    // with zero latency its ops take no virtual time, so any elapsed time
    // would be a missed wake.
    let ctx = Context::builder()
        .start_paused(true)
        .backend(aioctx::Backend::Sim(
            aioctx::sim::SimConfig::new().latency(aioctx::sim::Latency::Fixed(Duration::ZERO)),
        ))
        .build()
        .unwrap();
    let elapsed = run_far_timer_scenario(ctx, true).unwrap();
    assert_eq!(
        elapsed,
        Duration::ZERO,
        "the op waited for the home thread's timer"
    );
}
