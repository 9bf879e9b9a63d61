//! Where a blocking wait would deadlock or stall a runtime, it panics with a
//! clear message; where it is safe, it works. Before the fix
//! `JoinHandle::join` on the home thread deadlocked the context (its docs
//! said it panics), and inside a Tokio worker it stalled the worker silently.

pub mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use aioctx::Context;

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A handle to a future that waits until the context shuts down.
fn pending_handle(ctx: &Context) -> aioctx::JoinHandle<()> {
    let inner = ctx.clone();
    ctx.spawn(async move {
        let _ = inner.timeout(Duration::from_secs(3600)).await;
    })
}

#[test]
fn join_on_the_home_thread_panics_instead_of_deadlocking() {
    let Some(ctx) = support::context() else {
        return;
    };
    let waiting = pending_handle(&ctx);
    let outcome = ctx
        .spawn(async move { catch_unwind(AssertUnwindSafe(move || waiting.join())).map(drop) })
        .join()
        .expect("the probe task itself finishes");
    let message = panic_message(outcome.expect_err("join on the home thread must panic"));
    assert!(message.contains("home thread"), "unclear panic: {message}");
    // The context still works.
    ctx.block_on(ctx.nop()).unwrap();
}

#[test]
fn block_on_on_the_home_thread_panics_instead_of_deadlocking() {
    let Some(ctx) = support::context() else {
        return;
    };
    let inner = ctx.clone();
    let outcome = ctx
        .spawn(async move {
            catch_unwind(AssertUnwindSafe(move || inner.block_on(inner.nop()))).map(drop)
        })
        .join()
        .unwrap();
    let message = panic_message(outcome.expect_err("block_on on the home thread must panic"));
    assert!(message.contains("home thread"), "unclear panic: {message}");
}

#[test]
fn join_inside_another_runtime_worker_panics() {
    let Some(ctx) = support::context() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let waiting = pending_handle(&ctx);
    let outcome = runtime.block_on(async move {
        tokio::spawn(async move { catch_unwind(AssertUnwindSafe(move || waiting.join())).is_err() })
            .await
            .unwrap()
    });
    assert!(
        outcome,
        "join inside a Tokio worker must panic, not stall it"
    );
    let inner = ctx.clone();
    let outcome = runtime.block_on(async move {
        tokio::spawn(async move {
            catch_unwind(AssertUnwindSafe(move || inner.block_on(inner.nop()))).is_err()
        })
        .await
        .unwrap()
    });
    assert!(
        outcome,
        "block_on inside a Tokio worker must panic, not stall it"
    );
}

#[test]
fn join_on_a_blocking_pool_thread_works() {
    let Some(ctx) = support::context() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let inner = ctx.clone();
    let handle = ctx.spawn(async move { inner.nop().await });
    let inner = ctx.clone();
    let (joined, blocked) = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let joined = handle.join().unwrap();
            let blocked = inner.block_on(inner.nop());
            (joined, blocked)
        })
        .await
        .unwrap()
    });
    joined.unwrap();
    blocked.unwrap();
}
