//! fio as the device's reference: `fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k` run
//! as a subprocess on the same file, IOPS and completion-latency percentiles read from its JSON
//! report. Skipped, with a note, when fio is not installed.
//!
//! fio's p50/p99 are its total latency (`--lat_percentiles=1`, `lat_ns`: submission call to
//! reaped completion), the closest match to the other rows, which time each op from just before
//! it is queued to when its completion is seen.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::group::{RunError, RunResult};
use crate::measure::{Measurement, Window};
use crate::testfile::TestFile;

/// fio's version line, or why fio cannot run.
pub fn version() -> Result<String, String> {
    match Command::new("fio").arg("--version").output() {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        Ok(output) => Err(format!("`fio --version` failed: {}", output.status)),
        Err(error) => Err(format!(
            "fio not installed ({error}); install it with `apt-get install fio`"
        )),
    }
}

/// fio's random-read IOPS and latency percentiles at `depth`, over `window` (its warm-up is fio's
/// `ramp_time`), with fio's own CPU time over its measured runtime (`usr_cpu` + `sys_cpu`,
/// percentages of `job_runtime`) as `cpu_s_per_mop`.
pub fn random_reads(file: &TestFile, depth: usize, window: Window) -> RunResult {
    let (measurement, cpu) = run(file, depth, window)?;
    Ok(measurement.with_cpu(cpu))
}

fn run(file: &TestFile, depth: usize, window: Window) -> Result<(Measurement, Duration), RunError> {
    let mut command = Command::new("fio");
    command
        .arg("--name=aioctx-randread")
        .arg(format!("--filename={}", file.path.display()))
        .arg(format!("--size={}", file.len))
        .args([
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--numjobs=1",
        ])
        .arg(format!("--iodepth={depth}"))
        .args([
            "--readonly",
            "--norandommap",
            "--randrepeat=0",
            "--time_based",
            "--lat_percentiles=1",
        ])
        .arg(format!("--runtime={}ms", window.measure.as_millis().max(1)))
        .arg("--output-format=json");
    if !window.warmup.is_zero() {
        command.arg(format!(
            "--ramp_time={}ms",
            window.warmup.as_millis().max(1)
        ));
    }
    let output = command
        .output()
        .map_err(|error| RunError::Skip(format!("fio not runnable: {error}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RunError::Fail(format!(
            "fio exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    parse_report(&stdout, Direction::Read)
        .map_err(|error| RunError::Fail(format!("fio report: {error}")))
}

/// Which side of fio's job report to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Reads.
    Read,
    /// Writes.
    Write,
}

/// The part of fio's JSON report read here: `jobs[0]`.
#[derive(Debug, Deserialize)]
struct Report {
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
struct Job {
    read: Option<Side>,
    write: Option<Side>,
    /// User CPU time, percent of `job_runtime`.
    #[serde(default)]
    usr_cpu: f64,
    /// System CPU time, percent of `job_runtime`.
    #[serde(default)]
    sys_cpu: f64,
    /// Measured runtime in milliseconds.
    #[serde(default)]
    job_runtime: f64,
}

#[derive(Debug, Deserialize)]
struct Side {
    iops: f64,
    #[serde(default)]
    total_ios: u64,
    lat_ns: Latency,
}

#[derive(Debug, Deserialize)]
struct Latency {
    /// Nanoseconds by percentile, keyed as fio prints them (`"50.000000"`).
    #[serde(default)]
    percentile: BTreeMap<String, f64>,
}

/// Reads one side of fio's JSON report: its IOPS, total-latency p50 and p99 and number of I/Os
/// as a measurement, and fio's CPU time over its measured runtime (`usr_cpu` + `sys_cpu`,
/// percentages of `job_runtime`). Notices fio prints before the JSON are skipped.
pub fn parse_report(report: &str, direction: Direction) -> Result<(Measurement, Duration), String> {
    let json_start = report.find('{').ok_or("no JSON in fio output")?;
    let report: Report = serde_json::from_str(&report[json_start..]).map_err(|e| e.to_string())?;
    let job = report.jobs.first().ok_or("no jobs")?;
    let (side, name) = match direction {
        Direction::Read => (&job.read, "read"),
        Direction::Write => (&job.write, "write"),
    };
    let side = side.as_ref().ok_or(format!("no {name} side"))?;
    let percentile = |key: &str| {
        side.lat_ns
            .percentile
            .get(key)
            .map(|nanos| Duration::from_nanos(*nanos as u64))
            .ok_or(format!("no {name}.lat_ns.percentile[{key}]"))
    };
    let measurement = Measurement {
        ops_per_sec: side.iops,
        p50: Some(percentile("50.000000")?),
        p99: Some(percentile("99.000000")?),
        samples: side.total_ios,
        extra: Vec::new(),
    };
    let cpu = Duration::from_secs_f64(job.job_runtime.max(0.0) / 1e3)
        .mul_f64((job.usr_cpu + job.sys_cpu).max(0.0) / 100.0);
    Ok((measurement, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_report_reads_iops_and_total_latency_percentiles() {
        let report = r#"note: a notice fio printed first
            {"fio version": "fio-3.33", "jobs": [{"jobname": "aioctx-randread", "read": {
                "iops": 1.5e3, "total_ios": 450,
                "clat_ns": {"percentile": {"50.000000": 1}},
                "lat_ns": {"min": 30000, "percentile": {"50.000000": 41216, "99.000000": 98304}}
            }}]}"#;
        let (measurement, cpu) = parse_report(report, Direction::Read).unwrap();
        assert_eq!(measurement.ops_per_sec, 1500.0);
        assert_eq!(measurement.samples, 450);
        assert_eq!(measurement.p50, Some(Duration::from_nanos(41216)));
        assert_eq!(measurement.p99, Some(Duration::from_nanos(98304)));
        assert!(parse_report("fio: no JSON", Direction::Read).is_err());
        // No CPU fields: no CPU time.
        assert_eq!(cpu, Duration::ZERO);
    }

    #[test]
    fn cpu_is_the_user_and_system_percentages_of_the_runtime() {
        let report = r#"{"jobs": [{"usr_cpu": 5.0, "sys_cpu": 20.0, "job_runtime": 2000,
            "read": {"iops": 1.0,
                     "lat_ns": {"percentile": {"50.000000": 1000, "99.000000": 2000}}}}]}"#;
        let (_, cpu) = parse_report(report, Direction::Read).unwrap();
        assert_eq!(cpu, Duration::from_millis(500));
    }
}
