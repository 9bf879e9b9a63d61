//! Counters the backends keep, and the snapshot users read. A leaf.
//!
//! Every counter is a `Relaxed` atomic: each is a statistic on its own, read
//! without any claim of consistency with the others, so no ordering is needed.
//! The one derived quantity that matters most is the *dwell time*: how long an
//! op waited between being pushed by a thread other than the home thread and
//! being handed to the kernel (or to a pool thread). A driver that is not woken
//! for foreign pushes (the bug this crate exists to prevent) shows up as dwell
//! times the length of the home thread's timer period.
//!
//! # Which backend fills which counter
//!
//! Each backend owns one [`Counters`] and fills only what it has:
//!
//! | counter | io_uring | fallback | sim |
//! |---|---|---|---|
//! | `ops_local`, `ops_foreign` | yes | yes | yes |
//! | `turns` | driver turns | — | simulator turns |
//! | `submits` | `io_uring_enter` calls | — | — |
//! | `sqes_submitted` | SQEs the kernel took | blocking calls started | — |
//! | `cqes_reaped` | CQEs reaped | blocking calls returned | ops completed |
//! | `kicks_sent`, `kicks_coalesced`, `kicks_suppressed` | the inbox's wake protocol | — | — |
//! | `backlogged` | ops that waited for SQ room | — | — |
//! | `cancels_sent` | `ASYNC_CANCEL` SQEs | queued calls and timers cancelled | — |
//! | `dwell` | foreign push → `io_uring_enter` | start → pool thread picks the call up | — |
//! | `ops_blocking` | ops run as blocking calls (no opcode, or the kernel lacks it) | — | — |
//! | `fixed_file_ops` | a worker ring's ops that named their file by its slot in the ring's table | — | — |
//! | `local_turns` | turns run in the home `LocalSet` for home-path ops (`LocalRing`) | — | — |
//!
//! A dash stays zero: the sim, for one, never sends a kick, so it reports none.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of one backend, shared by its threads and every submitter.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ops_local: AtomicU64,
    pub(crate) ops_foreign: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) submits: AtomicU64,
    pub(crate) sqes_submitted: AtomicU64,
    pub(crate) cqes_reaped: AtomicU64,
    pub(crate) kicks_sent: AtomicU64,
    pub(crate) kicks_coalesced: AtomicU64,
    pub(crate) kicks_suppressed: AtomicU64,
    pub(crate) backlogged: AtomicU64,
    pub(crate) cancels_sent: AtomicU64,
    pub(crate) fixed_file_ops: AtomicU64,
    pub(crate) local_turns: AtomicU64,
    pub(crate) dwell: Histogram,
}

impl Counters {
    /// Adds to a counter that several threads write: one `fetch_add`.
    pub(crate) fn add_shared(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Adds to a counter that only one thread ever writes (the home thread,
    /// for the driver's counters): a plain load and store, no
    /// read-modify-write (readers may see either value, as with any
    /// `Relaxed` counter). A second writer would lose counts.
    pub(crate) fn add_single_writer(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed) + n, Relaxed);
    }

    pub(crate) fn snapshot(&self, backend: &'static str, ring_flags: RingFlags) -> Metrics {
        let get = |c: &AtomicU64| c.load(Relaxed);
        Metrics {
            backend,
            ring_flags,
            ops_local: get(&self.ops_local),
            ops_foreign: get(&self.ops_foreign),
            turns: get(&self.turns),
            submits: get(&self.submits),
            sqes_submitted: get(&self.sqes_submitted),
            cqes_reaped: get(&self.cqes_reaped),
            kicks_sent: get(&self.kicks_sent),
            kicks_coalesced: get(&self.kicks_coalesced),
            kicks_suppressed: get(&self.kicks_suppressed),
            backlogged: get(&self.backlogged),
            cancels_sent: get(&self.cancels_sent),
            fixed_file_ops: get(&self.fixed_file_ops),
            local_turns: get(&self.local_turns),
            dwell: self.dwell.summary(),
            ops_blocking: 0,
        }
    }
}

/// The io_uring setup flags a context's ring actually runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingFlags {
    /// `IORING_SETUP_SINGLE_ISSUER`: the kernel knows only the home thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`: completions run only when the home
    /// thread enters; only with
    /// [`Builder::defer_taskrun`](crate::Builder::defer_taskrun).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`: no inter-processor interrupt per completion.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue
    /// ([`Builder::sqpoll`](crate::Builder::sqpoll)).
    pub sqpoll: bool,
    /// The ring's own fd is registered (`IORING_REGISTER_RING_FDS`): each
    /// `io_uring_enter` skips the fd lookup.
    pub registered_ring_fd: bool,
    /// The kernel lacks one or more of the opcodes the ring can do without:
    /// the namespace ops' (`RENAMEAT`, `UNLINKAT`, `MKDIRAT`, `LINKAT`,
    /// `SYMLINKAT`: kernels before 5.15) or `FTRUNCATE` (`File::set_len`,
    /// before 6.9). Those ops run as blocking calls on the home runtime's
    /// blocking pool instead, counted in [`Metrics::ops_blocking`]; the
    /// opcodes are named in the context's log (at `info`).
    pub opcodes_blocking: bool,
}

/// A point-in-time copy of a context's counters, from [`Context::metrics`].
///
/// Counters only grow; subtract two snapshots to measure an interval.
///
/// [`Context::metrics`]: crate::Context::metrics
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Which backend runs the ops: `"io_uring"`, `"fallback"` or `"sim"`.
    pub backend: &'static str,
    /// The ring's active setup flags (all `false` off io_uring).
    pub ring_flags: RingFlags,
    /// Ops submitted from the home thread, straight into the SQ.
    pub ops_local: u64,
    /// Ops submitted from other threads, through the inbox.
    pub ops_foreign: u64,
    /// Driver turns (drain, submit, reap).
    pub turns: u64,
    /// `io_uring_enter` calls.
    pub submits: u64,
    /// SQEs handed to the kernel by those calls.
    pub sqes_submitted: u64,
    /// CQEs reaped.
    pub cqes_reaped: u64,
    /// Foreign pushes that had to wake the sleeping driver.
    pub kicks_sent: u64,
    /// Foreign pushes that needed no wake (driver awake or already woken).
    pub kicks_coalesced: u64,
    /// Wakes skipped because the diagnostic switch
    /// [`Builder::kick_foreign_pushes`](crate::Builder::kick_foreign_pushes) is off.
    pub kicks_suppressed: u64,
    /// Ops that waited in the backlog because the SQ or the in-flight limit was full.
    pub backlogged: u64,
    /// `IORING_OP_ASYNC_CANCEL` requests sent for dropped or shut-down ops.
    pub cancels_sent: u64,
    /// Ops of a [`WorkerRings`](crate::runtime::WorkerRings) ring that named
    /// their file by its slot in the ring's table of registered files
    /// (`IOSQE_FIXED_FILE`), which the ring filled the first time it used
    /// the file; the kernel then skips the lookup, and the shared reference
    /// count, of the file's fd. Compare with `ops_local + ops_foreign`: the
    /// rest named their file by its fd (the table was full or refused, the
    /// op was made on another thread than the ring's, or it named no file).
    /// Zero elsewhere: a home ring's ops on a registered file
    /// ([`File::is_registered`](crate::fs::File::is_registered)) always use
    /// its slot, and are not counted.
    pub fixed_file_ops: u64,
    /// Of [`turns`](Metrics::turns), those run in the home thread's
    /// `LocalSet` for home-path ops ([`LocalRing`](crate::local::LocalRing)),
    /// whose completions then wake their tasks without going through the
    /// runtime. Zero on other backends.
    pub local_turns: u64,
    /// SQE dwell time of foreign pushes: from the push into the inbox to the
    /// `io_uring_enter` that submitted it. (Home-thread ops go straight into
    /// the SQ of the running loop and are not timed, to keep their path lean.)
    pub dwell: Dwell,
    /// Ops the ring ran as blocking calls on the home runtime's blocking
    /// pool, not counted in `ops_local` and `ops_foreign`: directory listings
    /// (io_uring has no opcode for them) and namespace ops whose opcode the
    /// kernel lacks ([`RingFlags::opcodes_blocking`]). Zero off io_uring.
    pub ops_blocking: u64,
}

impl Metrics {
    /// Several contexts' counters added up (a pool's): every count summed;
    /// the dwell count summed, its `max` the largest, and its quantiles the
    /// largest of the members' (an upper bound: a snapshot keeps no buckets).
    /// `backend` and `ring_flags` are the first's.
    ///
    /// # Panics
    ///
    /// If `all` is empty.
    pub fn sum(all: &[Metrics]) -> Metrics {
        let mut total = all
            .first()
            .expect("metrics of at least one context")
            .clone();
        for m in &all[1..] {
            total.ops_local += m.ops_local;
            total.ops_foreign += m.ops_foreign;
            total.turns += m.turns;
            total.submits += m.submits;
            total.sqes_submitted += m.sqes_submitted;
            total.cqes_reaped += m.cqes_reaped;
            total.kicks_sent += m.kicks_sent;
            total.kicks_coalesced += m.kicks_coalesced;
            total.kicks_suppressed += m.kicks_suppressed;
            total.backlogged += m.backlogged;
            total.cancels_sent += m.cancels_sent;
            total.fixed_file_ops += m.fixed_file_ops;
            total.local_turns += m.local_turns;
            total.ops_blocking += m.ops_blocking;
            total.dwell.count += m.dwell.count;
            total.dwell.p50 = total.dwell.p50.max(m.dwell.p50);
            total.dwell.p99 = total.dwell.p99.max(m.dwell.p99);
            total.dwell.max = total.dwell.max.max(m.dwell.max);
        }
        total
    }

    /// All-zero counters of a backend that ran nothing yet.
    pub(crate) fn none(backend: &'static str) -> Metrics {
        Counters::default().snapshot(backend, RingFlags::default())
    }

    /// Kicks sent per foreign op: the cost of cross-thread submission.
    pub fn kicks_per_foreign_op(&self) -> f64 {
        if self.ops_foreign == 0 {
            0.0
        } else {
            self.kicks_sent as f64 / self.ops_foreign as f64
        }
    }
}

/// A summary of the dwell-time histogram.
///
/// Quantiles come from log-linear buckets (eight per power of two), so they are
/// exact to within about 7%; `max` is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dwell {
    /// SQEs measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest seen.
    pub max: Duration,
}

impl fmt::Display for Dwell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={:?} p99={:?} max={:?}",
            self.count, self.p50, self.p99, self.max
        )
    }
}

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A lock-free log-linear histogram of nanosecond values.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Histogram").field(&self.summary()).finish()
    }
}

impl Histogram {
    /// Records one value. Any number of threads may record at once (the
    /// fallback's pool threads do): every update is a read-modify-write.
    pub(crate) fn record(&self, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.max.fetch_max(ns, Relaxed);
    }

    pub(crate) fn summary(&self) -> Dwell {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max = self.max.load(Relaxed);
        let quantile = |q: f64| {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (index, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(midpoint_of(index).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        Dwell {
            count,
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let sub = (ns >> (msb - SUB_BITS)) as usize & (SUB - 1);
    (msb - SUB_BITS + 1) as usize * SUB + sub
}

fn midpoint_of(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let msb = (index / SUB) as u32 + SUB_BITS - 1;
    let width = 1u64 << (msb - SUB_BITS);
    let low = ((SUB + index % SUB) as u64) << (msb - SUB_BITS);
    low + width / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_one_sub_bucket() {
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            12_345,
            1 << 40,
            u64::MAX / 3,
        ] {
            let mid = midpoint_of(bucket_of(ns));
            let err = mid.abs_diff(ns) as f64 / ns.max(1) as f64;
            assert!(err <= 0.07, "{ns} -> {mid}");
        }
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(Duration::from_nanos(i % 64 + t));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = h.summary();
        assert_eq!(s.count, 80_000);
        assert_eq!(s.max, Duration::from_nanos(63 + 7));
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_micros(100));
        let p50 = s.p50.as_nanos() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.07, "{s}");
        let p99 = s.p99.as_nanos() as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.07, "{s}");
    }
}
