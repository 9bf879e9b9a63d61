//! Invariant 7 for a pool: shutting a pool down with ops in flight on every
//! member resolves every future, and no fd is left open.

mod support;

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
