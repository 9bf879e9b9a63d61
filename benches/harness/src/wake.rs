//! `wake`: the cost of crossing threads. A plain std thread submits to an idle reactor thread and
//! blocks until the answer comes back: two wakes of a sleeping thread per round trip. Reported as
//! p50/p99 round-trip latency, with the ratio of p50 to the eventfd ping-pong measured in the
//! same run (on the VMs here an idle-thread wake costs ~21-25 us whatever the mechanism, so the
//! ratio is the number that counts). Every row pins the caller and the woken thread to two
//! different CPUs (see `affinity`), so all of them pay the same kind of wake.

use super::aioctx_rows;
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::{eventfd, tokio_channel};
use super::report::{RatioOf, Row};

/// The parameter of the `wake` rows.
pub const PARAMETER: &str = "round trip";

/// Runs the `wake` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let window = config.window;
    let group = Group {
        benchmark: "wake",
        parameter: PARAMETER.to_owned(),
        ratio_of: RatioOf::P50,
        baselines: &["eventfd"],
    };
    let candidates = vec![
        Candidate::new("eventfd", move || eventfd::ping_pong(window))
            .note("ping-pong between two std threads"),
        Candidate::new("tokio-mpsc", move || tokio_channel::round_trip(window))
            .note("std thread -> mpsc -> parked current-thread runtime -> oneshot back"),
        Candidate::new("aioctx", move || aioctx_rows::wake_round_trip(window)).note(format!(
            "std thread: ctx.block_on(ctx.nop()) on an idle context; {}",
            aioctx_rows::backend_note()
        )),
    ];
    run_group(config, &group, candidates)
}
