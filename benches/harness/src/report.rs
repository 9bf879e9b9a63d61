//! What the benchmarks print: a [`Row`] per benchmark × implementation × parameter, with its
//! ratio to the row's baseline, as an aligned table ([`render_table`]) or as a JSON line. A row
//! is its own JSON object, so its field names are what scripts read: keep them.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::measure::Measurement;

/// How one implementation's runs ended, before they become a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Ran; the median over the repeats.
    Measured(Measurement),
    /// Not run, because the machine lacks something the implementation needs (fio, io_uring).
    Skipped(String),
    /// Ran and failed: a bug or a broken environment, to look at.
    Failed(String),
}

/// Which number a row's ratio compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioOf {
    /// Throughput: higher is better, ratio = ops/s ÷ baseline ops/s.
    OpsPerSec,
    /// Latency: lower is better, ratio = p50 ÷ baseline p50.
    P50,
    /// CPU time per op (`cpu_s_per_mop`, the process's user + system time, all threads): lower
    /// is better.
    CpuSPerMop,
}

impl RatioOf {
    /// The name used in JSON and in target descriptions.
    pub fn name(self) -> &'static str {
        match self {
            RatioOf::OpsPerSec => "ops_per_sec",
            RatioOf::P50 => "p50",
            RatioOf::CpuSPerMop => "cpu_s_per_mop",
        }
    }

    /// The compared number of `row`, if it was measured.
    pub fn value(self, row: &Row) -> Option<f64> {
        match self {
            RatioOf::OpsPerSec => row.ops_per_sec,
            RatioOf::P50 => row.p50_us,
            RatioOf::CpuSPerMop => row.counter("cpu_s_per_mop"),
        }
    }
}

/// How a row ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran: the numbers are medians over the repeats.
    Measured,
    /// Not run; `reason` says what the machine lacks.
    Skipped,
    /// Ran and failed; `reason` says how.
    Failed,
}

/// One line of the report. Numbers that do not apply (or that a skipped or failed row lacks) are
/// `None`, `null` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Benchmark: `wake`, `nop`, `randread`, ... (see `BENCHMARKS`).
    pub benchmark: String,
    /// What was measured: `aioctx`, `io-uring`, `fio`, ...
    pub implementation: String,
    /// The row's parameter, such as `QD32` or `tasks=32`.
    pub parameter: String,
    /// How the row ended.
    pub status: Status,
    /// Completed ops per second.
    pub ops_per_sec: Option<f64>,
    /// Median per-op latency in microseconds, when the run records latencies.
    pub p50_us: Option<f64>,
    /// 99th-percentile per-op latency in microseconds, when the run records latencies.
    pub p99_us: Option<f64>,
    /// Ops completed in the measured windows of all repeats.
    pub samples: Option<u64>,
    /// Runs the medians were taken over.
    pub repeats: usize,
    /// Which number the ratio compares.
    pub ratio_of: RatioOf,
    /// The implementation this row is compared with (same benchmark and parameter).
    pub baseline: Option<String>,
    /// This row's number ÷ the baseline's.
    pub ratio: Option<f64>,
    /// Why the row was skipped or failed.
    pub reason: Option<String>,
    /// Anything a reader needs to interpret the row (file size, submit policy, ...).
    pub note: String,
    /// Counters particular to the benchmark (`enters_per_op`, `kicks_per_op`, ...), each a JSON
    /// field of its own, in the order the run reported them.
    #[serde(flatten, with = "counters")]
    pub counters: Vec<(String, f64)>,
}

impl Row {
    /// A row holding `outcome`, to be completed with struct update syntax
    /// (`Row { benchmark, implementation, .., ..Row::of(outcome) }`): names empty, ratio of
    /// ops/s, no baseline, no repeats.
    pub fn of(outcome: Outcome) -> Row {
        let (status, measurement, reason) = match outcome {
            Outcome::Measured(measurement) => (Status::Measured, Some(measurement), None),
            Outcome::Skipped(reason) => (Status::Skipped, None, Some(reason)),
            Outcome::Failed(reason) => (Status::Failed, None, Some(reason)),
        };
        let measurement = measurement.as_ref();
        let micros = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        Row {
            benchmark: String::new(),
            implementation: String::new(),
            parameter: String::new(),
            status,
            ops_per_sec: measurement.map(|m| m.ops_per_sec),
            p50_us: micros(measurement.and_then(|m| m.p50)),
            p99_us: micros(measurement.and_then(|m| m.p99)),
            samples: measurement.map(|m| m.samples),
            repeats: 0,
            ratio_of: RatioOf::OpsPerSec,
            baseline: None,
            ratio: None,
            reason,
            note: String::new(),
            counters: measurement
                .map(|m| m.extra.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default(),
        }
    }

    /// A row standing for a whole benchmark that could not start (its test file could not be
    /// made, the filesystem lacks O_DIRECT, ...).
    pub fn setup(benchmark: &str, outcome: Outcome) -> Row {
        Row {
            benchmark: benchmark.to_owned(),
            implementation: "(setup)".to_owned(),
            ..Row::of(outcome)
        }
    }

    /// The named counter, if the row reports it.
    pub fn counter(&self, name: &str) -> Option<f64> {
        self.counters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }
}

/// A row's counters as fields of its JSON object (with `#[serde(flatten)]`).
mod counters {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        counters: &[(String, f64)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(counters.iter().map(|(name, value)| (name, value)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, f64)>, D::Error> {
        let counters = std::collections::BTreeMap::<String, f64>::deserialize(deserializer)?;
        Ok(counters.into_iter().collect())
    }
}

/// Formats an ops/s figure with a k/M suffix.
pub fn format_rate(ops_per_sec: f64) -> String {
    if ops_per_sec >= 1e6 {
        format!("{:.2}M", ops_per_sec / 1e6)
    } else if ops_per_sec >= 1e3 {
        format!("{:.1}k", ops_per_sec / 1e3)
    } else {
        format!("{ops_per_sec:.1}")
    }
}

/// Formats a latency given in microseconds in ns, us or ms.
pub fn format_micros(micros: f64) -> String {
    let nanos = micros * 1e3;
    if nanos >= 1e6 {
        format!("{:.2} ms", nanos / 1e6)
    } else if nanos >= 1e3 {
        format!("{:.1} us", nanos / 1e3)
    } else {
        format!("{nanos:.0} ns")
    }
}

/// The rows as an aligned text table, with a legend for the ratio column.
pub fn render_table(rows: &[Row]) -> String {
    const HEADER: [&str; 9] = [
        "benchmark",
        "implementation",
        "parameter",
        "ops/s",
        "p50",
        "p99",
        "ratio",
        "vs",
        "note",
    ];
    let cells: Vec<[String; 9]> = rows.iter().map(row_cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let numeric = (3..=6).contains(&index);
            if index == cells.len() - 1 {
                text.push_str(cell);
            } else if numeric {
                let _ = write!(text, "{cell:>width$}  ");
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        let mut text = text.trim_end().to_owned();
        text.push('\n');
        text
    };
    let mut out = line(&HEADER.map(str::to_owned));
    let mut previous_benchmark = "";
    for (row, cells) in rows.iter().zip(&cells) {
        if row.benchmark != previous_benchmark && !previous_benchmark.is_empty() {
            out.push('\n');
        }
        previous_benchmark = &row.benchmark;
        out.push_str(&line(cells));
    }
    out.push_str(
        "\nratio: ops/s ÷ the baseline's ops/s (higher is better); for `wake`, p50 ÷ the baseline's \
         p50 (lower is better).\nMedians over the repeats; implementations of a row take turns.\n",
    );
    out
}

fn row_cells(row: &Row) -> [String; 9] {
    let dash = || "-".to_owned();
    let micros = |value: Option<f64>| value.map(format_micros).unwrap_or_else(dash);
    let reason = row.reason.as_deref().unwrap_or_default();
    let (rate, mut note) = match row.status {
        Status::Measured => (row.ops_per_sec.map(format_rate), row.note.clone()),
        Status::Skipped => (None, format!("skipped: {reason}")),
        Status::Failed => (None, format!("FAILED: {reason}")),
    };
    for (name, value) in &row.counters {
        let separator = if note.is_empty() { "" } else { "; " };
        let _ = write!(note, "{separator}{name}={value:.4}");
    }
    let baseline = match &row.baseline {
        Some(baseline) if *baseline == row.implementation => "(baseline)".to_owned(),
        Some(baseline) => baseline.clone(),
        None => dash(),
    };
    [
        row.benchmark.clone(),
        row.implementation.clone(),
        row.parameter.clone(),
        rate.unwrap_or_else(dash),
        micros(row.p50_us),
        micros(row.p99_us),
        row.ratio.map(|r| format!("{r:.2}x")).unwrap_or_else(dash),
        baseline,
        note,
    ]
}
