//! Invariant 7, every future resolves: a simulator running on the caller's
//! runtime resolves its pending ops with the shutdown error when that runtime
//! is dropped. Before the fix they hung forever.

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use aioctx::sim::{Latency, SimConfig};
use aioctx::{Backend, Context};

#[test]
fn pending_sim_ops_resolve_when_the_callers_runtime_is_dropped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = runtime.block_on(async {
        Context::builder()
            .backend(Backend::Sim(
                SimConfig::new().latency(Latency::Fixed(Duration::from_secs(3600))),
            ))
            .build()
            .unwrap()
    });
    let mut op = pin!(ctx.nop());
    let _entered = runtime.enter();
    assert!(
        op.as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
            .is_pending()
    );
    drop(_entered);
    drop(runtime);
    match op
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(Err(e)) => assert!(aioctx::is_shutdown(&e), "{e}"),
        other => panic!("a pending sim op did not resolve: {other:?}"),
    }
    assert!(ctx.is_shutdown());
    // Later ops fail fast too.
    let mut later = pin!(ctx.nop());
    assert!(matches!(
        later
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop())),
        Poll::Ready(Err(_))
    ));
}
