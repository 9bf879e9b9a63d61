//! `nop`: per-op overhead with nothing underneath. NOP throughput with 32 ops in flight on one
//! thread: the raw io-uring crate (the limit, batches of 32), runtimes driving NOP futures from
//! 32 tasks, and the cost of the task wake alone (what a Tokio task-per-op design cannot go
//! below: the ring's cost per op comes on top of it).

use super::aioctx_rows;
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::{raw_uring, tokio_uring, tokio_wake};
use super::report::{RatioOf, Row};

/// Ops in flight: the raw loop's batch size and the runtimes' task count.
pub const IN_FLIGHT: usize = 32;

/// The parameter of the `nop` rows.
pub const PARAMETER: &str = "32 in flight";

/// Runs the `nop` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let window = config.window;
    let group = Group {
        benchmark: "nop",
        parameter: PARAMETER.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: &["io-uring"],
    };
    let candidates = vec![
        Candidate::new("io-uring", move || {
            raw_uring::nop_batches(window, IN_FLIGHT)
        })
        .note("batches of 32, one submit_and_wait(32) each"),
        Candidate::new("tokio-uring", move || {
            tokio_uring::nop_tasks(window, IN_FLIGHT)
        })
        .note("32 local tasks awaiting tokio_uring::no_op()"),
        Candidate::new("tokio-wake", move || {
            tokio_wake::wake_tasks(window, IN_FLIGHT)
        })
        .note("no I/O: each op one self-wake of a Tokio task (the floor of task-per-op designs)"),
        Candidate::new("aioctx", move || aioctx_rows::nop_tasks(window, IN_FLIGHT)).note(format!(
            "32 tasks spawned on the context awaiting ctx.nop(); {}",
            aioctx_rows::backend_note()
        )),
    ];
    run_group(config, &group, candidates)
}
