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
//! The contract is written once, as the [`Reactor`] trait, with defaults for
//! what only the ring has; [`AnyBackend`] holds one backend and dispatches to
//! it through the crate's only `match` over backends ([`dispatch!`]).
//! `uring/`, `fallback.rs` and `sim/` each implement the trait and never
//! import the surface (`context`, `home`, `fs`); `common.rs` is what they
//! share. Adding a backend is one file (or folder), its `Reactor`
//! implementation, and one variant of [`AnyBackend`].

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::Waker;

use crate::error::{Cqe, DirectAlignment};
use crate::home_thread::HomeThread;
use crate::lifecycle::{Canceller, CellAnchor, Fresh, FutureHalf};
use crate::metrics::{Metrics, RingFlags};
use crate::ops::Operation;
use crate::ring::RingConfig;

pub(crate) mod common;
mod fallback;
pub(crate) mod sim;
mod uring;
mod worker;

use common::Common;
pub(crate) use common::{Placement, Release};
use fallback::Fallback;
use sim::{Sim, SimConfig, SimHandle};
use uring::Uring;
use worker::Worker;

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
pub(crate) trait Anchored: Clone + CellAnchor {
    fn backend(&self) -> &AnyBackend;

    /// Where the op goes, decided on the thread that first polls it: the
    /// anchor it keeps from there on (see `pool/placement.rs`).
    #[inline(always)]
    fn place(self) -> Self {
        self
    }

    /// Whether the op reaches its ring through the ring's view of its file
    /// (a worker ring's, `file.rs`): only such an op may name its file by a
    /// slot of that ring's table; see `backend/worker`.
    fn through_ring_view(&self) -> bool {
        false
    }
}

/// The contract every backend meets, written once; see [the module
/// docs](self). Ring-only capabilities have defaults that say "none here".
///
/// Not object-safe (`start` is generic, so each backend keeps its typed
/// start): [`AnyBackend`] dispatches to the implementations through one
/// `match`, in [`dispatch!`].
pub(crate) trait Reactor {
    /// The name [`Metrics::backend`] reports.
    const NAME: &'static str;

    /// The counters, shutdown signal and home thread.
    fn common(&self) -> &Common;

    /// Starts a fresh op whose input is valid: shares its cell with the
    /// backend. Returns the future's half and where the op went.
    fn start<K: Operation, A: Anchored>(
        &self,
        fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement);

    /// Takes a dropped op's reference, and cancels the op where it can;
    /// dropping the reference is all there is to do otherwise.
    fn cancel(&self, canceller: Canceller) {
        drop(canceller);
    }

    /// Spawns the backend's driver task on the current runtime (the home
    /// runtime, entered on the home thread). However the task ends, the
    /// backend shuts down in order.
    fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>>;

    /// Asks the driver to shut down: the driver resolves every pending op.
    fn shut_down(&self) {
        self.common().shutdown.raise();
    }

    /// The setup flags of the ring (all `false` off io_uring).
    fn ring_flags(&self) -> RingFlags {
        RingFlags::default()
    }

    /// Registers buffers for fixed ops in the backend's table; returns the
    /// first slot, or `None` where the backend has no table (the buffers
    /// are then used as they are). On the home thread only.
    ///
    /// # Safety
    ///
    /// Each iovec's memory must stay valid until the slots are unregistered
    /// or the backend is gone.
    unsafe fn register_buffers(&self, iovecs: &[libc::iovec]) -> io::Result<Option<u16>> {
        let _ = iovecs;
        Ok(None)
    }

    /// Takes registered resources out of the backend's table, then drops
    /// what they kept alive (an fd, a buffer pool's memory). From any thread,
    /// at any moment (an op's completion inside the driver's turn may drop
    /// the last handle of a registered file): never refused. Done at once
    /// where it can be (a worker ring: always, under its lock, which no
    /// thread holds while ops complete), otherwise by the driver's next
    /// turn; once the backend has shut down, the table goes with the ring.
    fn release(&self, release: Release) {
        drop(release);
    }

    /// Registers `fd` in the backend's file table; returns its slot, or
    /// `None` where the backend has none. On the home thread only.
    fn register_file(&self, fd: RawFd) -> io::Result<Option<u32>> {
        let _ = fd;
        Ok(None)
    }

    /// A task for the home `LocalSet` that runs the turns of one-thread ops
    /// (the home ring's; see `uring/task.rs`), if the backend has such ops.
    fn local_turns(&self) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        None
    }

    /// Registers `fd` in the file table of a ring that any thread may
    /// update (a worker ring's, under its lock), from any thread; returns
    /// its slot, or `None` where the backend has no such table (or has
    /// closed). [`release`](Reactor::release) takes it out again.
    fn register_file_shared(&self, fd: RawFd) -> io::Result<Option<u32>> {
        let _ = fd;
        Ok(None)
    }

    /// Whether an fd means the same here as on any other context of this
    /// backend: true for real fds; false on the simulator, whose fds are keys
    /// into its own in-memory files.
    fn shares_fds(&self) -> bool {
        true
    }

    /// What `O_DIRECT` asks of the ops on `fd`, if the file was opened
    /// with it (`None` otherwise): for code that shapes its ops ahead of
    /// time (a `FileStream`'s buffers). Real fds answer for themselves.
    fn direct_alignment(&self, fd: RawFd) -> Option<DirectAlignment> {
        crate::ops::direct::required_by(fd)
    }

    /// Ops the ring ran as blocking calls ([`Metrics::ops_blocking`]).
    fn ops_blocking(&self) -> u64 {
        0
    }

    /// The fault queue (test-only), on io_uring and the fallback.
    #[cfg(feature = "fault-injection")]
    fn faults(&self) -> Option<&crate::fault::FaultQueue> {
        None
    }

    /// Test-only: on io_uring, runs the ops of the named optional opcodes
    /// as blocking calls, as on a kernel that lacks them.
    #[cfg(feature = "fault-injection")]
    fn hide_opcodes(&self, names: &[&str]) -> io::Result<()> {
        let _ = names;
        Err(crate::error::unsupported(
            "hiding opcodes works on the io_uring backend only",
        ))
    }

    /// The simulator's controls, on the sim backend.
    fn sim(&self) -> Option<SimHandle> {
        None
    }

    /// Runs `then` once the backend has closed (a worker ring, whose
    /// runtime thread or runtime went); `false` where backends do not close
    /// on their own (`then` is dropped unrun).
    fn on_close(&self, then: Box<dyn FnOnce() + Send>) -> bool {
        drop(then);
        false
    }
}

/// The backend a context runs on: one variant per [`Reactor`].
pub(crate) enum AnyBackend {
    Uring(Uring),
    Fallback(Fallback),
    Sim(Sim),
    Worker(Worker),
}

/// Runs `$body` with `$backend` bound to the backend `$any` holds: the one
/// `match` over the backends.
macro_rules! dispatch {
    ($any:expr, $backend:ident => $body:expr) => {
        match $any {
            AnyBackend::Uring($backend) => $body,
            AnyBackend::Fallback($backend) => $body,
            AnyBackend::Sim($backend) => $body,
            AnyBackend::Worker($backend) => $body,
        }
    };
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

/// What a backend is set up with, on the home thread inside the home runtime.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub(crate) choice: &'a Backend,
    pub(crate) ring: RingConfig,
    /// Off only under the diagnostic switch that reproduces the missing wake.
    pub(crate) kicks: bool,
    /// Foreign ops waiting longer than this for the kernel are warned about.
    pub(crate) dwell_warning: Option<std::time::Duration>,
    pub(crate) runtime: &'a tokio::runtime::Handle,
    pub(crate) home: HomeThread,
    /// A runtime thread's own ring, which any thread may drive under a
    /// lock ([`WorkerRings`](crate::WorkerRings)), instead of a home ring.
    pub(crate) worker: bool,
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
        let uring = || match setup.worker {
            true => Worker::new(setup.ring, setup.home, setup.runtime).map(AnyBackend::Worker),
            false => Uring::new(
                setup.ring,
                setup.home,
                setup.kicks,
                setup.runtime,
                setup.dwell_warning,
            )
            .map(AnyBackend::Uring),
        };
        match setup.choice {
            Backend::Fallback => Ok(fallback()),
            Backend::Sim(config) => Ok(AnyBackend::Sim(Sim::new(
                config.clone(),
                setup.runtime.clone(),
                setup.home,
            ))),
            Backend::Uring => uring(),
            Backend::Auto => match uring() {
                Ok(uring) => Ok(uring),
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
        fn name_of<R: Reactor>(_: &R) -> &'static str {
            R::NAME
        }
        dispatch!(self, backend => name_of(backend))
    }

    fn common(&self) -> &Common {
        dispatch!(self, backend => backend.common())
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
        // A cell of one thread goes only where every handle stays on that
        // thread: the home ring (`local.rs` sends nothing else here).
        assert!(
            !A::ONE_THREAD || matches!(self, AnyBackend::Uring(_)),
            "aioctx: a home-thread op reached a backend other than its home ring"
        );
        dispatch!(self, backend => backend.start(fresh, waker))
    }

    pub(crate) fn cancel(&self, canceller: Canceller) {
        dispatch!(self, backend => backend.cancel(canceller))
    }

    pub(crate) fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        dispatch!(self, backend => backend.spawn_driver())
    }

    pub(crate) fn shut_down(&self) {
        dispatch!(self, backend => backend.shut_down())
    }

    /// Whether shutdown has been requested, or the driver has ended.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.common().shutdown.is_raised()
    }

    pub(crate) fn ring_flags(&self) -> RingFlags {
        dispatch!(self, backend => backend.ring_flags())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let mut metrics = self.common().metrics(self.name(), self.ring_flags());
        metrics.ops_blocking = dispatch!(self, backend => backend.ops_blocking());
        metrics
    }

    /// See [`Reactor::register_buffers`].
    ///
    /// # Safety
    ///
    /// As [`Reactor::register_buffers`].
    pub(crate) unsafe fn register_buffers(
        &self,
        iovecs: &[libc::iovec],
    ) -> io::Result<Option<u16>> {
        // SAFETY: the caller's contract.
        dispatch!(self, backend => unsafe { backend.register_buffers(iovecs) })
    }

    pub(crate) fn release(&self, release: Release) {
        dispatch!(self, backend => backend.release(release))
    }

    pub(crate) fn register_file(&self, fd: RawFd) -> io::Result<Option<u32>> {
        dispatch!(self, backend => backend.register_file(fd))
    }

    pub(crate) fn local_turns(&self) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        dispatch!(self, backend => backend.local_turns())
    }

    pub(crate) fn register_file_shared(&self, fd: RawFd) -> io::Result<Option<u32>> {
        dispatch!(self, backend => backend.register_file_shared(fd))
    }

    pub(crate) fn shares_fds(&self) -> bool {
        dispatch!(self, backend => backend.shares_fds())
    }

    pub(crate) fn direct_alignment(&self, fd: RawFd) -> Option<DirectAlignment> {
        dispatch!(self, backend => backend.direct_alignment(fd))
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn faults(&self) -> Option<&crate::fault::FaultQueue> {
        dispatch!(self, backend => backend.faults())
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn hide_opcodes(&self, names: &[&str]) -> io::Result<()> {
        dispatch!(self, backend => backend.hide_opcodes(names))
    }

    pub(crate) fn sim(&self) -> Option<SimHandle> {
        dispatch!(self, backend => backend.sim())
    }

    pub(crate) fn on_close(&self, then: Box<dyn FnOnce() + Send>) -> bool {
        dispatch!(self, backend => backend.on_close(then))
    }
}
