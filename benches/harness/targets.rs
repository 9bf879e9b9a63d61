//! The targets issue 5 sets for aioctx, checked against the rows of a run: each target is a ratio
//! between two rows of the same group (or a counter of one row) and a bound. A target whose rows
//! were not all measured is `pending`, never silently met.

use std::fmt::Write as _;

use super::report::{RatioOf, Row, TargetRecord, TargetStatus};

/// The number a target bounds.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// `implementation`'s number ÷ `against`'s, both in the same benchmark and parameter.
    Ratio { against: &'static str, of: RatioOf },
    /// A counter the row reports (see `Measurement::extra`).
    Counter(&'static str),
}

/// Which way a bound points.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

/// One target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Benchmark of the rows compared.
    pub benchmark: &'static str,
    /// Parameter of the rows compared.
    pub parameter: &'static str,
    /// The implementation held to the target.
    pub implementation: &'static str,
    /// What is bounded.
    pub metric: Metric,
    /// The bound.
    pub bound: Bound,
}

/// The targets from issue 5.
pub const TARGETS: &[Target] = &[
    Target {
        benchmark: "wake",
        parameter: "round trip",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "eventfd",
            of: RatioOf::P50,
        },
        bound: Bound::AtMost(1.1),
    },
    Target {
        benchmark: "nop",
        parameter: "32 in flight",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "io-uring",
            of: RatioOf::OpsPerSec,
        },
        bound: Bound::AtLeast(0.35),
    },
    Target {
        benchmark: "nop",
        parameter: "32 in flight",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "tokio-uring",
            of: RatioOf::OpsPerSec,
        },
        bound: Bound::AtLeast(1.5),
    },
    Target {
        benchmark: "randread",
        parameter: "QD32",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "fio",
            of: RatioOf::OpsPerSec,
        },
        bound: Bound::AtLeast(0.97),
    },
    Target {
        benchmark: "cached",
        parameter: "tasks=32",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "tokio-uring",
            of: RatioOf::OpsPerSec,
        },
        bound: Bound::AtLeast(1.0),
    },
    Target {
        benchmark: "cached",
        parameter: "tasks=32",
        implementation: "aioctx",
        metric: Metric::Ratio {
            against: "tokio::fs",
            of: RatioOf::OpsPerSec,
        },
        bound: Bound::AtLeast(10.0),
    },
    Target {
        benchmark: "submitters",
        parameter: "threads=2 QD64",
        implementation: "aioctx",
        metric: Metric::Counter("kicks_per_op"),
        bound: Bound::AtMost(0.05),
    },
    Target {
        benchmark: "submitters",
        parameter: "threads=4 QD64",
        implementation: "aioctx",
        metric: Metric::Counter("kicks_per_op"),
        bound: Bound::AtMost(0.05),
    },
];

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
        match target.metric {
            Metric::Ratio { against, of } => format!(
                "{} {}: {} {} / {}",
                target.benchmark,
                target.parameter,
                of.name(),
                target.implementation,
                against
            ),
            Metric::Counter(name) => {
                format!(
                    "{} {}: {} {}",
                    target.benchmark, target.parameter, target.implementation, name
                )
            }
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
            benchmark: self.target.benchmark.to_owned(),
            parameter: self.target.parameter.to_owned(),
            implementation: self.target.implementation.to_owned(),
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
    TARGETS
        .iter()
        .filter(|target| rows.iter().any(|row| row.benchmark == target.benchmark))
        .map(|target| Checked {
            target: target.clone(),
            value: value_of(target, rows),
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
    let subject = measured(target.implementation)?;
    match target.metric {
        Metric::Ratio { against, of } => {
            let numerator = of.value(subject).ok_or("no value to compare")?;
            let denominator = of.value(measured(against)?).ok_or("no value to compare")?;
            Ok(numerator / denominator)
        }
        Metric::Counter(name) => subject.extra(name).ok_or(format!("no {name} counter")),
    }
}

/// The checked targets as text lines for the table.
pub fn render(checked: &[Checked]) -> String {
    let mut out = String::from("targets (issue 5):\n");
    let width = checked
        .iter()
        .map(|c| c.description().len())
        .max()
        .unwrap_or(0);
    for item in checked {
        let value = match &item.value {
            Ok(value) => format!("{value:.3}"),
            Err(reason) => reason.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:>8}  target {:<8}  {}",
            item.description(),
            value,
            item.bound_text(),
            item.status().name()
        );
    }
    out
}
