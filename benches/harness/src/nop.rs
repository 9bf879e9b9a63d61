//! `nop`: per-op overhead with nothing underneath. NOP throughput with 32 ops in flight on one
//! thread: the raw io-uring crate (the limit, batches of 32), runtimes driving NOP futures from
//! 32 tasks, and the cost of the task wake alone (what a Tokio task-per-op design cannot go
//! below: the ring's cost per op comes on top of it).

use super::aioctx_rows::{self, Flavor};
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::{raw_uring, tokio_uring, tokio_wake};
use super::report::{RatioOf, Row};

/// Ops in flight: the raw loop's batch size and the runtimes' task count.
pub const IN_FLIGHT: usize = 32;

/// The parameter of the `nop` rows.
pub const PARAMETER: &str = "32 in flight";

/// The parameter of the `nop` rows with one op in flight: per-op latency, with and without
/// SQPOLL.
pub const PARAMETER_QD1: &str = "1 in flight";

/// Runs the `nop` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let mut rows = run_in_flight(config, IN_FLIGHT, PARAMETER);
    rows.extend(run_in_flight(config, 1, PARAMETER_QD1));
    rows
}

/// The `nop` rows with `in_flight` ops in flight.
fn run_in_flight(config: &Config, in_flight: usize, parameter: &str) -> Vec<Row> {
    let window = config.window;
    let group = Group {
        benchmark: "nop",
        parameter: parameter.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: &["io-uring"],
    };
    let backend = aioctx_rows::backend_note();
    // Latency at one in flight; throughput only with more, as the peers' loops.
    let timed = in_flight == 1;
    let mut candidates = vec![
        Candidate::new("io-uring", move || {
            raw_uring::nop_batches(window, in_flight)
        })
        .note(format!(
            "batches of {in_flight}, one submit_and_wait({in_flight}) each"
        )),
        Candidate::new("tokio-uring", move || {
            tokio_uring::nop_tasks(window, in_flight)
        })
        .note(format!(
            "{in_flight} local task(s) awaiting tokio_uring::no_op()"
        )),
    ];
    if in_flight > 1 {
        candidates.push(
            Candidate::new("tokio-wake", move || {
                tokio_wake::wake_tasks(window, in_flight)
            })
            .note(
                "no I/O: each op one self-wake of a Tokio task (the floor of task-per-op designs)",
            ),
        );
    }
    candidates.push(
        Candidate::new("aioctx", move || {
            aioctx_rows::nop_tasks(window, in_flight, Flavor::Plain, timed)
        })
        .note(format!(
            "{in_flight} task(s) spawned on the context awaiting ctx.nop(); {backend}"
        )),
    );
    candidates.push(
        Candidate::new("aioctx-local", move || {
            aioctx_rows::nop_tasks(window, in_flight, Flavor::Local, timed)
        })
        .note(format!(
            "{in_flight} local task(s) (spawn_local) awaiting LocalRing::nop(): the home path"
        )),
    );
    candidates.push(
        Candidate::new("aioctx-sqpoll", move || {
            aioctx_rows::nop_tasks(window, in_flight, Flavor::Sqpoll, timed)
        })
        .note("as aioctx, with Builder::sqpoll(10 ms): the kernel poller's CPU time counts"),
    );
    run_group(config, &group, candidates)
}
