//! The targets this crate is held to, checked against the rows of a run. They are data, in
//! `benches/targets.json` beside BENCHMARKS.md (read at compile time): each names what it
//! measures, the rows it compares (a ratio between two implementations in one group, or a
//! counter of one row) and a bound. A target whose rows were not all measured is `pending`,
//! never silently met. To add one, add an object to the file.

use std::fmt::Write as _;

use serde::Deserialize;

use super::report::{RatioOf, Row, TargetRecord, TargetStatus};

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
    serde_json::from_str(include_str!("../targets.json"))
        .unwrap_or_else(|error| panic!("benches/targets.json: {error}"))
}

/// A target checked against a run.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The target.
    pub target: Target,
    /// The bounded value, or why it is missing.
    pub value: Result<f64, String>,
}

impl Checked {
    /// Where the run leaves the target.
    pub fn status(&self) -> TargetStatus {
        match (self.value.as_ref(), self.target.bound) {
            (Err(_), _) => TargetStatus::Pending,
            (Ok(value), Bound::AtLeast(limit)) if *value >= limit => TargetStatus::Met,
            (Ok(value), Bound::AtMost(limit)) if *value <= limit => TargetStatus::Met,
            (Ok(_), _) => TargetStatus::Missed,
        }
    }

    /// What is compared, in words.
    pub fn description(&self) -> String {
        let target = &self.target;
        match &target.metric {
            Metric::Ratio { against, of } => format!(
                "{} {}: {} {} / {}",
                target.benchmark,
                target.parameter,
                of.name(),
                target.implementation,
                against
            ),
            Metric::Counter { counter } => format!(
                "{} {}: {} {counter}",
                target.benchmark, target.parameter, target.implementation
            ),
        }
    }

    fn bound_text(&self) -> String {
        match self.target.bound {
            Bound::AtLeast(limit) => format!(">= {limit}"),
            Bound::AtMost(limit) => format!("<= {limit}"),
        }
    }

    /// The checked target as one JSON object.
    pub fn to_record(&self) -> TargetRecord {
        TargetRecord {
            name: self.target.name.clone(),
            benchmark: self.target.benchmark.clone(),
            parameter: self.target.parameter.clone(),
            implementation: self.target.implementation.clone(),
            description: self.description(),
            value: self.value.as_ref().ok().copied(),
            bound: self.bound_text(),
            status: self.status(),
            reason: self.value.as_ref().err().cloned(),
        }
    }
}

/// Checks every target whose benchmark is in `rows`.
pub fn check(rows: &[Row]) -> Vec<Checked> {
    load()
        .into_iter()
        .filter(|target| rows.iter().any(|row| row.benchmark == target.benchmark))
        .map(|target| Checked {
            value: value_of(&target, rows),
            target,
        })
        .collect()
}

fn value_of(target: &Target, rows: &[Row]) -> Result<f64, String> {
    let measured = |implementation: &str| {
        rows.iter()
            .find(|row| {
                row.benchmark == target.benchmark
                    && row.parameter == target.parameter
                    && row.implementation == implementation
            })
            .and_then(Row::measurement)
            .ok_or(format!("no measured {implementation} row"))
    };
    let subject = measured(&target.implementation)?;
    match &target.metric {
        Metric::Ratio { against, of } => {
            let numerator = of.value(subject).ok_or("no value to compare")?;
            let denominator = of.value(measured(against)?).ok_or("no value to compare")?;
            Ok(numerator / denominator)
        }
        Metric::Counter { counter } => subject
            .extra(counter)
            .ok_or(format!("no {counter} counter")),
    }
}

/// The checked targets as text lines for the table.
pub fn render(checked: &[Checked]) -> String {
    let mut out = String::from("targets (benches/targets.json):\n");
    let name_width = checked.iter().map(|c| c.target.name.len()).max();
    let description_width = checked.iter().map(|c| c.description().len()).max();
    for item in checked {
        let value = match &item.value {
            Ok(value) => format!("{value:.3}"),
            Err(reason) => reason.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<name_width$}  {:<description_width$}  {value:>8}  target {:<8}  {}",
            item.target.name,
            item.description(),
            item.bound_text(),
            item.status().name(),
            name_width = name_width.unwrap_or(0),
            description_width = description_width.unwrap_or(0),
        );
    }
    out
}
