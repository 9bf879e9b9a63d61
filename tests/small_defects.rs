//! Four small defects found by adversarial use, each with the behaviour it
//! now has.

pub mod support;

use std::time::Duration;

use aioctx::buf::{AlignedBuf, IoBuf};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// `AlignedBuf::with_capacity(0)` reported one byte of capacity, so a read
/// into it returned `Ok(1)`.
#[test]
fn aligned_buf_of_zero_capacity_holds_nothing() {
    let buf = AlignedBuf::with_capacity(0);
    assert_eq!(buf.capacity(), 0);
    assert_eq!(buf.bytes_total(), 0);
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("zero-cap");
    std::fs::write(&path.0, b"data").unwrap();
    let (n, buf) = ctx.block_on(async {
        let file = aioctx::fs::File::open(&ctx, &path.0).await.unwrap();
        file.read_at(buf, 0).await
    });
    assert_eq!(n.unwrap(), 0);
    assert!(buf.is_empty());
}

/// An `enter` handle whose future shutdown dropped said `is_finished() ==
/// false`, while `join` returned `Cancelled`.
#[test]
fn entered_handle_is_finished_once_shutdown_cancelled_it() {
    let Some(ctx) = support::context() else {
        return;
    };
    let inner = ctx.clone();
    let handle = ctx.enter(async move {
        let _ = inner.timeout(Duration::from_secs(3600)).await;
        // The timeout resolves with an error at shutdown; park forever after
        // it so only the runtime's drop ends this future.
        std::future::pending::<()>().await;
    });
    assert!(!handle.is_finished());
    futures::executor::block_on(ctx.shutdown());
    support::eventually("the cancelled future is finished", || handle.is_finished());
    assert!(handle.join().unwrap_err().is_cancelled());
}

/// On a sim running on the caller's runtime, the caller's thread is home,
/// and `current()` there returns the context.
#[tokio::test(start_paused = true)]
async fn sim_on_the_callers_runtime_is_current_there() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    assert!(ctx.is_home_thread());
    let current = aioctx::current().expect("the home thread's current context");
    assert_eq!(current.home_thread(), ctx.home_thread());
    drop(current);
    drop(ctx);
    assert!(
        aioctx::current().is_none(),
        "a dropped context is not current"
    );
}
