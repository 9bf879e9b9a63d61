//! `submitters`: 1, 2 and 4 foreign std threads submitting 4 KiB O_DIRECT random reads into one
//! context at a total queue depth of 64. Every op crosses the inbox, so this measures what
//! cross-thread submission costs in IOPS and how well kicks coalesce (`kicks_per_op`: wakes of
//! the home thread per foreign op; the target is at most 0.05 with 2 and 4 threads). The
//! baseline is raw io-uring at QD64 on one thread, measured in the same group.

use super::aioctx_rows;
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::raw_uring::{self, SubmitPolicy};
use super::randread;
use super::report::{RatioOf, Row};
use super::testfile::ReadMode;

/// Total reads in flight, split evenly over the threads.
pub const TOTAL_DEPTH: usize = 64;

/// Submitting thread counts.
pub const THREADS: [usize; 3] = [1, 2, 4];

/// The parameter of the `submitters` row with `threads` threads.
pub fn parameter(threads: usize) -> String {
    format!("threads={threads} QD{TOTAL_DEPTH}")
}

/// Runs the `submitters` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let file = match randread::prepare_file(config) {
        Ok(file) => file,
        Err(outcome) => return vec![Row::setup("submitters", outcome)],
    };
    let window = config.window;
    let file = &file;
    let backend = aioctx_rows::backend_note();
    let mut rows = Vec::new();
    for threads in THREADS {
        let group = Group {
            benchmark: "submitters",
            parameter: parameter(threads),
            ratio_of: RatioOf::OpsPerSec,
            baselines: &["io-uring"],
        };
        let candidates = vec![
            Candidate::new("io-uring", move || {
                raw_uring::random_reads(
                    file,
                    ReadMode::Direct,
                    TOTAL_DEPTH,
                    SubmitPolicy::PerReplacement,
                    window,
                )
            })
            .note("one thread, one enter per replacement"),
            Candidate::new("aioctx", move || {
                aioctx_rows::foreign_submitters(file, threads, TOTAL_DEPTH, window)
            })
            .note(format!("block_on from {threads} std thread(s); {backend}")),
        ];
        rows.extend(run_group(config, &group, candidates));
    }
    rows
}
