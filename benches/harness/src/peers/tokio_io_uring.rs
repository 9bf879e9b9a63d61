//! Tokio's own io_uring file I/O (`--cfg tokio_unstable`, feature `io-uring`): what a Tokio
//! program gets by turning it on. It cannot be built into this crate's benchmarks (the cfg would
//! apply to every crate of the build), so it is a small cargo project of its own,
//! `benches/tokio-io-uring-peer/`, built on first use into `target/tokio-io-uring-peer/` and run
//! as a subprocess the way fio is: workload on the command line, one JSON line back (see its
//! `src/main.rs`). The row is skipped, with the reason, when the peer cannot be built or Tokio
//! did not put its reads on a ring.
//!
//! Tokio 1.54 reads a `tokio::fs::File` through its runtime's one ring (a `Mutex` around it, one
//! `io_uring_enter` per op) once `enable_all`/`enable_io_uring` is set; a seek still goes to the
//! blocking pool. There is no positional read, so each read is a seek and a `read_exact`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use crate::group::{RunError, RunResult};
use crate::measure::{Measurement, Window};
use crate::testfile::{ReadMode, TestFile};

/// The runtime the peer's tasks run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A multi-thread runtime with this many workers.
    MultiThread(usize),
    /// A current-thread runtime.
    CurrentThread,
}

/// The peer's project directory.
fn project_dir() -> PathBuf {
    crate::workspace_root().join("benches/tokio-io-uring-peer")
}

/// Where the peer is built: its own target directory beside the workspace's.
fn target_dir() -> PathBuf {
    crate::workspace_root().join("target/tokio-io-uring-peer")
}

/// Builds the peer (once per process; cargo makes later builds no-ops) and returns its binary,
/// or why it cannot be built here.
pub fn binary() -> Result<&'static Path, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(project_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        // Only this build gets the cfg; flags meant for the crate's own build stay out.
        .env("RUSTFLAGS", "--cfg tokio_unstable")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|error| format!("cannot run cargo to build the peer: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        return Err(format!(
            "benches/tokio-io-uring-peer did not build ({}): {}",
            output.status,
            last.unwrap_or("no output")
        ));
    }
    let binary = target_dir().join("release/tokio-io-uring-peer");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "the peer built but {} is missing",
            binary.display()
        ))
    }
}

/// The peer's report.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Report {
    Skip {
        skip: String,
    },
    Done {
        ops: u64,
        elapsed_s: f64,
        p50_ns: Option<u64>,
        p99_ns: Option<u64>,
        cpu_s: f64,
        ops_total: u64,
        ring_cqes: u64,
    },
}

/// `mt`: `tasks` tasks on a Tokio runtime of `flavor`, each reading random 4 KiB blocks of
/// `file` through its own `tokio::fs::File` on Tokio's io_uring; one read in `latency_every`
/// timed. Adds `cpu_s_per_mop` (the child's CPU time) and `ring_cqes_per_op` (completions on
/// Tokio's ring per read, warm-up included: ~1 when every read went through it).
pub fn random_reads(
    file: &TestFile,
    mode: ReadMode,
    tasks: usize,
    flavor: Flavor,
    latency_every: u32,
    window: Window,
) -> RunResult {
    let binary = binary().map_err(RunError::Skip)?;
    let mut command = Command::new(binary);
    match flavor {
        Flavor::MultiThread(workers) => command
            .args(["--flavor", "multi", "--workers"])
            .arg(workers.to_string()),
        Flavor::CurrentThread => command.args(["--flavor", "current"]),
    };
    command
        .arg("--tasks")
        .arg(tasks.to_string())
        .arg("--file")
        .arg(&file.path)
        .arg("--len")
        .arg(file.len.to_string())
        .arg("--warmup-ms")
        .arg(window.warmup.as_millis().to_string())
        .arg("--measure-ms")
        .arg(window.measure.as_millis().max(1).to_string())
        .arg("--latency-every")
        .arg(latency_every.to_string());
    if mode == ReadMode::Direct {
        command.arg("--direct");
    }
    let output = command
        .output()
        .map_err(|error| RunError::Skip(format!("peer not runnable: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(RunError::Fail(format!(
            "the peer exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_report(&stdout)
}

/// Turns the peer's JSON line into a measurement, or the skip it reports. Reads that did not
/// go through Tokio's ring (fewer completions on it than half the reads) skip the row: that is
/// Tokio's blocking pool, measured by the `tokio::fs` row already.
pub fn parse_report(line: &str) -> RunResult {
    let report: Report = serde_json::from_str(line.trim())
        .map_err(|error| RunError::Fail(format!("peer report {line:?}: {error}")))?;
    match report {
        Report::Skip { skip } => Err(RunError::Skip(skip)),
        Report::Done {
            ops,
            elapsed_s,
            p50_ns,
            p99_ns,
            cpu_s,
            ops_total,
            ring_cqes,
        } => {
            let cqes_per_op = ring_cqes as f64 / ops_total.max(1) as f64;
            if cqes_per_op < 0.5 {
                return Err(RunError::Skip(format!(
                    "Tokio's ring completed {ring_cqes} ops for {ops_total} reads: its reads \
                     went to the blocking pool"
                )));
            }
            let mut measurement =
                Measurement::throughput(ops, Duration::from_secs_f64(elapsed_s.max(1e-9)));
            measurement.p50 = p50_ns.map(Duration::from_nanos);
            measurement.p99 = p99_ns.map(Duration::from_nanos);
            Ok(measurement
                .with_cpu(Duration::from_secs_f64(cpu_s.max(0.0)))
                .with_extra("ring_cqes_per_op", cqes_per_op))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_report_reads_a_run_a_skip_and_a_run_off_the_ring() {
        let run = parse_report(
            r#"{"ops":2000,"elapsed_s":2.0,"p50_ns":500000,"p99_ns":900000,"cpu_s":1.0,
                "ops_total":2400,"ring_cqes":2464}"#,
        )
        .unwrap();
        assert_eq!(run.ops_per_sec, 1000.0);
        assert_eq!(run.p50, Some(Duration::from_micros(500)));
        assert_eq!(run.extra("cpu_s_per_mop"), Some(500.0));
        assert!(run.extra("ring_cqes_per_op").is_some_and(|v| v > 1.0));

        let skip = parse_report(r#"{"skip":"no ring"}"#);
        assert!(matches!(skip, Err(RunError::Skip(reason)) if reason == "no ring"));

        let off_ring = parse_report(
            r#"{"ops":10,"elapsed_s":1.0,"p50_ns":null,"p99_ns":null,"cpu_s":0.1,
                "ops_total":100,"ring_cqes":3}"#,
        );
        assert!(matches!(off_ring, Err(RunError::Skip(_))));
        assert!(matches!(parse_report("garbage"), Err(RunError::Fail(_))));
    }
}
