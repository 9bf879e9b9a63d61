//! Runs one row group — one benchmark at one parameter, several implementations — the way every
//! claim here is measured: the implementations take turns for each repeat (so a noisy neighbour
//! hits all of them), each row reports the median of its repeats, and each row's ratio is taken
//! against the group's baseline measured in the same run.

use std::borrow::Cow;
use std::io;

use super::config::Config;
use super::measure::{Latencies, Measurement, median_of};
use super::report::{Outcome, RatioOf, Row};

/// Why an implementation produced no measurement.
#[derive(Clone, Debug)]
pub enum RunError {
    /// The machine lacks what it needs (fio, io_uring): the row is skipped with this reason.
    Skip(String),
    /// It ran and failed: the row is reported as failed with this reason.
    Fail(String),
}

impl From<io::Error> for RunError {
    fn from(error: io::Error) -> RunError {
        RunError::Fail(error.to_string())
    }
}

/// The result of one run of one implementation.
pub type RunResult = Result<Measurement, RunError>;

/// Turns an `io_uring_setup` error into a skip when io_uring is missing or forbidden (old kernel,
/// seccomp, `kernel.io_uring_disabled`), and into a failure otherwise.
pub fn uring_setup_error(error: io::Error) -> RunError {
    match error.raw_os_error() {
        Some(libc::ENOSYS | libc::EPERM | libc::EACCES) => {
            RunError::Skip(format!("io_uring unavailable: {error}"))
        }
        _ => RunError::Fail(format!("io_uring setup: {error}")),
    }
}

/// One implementation in a group.
pub struct Candidate<'a> {
    implementation: Cow<'static, str>,
    note: String,
    run: Result<Box<dyn FnMut() -> RunResult + 'a>, String>,
}

impl<'a> Candidate<'a> {
    /// An implementation measured by calling `run` once per repeat.
    pub fn new(
        implementation: impl Into<Cow<'static, str>>,
        run: impl FnMut() -> RunResult + 'a,
    ) -> Candidate<'a> {
        Candidate {
            implementation: implementation.into(),
            note: String::new(),
            run: Ok(Box::new(run)),
        }
    }

    /// An implementation known up front not to run here, with the reason.
    pub fn skipped(
        implementation: impl Into<Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Candidate<'a> {
        Candidate {
            implementation: implementation.into(),
            note: String::new(),
            run: Err(reason.into()),
        }
    }

    /// Adds a note to the row.
    pub fn note(mut self, note: impl Into<String>) -> Candidate<'a> {
        self.note = note.into();
        self
    }
}

/// One benchmark at one parameter.
#[derive(Clone, Debug)]
pub struct Group {
    /// The benchmark's name.
    pub benchmark: &'static str,
    /// The parameter shared by the group's rows.
    pub parameter: String,
    /// Which number the ratios compare.
    pub ratio_of: RatioOf,
    /// Baseline candidates in order of preference: the first one measured is the baseline.
    pub baselines: &'static [&'static str],
}

/// Runs `candidates` in turns, `config.repeats` times, and returns one row per candidate. A
/// candidate that skips or fails is not run again; candidates `--impls` leaves out get no row.
/// A group whose parameter `--params` leaves out gets no rows.
pub fn run_group(config: &Config, group: &Group, candidates: Vec<Candidate<'_>>) -> Vec<Row> {
    if !config.selects_parameter(&group.parameter) {
        return Vec::new();
    }
    struct Entry<'a> {
        candidate: Candidate<'a>,
        runs: Vec<Measurement>,
        stopped: Option<RunError>,
    }
    let mut entries: Vec<Entry<'_>> = candidates
        .into_iter()
        .filter(|candidate| config.selects_implementation(&candidate.implementation))
        .map(|candidate| Entry {
            candidate,
            runs: Vec::new(),
            stopped: None,
        })
        .collect();
    for repeat in 0..config.repeats {
        for entry in &mut entries {
            let run = match (&mut entry.candidate.run, &entry.stopped) {
                (Ok(run), None) => run,
                _ => continue,
            };
            match run() {
                Ok(measurement) => {
                    if config.progress {
                        eprintln!(
                            "  {} {} {} [{}/{}]: {:.0} ops/s",
                            group.benchmark,
                            group.parameter,
                            entry.candidate.implementation,
                            repeat + 1,
                            config.repeats,
                            measurement.ops_per_sec
                        );
                    }
                    entry.runs.push(measurement);
                }
                Err(error) => entry.stopped = Some(error),
            }
        }
    }
    let mut rows: Vec<Row> = entries
        .into_iter()
        .map(|entry| {
            let outcome = match (entry.candidate.run, entry.stopped) {
                (Err(reason), _) | (Ok(_), Some(RunError::Skip(reason))) => {
                    Outcome::Skipped(reason)
                }
                (Ok(_), Some(RunError::Fail(reason))) => Outcome::Failed(reason),
                (Ok(_), None) => Outcome::Measured(median_of(&entry.runs)),
            };
            Row {
                benchmark: group.benchmark.to_owned(),
                implementation: entry.candidate.implementation.into_owned(),
                parameter: group.parameter.clone(),
                ratio_of: group.ratio_of,
                repeats: entry.runs.len(),
                note: entry.candidate.note,
                ..Row::of(outcome)
            }
        })
        .collect();
    set_ratios(&mut rows, group);
    rows
}

fn set_ratios(rows: &mut [Row], group: &Group) {
    let baseline = group.baselines.iter().find_map(|name| {
        let row = rows.iter().find(|row| row.implementation == *name)?;
        Some((*name, group.ratio_of.value(row)?))
    });
    let Some((baseline_name, baseline_value)) = baseline else {
        return;
    };
    for row in rows {
        row.baseline = Some(baseline_name.to_owned());
        row.ratio = group
            .ratio_of
            .value(row)
            .map(|value| value / baseline_value);
    }
}

/// Sums the op counts returned by the workers of one run; a worker that
/// failed or panicked fails the run.
pub async fn total_ops<F, E>(workers: impl IntoIterator<Item = F>) -> Result<u64, RunError>
where
    F: std::future::Future<Output = Result<std::io::Result<u64>, E>>,
    E: std::fmt::Display,
{
    let mut ops = 0;
    for worker in workers {
        ops += worker.await.map_err(|e| RunError::Fail(e.to_string()))??;
    }
    Ok(ops)
}

/// As [`total_ops`], for workers that also return their latencies: the run's
/// measurement over `elapsed`, from all of them merged.
pub async fn total_measurement<F, E>(
    workers: impl IntoIterator<Item = F>,
    elapsed: std::time::Duration,
) -> Result<Measurement, RunError>
where
    F: std::future::Future<Output = Result<std::io::Result<(u64, Latencies)>, E>>,
    E: std::fmt::Display,
{
    let mut all = Latencies::default();
    let mut ops = 0;
    for worker in workers {
        let (worker_ops, latencies) = worker.await.map_err(|e| RunError::Fail(e.to_string()))??;
        ops += worker_ops;
        all.absorb(latencies);
    }
    Ok(all.into_measurement(ops, elapsed))
}

/// The builder of the `mt` rows' Tokio multi-thread runtime: `workers` workers, every driver
/// enabled. Callers may add to it (an `on_thread_start`) before building.
pub fn multi_thread(workers: usize) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    builder
}
