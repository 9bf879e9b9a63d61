//! What the benchmarks print: a [`Row`] per benchmark × implementation × parameter, with its
//! ratio to the row's baseline, rendered as an aligned table ([`render_table`]) or as one JSON
//! object per line ([`JsonLine`], the schema of `--json` and `--json-out`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::measure::Measurement;

/// How a row ended.
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
}

impl RatioOf {
    /// The name used in JSON and in target descriptions.
    pub fn name(self) -> &'static str {
        match self {
            RatioOf::OpsPerSec => "ops_per_sec",
            RatioOf::P50 => "p50",
        }
    }

    /// The compared number of `measurement`.
    pub fn value(self, measurement: &Measurement) -> Option<f64> {
        match self {
            RatioOf::OpsPerSec => Some(measurement.ops_per_sec),
            RatioOf::P50 => measurement.p50.map(|p50| p50.as_secs_f64()),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// Benchmark: `wake`, `nop`, `randread`, `cached`, `submitters` or `seed`.
    pub benchmark: &'static str,
    /// What was measured: `aioctx`, `io-uring`, `fio`, ...
    pub implementation: &'static str,
    /// The row's parameter, such as `QD32` or `tasks=32`.
    pub parameter: String,
    /// The median measurement, or why there is none.
    pub outcome: Outcome,
    /// Which number the ratio compares.
    pub ratio_of: RatioOf,
    /// The implementation this row is compared with (same benchmark and parameter).
    pub baseline: Option<&'static str>,
    /// This row's number ÷ the baseline's.
    pub ratio: Option<f64>,
    /// Runs the median was taken over.
    pub repeats: usize,
    /// Anything a reader needs to interpret the row (file size, submit policy, ...).
    pub note: String,
}

impl Row {
    /// A row standing for a whole benchmark that could not start (its test file could not be
    /// made, the filesystem lacks O_DIRECT, ...).
    pub fn setup(benchmark: &'static str, outcome: Outcome) -> Row {
        Row {
            benchmark,
            implementation: "(setup)",
            parameter: String::new(),
            outcome,
            ratio_of: RatioOf::OpsPerSec,
            baseline: None,
            ratio: None,
            repeats: 0,
            note: String::new(),
        }
    }

    /// The measurement, if the row ran.
    pub fn measurement(&self) -> Option<&Measurement> {
        match &self.outcome {
            Outcome::Measured(measurement) => Some(measurement),
            Outcome::Skipped(_) | Outcome::Failed(_) => None,
        }
    }

    /// The row as one JSON object.
    pub fn to_record(&self) -> RowRecord {
        let measurement = self.measurement();
        let micros = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        let (status, reason) = match &self.outcome {
            Outcome::Measured(_) => (RowStatus::Measured, None),
            Outcome::Skipped(reason) => (RowStatus::Skipped, Some(reason.clone())),
            Outcome::Failed(reason) => (RowStatus::Failed, Some(reason.clone())),
        };
        RowRecord {
            benchmark: self.benchmark.to_owned(),
            implementation: self.implementation.to_owned(),
            parameter: self.parameter.clone(),
            status,
            ops_per_sec: measurement.map(|m| m.ops_per_sec),
            p50_us: micros(measurement.and_then(|m| m.p50)),
            p99_us: micros(measurement.and_then(|m| m.p99)),
            samples: measurement.map(|m| m.samples),
            repeats: self.repeats,
            ratio_of: self.ratio_of,
            baseline: self.baseline.map(str::to_owned),
            ratio: self.ratio,
            reason,
            note: self.note.clone(),
            counters: measurement
                .map(|m| m.extra.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default(),
        }
    }
}

/// One line of `--json` output, tagged by `kind`: a row, or a target checked against the rows.
/// Scripts read these field names; keep them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JsonLine {
    /// A row of the table.
    Row(RowRecord),
    /// A target and where this run leaves it.
    Target(TargetRecord),
}

/// A [`Row`] as JSON. Numbers that do not apply are `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowRecord {
    /// See [`Row::benchmark`].
    pub benchmark: String,
    /// See [`Row::implementation`].
    pub implementation: String,
    /// See [`Row::parameter`].
    pub parameter: String,
    /// How the row ended.
    pub status: RowStatus,
    /// Median ops/s over the repeats.
    pub ops_per_sec: Option<f64>,
    /// Median p50 latency, in microseconds.
    pub p50_us: Option<f64>,
    /// Median p99 latency, in microseconds.
    pub p99_us: Option<f64>,
    /// Ops completed in the measured windows of all repeats.
    pub samples: Option<u64>,
    /// Runs the medians were taken over.
    pub repeats: usize,
    /// Which number the ratio compares.
    pub ratio_of: RatioOf,
    /// The implementation the ratio is taken against.
    pub baseline: Option<String>,
    /// This row's number ÷ the baseline's.
    pub ratio: Option<f64>,
    /// Why the row was skipped or failed.
    pub reason: Option<String>,
    /// See [`Row::note`].
    pub note: String,
    /// The row's own counters (`enters_per_op`, `kicks_per_op`, ...), each a field of its own.
    #[serde(flatten)]
    pub counters: BTreeMap<String, f64>,
}

/// How a row ended, as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// [`Outcome::Measured`].
    Measured,
    /// [`Outcome::Skipped`].
    Skipped,
    /// [`Outcome::Failed`].
    Failed,
}

/// A checked target as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// What the target measures, as named in `benches/targets.json`.
    pub name: String,
    /// Benchmark of the rows compared.
    pub benchmark: String,
    /// Parameter of the rows compared.
    pub parameter: String,
    /// The implementation held to the target.
    pub implementation: String,
    /// What is compared, in words.
    pub description: String,
    /// The bounded value; `null` when its rows were not all measured.
    pub value: Option<f64>,
    /// The bound, such as `>= 0.35`.
    pub bound: String,
    /// Where the run leaves the target.
    pub status: TargetStatus,
    /// Why there is no value.
    pub reason: Option<String>,
}

/// Where a run leaves a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    /// The value is within the bound.
    Met,
    /// The value is outside the bound.
    Missed,
    /// A row it needs did not run.
    Pending,
}

impl TargetStatus {
    /// The status as the table and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            TargetStatus::Met => "met",
            TargetStatus::Missed => "missed",
            TargetStatus::Pending => "pending",
        }
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

/// Formats a latency in ns, us or ms.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos() as f64;
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
        previous_benchmark = row.benchmark;
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
    let (rate, p50, p99, mut note) = match &row.outcome {
        Outcome::Measured(m) => (
            format_rate(m.ops_per_sec),
            m.p50.map(format_duration).unwrap_or_else(dash),
            m.p99.map(format_duration).unwrap_or_else(dash),
            row.note.clone(),
        ),
        Outcome::Skipped(reason) => (dash(), dash(), dash(), format!("skipped: {reason}")),
        Outcome::Failed(reason) => (dash(), dash(), dash(), format!("FAILED: {reason}")),
    };
    if let Some(m) = row.measurement() {
        for (name, value) in &m.extra {
            let _ = write!(
                note,
                "{}{name}={value:.4}",
                if note.is_empty() { "" } else { "; " }
            );
        }
    }
    let ratio = row
        .ratio
        .map(|ratio| format!("{ratio:.2}x"))
        .unwrap_or_else(dash);
    let baseline = match row.baseline {
        Some(baseline) if baseline == row.implementation => "(baseline)".to_owned(),
        Some(baseline) => baseline.to_owned(),
        None => dash(),
    };
    [
        row.benchmark.to_owned(),
        row.implementation.to_owned(),
        row.parameter.clone(),
        rate,
        p50,
        p99,
        ratio,
        baseline,
        note,
    ]
}
