//! `Context::enter`: the first poll runs inline on the caller's thread, every
//! later poll on the home thread; a future that never returns `Pending` never
//! touches the home thread.

pub mod support;

use std::sync::{Arc, Mutex};
use std::thread;

#[test]
fn first_poll_inline_later_polls_on_home_thread() {
    let Some(ctx) = support::context() else {
        return;
    };
    let polls = Arc::new(Mutex::new(Vec::new()));
    let record = polls.clone();
    let inner = ctx.clone();
    let handle = ctx.enter(async move {
        record.lock().unwrap().push(thread::current().id());
        inner.nop().await.unwrap();
        record.lock().unwrap().push(thread::current().id());
        // Bound inline, and the home context on the home thread.
        aioctx::current().is_some()
    });
    assert!(handle.join().unwrap());
    let polls = polls.lock().unwrap();
    assert_eq!(
        polls.as_slice(),
        [thread::current().id(), ctx.home_thread()]
    );
}

#[test]
fn ready_future_never_touches_home_thread() {
    let Some(ctx) = support::context() else {
        return;
    };
    let before = ctx.metrics();
    let handle = ctx.enter(async { thread::current().id() });
    assert!(handle.is_finished(), "finished during the inline poll");
    assert_eq!(handle.join().unwrap(), thread::current().id());
    let after = ctx.metrics();
    assert_eq!(after.ops_foreign, before.ops_foreign);
    assert_eq!(after.kicks_sent, before.kicks_sent);
}

#[test]
fn current_follows_bindings_and_home() {
    let Some(ctx) = support::context() else {
        return;
    };
    assert!(aioctx::current().is_none());
    {
        let _bound = ctx.bind();
        let current = aioctx::current().expect("bound");
        assert_eq!(current.home_thread(), ctx.home_thread());
    }
    assert!(aioctx::current().is_none());
    let on_home = ctx.spawn(async { aioctx::current().map(|c| c.is_home_thread()) });
    assert_eq!(on_home.join().unwrap(), Some(true));
}

#[test]
fn panic_after_handoff_surfaces_through_handle() {
    let Some(ctx) = support::context() else {
        return;
    };
    let inner = ctx.clone();
    let handle = ctx.enter(async move {
        inner.nop().await.unwrap();
        panic!("boom on the home thread");
    });
    assert!(handle.join().unwrap_err().is_panic());
    // The context keeps working.
    ctx.block_on(ctx.nop()).unwrap();
}
