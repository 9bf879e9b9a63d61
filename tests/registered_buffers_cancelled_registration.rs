//! Defect N4 of the second reliability round: `register_buffers` called off
//! the home thread and dropped after the home thread had registered the
//! buffers left the slots taken, and freed the memory they named with the
//! future. The pool is now made whole on the home thread, so a dropped call
//! drops a whole pool there, which clears its slots before freeing its
//! memory. The future is `Send`, as an async fn's future should be.

pub mod support;

use std::future::Future;

use aioctx::Context;

fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

#[test]
fn a_dropped_registration_gives_its_slots_back() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(aioctx::Backend::Uring)
            .registered_buffer_slots(4),
    )
    .filter(support::on_ring) else {
        return;
    };
    for round in 0..5 {
        // Polled once from this (foreign) thread: the registration is handed
        // to the home thread; then the call is dropped.
        let mut call = Box::pin(assert_send(ctx.register_buffers(4, 4096)));
        let waker = std::task::Waker::noop();
        let polled = call
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        drop(call);
        drop(polled);
        // The table holds exactly one such pool: the next one registers only
        // once the dropped one has given its slots back.
        support::eventually(&format!("round {round}: the slots come back"), || {
            let pool = ctx.block_on(ctx.register_buffers(4, 4096)).unwrap();
            pool.is_registered()
        });
    }
}
