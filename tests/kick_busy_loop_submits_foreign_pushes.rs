//! Defect N7 of the second reliability round: the main job's busy mode no
//! longer showed the seed's third observation (unrelated traffic keeping the
//! main loop awake hides the missing kick). The cause was the ring's
//! `DEFER_TASKRUN`: a completion that needs task work (the busy mode's
//! socket poll) reaches a sleeping home thread through the ring's eventfd,
//! which the kernel signalled ~14 ms late here, so the main loop slept
//! through the traffic that should have kept it awake (BENCHMARKS.md,
//! "DEFER_TASKRUN and the eventfd"). Rings no longer ask for it unless
//! told to (`Builder::defer_taskrun`).
//!
//! Counters, not time: with kicks switched off, a foreign op completes while
//! a home-thread loop of ops that complete after their enter (as device
//! reads and polls do) is still running: the loop's turns submit what
//! foreign threads queued.

pub mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aioctx::Context;

#[test]
fn the_default_ring_does_not_defer_task_work() {
    let Some(ctx) = support::context().filter(support::on_ring) else {
        return;
    };
    let flags = ctx.ring_flags();
    assert!(!flags.defer_taskrun, "{flags:?}");
    let Some(deferred) =
        support::build(Context::builder().defer_taskrun(true)).filter(support::on_ring)
    else {
        return;
    };
    // Asked for, where the kernel takes it.
    let flags = deferred.ring_flags();
    assert!(flags.defer_taskrun || !flags.single_issuer, "{flags:?}");
}

#[test]
fn a_busy_home_loop_submits_what_foreign_threads_queued() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            .kick_foreign_pushes(false),
    )
    .filter(support::on_ring) else {
        return;
    };
    // The home thread's busy loop: ops that complete after their enter (as
    // device reads do), so the policy turns eager; it runs until the foreign
    // op is done, or gives up after many rounds.
    const ROUNDS: u64 = 20_000;
    let done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let busy = {
        let (ctx, done, rounds) = (ctx.clone(), done.clone(), rounds.clone());
        ctx.clone().spawn(async move {
            while !done.load(Ordering::Acquire) && rounds.load(Ordering::Relaxed) < ROUNDS {
                ctx.timeout(Duration::from_micros(20)).await.ok();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the policy see a window of late completions first.
    while rounds.load(Ordering::Relaxed) < 200 {
        std::thread::yield_now();
    }
    let before = rounds.load(Ordering::Relaxed);
    ctx.block_on(ctx.nop()).unwrap();
    let waited = rounds.load(Ordering::Relaxed) - before;
    done.store(true, Ordering::Release);
    busy.join().unwrap();
    assert!(
        waited < ROUNDS - before,
        "the foreign NOP waited for the busy loop to end ({waited} rounds)"
    );
    let metrics = ctx.metrics();
    assert_eq!(
        metrics.kicks_sent, 0,
        "kicks were off: the busy loop carried the NOP"
    );
}
