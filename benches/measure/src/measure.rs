//! What one run of one implementation yields, and how repeated runs become one number: a
//! [`Measurement`] (ops/s, p50, p99, samples, extra counters), per-op [`Latencies`], the
//! [`Phase`] flag that splits a run into warm-up and measured window, and [`median_of`], which
//! takes the median of every field over the repeats.
//!
//! Medians, not means: on a shared 2-core machine one repeat that collides with another build is
//! an outlier to discard, not to average in.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The result of one run (or the median of several) of one implementation.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Completed operations per second over the measured window.
    pub ops_per_sec: f64,
    /// Median per-op latency, when the run records latencies.
    pub p50: Option<Duration>,
    /// 99th-percentile per-op latency, when the run records latencies.
    pub p99: Option<Duration>,
    /// Operations completed in the measured window (summed over repeats by [`median_of`]).
    pub samples: u64,
    /// Named counters particular to a benchmark, such as kicks per op.
    pub extra: Vec<(&'static str, f64)>,
}

impl Measurement {
    /// A throughput-only measurement: `ops` completed in `elapsed`.
    pub fn throughput(ops: u64, elapsed: Duration) -> Measurement {
        Measurement {
            ops_per_sec: ops as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: None,
            p99: None,
            samples: ops,
            extra: Vec::new(),
        }
    }

    /// Adds a named counter to the measurement.
    pub fn with_extra(mut self, name: &'static str, value: f64) -> Measurement {
        self.extra.push((name, value));
        self
    }

    /// Adds `cpu_s_per_mop`: `cpu` (the process's CPU time over the measured window, all
    /// threads, user + system) per million completed ops.
    pub fn with_cpu(self, cpu: Duration) -> Measurement {
        let per_mop = cpu.as_secs_f64() * 1e6 / (self.samples.max(1) as f64);
        self.with_extra("cpu_s_per_mop", per_mop)
    }

    /// The named counter, if the run reported it.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
    }
}

/// The median of `values` (the mean of the middle two for an even count); `NaN` when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Folds repeated runs of one implementation into one measurement: the median of each field
/// taken on its own, and the total number of samples.
///
/// # Panics
///
/// Panics if `runs` is empty.
pub fn median_of(runs: &[Measurement]) -> Measurement {
    assert!(!runs.is_empty(), "median_of needs at least one run");
    let median_duration = |pick: fn(&Measurement) -> Option<Duration>| {
        let mut nanos: Vec<f64> = runs
            .iter()
            .filter_map(pick)
            .map(|d| d.as_nanos() as f64)
            .collect();
        (!nanos.is_empty()).then(|| Duration::from_nanos(median(&mut nanos) as u64))
    };
    let extra = runs[0]
        .extra
        .iter()
        .map(|(name, _)| {
            let mut values: Vec<f64> = runs.iter().filter_map(|run| run.extra(name)).collect();
            (*name, median(&mut values))
        })
        .collect();
    Measurement {
        ops_per_sec: median(&mut runs.iter().map(|run| run.ops_per_sec).collect::<Vec<_>>()),
        p50: median_duration(|run| run.p50),
        p99: median_duration(|run| run.p99),
        samples: runs.iter().map(|run| run.samples).sum(),
        extra,
    }
}

/// CPU time (user + system) used so far by every thread of this process, from
/// `getrusage(RUSAGE_SELF)`. Threads that have exited still count.
pub fn process_cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF needs nothing else.
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(
        result, 0,
        "getrusage(RUSAGE_SELF) cannot fail with valid arguments"
    );
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Which ops of a worker have their latency recorded: one in `every` (0: none). Reading the
/// clock twice per op costs ~5% of a page-cache read here, so CPU-bound runs sample.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    every: u32,
    count: u32,
}

impl Sampler {
    /// Records one op in `every`; `0` records none.
    pub fn every(every: u32) -> Sampler {
        Sampler { every, count: 0 }
    }

    /// The start time of the next op if its latency is to be recorded.
    pub fn start(&mut self) -> Option<Instant> {
        if self.every == 0 {
            return None;
        }
        self.count += 1;
        if self.count < self.every {
            return None;
        }
        self.count = 0;
        Some(Instant::now())
    }
}

/// Per-op latencies of one run, in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
}

impl Latencies {
    /// An empty recorder with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Latencies {
        Latencies {
            nanos: Vec::with_capacity(capacity),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.nanos.push(latency.as_nanos() as u64);
    }

    /// Records the time since `start`.
    pub fn record_since(&mut self, start: Instant) {
        self.record(start.elapsed());
    }

    /// Records the time since `start`, if there is one (see [`Sampler::start`]).
    pub fn record_sampled(&mut self, start: Option<Instant>) {
        if let Some(start) = start {
            self.record_since(start);
        }
    }

    /// Moves `other`'s samples into `self` (to merge per-task recorders).
    pub fn absorb(&mut self, mut other: Latencies) {
        self.nanos.append(&mut other.nanos);
    }

    /// The `quantile` (0.0..=1.0) of the recorded latencies, by the nearest-rank method.
    pub fn quantile(&mut self, quantile: f64) -> Option<Duration> {
        if self.nanos.is_empty() {
            return None;
        }
        let rank =
            ((self.nanos.len() as f64 * quantile).ceil() as usize).clamp(1, self.nanos.len());
        let (_, nth, _) = self.nanos.select_nth_unstable(rank - 1);
        Some(Duration::from_nanos(*nth))
    }

    /// A measurement of `ops` completed in `elapsed`, with p50 and p99 from these latencies.
    pub fn into_measurement(mut self, ops: u64, elapsed: Duration) -> Measurement {
        Measurement {
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            ..Measurement::throughput(ops, elapsed)
        }
    }
}

/// The window a run is in, shared between the thread that times the run and the workers (which
/// may be tasks, blocking threads or std threads).
///
/// Workers count and record only while [`Phase::is_measuring`], and stop at
/// [`Phase::is_stopped`]; the timer moves the phase forward with [`Phase::start_measuring`] and
/// [`Phase::stop`]. All accesses are `Relaxed`: the phase only gates counting, and every count is
/// handed back through a join (which synchronises) before it is read.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

const WARMING_UP: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

impl Phase {
    /// A phase that starts in warm-up.
    pub fn new() -> Phase {
        Phase(AtomicU8::new(WARMING_UP))
    }

    /// Moves from warm-up to the measured window.
    pub fn start_measuring(&self) {
        self.0.store(MEASURING, Ordering::Relaxed);
    }

    /// Ends the measured window; workers finish their current op and return.
    pub fn stop(&self) {
        self.0.store(STOPPED, Ordering::Relaxed);
    }

    /// Whether completions now count.
    pub fn is_measuring(&self) -> bool {
        self.0.load(Ordering::Relaxed) == MEASURING
    }

    /// Whether workers should return.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOPPED
    }

    /// Runs the window inside a Tokio runtime (current-thread runtimes must not block):
    /// warm-up, then the measured window, timed in wall and CPU time.
    pub async fn run_async(&self, window: Window) -> Span {
        tokio::time::sleep(window.warmup).await;
        let cpu = process_cpu_time();
        self.start_measuring();
        let start = Instant::now();
        tokio::time::sleep(window.measure).await;
        self.stop();
        Span {
            elapsed: start.elapsed(),
            cpu: process_cpu_time() - cpu,
        }
    }
}

/// The wall and CPU time of a measured window.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Wall time from the start of measuring to its stop.
    pub elapsed: Duration,
    /// The process's CPU time over the same window ([`process_cpu_time`]).
    pub cpu: Duration,
}

impl Phase {
    /// Runs the window from a thread that may block (not a runtime's): warm-up, then the
    /// measured window, timed in wall and CPU time.
    pub fn run_blocking_timed(&self, window: Window) -> Span {
        std::thread::sleep(window.warmup);
        let cpu = process_cpu_time();
        self.start_measuring();
        let start = Instant::now();
        std::thread::sleep(window.measure);
        self.stop();
        Span {
            elapsed: start.elapsed(),
            cpu: process_cpu_time() - cpu,
        }
    }
}

/// A loop's time limit, for single-threaded loops that check the clock themselves.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Time run before counting starts.
    pub warmup: Duration,
    /// Time counted.
    pub measure: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_handles_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn quantile_uses_nearest_rank() {
        let mut latencies = Latencies::default();
        for micros in 1..=100 {
            latencies.record(Duration::from_micros(micros));
        }
        assert_eq!(latencies.quantile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(latencies.quantile(0.99), Some(Duration::from_micros(99)));
    }
}
