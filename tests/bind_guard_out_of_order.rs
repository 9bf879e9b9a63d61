//! Bind guards may be dropped in any order; each removes the binding it made.
//! Before the fix dropping the outer guard first popped the inner binding, so
//! `current()` returned the context whose guard was gone.

use aioctx::sim::SimConfig;
use aioctx::{Backend, Context, current};

fn sim() -> Context {
    Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap()
}

fn is(current: Option<Context>, expected: &Context) -> bool {
    current.is_some_and(|c| c.home_thread() == expected.home_thread())
}

#[test]
fn dropping_the_outer_guard_first_keeps_the_inner_binding() {
    let (outer, inner) = (sim(), sim());
    assert!(current().is_none());
    let outer_guard = outer.bind();
    let inner_guard = inner.bind();
    assert!(is(current(), &inner));
    drop(outer_guard);
    assert!(is(current(), &inner), "the inner binding must survive");
    drop(inner_guard);
    assert!(current().is_none());
}

#[test]
fn bindings_interleave_like_a_stack_of_scopes() {
    let (a, b) = (sim(), sim());
    let ga = a.bind();
    let gb = b.bind();
    let ga2 = a.bind();
    drop(gb);
    assert!(is(current(), &a));
    drop(ga2);
    assert!(is(current(), &a));
    drop(ga);
    assert!(current().is_none());
}
