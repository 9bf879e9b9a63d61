//! fio as the device's reference: `fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k` run
//! as a subprocess on the same file, IOPS and completion-latency percentiles read from its JSON
//! report. Skipped, with a note, when fio is not installed.
//!
//! fio's p50/p99 are its total latency (`--lat_percentiles=1`, `lat_ns`: submission call to
//! reaped completion), the closest match to the other rows, which time each op from just before
//! it is queued to when its completion is seen.

use std::process::Command;
use std::time::Duration;

use crate::harness::group::{RunError, RunResult};
use crate::harness::json::Json;
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
/// `ramp_time`).
pub fn random_reads(file: &TestFile, depth: usize, window: Window) -> RunResult {
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
    parse_report(&stdout).map_err(|error| RunError::Fail(format!("fio report: {error}")))
}

/// Reads IOPS, total-latency p50 and p99, and the number of I/Os from fio's JSON report (fio may print notices
/// before the JSON, which are skipped).
pub fn parse_report(report: &str) -> Result<Measurement, String> {
    let json_start = report.find('{').ok_or("no JSON in fio output")?;
    let json = Json::parse(&report[json_start..])?;
    let read = json
        .get("jobs")
        .and_then(|jobs| jobs.at(0))
        .and_then(|job| job.get("read"))
        .ok_or("no jobs[0].read")?;
    let number =
        |value: Option<&Json>, what: &str| value.and_then(Json::as_f64).ok_or(format!("no {what}"));
    let iops = number(read.get("iops"), "read.iops")?;
    let total_ios = number(read.get("total_ios"), "read.total_ios").unwrap_or(0.0);
    let percentile = |key: &str| -> Result<Duration, String> {
        let nanos = number(
            read.get("lat_ns")
                .and_then(|lat| lat.get("percentile"))
                .and_then(|p| p.get(key)),
            &format!("read.lat_ns.percentile[{key}]"),
        )?;
        Ok(Duration::from_nanos(nanos as u64))
    };
    Ok(Measurement {
        ops_per_sec: iops,
        p50: Some(percentile("50.000000")?),
        p99: Some(percentile("99.000000")?),
        samples: total_ios as u64,
        extra: Vec::new(),
    })
}
