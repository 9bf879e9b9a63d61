//! One in-flight operation: the state its future and the driver share, and the
//! hand-off that makes dropping a future mid-flight safe.
//!
//! An op starts as an [`OpKind`] value (the opcode's arguments and the
//! resources it owns: buffers, fds). On its first poll the future moves it into
//! an [`OpCell`] behind an `Arc`, builds the SQE from it at its final address,
//! and submits the cell. From then on two parties hold the `Arc`:
//!
//! ```text
//!   future ──Arc──► OpCell { Lifecycle, resources } ◄──Arc── driver slot table
//! ```
//!
//! The driver's reference lives in its slot table until the CQE arrives, so the
//! kernel never writes memory that has been freed (invariant 4), whatever the
//! future does. The driver frees the slot when it reaps the CQE, not when the
//! future is polled (invariant 5). A future dropped early flips the lifecycle
//! to [`Lifecycle::Abandoned`] and asks the driver to cancel; the resources are
//! released by whichever side drops the last `Arc`, which is always after the
//! CQE.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;
use std::{fmt, future::Future, pin::Pin};

use crate::context::{Engine, Shared};
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

/// Where an op stands. Owned by the op's cell, under its lock.
enum Lifecycle {
    /// Submitted (or on its way to the SQ); `waker` is woken when the CQE
    /// arrives.
    Waiting { waker: Waker },
    /// The CQE arrived; the future has not collected it yet.
    Completed(Cqe),
    /// The future was dropped before completion. The driver releases the
    /// resources when the CQE arrives.
    Abandoned,
    /// The future collected the output. Nothing happens to the cell again.
    Finished,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Waiting { .. } => "Waiting",
            Lifecycle::Completed(_) => "Completed",
            Lifecycle::Abandoned => "Abandoned",
            Lifecycle::Finished => "Finished",
        })
    }
}

struct State<K> {
    lifecycle: Lifecycle,
    /// The op's arguments and resources; `None` once handed back or released.
    kind: Option<K>,
}

/// The shared half of an op. See the module docs.
pub(crate) struct OpCell<K> {
    state: Mutex<State<K>>,
    /// The SQE's `user_data` while in the kernel, or [`NOT_IN_KERNEL`].
    /// Written and read only by the driver on the home thread, hence `Relaxed`.
    user_data: AtomicU64,
}

const NOT_IN_KERNEL: u64 = u64::MAX;

/// What the driver sees of an op: type-erased, so one slot table holds all kinds.
pub(crate) trait Inflight: Send + Sync {
    /// Records the completion and wakes the future, or releases the resources
    /// if the future is gone.
    fn complete(&self, cqe: Cqe);

    /// Whether the future was dropped; an abandoned op that has not reached
    /// the kernel yet is never submitted.
    fn is_abandoned(&self) -> bool;

    /// The `user_data` of the op's SQE while it is in the kernel.
    fn user_data(&self) -> Option<u64>;

    /// Set by the driver when the op enters its slot table, cleared at the CQE.
    fn set_user_data(&self, user_data: Option<u64>);

    /// Runs the op on the simulator's files and completes it.
    fn simulate(&self, files: &mut crate::sim::Files);

    /// Simulated time the op takes beyond the configured latency.
    fn sim_delay(&self) -> std::time::Duration;

    /// The op's type, for the simulator's completion log.
    fn kind_name(&self) -> &'static str;
}

/// A request to the driver, from any thread.
pub(crate) enum Request {
    /// Submit this op.
    Submit(Submission),
    /// The op's future was dropped in flight: cancel it if it is in the kernel.
    Cancel(Arc<dyn Inflight>),
}

/// An op on its way to the SQ.
pub(crate) struct Submission {
    pub(crate) op: Arc<dyn Inflight>,
    pub(crate) sqe: Sqe,
    /// When a foreign thread pushed the op: the start of its dwell time.
    /// `None` for home-thread ops, which are not timed.
    pub(crate) pushed_at: Option<Instant>,
}

impl<K: OpKind> OpCell<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic while holding this lock would come from a bug in the
        // lifecycle below, which panics only on impossible transitions; the
        // state is still the last consistent one, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: OpKind> Inflight for OpCell<K> {
    fn complete(&self, cqe: Cqe) {
        let mut state = self.lock();
        match std::mem::replace(&mut state.lifecycle, Lifecycle::Finished) {
            Lifecycle::Waiting { waker } => {
                state.lifecycle = Lifecycle::Completed(cqe);
                drop(state);
                waker.wake();
            }
            Lifecycle::Abandoned => {
                let kind = state.kind.take();
                drop(state);
                if let Some(kind) = kind {
                    kind.abandon(cqe);
                }
            }
            other => panic!("aioctx: op completed twice (lifecycle was {other:?})"),
        }
    }

    fn is_abandoned(&self) -> bool {
        matches!(self.lock().lifecycle, Lifecycle::Abandoned)
    }

    fn user_data(&self) -> Option<u64> {
        let user_data = self.user_data.load(Relaxed);
        (user_data != NOT_IN_KERNEL).then_some(user_data)
    }

    fn set_user_data(&self, user_data: Option<u64>) {
        self.user_data
            .store(user_data.unwrap_or(NOT_IN_KERNEL), Relaxed);
    }

    fn simulate(&self, files: &mut crate::sim::Files) {
        let cqe = match self.lock().kind.as_mut() {
            Some(kind) => kind.simulate(files),
            None => return,
        };
        self.complete(cqe);
    }

    fn sim_delay(&self) -> std::time::Duration {
        self.lock()
            .kind
            .as_ref()
            .map_or(std::time::Duration::ZERO, |kind| kind.sim_delay())
    }

    fn kind_name(&self) -> &'static str {
        let name = std::any::type_name::<K>();
        let base = name.split('<').next().unwrap_or(name);
        base.rsplit("::").next().unwrap_or(base)
    }
}

impl<K: OpKind> OpCell<K> {
    /// Prepares the op's blocking call (fallback backend).
    pub(crate) fn prepare_blocking(&self) -> Option<K::Blocking> {
        self.lock().kind.as_mut().map(|kind| kind.blocking())
    }

    /// Lands a finished blocking call in the op and completes it. The caller
    /// has claimed the completion (see `fallback.rs`), so it happens once.
    pub(crate) fn land_blocking(&self, call: K::Blocking, mut cqe: Cqe) {
        if let Some(kind) = self.lock().kind.as_mut() {
            kind.land(call, &mut cqe);
        }
        self.complete(cqe);
    }
}

/// The future of one operation. Created unsubmitted; submitted on first poll.
///
/// Dropping it before it resolves is always safe and never blocks: the op's
/// resources go to the driver until the kernel is done with them, and the
/// driver asks the kernel to cancel the op.
#[must_use = "ops do nothing unless polled"]
pub struct Op<K: OpKind> {
    shared: Arc<Shared>,
    stage: Stage<K>,
}

enum Stage<K> {
    Unsubmitted(K),
    Submitted(Arc<OpCell<K>>),
    Done,
}

// Nothing in an `Op` is ever pinned: the kind moves into a heap cell on first
// poll, and the cell is reached through an `Arc`.
impl<K: OpKind> Unpin for Op<K> {}

impl<K: OpKind> fmt::Debug for Op<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Unsubmitted(_) => "Unsubmitted",
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
    pub(crate) fn new(shared: Arc<Shared>, kind: K) -> Op<K> {
        Op {
            shared,
            stage: Stage::Unsubmitted(kind),
        }
    }
}

impl<K: OpKind> Future for Op<K> {
    type Output = K::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        let this = self.get_mut();
        match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Unsubmitted(kind) => {
                let cell = Arc::new(OpCell {
                    state: Mutex::new(State {
                        lifecycle: Lifecycle::Waiting {
                            waker: cx.waker().clone(),
                        },
                        kind: Some(kind),
                    }),
                    user_data: AtomicU64::new(NOT_IN_KERNEL),
                });
                let started = match &this.shared.engine {
                    Engine::Uring => {
                        let sqe = cell
                            .lock()
                            .kind
                            .as_mut()
                            .expect("a new cell holds its kind")
                            .sqe();
                        let submission = Submission {
                            op: cell.clone(),
                            sqe,
                            pushed_at: None,
                        };
                        this.shared.submit(Request::Submit(submission))
                    }
                    Engine::Fallback(pool) => pool.start(&this.shared, cell.clone()),
                    Engine::Sim(sim) => sim.start(&this.shared, cell.clone()),
                };
                match started {
                    Ok(()) => {
                        this.stage = Stage::Submitted(cell);
                        Poll::Pending
                    }
                    Err(error) => {
                        // Never reached the driver: we hold the only other
                        // reference, so the kind comes straight back.
                        let kind = cell
                            .lock()
                            .kind
                            .take()
                            .expect("unsubmitted op keeps its kind");
                        Poll::Ready(kind.complete(Cqe::error(error)))
                    }
                }
            }
            Stage::Submitted(cell) => {
                let mut state = cell.lock();
                match &mut state.lifecycle {
                    Lifecycle::Waiting { waker } => {
                        if !waker.will_wake(cx.waker()) {
                            waker.clone_from(cx.waker());
                        }
                        drop(state);
                        this.stage = Stage::Submitted(cell);
                        Poll::Pending
                    }
                    Lifecycle::Completed(_) => {
                        let Lifecycle::Completed(cqe) =
                            std::mem::replace(&mut state.lifecycle, Lifecycle::Finished)
                        else {
                            unreachable!()
                        };
                        let kind = state.kind.take().expect("a completed op keeps its kind");
                        drop(state);
                        Poll::Ready(kind.complete(cqe))
                    }
                    other => panic!("aioctx: op polled in lifecycle {other:?}"),
                }
            }
            Stage::Done => panic!("aioctx: op polled after it resolved"),
        }
    }
}

impl<K: OpKind> Drop for Op<K> {
    fn drop(&mut self) {
        let Stage::Submitted(cell) = std::mem::replace(&mut self.stage, Stage::Done) else {
            return;
        };
        let mut state = cell.lock();
        match state.lifecycle {
            Lifecycle::Waiting { .. } => {
                state.lifecycle = Lifecycle::Abandoned;
                drop(state);
                // Best effort: if the context is shutting down, shutdown
                // cancels everything in flight anyway.
                let _ = self.shared.submit(Request::Cancel(cell));
            }
            Lifecycle::Completed(_) => {
                // The kernel is done with the resources, but the output was
                // never collected: release what the op produced.
                let Lifecycle::Completed(cqe) =
                    std::mem::replace(&mut state.lifecycle, Lifecycle::Finished)
                else {
                    unreachable!()
                };
                let kind = state.kind.take();
                drop(state);
                if let Some(kind) = kind {
                    kind.abandon(cqe);
                }
            }
            Lifecycle::Abandoned | Lifecycle::Finished => {}
        }
    }
}
