//! `seed`: the workload of QEMU commit 2ae361ef1d, the bug that started this crate (a vCPU
//! thread queues reads into the main loop's ring, and nothing wakes the loop). It reuses the
//! `iotest` example's scenario: 128 MiB read with O_DIRECT in 128 KiB chunks, batches of 16,
//! 1 ms guest sleeps. `kick` (each read queued from the vCPU thread into a context that is
//! kicked awake) is compared with `direct` (the vCPU thread on a private ring: the floor),
//! both run by the scenario itself, interleaved, with medians. The ratio is direct's wall time
//! over kick's (1.00 = no cost for going through the context); the rows also carry the wall
//! time, the guest's own sleeps and its waits for completions in milliseconds, and, for kick,
//! kicks per op and the dwell p99.

use std::time::Duration;

use super::config::Config;
use super::measure::Measurement;
use super::report::{Outcome, Row};

/// The parameter of the `seed` rows for a workload of `size` bytes.
fn parameter(size: u64, chunk: usize, batch: usize) -> String {
    format!("{} MiB, {} KiB x{batch}", size >> 20, chunk >> 10)
}

/// Runs the `seed` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let mut scenario = iotest::Config {
        modes: vec![iotest::Mode::Direct, iotest::Mode::Kick],
        repeat: Some(config.repeats),
        // The thread guest, as every seed row in BENCHMARKS.md was measured; `iotest --guest
        // kvm` measures the same workload on a KVM vCPU.
        guest: iotest::Guest::Thread,
        ..iotest::Config::default()
    };
    if config.quick {
        scenario.size = Some(iotest::QUICK_SIZE);
    }
    let progress = config.progress;
    let mut on_run = |record: &iotest::RunRecord| {
        if progress {
            eprintln!(
                "  seed {} [{}]: {:.1} ms",
                record.mode,
                record.round + 1,
                ms(record.guest.wall)
            );
        }
    };
    let reports = match iotest::run(&scenario, &mut on_run) {
        Ok(reports) => reports,
        Err(
            error @ (iotest::Error::DirectIoUnsupported { .. } | iotest::Error::RingUnavailable(_)),
        ) => {
            return vec![Row::setup("seed", Outcome::Skipped(error.to_string()))];
        }
        Err(error) => return vec![Row::setup("seed", Outcome::Failed(error.to_string()))],
    };
    reports
        .iter()
        .map(|report| row(&scenario, report))
        .collect()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn row(scenario: &iotest::Config, report: &iotest::ModeReport) -> Row {
    let guest = &report.median;
    let reads = guest.bytes / scenario.chunk as u64;
    let mut measurement = Measurement::throughput(reads, guest.wall)
        .with_extra("wall_ms", ms(guest.wall))
        .with_extra("sleep_floor_ms", ms(guest.sleep_floor))
        .with_extra("completion_wait_ms", ms(guest.completion_wait));
    if let Some(context) = &report.context {
        let per_op = |count: u64| {
            if context.foreign_ops == 0 {
                0.0
            } else {
                count as f64 / context.foreign_ops as f64
            }
        };
        measurement = measurement
            .with_extra("kicks_per_op", per_op(context.kicks_sent))
            .with_extra("dwell_p99_us", context.dwell_p99.as_secs_f64() * 1e6);
    }
    let (implementation, note) = match report.mode {
        iotest::Mode::Direct => (
            "direct",
            "vCPU thread on a private io_uring ring (the floor)",
        ),
        _ => (
            "aioctx-kick",
            "reads queued from the vCPU thread into a kicked context",
        ),
    };
    let outcome = if report.checksum_ok {
        Outcome::Measured(measurement)
    } else {
        Outcome::Failed("a run read wrong bytes or too few (checksum mismatch)".to_owned())
    };
    Row {
        benchmark: "seed".to_owned(),
        implementation: implementation.to_owned(),
        parameter: parameter(guest.bytes, scenario.chunk, scenario.batch),
        baseline: report.ratio_to_direct.map(|_| "direct".to_owned()),
        ratio: report.ratio_to_direct.map(|ratio| 1.0 / ratio),
        repeats: report.wall_runs.len(),
        note: note.to_owned(),
        ..Row::of(outcome)
    }
}
