//! One thread can be home to more than one ring: two local contexts built on
//! the same thread each drive their own ring, and ops from another thread
//! reach each of them.

pub mod support;

use aioctx::Context;

#[test]
fn one_thread_hosts_two_rings() {
    let build = || support::build_local(Context::builder());
    let (Some(first), Some(second)) = (build(), build()) else {
        return;
    };
    let (a, b) = (first.context().clone(), second.context().clone());
    assert!(a.is_home_thread() && b.is_home_thread());
    assert_eq!(a.home_thread(), b.home_thread());
    let foreign = {
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            // Each push lands in its own context's inbox.
            let x = std::thread::spawn(move || a.block_on(a.nop()));
            let y = std::thread::spawn(move || b.block_on(b.nop()));
            (x.join().unwrap(), y.join().unwrap())
        })
    };
    // Drive both rings until the foreign ops are done.
    while !foreign.is_finished() {
        first.block_on(async { a.nop().await.unwrap() });
        second.block_on(async { b.nop().await.unwrap() });
    }
    let (x, y) = foreign.join().unwrap();
    x.unwrap();
    y.unwrap();
    assert_eq!(a.metrics().ops_foreign, 1);
    assert_eq!(b.metrics().ops_foreign, 1);
    // Local ops went into each ring straight.
    assert!(a.metrics().ops_local >= 1 && b.metrics().ops_local >= 1);
}
