//! `AIOCTX_SIM_SEED` narrows an exploration to the one seed a failure
//! reported: `NAME=SEED` only the exploration of that name (by default the
//! test's), a bare `SEED` every exploration. Alone in its binary, one test:
//! it sets the variable for the process.

use aioctx::Context;
use aioctx::sim;

/// The seeds an exploration of `0..1000` named `name` (or, for `None`, by
/// the calling thread's name) runs.
fn seeds_run(name: Option<&str>) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut explore = sim::explore(0..1000);
    if let Some(name) = name {
        explore = explore.name(name);
    }
    let explored = explore
        .run(|ctx: Context| {
            seen.push(ctx.sim().unwrap().seed());
            async { Ok::<(), String>(()) }
        })
        .unwrap();
    assert_eq!(explored.seeds as usize, seen.len());
    seen
}

fn set(value: &str) {
    // SAFETY: this binary's only test, and nothing else in the process reads
    // or writes the environment concurrently (no runtime is running between
    // explorations).
    unsafe { std::env::set_var(sim::SEED_VAR, value) };
}

#[test]
fn the_seed_variable_runs_only_that_seed_of_the_explorations_it_names() {
    // A bare seed narrows every exploration: the trap the docs warn about.
    set("41");
    assert_eq!(seeds_run(None), vec![41]);
    assert_eq!(seeds_run(Some("wal")), vec![41]);

    // NAME=SEED narrows only the exploration of that name...
    set("wal=7");
    assert_eq!(seeds_run(Some("wal")), vec![7]);
    // ...and leaves the others whole, so a test that expects a bug to be
    // found still explores every seed.
    assert_eq!(seeds_run(Some("finds_the_bug")).len(), 1000);
    assert_eq!(seeds_run(None).len(), 1000);

    // The default name is the test's (its thread's name under libtest).
    set("the_seed_variable_runs_only_that_seed_of_the_explorations_it_names=3");
    assert_eq!(seeds_run(None), vec![3]);

    // Several entries; a named one wins over a bare one.
    set("wal=7, 12 ,finds_the_bug=9");
    assert_eq!(seeds_run(Some("wal")), vec![7]);
    assert_eq!(seeds_run(Some("finds_the_bug")), vec![9]);
    assert_eq!(seeds_run(Some("other")), vec![12]);

    // A malformed value is an error, not a silent full run.
    set("wal=seven");
    let malformed = std::panic::catch_unwind(|| seeds_run(Some("wal")));
    assert!(malformed.is_err());
}
