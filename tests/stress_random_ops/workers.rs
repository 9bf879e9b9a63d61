//! A round's worker rings: the runtime actors' runtime built with
//! `WorkerRings` (two workers), so that each of their ops goes to the ring of
//! the worker that polls it (their files are opened on the ring of the
//! worker that opens them, and used from either worker as their tasks move);
//! the rings closed midway (by an actor's step, with ops in them: see
//! `actor/worker.rs`, or by the runtime's shutdown, dropped or given a few
//! milliseconds); and what the rings ran, counted before each goes (a ring's
//! counters leave with it). On a non-ring backend every thread shares one
//! context, which nothing closes but the end of the round.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use aioctx::runtime::WorkerRings;
use aioctx::{Backend, Builder, Metrics};
use tokio::runtime::Runtime;

use crate::actor::{Round, bump};
use crate::model::Dice;
use crate::support;

/// The backend name of a worker ring (a non-ring backend's shared context
/// has its own).
const WORKER_RING: &str = "io_uring-worker";

/// The round's worker rings.
pub(crate) struct Workers {
    pub(crate) rings: WorkerRings,
    /// Rings closed by actors' steps so far, counted as each close begins:
    /// a worker-ring actor's op may fail with the shutdown error only if one
    /// began after the op's step did (or the round's shutdown has).
    pub(crate) closes: AtomicU64,
    counted: Mutex<Counted>,
}

/// Ops the round's rings ran, as far as counted.
#[derive(Default)]
struct Counted {
    /// Ops of the rings counted so far (each ring once: as it closes, or
    /// in the last count).
    ops: u64,
    /// Of those, submitted on the ring's own thread.
    own_thread: u64,
    /// The last count is taken: rings that close after it count nothing.
    last: bool,
}

impl Counted {
    fn add(&mut self, m: &Metrics) {
        self.ops += m.ops_local + m.ops_foreign + m.ops_blocking;
        self.own_thread += m.ops_local;
    }
}

impl Workers {
    /// Worker rings configured by `builder`, and a runtime of two workers
    /// with them installed.
    pub(crate) fn build(builder: Builder) -> (Workers, Runtime) {
        let rings = WorkerRings::with_builder(builder);
        let runtime = rings
            .runtime_builder()
            .worker_threads(2)
            .build()
            .expect("a runtime with worker rings");
        let workers = Workers {
            rings,
            closes: AtomicU64::new(0),
            counted: Mutex::new(Counted::default()),
        };
        (workers, runtime)
    }

    /// Closes the calling worker's ring with whatever is in it, its ops
    /// counted first; the worker's next op makes it a new ring. False on a
    /// non-ring backend, whose shared context nothing closes.
    pub(crate) fn close_this_threads_ring(&self) -> bool {
        let ring = aioctx::current().expect("a runtime worker has its ring");
        if ring.backend() != WORKER_RING {
            return false;
        }
        // Held across the close: the last count cannot see this ring too.
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        if !counted.last {
            counted.add(&ring.metrics());
        }
        self.closes.fetch_add(1, SeqCst);
        self.rings.close_thread();
        true
    }

    /// Counts the ops of every ring still open, once: the round's last
    /// count, taken before the runtime goes (its rings close as its threads
    /// stop).
    pub(crate) fn count_open_rings(&self) {
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        if !std::mem::replace(&mut counted.last, true) {
            counted.add(&self.rings.total_metrics());
        }
    }

    /// The ops counted: all, and those submitted on their ring's own thread.
    pub(crate) fn ops(&self) -> (u64, u64) {
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        (counted.ops, counted.own_thread)
    }

    /// Dropped ops are still their ring's: every SQE of every ring still
    /// open gets its CQE (io_uring only).
    pub(crate) fn check_cqes_reaped(&self, what: &str) {
        support::eventually(
            &format!("{what}: every worker ring reaped a CQE for each SQE"),
            || {
                self.rings
                    .metrics()
                    .iter()
                    .filter(|m| m.backend == WORKER_RING)
                    .all(|m| m.cqes_reaped >= m.sqes_submitted)
            },
        );
    }

    /// Shuts the runtime down midway, its rings' ops counted first: dropped
    /// (which waits for its threads, each closing its ring as it stops), or
    /// given a drawn few milliseconds (`shutdown_timeout`), after which its
    /// threads may still be closing their rings.
    pub(crate) fn shut_down_runtime(&self, runtime: Runtime, round: &Round, dice: &mut Dice) {
        self.count_open_rings();
        bump(&round.stats.runtime_shutdowns, 1);
        match dice.chance(50) {
            true => drop(runtime),
            false => runtime.shutdown_timeout(Duration::from_millis(dice.range(0, 20))),
        }
    }

    /// Once the runtime is gone: every ring is closed, each with every op
    /// in it resolved; and the shared context of a non-ring backend, which
    /// lives as long as the rings, is shut down here, so that whichever
    /// thread drops the rings last does not wait for its home thread.
    pub(crate) fn finish(&self, what: &str) {
        support::eventually(&format!("{what}: every worker ring closed"), || {
            self.rings
                .metrics()
                .iter()
                .all(|m| m.backend != WORKER_RING)
        });
        if matches!(support::backend(), Backend::Fallback)
            && let Ok(shared) = self.rings.thread_context()
        {
            futures::executor::block_on(shared.shutdown());
        }
    }
}
