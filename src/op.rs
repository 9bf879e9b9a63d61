//! One operation: what it is ([`OpKind`]), what the kernel reports ([`Cqe`]),
//! and the future that submits it and waits ([`Op`]).
//!
//! An op starts as an [`OpKind`] value (the opcode's arguments and the
//! resources it owns: buffers, fds). On its first poll the future moves it into
//! a heap cell, builds the SQE from it at its final address, and hands the
//! backend a reference to the cell:
//!
//! ```text
//!   future ──FutureHalf──► OpCell { state, waker, outcome, op } ◄──OpRef── driver slot table
//! ```
//!
//! The driver's reference lives in its slot table until the CQE arrives, so the
//! kernel never writes memory that has been freed (invariant 4), whatever the
//! future does. The driver frees the slot when it reaps the CQE, not when the
//! future is polled (invariant 5). A future dropped early gives its reference
//! to the driver as a cancel request; the op's resources are released at the
//! CQE. Who may touch what, and when, is [`crate::lifecycle`]'s protocol.

use std::any::Any;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use std::{fmt, future::Future, pin::Pin};

use crate::context::{Engine, Shared};
use crate::lifecycle::{BackendRef, Canceller, Cell, Fresh, FutureHalf, OpCell, Payload};
use crate::ring::Sqe;

/// An operation's arguments and owned resources, and how it becomes an SQE and
/// an output.
///
/// Implemented by the crate's op types (see [`crate::ops`]); sealed, because a
/// wrong SQE can make the kernel write freed memory. Submit a hand-built SQE
/// with [`Context::submit_raw`](crate::Context::submit_raw) instead.
pub trait OpKind: Send + 'static + sealed::Sealed {
    /// What the op's future resolves to.
    type Output;

    #[doc(hidden)]
    /// Builds the SQE. Called once, with `self` at its final address (inside
    /// the op's cell), so pointers into `self` stay valid until completion.
    fn sqe(&mut self) -> Sqe;

    #[doc(hidden)]
    /// Turns the completion into the future's output, handing resources back.
    fn complete(self, cqe: Cqe) -> Self::Output;

    #[doc(hidden)]
    /// What the fallback backend runs on a pool thread: a blocking syscall
    /// that owns everything it touches (bounce buffers, fd clones), so the
    /// op's own resources are never in use by a thread the future cannot see.
    type Blocking: BlockingCall;

    #[doc(hidden)]
    /// Prepares the blocking call (copying out what a write needs). Called
    /// once, on submission, under the op's lock.
    fn blocking(&mut self) -> Self::Blocking;

    #[doc(hidden)]
    /// Lands a finished blocking call's results in the op (copying read data
    /// into the caller's buffer), before [`complete`](Self::complete) or
    /// [`abandon`](Self::abandon) sees `cqe`.
    fn land(&mut self, call: Self::Blocking, cqe: &mut Cqe) {
        let _ = (call, cqe);
    }

    #[doc(hidden)]
    /// Runs the op against the simulator's in-memory files, when its
    /// simulated latency has passed.
    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe;

    #[doc(hidden)]
    /// Extra simulated time the op takes beyond the configured latency (a
    /// timeout's duration).
    fn sim_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    #[doc(hidden)]
    /// Called instead of [`complete`](Self::complete) when the future was
    /// dropped before the op finished. Ops that produce a resource (an opened
    /// fd) release it here; the default just drops `self`.
    fn abandon(self, cqe: Cqe)
    where
        Self: Sized,
    {
        let _ = cqe;
    }
}

pub(crate) mod sealed {
    /// Keeps [`OpKind`](super::OpKind) implementations inside the crate.
    #[allow(unreachable_pub)]
    pub trait Sealed {}

    /// A blocking syscall prepared by an op for the fallback backend.
    #[allow(unreachable_pub)]
    pub trait BlockingCall: Send + 'static {
        /// Runs the syscall on the calling (pool) thread.
        fn run(&mut self) -> super::Cqe;
    }

    impl BlockingCall for () {
        fn run(&mut self) -> super::Cqe {
            super::Cqe::from_raw(0, 0)
        }
    }
}

pub(crate) use sealed::BlockingCall;

/// The error of an op that the context's backend cannot run.
pub(crate) fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what.to_owned())
}

/// The `Cqe` of a blocking syscall that returned `ret` (`-1` with `errno` set
/// on failure), as the ring would have reported it.
pub(crate) fn cqe_of_syscall(ret: i64) -> Cqe {
    if ret < 0 {
        Cqe::error(io::Error::last_os_error())
    } else {
        Cqe::from_raw(ret.min(i64::from(i32::MAX)) as i32, 0)
    }
}

/// The outcome of an op as the kernel (or the driver) reports it.
#[derive(Debug)]
pub struct Cqe {
    /// `res` of the CQE: a non-negative count, or the kernel's errno.
    pub(crate) result: io::Result<u32>,
    /// `flags` of the CQE.
    pub(crate) flags: u32,
}

impl Cqe {
    pub(crate) fn from_raw(res: i32, flags: u32) -> Cqe {
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as u32)
        };
        Cqe { result, flags }
    }

    /// Whether the op failed because its context shut down before the
    /// kernel saw it.
    pub(crate) fn is_shutdown(&self) -> bool {
        matches!(&self.result, Err(e) if crate::is_shutdown(e))
    }

    pub(crate) fn error(error: io::Error) -> Cqe {
        Cqe {
            result: Err(error),
            flags: 0,
        }
    }
}

impl<K: OpKind> Payload for K {
    fn abandon(self, outcome: Cqe) {
        OpKind::abandon(self, outcome);
    }
}

/// What the backends see of an op, whatever its type.
pub(crate) trait Inflight: Cell {
    /// Runs the op on the simulator's files.
    ///
    /// # Safety
    ///
    /// The caller holds the op's backend reference and has not completed it.
    unsafe fn simulate(&self, files: &mut crate::sim::Files) -> Cqe;

    /// Simulated time the op takes beyond the configured latency.
    ///
    /// # Safety
    ///
    /// As [`simulate`](Inflight::simulate).
    unsafe fn sim_delay(&self) -> Duration;

    /// The op's type, for the simulator's completion log.
    fn kind_name(&self) -> &'static str;

    /// The concrete cell, for the fallback pool's typed completion.
    fn as_any(&self) -> &dyn Any;
}

impl<K: OpKind> Inflight for OpCell<K> {
    unsafe fn simulate(&self, files: &mut crate::sim::Files) -> Cqe {
        // SAFETY: the caller holds the backend reference, uncompleted.
        unsafe { self.with_kind(|kind| kind.simulate(files)) }
            .expect("an op in flight keeps its op")
    }

    unsafe fn sim_delay(&self) -> Duration {
        // SAFETY: as above.
        unsafe { self.with_kind(|kind| kind.sim_delay()) }.unwrap_or_default()
    }

    fn kind_name(&self) -> &'static str {
        let name = std::any::type_name::<K>();
        let base = name.split('<').next().unwrap_or(name);
        base.rsplit("::").next().unwrap_or(base)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What an op holds on to: its context, and for a file's op the file (whose
/// fd must stay open until the kernel is done with the op).
///
/// One reference per op, kept in the op's cell until the cell is freed: the
/// op's future reaches its context through it, and the op's SQE names the fd
/// it keeps open.
#[derive(Clone)]
pub(crate) enum Anchor {
    Context(Arc<Shared>),
    File(Arc<crate::fs::FileInner>),
}

impl Anchor {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        match self {
            Anchor::Context(shared) => shared,
            Anchor::File(file) => &file.shared,
        }
    }
}

impl From<Arc<Shared>> for Anchor {
    fn from(shared: Arc<Shared>) -> Anchor {
        Anchor::Context(shared)
    }
}

/// A backend's reference to an op in flight: completing it resolves the op's
/// future. See [`BackendRef`].
pub(crate) type OpRef = BackendRef<dyn Inflight>;

/// Erases an op's type for the backends' queues and tables.
pub(crate) fn erase<K: OpKind>(op: BackendRef<OpCell<K>>) -> OpRef {
    op.erase(|cell| -> NonNull<dyn Inflight> { cell })
}

/// A request to the driver, from any thread.
pub(crate) enum Request {
    /// Submit this op.
    Submit(Submission),
    /// The op's future was dropped in flight: cancel it if it is in the kernel.
    Cancel(Canceller),
}

/// Where a backend left an op it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// Handled on the calling thread: refused, or queued by the home
    /// thread's own driver (which may have completed it already).
    Here,
    /// Queued for another thread.
    Queued,
}

/// An op on its way to the SQ.
pub(crate) struct Submission {
    pub(crate) op: OpRef,
    pub(crate) sqe: Sqe,
    /// When a foreign thread pushed the op: the start of its dwell time.
    /// `None` for home-thread ops, which are not timed.
    pub(crate) pushed_at: Option<Instant>,
}

/// The future of one operation. Created unsubmitted; submitted on first poll.
///
/// Dropping it before it resolves is always safe and never blocks: the op's
/// resources go to the driver until the kernel is done with them, and the
/// driver asks the kernel to cancel the op.
#[must_use = "ops do nothing unless polled"]
pub struct Op<K: OpKind> {
    stage: Stage<K>,
}

enum Stage<K: OpKind> {
    Unsubmitted(K, Anchor),
    Submitted(FutureHalf<K>),
    Done,
}

// Nothing in an `Op` is ever pinned: the kind moves into a heap cell on first
// poll, and the cell is reached through a pointer.
impl<K: OpKind> Unpin for Op<K> {}

impl<K: OpKind> fmt::Debug for Op<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Unsubmitted(..) => "Unsubmitted",
            Stage::Submitted(_) => "Submitted",
            Stage::Done => "Done",
        };
        f.debug_struct("Op")
            .field("kind", &std::any::type_name::<K>())
            .field("stage", &stage)
            .finish()
    }
}

impl<K: OpKind> Op<K> {
    pub(crate) fn new(anchor: impl Into<Anchor>, kind: K) -> Op<K> {
        Op {
            stage: Stage::Unsubmitted(kind, anchor.into()),
        }
    }

    /// Moves the op into its cell and hands it to the backend. A backend
    /// that refuses it (shut down) completes it with the error, so the next
    /// poll resolves.
    fn start(kind: K, anchor: Anchor, cx: &TaskContext<'_>) -> (FutureHalf<K>, Handoff) {
        let on_ring = matches!(anchor.shared().engine, Engine::Uring);
        let mut fresh = Fresh::new(kind, anchor);
        if on_ring {
            // The hot path: the SQE is built from the op at its final address.
            let sqe = fresh.with_kind(|kind| kind.sqe());
            let (half, op) = fresh.share(cx.waker().clone());
            let handoff = half.anchor().shared().submit(Submission {
                op: erase(op),
                sqe,
                pushed_at: None,
            });
            return (half, handoff);
        }
        let (half, op) = fresh.share(cx.waker().clone());
        let shared = half.anchor().shared();
        let handoff = match &shared.engine {
            Engine::Fallback(pool) => {
                // SAFETY: `op` is the backend reference, not yet completed.
                let call = unsafe { op.cell().with_kind(|kind| kind.blocking()) }
                    .expect("an op in flight keeps its op");
                // The pool thread keeps the anchor (and so the fd) until its
                // syscall returns, even if shutdown resolves the future first.
                pool.start(shared, op, call, half.anchor().clone())
            }
            Engine::Sim(sim) => sim.start(shared, erase(op)),
            Engine::Uring => unreachable!("ring ops took the path above"),
        };
        (half, handoff)
    }
}

impl<K: OpKind> Future for Op<K> {
    type Output = K::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        let this = self.get_mut();
        let half = match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Unsubmitted(kind, anchor) => {
                let (half, handoff) = Op::start(kind, anchor, cx);
                // An op handled on this thread may be complete already
                // (refused, or run by the home driver on the spot). One
                // queued for another thread always waits for a wake, even if
                // it raced to completion: where the code after it runs must
                // not depend on timing.
                if handoff == Handoff::Queued || !half.is_complete() {
                    this.stage = Stage::Submitted(half);
                    return Poll::Pending;
                }
                half
            }
            Stage::Submitted(half) => half,
            Stage::Done => panic!("aioctx: op polled after it resolved"),
        };
        match half.poll(cx.waker()) {
            Ok((kind, cqe)) => Poll::Ready(kind.complete(cqe)),
            Err(half) => {
                this.stage = Stage::Submitted(half);
                Poll::Pending
            }
        }
    }
}

impl<K: OpKind> Drop for Op<K> {
    fn drop(&mut self) {
        // Resolved ops (the common case) have nothing to hand over.
        if !matches!(self.stage, Stage::Submitted(_)) {
            return;
        }
        let Stage::Submitted(half) = std::mem::replace(&mut self.stage, Stage::Done) else {
            unreachable!("checked above");
        };
        // Dropped in flight (rare): the context outlives the cancel request.
        let shared = half.anchor().shared().clone();
        if let Some(canceller) = half.abandon() {
            // Best effort: a backend that cannot cancel drops the request, and
            // shutdown cancels everything in flight anyway.
            shared.cancel(canceller);
        }
    }
}
