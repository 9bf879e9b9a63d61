//! The caller's own thread as home (main-loop style): the driver runs while
//! the thread is in `LocalContext::block_on`, and foreign threads still submit.

use aioctx::Context;

#[test]
fn caller_thread_is_home_and_foreign_ops_complete() {
    let local = match Context::builder().build_local() {
        Ok(local) => local,
        Err(e) => return eprintln!("skipping: io_uring unavailable ({e})"),
    };
    let ctx = local.context().clone();
    assert!(ctx.is_home_thread());
    let foreign = ctx.clone();
    let worker = std::thread::spawn(move || {
        for _ in 0..100 {
            foreign.block_on(foreign.nop()).unwrap();
        }
    });
    let timeouts = local.block_on(async {
        ctx.nop().await.unwrap();
        // Keep the main loop running until the foreign thread is done.
        let mut timeouts = 0;
        while !worker.is_finished() {
            ctx.timeout(std::time::Duration::from_millis(1))
                .await
                .unwrap();
            timeouts += 1;
        }
        timeouts
    });
    let m = ctx.metrics();
    assert_eq!(m.ops_foreign, 100);
    assert_eq!(m.ops_local, 1 + timeouts, "the nop and each timeout");
    drop(local);
    // After the local context is gone, ops fail cleanly.
    assert!(aioctx::is_shutdown(
        &futures::executor::block_on(ctx.nop()).unwrap_err()
    ));
}
