//! What the benchmarks print: a [`Row`] per benchmark × implementation × parameter, with its
//! ratio to the row's baseline, rendered as an aligned table ([`render_table`]) or as one JSON
//! object per line ([`Row::to_json`]).

use std::fmt::Write as _;
use std::time::Duration;

use super::json::ObjectWriter;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatioOf {
    /// Throughput: higher is better, ratio = ops/s ÷ baseline ops/s.
    OpsPerSec,
    /// Latency: lower is better, ratio = p50 ÷ baseline p50.
    P50,
}

impl RatioOf {
    /// The name used in JSON.
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

    /// `measured`, `skipped` or `failed`.
    pub fn status(&self) -> &'static str {
        match self.outcome {
            Outcome::Measured(_) => "measured",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
        }
    }

    /// The row as one line of JSON. Fields: `kind` ("row"), `benchmark`, `implementation`,
    /// `parameter`, `status`, `ops_per_sec`, `p50_us`, `p99_us`, `samples`, `repeats`,
    /// `ratio_of`, `baseline`, `ratio`, `reason`, `note`, then any extra counters by name.
    /// Numbers that do not apply are `null`.
    pub fn to_json(&self) -> String {
        let measurement = self.measurement();
        let micros = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        let reason = match &self.outcome {
            Outcome::Measured(_) => None,
            Outcome::Skipped(reason) | Outcome::Failed(reason) => Some(reason.as_str()),
        };
        let mut object = ObjectWriter::default();
        object
            .string("kind", "row")
            .string("benchmark", self.benchmark)
            .string("implementation", self.implementation)
            .string("parameter", &self.parameter)
            .string("status", self.status())
            .optional_number("ops_per_sec", measurement.map(|m| m.ops_per_sec))
            .optional_number("p50_us", micros(measurement.and_then(|m| m.p50)))
            .optional_number("p99_us", micros(measurement.and_then(|m| m.p99)))
            .optional_number("samples", measurement.map(|m| m.samples as f64))
            .number("repeats", self.repeats as f64)
            .string("ratio_of", self.ratio_of.name())
            .optional_string("baseline", self.baseline)
            .optional_number("ratio", self.ratio)
            .optional_string("reason", reason)
            .string("note", &self.note);
        for (name, value) in measurement.map(|m| m.extra.as_slice()).unwrap_or_default() {
            object.number(name, *value);
        }
        object.finish()
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
