//! Invariant 2, coalesced kicks: pushes while the driver is busy cost no wake,
//! and there is never more than one kick per driver sleep.

pub mod support;

use std::sync::mpsc;

const PUSHES: usize = 64;

#[test]
fn pushes_while_driver_busy_send_one_kick() {
    let Some(ctx) = support::context() else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let (busy_tx, busy_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // Keep the home thread busy (blocked inside a task) while we push.
    let home = ctx.clone();
    let blocker = ctx.spawn(async move {
        // A round trip first, so the driver has turned and gone to sleep.
        home.nop().await.unwrap();
        busy_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    busy_rx.recv().unwrap();
    let before = ctx.metrics();
    let handles: Vec<_> = (0..PUSHES).map(|_| ctx.enter(ctx.nop())).collect();
    let during = ctx.metrics();
    release_tx.send(()).unwrap();
    blocker.join().unwrap();
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
    let sent = during.kicks_sent - before.kicks_sent;
    let coalesced = during.kicks_coalesced - before.kicks_coalesced;
    assert_eq!(during.ops_foreign - before.ops_foreign, PUSHES as u64);
    assert_eq!(sent, 1, "one kick for the driver's one sleep");
    assert_eq!(coalesced, PUSHES as u64 - 1);
}

#[test]
fn never_more_kicks_than_driver_turns() {
    let Some(ctx) = support::context() else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    ctx.block_on(ctx.nop()).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let m = ctx.metrics();
    assert_eq!(m.ops_foreign, 2000);
    assert_eq!(m.kicks_sent + m.kicks_coalesced, 2000);
    // Every kick wakes a sleeping driver, which then turns at least once.
    assert!(m.kicks_sent <= m.turns, "{m:?}");
}
