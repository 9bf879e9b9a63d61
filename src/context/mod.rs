//! [`Context`]'s methods: what a handle can do. The handle itself and its
//! lifetime are in `handle.rs`, what every thread shares of a context in
//! `state.rs`, and the per-thread bindings behind [`current`] in `bind.rs`;
//! each method here delegates to the room that owns its concern (the
//! builder in `home/`, entry and spawning in `enter.rs`, registered buffers
//! in `fixed.rs`, ops in `op.rs` and `ops/`).
//!
//! A context is three parts: the user's handles ([`Context`], cheap to clone,
//! whose last drop shuts the context down through its owner), the state
//! every thread shares (the backend, the home runtime, the home thread), and
//! the home thread's private driver state (inside the backend).

use std::fmt;
use std::future::Future;
use std::io;
use std::thread::ThreadId;
use std::time::Duration;

pub(crate) mod bind;
pub(crate) mod handle;
pub(crate) mod state;

pub use bind::{BindGuard, current};
pub use handle::Context;

use crate::backend::sim::SimHandle;
use crate::enter::{self, JoinHandle};
use crate::fixed::FixedBufPool;
use crate::home::Builder;
use crate::metrics::{Metrics, RingFlags};
use crate::op::Op;
use crate::ops::raw::RawOp;
use crate::ops::{Nop, OpKind, Timeout};
use crate::pool::placement::Anchor;

impl Context {
    /// Starts configuring a context.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A context with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`](crate::Builder::build).
    pub fn new() -> std::io::Result<Context> {
        Builder::default().build()
    }

    /// A snapshot of the context's counters.
    pub fn metrics(&self) -> Metrics {
        self.state().backend.metrics()
    }

    /// The context's id: a small integer, unique in the process, given in
    /// order of creation. Its tracing span carries it (see
    /// [Tracing](crate#tracing)), so a log line can be matched to its
    /// context.
    pub fn id(&self) -> u64 {
        self.state().id
    }

    /// Which backend runs this context's ops: `"io_uring"`, `"fallback"` or
    /// `"sim"` (as [`Metrics::backend`]).
    pub fn backend(&self) -> &'static str {
        self.state().backend.name()
    }

    /// The simulator's controls, when this context runs on
    /// [`Backend::Sim`](crate::Backend::Sim); `None` otherwise.
    pub fn sim(&self) -> Option<SimHandle> {
        self.state().backend.sim()
    }

    /// The io_uring setup flags the kernel accepted for this context's ring
    /// (all `false` off io_uring).
    pub fn ring_flags(&self) -> RingFlags {
        self.state().backend.ring_flags()
    }

    /// The home thread's id.
    pub fn home_thread(&self) -> ThreadId {
        self.state().home().id()
    }

    /// Whether the calling thread is this context's home thread.
    pub fn is_home_thread(&self) -> bool {
        self.state().home().is_current()
    }

    /// A handle to the home thread's Tokio runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.state().runtime()
    }

    /// Binds the calling thread to this context until the guard is dropped:
    /// while bound, [`current`] returns this context.
    ///
    /// Bindings nest: `current` returns the most recent binding whose guard
    /// is still alive. Guards may be dropped in any order; each removes the
    /// binding it made, and only that one.
    ///
    /// This is the rule a vCPU thread follows while it holds the big lock and
    /// handles an MMIO exit: code deep in a device model finds the context it
    /// must submit to without being handed it.
    pub fn bind(&self) -> BindGuard {
        bind::bind(self)
    }

    /// Shuts the context down and waits until its home thread has cancelled
    /// and drained every op in flight. Other handles stay valid, but every op
    /// submitted through them fails.
    ///
    /// Called on the home thread itself, it only requests the shutdown: the
    /// home thread cannot wait for itself.
    pub async fn shutdown(&self) {
        let state = self.state();
        state.backend.shut_down();
        if self.is_home_thread() {
            return;
        }
        let mut finished = state.finished.clone();
        // An error means the home thread is gone, which is finished too.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the context has been asked to shut down (or its driver has
    /// ended). Spelled as [`is_shutdown`](crate::is_shutdown), which asks the
    /// same of an op's error.
    pub fn is_shutdown(&self) -> bool {
        self.state().backend.is_shut_down()
    }

    /// Whether the context has been asked to shut down.
    #[deprecated(note = "renamed `Context::is_shutdown`, spelled as `aioctx::is_shutdown`")]
    pub fn is_shut_down(&self) -> bool {
        self.is_shutdown()
    }

    /// QEMU's `aio_co_enter`, not Tokio's `Runtime::enter`: runs `future`
    /// inline on the calling thread until it first returns `Pending`, then
    /// on the home thread, and returns a [`JoinHandle`], not a guard (for a
    /// guard that makes this the thread's context, see [`bind`](Context::bind)).
    ///
    /// The context is bound ([`current`](crate::current) returns it) and its
    /// runtime entered during the inline poll. A future that completes without
    /// ever returning `Pending` never touches the home thread. The caller gets
    /// a [`JoinHandle`] and goes back to its own work; it can await the handle
    /// or [`join`](JoinHandle::join) it.
    ///
    /// # Panics
    ///
    /// A panic in the inline poll propagates to the caller. A panic in a later
    /// poll is caught on the home thread and surfaces through the handle.
    pub fn enter<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        enter::enter(self, future)
    }

    /// Spawns `future` onto the home thread's runtime.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        enter::task_handle(self, self.runtime().spawn(future))
    }

    /// Spawns a `!Send` future onto the home thread's local task set. Call it
    /// on the home thread (from a task spawned there, for one).
    ///
    /// # Panics
    ///
    /// Off the home thread. On a simulator running on the caller's runtime
    /// (no home thread of its own), it uses `tokio::task::spawn_local`, which
    /// panics outside a `LocalSet`.
    pub fn spawn_local<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let task = match &self.state().local {
            Some(local) => local
                .try_with(future, |set, future| set.spawn_local(future))
                .unwrap_or_else(|_| {
                    panic!("Context::spawn_local called off the context's home thread")
                }),
            None => tokio::task::spawn_local(future),
        };
        enter::task_handle(self, task)
    }

    /// Runs `future` to completion on the calling thread, blocking it, with
    /// the context bound and its runtime entered. For blocking callers
    /// outside any async runtime: a vCPU thread, a worker pool, `main`, a
    /// thread of a runtime's blocking pool (`spawn_blocking`).
    ///
    /// # Panics
    ///
    /// On the context's home thread, where blocking would stop the driver the
    /// future waits for; and on a thread that drives a Tokio runtime (a
    /// worker, or inside a `block_on`), where blocking would stall that
    /// runtime (Tokio's own check and message).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !self.is_home_thread(),
            "Context::block_on called on the context's own home thread: it would deadlock"
        );
        let _bound = self.bind();
        self.runtime().block_on(future)
    }

    fn op<K: OpKind>(&self, kind: K) -> Op<K> {
        Op::new(Anchor::Context(self.state().clone()), kind)
    }

    /// Submits a no-op and resolves when its completion comes back: the
    /// cheapest way to measure the path through the ring.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    ///
    /// # Errors
    ///
    /// Only if the context has shut down ([`is_shutdown`](crate::is_shutdown)).
    pub fn nop(&self) -> Op<Nop> {
        self.op(Nop::new())
    }

    /// Resolves after `duration`, timed by the kernel (`CLOCK_MONOTONIC`, real
    /// time: Tokio's paused clock does not apply) on io_uring, by a Tokio
    /// timer of the home runtime on the fallback, and in the simulator's
    /// virtual time on the sim.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety). A dropped
    /// timeout's timer is cancelled on every backend.
    ///
    /// # Errors
    ///
    /// `ECANCELED` if the context shut down first; a shutdown error if it had
    /// already.
    pub fn timeout(&self, duration: Duration) -> Op<Timeout> {
        self.op(Timeout::new(duration))
    }

    /// Submits a caller-built SQE. `resources` are owned by the op until its
    /// CQE arrives, then handed back in the
    /// [`RawCompletion`](crate::ops::RawCompletion), so memory the
    /// SQE points into can live there.
    ///
    /// The SQE's `user_data` is the driver's and is overwritten. Ops that post
    /// more than one CQE (multishot) are not supported: the op completes at
    /// the first.
    ///
    /// # Safety
    ///
    /// Every pointer and fd in `entry` must stay valid until the op completes:
    /// point only into heap memory owned by `resources` (a `Vec`'s or `Box`'s
    /// contents do not move when the value does), or into memory that lives
    /// for `'static`. The op must not outlive what it names in any other way.
    ///
    /// # Errors
    ///
    /// The op resolves with an `Unsupported` error (and the resources back)
    /// on the fallback and sim backends, which cannot run an arbitrary SQE.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub unsafe fn submit_raw<R: Send + 'static>(
        &self,
        entry: io_uring::squeue::Entry,
        resources: R,
    ) -> Op<RawOp<R>> {
        // SAFETY: the caller's contract is `RawOp::new`'s.
        self.op(unsafe { RawOp::new(entry, resources) })
    }

    /// Allocates `count` buffers of `size` bytes (4096-aligned, zeroed) and
    /// registers them with this context's ring, for
    /// [`File::read_fixed_at`](crate::fs::File::read_fixed_at) and
    /// [`File::write_fixed_at`](crate::fs::File::write_fixed_at). Call it
    /// from any thread; the registration runs on the home thread.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a `count` above 65536 or of 0, or a size of 0; an
    /// allocation failure. A registration the ring refuses is not an error:
    /// see [`FixedBufPool`].
    pub async fn register_buffers(&self, count: usize, size: usize) -> io::Result<FixedBufPool> {
        FixedBufPool::register(self.state(), count, size).await
    }

    /// **Test-only** (feature `fault-injection`, never in a build that
    /// ships): queues `faults` for the completions of this context's next
    /// transfers (`read_at`, `write_at`, `readv_at`, `writev_at`, and the
    /// reads and writes `read_exact_at` and `write_all_at` issue), one fault
    /// per completion, in order, after any still waiting. See
    /// [`Fault`](crate::fault::Fault).
    ///
    /// # Errors
    ///
    /// `Unsupported` on the simulator, which has fault injection of its own
    /// (in `SimConfig`).
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(
        &self,
        faults: impl IntoIterator<Item = crate::fault::Fault>,
    ) -> io::Result<()> {
        self.fault_queue()?.push(faults);
        Ok(())
    }

    /// **Test-only** (feature `fault-injection`): queues `faults` for the
    /// completions of this context's next fsyncs (`sync_all`, `sync_data`,
    /// on files and directories), one fault per completion, in order:
    /// `Fault::Errno(libc::EIO)` makes an fsync report a writeback error, as
    /// the kernel does when the disk fails a write. Only the report
    /// changes: the kernel did write the data. See
    /// [`Fault`](crate::fault::Fault).
    ///
    /// # Errors
    ///
    /// `Unsupported` on the simulator, which models writeback errors itself
    /// (a `SimConfig::fault` on `SimOp::Fsync`).
    #[cfg(feature = "fault-injection")]
    pub fn inject_sync_faults(
        &self,
        faults: impl IntoIterator<Item = crate::fault::Fault>,
    ) -> io::Result<()> {
        self.fault_queue()?.push_syncs(faults);
        Ok(())
    }

    /// **Test-only** (feature `fault-injection`): from now on, the ring runs
    /// the ops whose opcodes are named in `opcodes` (the namespace ops'
    /// `"RENAMEAT"`, `"UNLINKAT"`, `"MKDIRAT"`, `"LINKAT"`, `"SYMLINKAT"`, and
    /// `"FTRUNCATE"` for `File::set_len`) as blocking
    /// calls, as it does on a kernel that lacks them;
    /// [`RingFlags::opcodes_blocking`] and
    /// [`Metrics::ops_blocking`] say so.
    ///
    /// # Errors
    ///
    /// `Unsupported` off io_uring; `InvalidInput` for another name.
    #[cfg(feature = "fault-injection")]
    pub fn hide_opcodes(&self, opcodes: &[&str]) -> io::Result<()> {
        self.state().backend.hide_opcodes(opcodes)
    }

    #[cfg(feature = "fault-injection")]
    fn fault_queue(&self) -> io::Result<&crate::fault::FaultQueue> {
        self.state().backend.faults().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "fault injection works on the io_uring and fallback backends only",
            )
        })
    }

    /// **Test-only** (feature `fault-injection`): faults queued by
    /// [`inject_faults`](Context::inject_faults) and
    /// [`inject_sync_faults`](Context::inject_sync_faults) and not yet
    /// applied (0 on the simulator).
    #[cfg(feature = "fault-injection")]
    pub fn pending_faults(&self) -> usize {
        self.state()
            .backend
            .faults()
            .map_or(0, |queue| queue.pending())
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Context")
            .field("id", &state.id)
            .field("backend", &state.backend.name())
            .field("ring_flags", &state.backend.ring_flags())
            .field("home_thread", &state.home().id())
            .field("kick_foreign_pushes", &state.kick_foreign)
            .field("shut_down", &state.backend.is_shut_down())
            .finish()
    }
}
