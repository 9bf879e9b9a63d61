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

use crate::harness::group::{RunError, RunResult};
use crate::harness::measure::{Measurement, Window};
use crate::harness::testfile::TestFile;

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
    let fail = |error| RunError::Fail(format!("fio report: {error}"));
    Ok((
        parse_report(&stdout).map_err(fail)?,
        parse_cpu(&stdout).map_err(fail)?,
    ))
}

/// The part of fio's JSON report read here: `jobs[0].read`.
#[derive(Debug, Deserialize)]
struct Report {
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
struct Job {
    read: Direction,
    /// User CPU time, percent of `job_runtime`.
    #[serde(default)]
    usr_cpu: f64,
    /// System CPU time, percent of `job_runtime`.
    #[serde(default)]
    sys_cpu: f64,
    /// Measured runtime in milliseconds.
    #[serde(default)]
    job_runtime: u64,
}

#[derive(Debug, Deserialize)]
struct Direction {
    iops: f64,
    #[serde(default)]
    total_ios: u64,
    lat_ns: Latency,
}

#[derive(Debug, Deserialize)]
struct Latency {
    /// Nanoseconds by percentile, keyed as fio prints them (`"50.000000"`).
    percentile: BTreeMap<String, f64>,
}

/// The JSON part of fio's output (fio may print notices before it).
fn parse_json(report: &str) -> Result<Report, String> {
    let json_start = report.find('{').ok_or("no JSON in fio output")?;
    serde_json::from_str(&report[json_start..]).map_err(|e| e.to_string())
}

/// fio's CPU time over its measured runtime, from its JSON report.
pub fn parse_cpu(report: &str) -> Result<Duration, String> {
    let report = parse_json(report)?;
    let job = report.jobs.first().ok_or("no jobs")?;
    let runtime = Duration::from_millis(job.job_runtime);
    Ok(runtime.mul_f64((job.usr_cpu + job.sys_cpu) / 100.0))
}

/// Reads IOPS, total-latency p50 and p99, and the number of I/Os from fio's JSON report (fio may
/// print notices before the JSON, which are skipped).
pub fn parse_report(report: &str) -> Result<Measurement, String> {
    let report = parse_json(report)?;
    let read = &report.jobs.first().ok_or("no jobs")?.read;
    let percentile = |key: &str| {
        let nanos = read.lat_ns.percentile.get(key);
        nanos
            .map(|nanos| Duration::from_nanos(*nanos as u64))
            .ok_or(format!("no read.lat_ns.percentile[{key}]"))
    };
    Ok(Measurement {
        ops_per_sec: read.iops,
        p50: Some(percentile("50.000000")?),
        p99: Some(percentile("99.000000")?),
        samples: read.total_ios,
        extra: Vec::new(),
    })
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
        let measurement = parse_report(report).unwrap();
        assert_eq!(measurement.ops_per_sec, 1500.0);
        assert_eq!(measurement.samples, 450);
        assert_eq!(measurement.p50, Some(Duration::from_nanos(41216)));
        assert_eq!(measurement.p99, Some(Duration::from_nanos(98304)));
        assert!(parse_report("fio: no JSON").is_err());
        // No CPU fields: no CPU time.
        assert_eq!(parse_cpu(report), Ok(Duration::ZERO));
    }

    #[test]
    fn parse_cpu_takes_user_and_system_percentages_of_the_runtime() {
        let report = r#"{"jobs": [{"usr_cpu": 5.0, "sys_cpu": 20.0, "job_runtime": 2000,
            "read": {"iops": 1.0, "lat_ns": {"percentile": {}}}}]}"#;
        assert_eq!(parse_cpu(report), Ok(Duration::from_millis(500)));
    }
}
