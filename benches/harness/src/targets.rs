//! The targets this crate is held to, checked against the rows of a run. They are data, in
//! `benches/targets.json` beside BENCHMARKS.md (read at compile time): each names what it
//! measures, the rows it compares (a ratio between two implementations in one group, or a
//! counter of one row) and a bound. A target whose rows were not all measured is `pending`,
//! never silently met. To add one, add an object to the file.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{RatioOf, Row, Status};

/// One target, as `benches/targets.json` writes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Target {
    /// What it measures, such as `nop_vs_raw_io_uring`.
    pub name: String,
    /// Benchmark of the rows compared.
    pub benchmark: String,
    /// Parameter of the rows compared.
    pub parameter: String,
    /// The implementation held to the target.
    pub implementation: String,
    /// What is bounded.
    #[serde(flatten)]
    pub metric: Metric,
    /// The bound.
    #[serde(flatten)]
    pub bound: Bound,
}

/// The number a target bounds: `"against"` and `"of"`, or `"counter"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Metric {
    /// `implementation`'s number ÷ `against`'s, both in the same benchmark and parameter.
    Ratio {
        /// The implementation in the denominator.
        against: String,
        /// Which number of the two rows.
        of: RatioOf,
    },
    /// A counter the row reports (see `Measurement::extra`).
    Counter {
        /// The counter's name.
        counter: String,
    },
}

/// Which way a bound points: `"at_least"` or `"at_most"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

/// The targets of `benches/targets.json`.
///
/// # Panics
///
/// Panics if the file does not parse (every run reads it, so the quick-run test catches that).
pub fn load() -> Vec<Target> {
    serde_json::from_str(include_str!("../../targets.json"))
        .unwrap_or_else(|error| panic!("benches/targets.json: {error}"))
}

impl Target {
    /// Checks this target against `rows`.
    fn check(self, rows: &[Row]) -> CheckedTarget {
        let value = self.value_in(rows);
        let status = match (&value, self.bound) {
            (Err(_), _) => TargetStatus::Pending,
            (Ok(value), Bound::AtLeast(limit)) if *value >= limit => TargetStatus::Met,
            (Ok(value), Bound::AtMost(limit)) if *value <= limit => TargetStatus::Met,
            (Ok(_), _) => TargetStatus::Missed,
        };
        let (benchmark, parameter) = (&self.benchmark, &self.parameter);
        let description = match &self.metric {
            Metric::Ratio { against, of } => format!(
                "{benchmark} {parameter}: {} {} / {against}",
                of.name(),
                self.implementation
            ),
            Metric::Counter { counter } => {
                format!("{benchmark} {parameter}: {} {counter}", self.implementation)
            }
        };
        let bound = match self.bound {
            Bound::AtLeast(limit) => format!(">= {limit}"),
            Bound::AtMost(limit) => format!("<= {limit}"),
        };
        CheckedTarget {
            name: self.name,
            benchmark: self.benchmark,
            parameter: self.parameter,
            implementation: self.implementation,
            description,
            value: value.as_ref().ok().copied(),
            bound,
            status,
            reason: value.err(),
        }
    }

    /// The bounded value in `rows`, or why there is none.
    fn value_in(&self, rows: &[Row]) -> Result<f64, String> {
        let measured = |implementation: &str| {
            rows.iter()
                .find(|row| {
                    row.benchmark == self.benchmark
                        && row.parameter == self.parameter
                        && row.implementation == implementation
                        && row.status == Status::Measured
                })
                .ok_or(format!("no measured {implementation} row"))
        };
        let subject = measured(&self.implementation)?;
        match &self.metric {
            Metric::Ratio { against, of } => {
                let numerator = of.value(subject).ok_or("no value to compare")?;
                let denominator = of.value(measured(against)?).ok_or("no value to compare")?;
                Ok(numerator / denominator)
            }
            Metric::Counter { counter } => subject
                .counter(counter)
                .ok_or(format!("no {counter} counter")),
        }
    }
}

/// A target checked against a run, as the table's target lines and the JSON lines of
/// `"kind": "target"` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckedTarget {
    /// What the target measures, as named in `benches/targets.json`.
    pub name: String,
    /// Benchmark of the rows compared.
    pub benchmark: String,
    /// Parameter of the rows compared.
    pub parameter: String,
    /// The implementation held to the target.
    pub implementation: String,
    /// What is compared, in words: `nop 32 in flight: ops_per_sec aioctx / io-uring`.
    pub description: String,
    /// The bounded value; `None` when its rows were not all measured.
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
    /// A row it needs was not measured.
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

/// Checks every target whose benchmark is in `rows`.
pub fn check(rows: &[Row]) -> Vec<CheckedTarget> {
    load()
        .into_iter()
        .filter(|target| rows.iter().any(|row| row.benchmark == target.benchmark))
        .map(|target| target.check(rows))
        .collect()
}

/// The checked targets as text lines for the table.
pub fn render(checked: &[CheckedTarget]) -> String {
    let mut out = String::from("targets (benches/targets.json):\n");
    let name_width = checked.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let description_width = checked.iter().map(|c| c.description.len()).max();
    let description_width = description_width.unwrap_or(0);
    for target in checked {
        let value = match (target.value, &target.reason) {
            (Some(value), _) => format!("{value:.3}"),
            (None, reason) => reason.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "  {:<name_width$}  {:<description_width$}  {value:>8}  target {:<8}  {}",
            target.name,
            target.description,
            target.bound,
            target.status.name(),
        );
    }
    out
}
