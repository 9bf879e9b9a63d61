//! `AIOCTX_SIM_SEED` narrows an exploration to the one seed a failure
//! reported. Alone in its binary: it sets the variable for the process.

use aioctx::Context;
use aioctx::sim;

#[test]
fn the_seed_variable_runs_only_that_seed() {
    // SAFETY: this binary's only test, and nothing else in the process reads
    // or writes the environment concurrently (no runtime is running yet).
    unsafe { std::env::set_var(sim::SEED_VAR, "41") };
    let mut seen = Vec::new();
    let explored = sim::explore(0..1000)
        .run(|ctx: Context| {
            seen.push(ctx.sim().unwrap().seed());
            async { Ok::<(), String>(()) }
        })
        .unwrap();
    assert_eq!(explored.seeds, 1);
    assert_eq!(seen, vec![41]);
}
