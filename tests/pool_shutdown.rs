//! Invariant 7 for a pool: shutting a pool down with ops in flight on every
//! member resolves every future, and no fd is left open.

pub mod support;

use std::time::Duration;

use aioctx::Context;

#[test]
fn pool_shutdown_resolves_every_op_and_leaks_no_fd() {
    // The first runtime of the process creates Tokio's signal registry (a
    // socket pair that lives as long as the process): count after it.
    drop(support::context());
    let fds_before = support::open_fds();
    let Some(pool) = support::pool(3) else {
        return;
    };
    // Long timeouts in flight on every member, from tasks and from a thread.
    let mut waiting = Vec::new();
    for member in pool.members() {
        for _ in 0..4 {
            let ctx = member.clone();
            waiting.push(member.spawn(async move { ctx.timeout(Duration::from_secs(3600)).await }));
        }
    }
    let pool_for_thread = pool.clone();
    let from_thread = std::thread::spawn(move || {
        let ctx = pool_for_thread.thread_member().clone();
        ctx.block_on(ctx.timeout(Duration::from_secs(3600)))
    });
    support::eventually("every timeout is submitted", || {
        pool.total_metrics().ops_local + pool.total_metrics().ops_foreign >= 13
    });
    futures::executor::block_on(pool.shutdown());
    for handle in waiting {
        let result = handle.join().expect("the task finished");
        assert!(
            result.is_err(),
            "a timeout cut short by shutdown reports it"
        );
    }
    assert!(from_thread.join().unwrap().is_err());
    assert!(pool.members().iter().all(Context::is_shutdown));
    drop(pool);
    support::eventually("every home thread's fds are closed", || {
        support::open_fds() <= fds_before
    });
}

/// `Pool::shutdown` awaited by a task of the pool shuts every member down,
/// its own included, so the task is cancelled when its member's runtime
/// stops, in practice before the `.await` returns (its own member's
/// shutdown does not wait, the others' do). Either way its handle resolves,
/// nothing hangs, and every member is shut down: what the docs of
/// `Pool::shutdown` promise.
#[test]
fn pool_shutdown_from_inside_a_pool_task_cancels_that_task() {
    let Some(pool) = support::pool(2) else {
        return;
    };
    let (after_tx, after_rx) = std::sync::mpsc::channel::<()>();
    let inner = pool.clone();
    let task = pool.spawn(async move {
        inner.shutdown().await;
        after_tx.send(()).unwrap();
    });
    match task.join() {
        Err(e) => {
            assert!(e.is_cancelled(), "{e}");
            assert!(
                after_rx.recv().is_err(),
                "cancelled, yet the code after the await ran"
            );
        }
        // The other members drained before the task's own runtime stopped.
        Ok(()) => after_rx.recv().unwrap(),
    }
    assert!(pool.members().iter().all(Context::is_shutdown));
}
