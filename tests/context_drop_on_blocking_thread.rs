//! Dropping the last `Context` on a thread of the home runtime's own blocking
//! pool shuts the context down instead of deadlocking. Before the fix the
//! dropping thread joined the home thread, which waited in its runtime's drop
//! for that same blocking thread.

pub mod support;

use std::sync::mpsc;
use std::time::Duration;

use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

fn last_drop_on_the_home_blocking_pool_returns(ctx: Context) {
    let (dropped, done) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let blocking = ctx.runtime().spawn_blocking({
        let ctx = ctx.clone();
        move || {
            // Wait until the test's handle is gone: this one is the last.
            wait.recv().unwrap();
            drop(ctx);
            dropped.send(()).unwrap();
        }
    });
    drop(ctx);
    go.send(()).unwrap();
    done.recv_timeout(Duration::from_secs(30))
        .expect("dropping the last handle on the home runtime's blocking pool deadlocked");
    drop(blocking);
}

#[test]
fn ring_or_fallback_last_drop_on_home_blocking_pool() {
    let Some(ctx) = support::context() else {
        return;
    };
    last_drop_on_the_home_blocking_pool_returns(ctx);
}

#[test]
fn sim_last_drop_on_home_blocking_pool() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    last_drop_on_the_home_blocking_pool_returns(ctx);
}
