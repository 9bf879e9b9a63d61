//! The NBD clients of the `nbd` benchmark, run as subprocesses against a server's URI:
//!
//! - `fio --ioengine=nbd` (libnbd's asynchronous API, one connection): 4 KiB random reads or
//!   writes at a queue depth, time-based. IOPS, total-latency p50/p99 (`lat_ns`, as
//!   `peers/fio.rs` reads them) and fio's own CPU time come from its JSON report.
//! - `qemu-img bench` (QEMU's NBD client, which keeps at most 16 requests in flight per
//!   connection whatever `-d` asks): a count of sequential 4 KiB reads or writes; ops/s from the
//!   "Run completed in N seconds" line, its CPU time from the children's rusage.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::group::RunError;
use crate::measure::Measurement;

/// Which way the requests go (fio's report names its sides the same way).
pub use super::fio::Direction;

/// One client run: what it measured, and the CPU seconds the client itself used.
#[derive(Clone, Debug)]
pub struct ClientRun {
    /// Ops/s (and latencies, for fio) over the run.
    pub measurement: Measurement,
    /// The client's user + system CPU seconds over the run.
    pub cpu_seconds: f64,
}

/// Runs `fio --ioengine=nbd` against `uri` for `runtime`: 4 KiB random `direction` at `depth`.
///
/// # Errors
///
/// A skip when fio cannot run; a failure when it exits with an error or its report is unreadable.
pub fn fio(
    uri: &str,
    direction: Direction,
    depth: usize,
    runtime: Duration,
) -> Result<ClientRun, RunError> {
    let rw = match direction {
        Direction::Read => "randread",
        Direction::Write => "randwrite",
    };
    let output = Command::new("fio")
        .arg("--name=aioctx-nbd")
        .arg("--ioengine=nbd")
        .arg(format!("--uri={uri}"))
        .arg(format!("--rw={rw}"))
        .args(["--bs=4k", "--numjobs=1"])
        .arg(format!("--iodepth={depth}"))
        .args([
            "--norandommap",
            "--randrepeat=0",
            "--time_based",
            "--lat_percentiles=1",
        ])
        .arg(format!("--runtime={}ms", runtime.as_millis().max(1)))
        .arg("--output-format=json")
        .output()
        .map_err(|error| RunError::Skip(format!("fio not runnable: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RunError::Fail(format!(
            "fio exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    parse_fio_report(&String::from_utf8_lossy(&output.stdout), direction)
        .map_err(|error| RunError::Fail(format!("fio report: {error}")))
}

/// Reads `direction`'s IOPS, latency percentiles and I/Os, and fio's CPU time, from fio's JSON
/// report (notices fio prints before the JSON, such as "connected to NBD server", are skipped).
pub fn parse_fio_report(report: &str, direction: Direction) -> Result<ClientRun, String> {
    let (measurement, cpu) = super::fio::parse_report(report, direction)?;
    Ok(ClientRun {
        measurement,
        cpu_seconds: cpu.as_secs_f64(),
    })
}

/// Runs `qemu-img bench` against `uri`: `count` sequential 4 KiB `direction` requests, `depth`
/// asked for.
///
/// # Errors
///
/// A skip when qemu-img cannot run; a failure when it exits with an error or prints no time.
pub fn qemu_img_bench(
    uri: &str,
    direction: Direction,
    depth: usize,
    count: u64,
) -> Result<ClientRun, RunError> {
    let mut command = Command::new("qemu-img");
    command
        .args(["bench", "-f", "raw", "-s", "4096"])
        .arg(format!("-d{depth}"))
        .arg(format!("-c{count}"));
    if direction == Direction::Write {
        command.arg("-w");
    }
    let cpu_before = children_cpu_seconds();
    let started = Instant::now();
    let output = command
        .arg(uri)
        .output()
        .map_err(|error| RunError::Skip(format!("qemu-img not runnable: {error}")))?;
    let wall = started.elapsed();
    let cpu_seconds = children_cpu_seconds() - cpu_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RunError::Fail(format!(
            "qemu-img bench exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    let seconds = parse_qemu_img_bench(&stdout)
        .ok_or_else(|| RunError::Fail(format!("qemu-img bench printed no time: {stdout}")))?;
    if seconds <= 0.0 || seconds > wall.as_secs_f64() + 1.0 {
        return Err(RunError::Fail(format!(
            "qemu-img bench reported {seconds} s for a run of {wall:?}"
        )));
    }
    Ok(ClientRun {
        measurement: Measurement::throughput(count, Duration::from_secs_f64(seconds)),
        cpu_seconds,
    })
}

/// The seconds in qemu-img bench's "Run completed in 2.876 seconds." line.
pub fn parse_qemu_img_bench(stdout: &str) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("Run completed in"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// User + system CPU seconds of this process's waited-for children so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes the rusage it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_report_gives_the_right_side_and_the_client_cpu() {
        let report = r#"fio: connected to NBD server
            {"jobs": [{"usr_cpu": 30.0, "sys_cpu": 20.0, "job_runtime": 2000,
              "read": {"iops": 0.0, "total_ios": 0, "lat_ns": {"min": 0}},
              "write": {"iops": 5e4, "total_ios": 100000,
                        "lat_ns": {"percentile": {"50.000000": 600000, "99.000000": 900000}}}}]}"#;
        let run = parse_fio_report(report, Direction::Write).unwrap();
        assert_eq!(run.measurement.ops_per_sec, 5e4);
        assert_eq!(run.measurement.samples, 100_000);
        assert_eq!(run.measurement.p50, Some(Duration::from_micros(600)));
        assert!((run.cpu_seconds - 1.0).abs() < 1e-9);
        assert!(parse_fio_report(report, Direction::Read).is_err());
    }

    #[test]
    fn qemu_img_bench_time_is_read() {
        let out = "Sending 200000 read requests, 4096 bytes each, 32 in parallel\n\
                   Run completed in 2.876 seconds.\n";
        assert_eq!(parse_qemu_img_bench(out), Some(2.876));
        assert_eq!(parse_qemu_img_bench("nothing"), None);
    }
}
