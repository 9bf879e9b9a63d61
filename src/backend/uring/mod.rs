//! The io_uring backend: one ring, driven by its home thread.
//!
//! ```text
//!  any thread                                   home thread
//!  ──────────                                   ───────────
//!  submit ──push──► inbox ──kick (if parked)──► DriverTask (task.rs)
//!                                                 └─ Core::turn (core.rs)
//!  submit on the home thread ──straight to SQ─►      drain → SQ → enter → reap
//! ```
//!
//! Only the home thread ever reaches the [`Core`] (and so the ring): ops
//! created there go straight into the submission queue through a
//! [`HomeOnly`] cell; ops from any other thread go through the inbox, whose
//! push wakes the driver if it sleeps (see `inbox.rs` and `park.rs`).
//!
//! Files, one job each: `state.rs` what every thread shares; `task.rs` the
//! Tokio task that turns the core and parks; `core.rs` the core and its turn;
//! `submit.rs` ops into the SQ or the backlog; `cancel.rs` cancels of
//! dropped ops; `complete.rs` the enter and the reap; `drain.rs` shutdown;
//! `slots.rs` the ops in the kernel and the in-flight limit; `tables.rs`
//! registered buffers and files; `dwell.rs` the SQEs' dwell time;
//! `overflow.rs` the backlog's overflow episodes; `policy.rs` when local
//! pushes enter.
//!
//! Ops the ring has no SQE for run as blocking calls on the home runtime's
//! blocking pool, through a [`Fallback`] the ring keeps for them: a
//! directory listing (io_uring has no opcode for it), and the ops whose
//! opcode the kernel's probe did not find (`RENAMEAT` and `UNLINKAT` came in
//! 5.11, `MKDIRAT`, `SYMLINKAT` and `LINKAT` in 5.15, `FTRUNCATE` in 6.9). A
//! missing optional opcode is never an error and never a reason to fall back:
//! [`RingFlags::opcodes_blocking`] and `Metrics::ops_blocking` say so.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::backend::common::{Common, Placement, Release};
use crate::backend::fallback::Fallback;
use crate::backend::{Anchored, Reactor};
use crate::error::{Cqe, shutdown_error};
use crate::home_thread::{HomeOnly, HomeThread};
use crate::inbox::{Closed, Inbox, Kick};
use crate::lifecycle::{Canceller, Fresh, FutureHalf};
use crate::metrics::{Counters, RingFlags};
use crate::ops::{OPCODES, OPTIONAL_OPCODES, OnRing, OpRef, Opcode, Operation, erase};
use crate::ring::{Ring, RingConfig, Sqe, op};

mod cancel;
mod complete;
mod core;
mod drain;
mod dwell;
mod overflow;
mod policy;
pub(in crate::backend) mod slots;
mod state;
mod submit;
pub(in crate::backend) mod tables;
mod task;

use self::core::Core;
use state::UringState;
use submit::{BatchSubmission, Request, Submission};
use task::{DriverTask, LocalTurns};

/// The driver's own opcode: cancels for dropped ops.
const ASYNC_CANCEL: Opcode = (op::AsyncCancel::CODE, "ASYNC_CANCEL");

/// A ring backend: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Uring {
    shared: Arc<UringState>,
    blocking: Arc<Blocking>,
}

/// The ops the ring runs as blocking calls, and which of its optional
/// opcodes the kernel lacks.
struct Blocking {
    pool: Fallback,
    /// Bit `code` set: the kernel lacks optional opcode `code` (each below
    /// 64, checked where `OPTIONAL_OPCODES` is declared).
    lacking: AtomicU64,
}

/// The names of the optional opcodes whose bits `lacking` sets.
fn names_of(lacking: u64) -> Vec<&'static str> {
    OPTIONAL_OPCODES
        .iter()
        .filter(|(code, _)| lacking & 1 << code != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Probes a new ring's opcodes: an error if it lacks one the crate needs,
/// otherwise the bit set of the optional opcodes it lacks (whose ops run as
/// blocking calls), said once at `info`. Every ring backend's setup.
pub(crate) fn probe_opcodes(ring: &crate::ring::Ring) -> io::Result<u64> {
    let needed: Vec<Opcode> = OPCODES.iter().copied().chain([ASYNC_CANCEL]).collect();
    // A kernel too old to probe is also too old for the ring's other
    // requirements, which setup already checked.
    if let Ok(missing) = ring.missing_opcodes(&needed)
        && !missing.is_empty()
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring lacks opcodes aioctx needs: {}",
                missing.join(", ")
            ),
        ));
    }
    let lacking = match ring.missing_opcodes(OPTIONAL_OPCODES) {
        Ok(names) => OPTIONAL_OPCODES
            .iter()
            .filter(|(_, name)| names.contains(name))
            .fold(0, |bits, (code, _)| bits | 1 << code),
        Err(_) => OPTIONAL_OPCODES
            .iter()
            .fold(0, |bits, (code, _)| bits | 1 << code),
    };
    if lacking != 0 {
        tracing::info!(
            opcodes = %names_of(lacking).join(", "),
            "io_uring lacks these opcodes; their ops run as blocking calls"
        );
    }
    Ok(lacking)
}

/// Shuts the blocking pool down when the ring's driver task ends.
struct ShutDownOnDrop(Arc<Blocking>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.pool.shut_down();
    }
}

impl Uring {
    /// Sets up a ring on the calling thread, which becomes its home;
    /// `runtime` (the home runtime) runs the ops the ring has no SQE for,
    /// and foreign ops whose SQE waits longer than `dwell_warning` are
    /// warned about.
    ///
    /// # Errors
    ///
    /// The ring's setup error, or `Unsupported` naming the opcodes the
    /// kernel lacks (of those every ring must have: not the namespace ops').
    pub(crate) fn new(
        config: RingConfig,
        home: HomeThread,
        kicks: bool,
        runtime: &tokio::runtime::Handle,
        dwell_warning: Option<Duration>,
    ) -> io::Result<Uring> {
        let ring = Ring::new(config)?;
        let lacking = probe_opcodes(&ring)?;
        let flags = ring.flags();
        let file_table = ring.file_slots() > 0;
        let core = Core::new(ring, dwell_warning);
        #[cfg(feature = "fault-injection")]
        let faults = Arc::new(crate::fault::FaultQueue::default());
        #[cfg(feature = "fault-injection")]
        let core = core.with_faults(faults.clone());
        Ok(Uring {
            shared: Arc::new(UringState {
                common: Common::new(home),
                inbox: Inbox::new(kicks),
                core: HomeOnly::new(home, core),
                flags,
                file_table,
                #[cfg(feature = "fault-injection")]
                faults,
            }),
            blocking: Arc::new(Blocking {
                pool: Fallback::new(runtime.clone(), home),
                lacking: AtomicU64::new(lacking),
            }),
        })
    }

    /// Whether an op the ring runs `on_ring` runs as a blocking call here:
    /// it has no opcode, or the kernel lacks its opcode. For the ops every
    /// ring has ([`OnRing::Sqe`]), a constant `false`.
    #[inline]
    fn runs_blocking(&self, on_ring: OnRing) -> bool {
        match on_ring {
            OnRing::Sqe => false,
            OnRing::Blocking => true,
            // Relaxed: set at setup (or by a test before its ops), read as a
            // plain flag; no other memory hangs on it.
            OnRing::IfProbed((code, _)) => self.blocking.lacking.load(Relaxed) & 1 << code != 0,
        }
    }

    /// Hands an op to the driver: straight into the SQ on the home thread,
    /// through the inbox (with a kick if the driver sleeps) elsewhere. An op
    /// the driver cannot take (shut down) is completed with the error.
    /// `one_thread`: as for `Core::submit_local`.
    #[inline]
    pub(crate) fn submit(&self, op: OpRef, sqe: &Sqe, one_thread: bool) -> Placement {
        let shared = &*self.shared;
        let op = match shared.core.try_with(op, |core, op| {
            core.submit_local(&shared.common, op, sqe, one_thread)
        }) {
            Ok(()) => return Placement::Here,
            Err(op) => op,
        };
        let submission = Submission {
            op,
            sqe: sqe.clone(),
            pushed_at: Some(Instant::now()),
        };
        let counters = &shared.common.counters;
        match shared.inbox.push(Request::Submit(submission)) {
            Ok(kick) => {
                Counters::add_shared(&counters.ops_foreign, 1);
                Counters::add_shared(kick_counter(counters, kick), 1);
                Placement::Queued
            }
            Err(closed) => {
                if let Request::Submit(submission) = closed.0 {
                    submission.op.complete(Cqe::not_run(shutdown_error()));
                }
                Placement::Here
            }
        }
    }
}

impl Uring {
    /// Starts a batch: its members' SQEs built at the batch's final address,
    /// then handed to the driver as one request.
    fn start_batch<K: Operation, A: Anchored>(
        &self,
        mut fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement) {
        let sqes = fresh.with_kind(|kind| kind.batch_sqes());
        let (half, op) = fresh.share(waker.clone());
        let op = erase(op);
        if sqes.is_empty() {
            // Every member was refused, or there are none: done here.
            op.complete(Cqe::from_raw(0, 0));
            return (half, Placement::Here);
        }
        let shared = &*self.shared;
        let batch = BatchSubmission {
            op,
            sqes,
            pushed_at: None,
        };
        let batch = match shared.core.try_with(batch, |core, batch| {
            core.submit_batch(&shared.common, batch)
        }) {
            Ok(()) => return (half, Placement::Here),
            Err(batch) => batch,
        };
        let batch = BatchSubmission {
            pushed_at: Some(Instant::now()),
            ..batch
        };
        let counters = &shared.common.counters;
        let placement = match shared.inbox.push(Request::SubmitBatch(batch)) {
            Ok(kick) => {
                Counters::add_shared(&counters.ops_foreign, 1);
                Counters::add_shared(kick_counter(counters, kick), 1);
                Placement::Queued
            }
            Err(Closed(request)) => {
                if let Request::SubmitBatch(batch) = request {
                    batch.op.complete(Cqe::not_run(shutdown_error()));
                }
                Placement::Here
            }
        };
        (half, placement)
    }
}

impl Reactor for Uring {
    const NAME: &'static str = "io_uring";

    fn common(&self) -> &Common {
        &self.shared.common
    }

    fn start<K: Operation, A: Anchored>(
        &self,
        mut fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement) {
        // An op the ring has no SQE for (a constant `false` for most).
        if self.runs_blocking(K::ON_RING) {
            // The blocking pool completes ops on its own threads.
            assert!(!A::ONE_THREAD, "aioctx: a home-thread op has no SQE");
            return self.blocking.pool.start(fresh, waker);
        }
        if K::BATCH {
            return self.start_batch(fresh, waker);
        }
        // The hot path: the SQE is built from the op at its final address,
        // before the cell is shared.
        let sqe = fresh.with_kind(|kind| kind.sqe());
        let (half, op) = fresh.share(waker.clone());
        (half, self.submit(erase(op), &sqe, A::ONE_THREAD))
    }

    /// Passes a dropped op's reference to the driver, which cancels the op if
    /// it is in the kernel.
    fn cancel(&self, canceller: Canceller) {
        let shared = &*self.shared;
        if let Err(canceller) = shared.core.try_with(canceller, |core, canceller| {
            core.cancel(&shared.common, canceller);
            // Dropped on the home thread outside a turn: nothing else may
            // come to submit the cancel.
            core.schedule_turn();
        }) {
            // Closed: shutdown cancels everything in flight anyway.
            let _ = shared.inbox.push(Request::Cancel(canceller));
        }
    }

    /// Spawns the driver task, and the blocking pool's. Must run on the home
    /// thread, inside the home runtime. However the ring's driver ends, the
    /// blocking pool shuts down with it.
    fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        let driver = DriverTask::new(self.shared.clone())?;
        drop(self.blocking.pool.spawn_driver()?);
        let blocking = ShutDownOnDrop(self.blocking.clone());
        Ok(tokio::spawn(tokio::task::coop::unconstrained(async move {
            let _blocking = blocking;
            driver.await;
        })))
    }

    fn local_turns(&self) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        Some(Box::pin(LocalTurns::new(self.shared.clone())))
    }

    /// Asks the driver to shut the ring down, and the blocking pool.
    fn shut_down(&self) {
        self.shared.common.shutdown.raise();
        self.blocking.pool.shut_down();
    }

    /// Registers `iovecs` in the ring's buffer table; returns the first slot.
    /// On the home thread only.
    ///
    /// # Safety
    ///
    /// As [`Tables::register_buffers`](tables::Tables::register_buffers).
    unsafe fn register_buffers(&self, iovecs: &[libc::iovec]) -> io::Result<Option<u16>> {
        self.shared
            .core
            // SAFETY: the caller's contract.
            .with(|core| unsafe { core.tables.register_buffers(&mut core.ring, iovecs) })
            .unwrap_or_else(|| Err(off_home("registering buffers")))
            .map(Some)
    }

    /// Registers `fd` in the ring's file table; returns its slot. On the home
    /// thread only.
    fn register_file(&self, fd: std::os::fd::RawFd) -> io::Result<Option<u32>> {
        if !self.shared.file_table {
            return Ok(None);
        }
        self.shared
            .core
            .with(|core| core.tables.register_file(&mut core.ring, fd))
            .unwrap_or_else(|| Err(off_home("registering a file")))
            .map(Some)
    }

    fn release(&self, release: Release) {
        let shared = &*self.shared;
        let release = match shared
            .core
            .try_with(release, |core, release| core.release(release))
        {
            Ok(()) => return,
            // Off the home thread, or inside the driver's turn (an op's
            // completion dropped the last handle): the next turn does it.
            Err(release) => release,
        };
        if let Err(Closed(Request::Release(release))) = shared.inbox.push(Request::Release(release))
        {
            // Shut down: the driver closes the ring, and its tables with it.
            tracing::debug!(?release, "released after shutdown, with the ring");
        }
    }

    fn ring_flags(&self) -> RingFlags {
        RingFlags {
            opcodes_blocking: self.blocking.lacking.load(Relaxed) != 0,
            ..self.shared.flags
        }
    }

    /// Ops run as blocking calls so far.
    fn ops_blocking(&self) -> u64 {
        let counters = &self.blocking.pool.common().counters;
        counters.ops_local.load(Relaxed) + counters.ops_foreign.load(Relaxed)
    }

    #[cfg(feature = "fault-injection")]
    fn faults(&self) -> Option<&crate::fault::FaultQueue> {
        Some(&self.shared.faults)
    }

    /// Test-only: runs the ops of the optional opcodes named in `names` as
    /// blocking calls from now on, as on a kernel that lacks them.
    #[cfg(feature = "fault-injection")]
    fn hide_opcodes(&self, names: &[&str]) -> io::Result<()> {
        let mut bits = 0;
        for name in names {
            let Some((code, _)) = OPTIONAL_OPCODES.iter().find(|(_, known)| known == name) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is not an opcode the ring may lack"),
                ));
            };
            bits |= 1 << code;
        }
        self.blocking.lacking.fetch_or(bits, Relaxed);
        Ok(())
    }
}

/// The counter a push's kick outcome goes to.
fn kick_counter(counters: &Counters, kick: Kick) -> &AtomicU64 {
    match kick {
        Kick::Sent => &counters.kicks_sent,
        Kick::Coalesced => &counters.kicks_coalesced,
        Kick::Suppressed => &counters.kicks_suppressed,
    }
}

/// The error of a home-only request made elsewhere (or once the ring is
/// gone).
fn off_home(what: &str) -> io::Error {
    io::Error::other(format!(
        "{what} must run on the context's home thread, while it runs"
    ))
}
