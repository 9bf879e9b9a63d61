//! The backends that run a context's ops, the contract they all meet, and the
//! one place that chooses between them.
//!
//! # The contract
//!
//! Every backend runs every op of the crate (except
//! [`submit_raw`](crate::Context::submit_raw), ring-only) with the same
//! outputs and `std::io::Error`s, the same cancel safety (a dropped future's
//! resources stay alive until the operation is over), and the same shutdown
//! rule: every pending future resolves. Each owns its state, its counters
//! (which ones it fills is written in `metrics`), and a driver task on the
//! home runtime; however that task ends, the backend shuts down in order.
//! [`Context::enter`](crate::Context::enter), [`spawn`](crate::Context::spawn),
//! [`block_on`](crate::Context::block_on), [`current`](crate::current) and
//! [`metrics`](crate::Context::metrics) work the same on each;
//! [`Metrics::backend`](crate::Metrics::backend) and the context's `Debug`
//! output say which one runs.
//!
//! # Layout
//!
//! This file is the only one that matches over the backends; `uring/`,
//! `fallback.rs` and `sim/` each hold one backend and never import the
//! surface (`context`, `home`, `fs`); `common.rs` is what they share. Adding
//! a backend is one file (or folder) and one variant of [`AnyBackend`].

use std::io;
use std::task::Waker;

use crate::error::Cqe;
use crate::home_thread::HomeThread;
use crate::lifecycle::{Canceller, Fresh, FutureHalf};
use crate::metrics::{Metrics, RingFlags};
use crate::ops::{Operation, erase};
use crate::ring::RingConfig;

pub(crate) mod common;
mod fallback;
pub(crate) mod sim;
mod uring;

use common::Common;
pub(crate) use common::Placement;
use fallback::Fallback;
use sim::{Sim, SimConfig, SimHandle};
use uring::Uring;

/// Which machinery runs a context's ops; see [`Builder::backend`](crate::Builder::backend).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring when the kernel offers it; the thread-pool fallback when ring
    /// setup fails with `ENOSYS` or `EPERM` (seccomp, `kernel.io_uring_disabled`)
    /// or the kernel lacks an opcode the crate's ops need. The reason for a
    /// fallback is logged once, at `warn`. The default.
    #[default]
    Auto,
    /// io_uring only: building fails with the setup error (or `Unsupported`
    /// for a missing opcode) instead of falling back.
    Uring,
    /// Every op as a blocking syscall on the home runtime's bounded blocking
    /// pool (see [`Builder::fallback_threads`](crate::Builder::fallback_threads)).
    Fallback,
    /// In-memory files, with every op completing in Tokio virtual time; for
    /// deterministic tests. See [`sim`](crate::sim).
    Sim(SimConfig),
}

/// What an op's cell holds on to (its context, its file), through which the
/// op reaches its backend.
pub(crate) trait Anchored: Clone + Send + Sync + 'static {
    fn backend(&self) -> &AnyBackend;
}

/// Starts an op: moves it into its cell and hands it to the backend its
/// anchor leads to. Returns the future's half and where the op went.
pub(crate) fn start<K: Operation, A: Anchored>(
    kind: K,
    anchor: A,
    waker: &Waker,
) -> (FutureHalf<K, A>, Placement) {
    let fresh = Fresh::new(kind, anchor);
    let backend: *const AnyBackend = fresh.anchor().backend();
    // SAFETY: the backend belongs to the context the anchor keeps alive; the
    // anchor lives in the op's cell, which lives as long as `fresh` or either
    // of the halves it splits into, and `start_fresh` keeps one of those
    // until it returns. (A reference tied to `fresh` would forbid moving it
    // into the call, though the cell does not move.)
    unsafe { &*backend }.start_fresh(fresh, waker)
}

/// The backend a context runs on.
pub(crate) enum AnyBackend {
    Uring(Uring),
    Fallback(Fallback),
    Sim(Sim),
}

/// What a backend is set up with, on the home thread inside the home runtime.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub(crate) choice: &'a Backend,
    pub(crate) ring: RingConfig,
    /// Off only under the diagnostic switch that reproduces the missing wake.
    pub(crate) kicks: bool,
    pub(crate) runtime: &'a tokio::runtime::Handle,
    pub(crate) home: HomeThread,
}

impl AnyBackend {
    /// Sets up the backend `setup.choice` asks for; on io_uring, also the
    /// ring, which makes the calling thread its home.
    ///
    /// # Errors
    ///
    /// The ring's setup error where the choice allows no fallback.
    pub(crate) fn new(setup: Setup<'_>) -> io::Result<AnyBackend> {
        let fallback = || AnyBackend::Fallback(Fallback::new(setup.runtime.clone(), setup.home));
        match setup.choice {
            Backend::Fallback => Ok(fallback()),
            Backend::Sim(config) => Ok(AnyBackend::Sim(Sim::new(
                config.clone(),
                setup.runtime.clone(),
                setup.home,
            ))),
            Backend::Uring => Uring::new(setup.ring, setup.home, setup.kicks, setup.runtime)
                .map(AnyBackend::Uring),
            Backend::Auto => match Uring::new(setup.ring, setup.home, setup.kicks, setup.runtime) {
                Ok(uring) => Ok(AnyBackend::Uring(uring)),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    tracing::warn!(error = %e, "using the thread-pool fallback");
                    Ok(fallback())
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    tracing::warn!(error = %e, "io_uring unavailable; using the thread-pool fallback");
                    Ok(fallback())
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The name [`Metrics::backend`] reports.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            AnyBackend::Uring(_) => "io_uring",
            AnyBackend::Fallback(_) => "fallback",
            AnyBackend::Sim(_) => "sim",
        }
    }

    fn common(&self) -> &Common {
        match self {
            AnyBackend::Uring(uring) => uring.common(),
            AnyBackend::Fallback(fallback) => fallback.common(),
            AnyBackend::Sim(sim) => sim.common(),
        }
    }

    /// Shares a fresh op with the backend, which starts it: returns the
    /// future's half and where the op went. Input no backend may run is
    /// refused here, before any backend sees it.
    fn start_fresh<K, A>(
        &self,
        mut fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement)
    where
        K: Operation,
        A: Anchored,
    {
        if let Err(invalid) = fresh.with_kind(|kind| kind.validate()) {
            let (half, op) = fresh.share(waker.clone());
            op.complete(Cqe::not_run(invalid));
            return (half, Placement::Here);
        }
        match self {
            // An op the ring has no SQE for (constant `false` for most).
            AnyBackend::Uring(uring) if uring.runs_blocking(K::ON_RING) => {
                let anchor = fresh.anchor().clone();
                let (half, op) = fresh.share(waker.clone());
                (half, uring.blocking_pool().start(op, &anchor))
            }
            AnyBackend::Uring(uring) => {
                // The hot path: the SQE is built from the op at its final
                // address, before the cell is shared.
                let sqe = fresh.with_kind(|kind| kind.sqe());
                let (half, op) = fresh.share(waker.clone());
                (half, uring.start(erase(op), sqe))
            }
            AnyBackend::Fallback(fallback) => {
                let anchor = fresh.anchor().clone();
                let (half, op) = fresh.share(waker.clone());
                (half, fallback.start(op, &anchor))
            }
            AnyBackend::Sim(sim) => {
                let (half, op) = fresh.share(waker.clone());
                (half, sim.start(erase(op)))
            }
        }
    }

    /// Hands a dropped op's reference to the backend, which cancels the op
    /// where it can; dropping the reference is all there is to do otherwise.
    pub(crate) fn cancel(&self, canceller: Canceller) {
        match self {
            AnyBackend::Uring(uring) => uring.cancel(canceller),
            AnyBackend::Fallback(fallback) => fallback.cancel(canceller),
            AnyBackend::Sim(_) => drop(canceller),
        }
    }

    /// Spawns the backend's driver task on the current runtime (the home
    /// runtime, entered on the home thread).
    pub(crate) fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        match self {
            AnyBackend::Uring(uring) => uring.spawn_driver(),
            AnyBackend::Fallback(fallback) => Ok(fallback.spawn_driver()),
            AnyBackend::Sim(sim) => Ok(sim.spawn_driver()),
        }
    }

    /// Asks the driver to shut down: the driver resolves every pending op.
    pub(crate) fn shut_down(&self) {
        match self {
            AnyBackend::Uring(uring) => uring.shut_down(),
            AnyBackend::Fallback(fallback) => fallback.shut_down(),
            AnyBackend::Sim(sim) => sim.shut_down(),
        }
    }

    /// Whether shutdown has been requested, or the driver has ended.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.common().shutdown.is_raised()
    }

    /// The setup flags of the ring (all `false` off io_uring).
    pub(crate) fn ring_flags(&self) -> RingFlags {
        match self {
            AnyBackend::Uring(uring) => uring.flags(),
            AnyBackend::Fallback(_) | AnyBackend::Sim(_) => RingFlags::default(),
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let mut metrics = self.common().metrics(self.name(), self.ring_flags());
        if let AnyBackend::Uring(uring) = self {
            metrics.ops_blocking = uring.blocking_ops();
        }
        metrics
    }

    /// Registers buffers for fixed ops in the backend's table; returns the
    /// first slot, or `None` where the backend has no table (the fallback and
    /// the simulator use the buffers as they are). On the home thread only.
    ///
    /// # Safety
    ///
    /// Each iovec's memory must stay valid until the slots are unregistered
    /// or the backend is gone.
    pub(crate) unsafe fn register_buffers(
        &self,
        iovecs: &[libc::iovec],
    ) -> io::Result<Option<u16>> {
        match self {
            // SAFETY: the caller's contract.
            AnyBackend::Uring(uring) => unsafe { uring.register_buffers(iovecs) }.map(Some),
            AnyBackend::Fallback(_) | AnyBackend::Sim(_) => Ok(None),
        }
    }

    /// Unregisters buffers registered by [`register_buffers`](Self::register_buffers).
    /// On the home thread only; returns whether it ran.
    pub(crate) fn unregister_buffers(&self, first: u16, count: usize) -> bool {
        match self {
            AnyBackend::Uring(uring) => uring.unregister_buffers(first, count),
            AnyBackend::Fallback(_) | AnyBackend::Sim(_) => true,
        }
    }

    /// Registers `fd` in the backend's file table; returns its slot, or
    /// `None` where the backend has none. On the home thread only.
    pub(crate) fn register_file(&self, fd: std::os::fd::RawFd) -> io::Result<Option<u32>> {
        match self {
            AnyBackend::Uring(uring) if uring.has_file_table() => uring.register_file(fd).map(Some),
            AnyBackend::Uring(_) | AnyBackend::Fallback(_) | AnyBackend::Sim(_) => Ok(None),
        }
    }

    /// Takes a registered file out of the table. On the home thread only;
    /// returns whether it ran.
    pub(crate) fn unregister_file(&self, slot: u32) -> bool {
        match self {
            AnyBackend::Uring(uring) => uring.unregister_file(slot),
            AnyBackend::Fallback(_) | AnyBackend::Sim(_) => true,
        }
    }

    /// Whether an fd means the same here as on any other context of this
    /// backend: true for real fds; false on the simulator, whose fds are keys
    /// into its own in-memory files.
    pub(crate) fn shares_fds(&self) -> bool {
        match self {
            AnyBackend::Uring(_) | AnyBackend::Fallback(_) => true,
            AnyBackend::Sim(_) => false,
        }
    }

    /// The fault queue (test-only), on io_uring and the fallback.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn faults(&self) -> Option<&crate::fault::FaultQueue> {
        match self {
            AnyBackend::Uring(uring) => Some(uring.faults()),
            AnyBackend::Fallback(fallback) => Some(fallback.faults()),
            AnyBackend::Sim(_) => None,
        }
    }

    /// Test-only: on io_uring, runs the ops of the named namespace opcodes
    /// as blocking calls, as on a kernel that lacks them.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn hide_opcodes(&self, names: &[&str]) -> io::Result<()> {
        match self {
            AnyBackend::Uring(uring) => uring.hide_opcodes(names),
            AnyBackend::Fallback(_) | AnyBackend::Sim(_) => Err(crate::error::unsupported(
                "hiding opcodes works on the io_uring backend only",
            )),
        }
    }

    /// The simulator's controls, on the sim backend.
    pub(crate) fn sim(&self) -> Option<SimHandle> {
        match self {
            AnyBackend::Sim(sim) => Some(sim.handle()),
            AnyBackend::Uring(_) | AnyBackend::Fallback(_) => None,
        }
    }
}
