//! The worker-ring backend: a ring owned by a thread of a Tokio multi-thread
//! runtime (a worker, usually), which any thread may drive under a lock. It
//! serves [`WorkerRings`](crate::WorkerRings): each runtime thread submits
//! into a ring of its own, so an op polled on a worker crosses no thread.
//!
//! ```text
//!  op polled on its ring's thread ── lock ── push SQE ── unlock ── flush request
//!  reaper task (next on that worker) ── yield_now: deferred until the worker's queue empties
//!                                    ── lock ── io_uring_enter (every SQE queued) ── reap
//!                                    ── unlock ── wake the ops' tasks
//!  completion that comes later ─► eventfd ─► reaper task, on any worker
//!                                        ── lock ── reap ── unlock ── wake the op's task
//! ```
//!
//! When SQEs reach the kernel: a submission queues its SQE under the lock
//! and asks the ring's reaper task for a flush; the reaper, woken on the
//! submitting worker (Tokio runs a task a worker wakes next, in its LIFO
//! slot), yields at once with `yield_now`, which Tokio defers until that
//! worker's run queue is empty or its next maintenance tick (every 61 task
//! polls on a busy worker). Then it enters once for every SQE its worker's
//! tasks queued meanwhile, and reaps. So a batch goes in per round of the
//! worker's tasks, as a home ring's turn does, with a bounded wait on a
//! worker that never idles, and no hook of Tokio's needed. (The first shape
//! entered once per submission, as fio does: `enters_per_op` 1.0, and half
//! the page-cached reads per second of a pool's spawned tasks; see
//! BENCHMARKS.md, "Worker rings".)
//!
//! A ring's completions may be reaped by whichever thread gets there first:
//! the reaper after a flush, or the reaper woken by the ring's eventfd
//! through Tokio's reactor, on whichever worker runs it. That rules
//! out `SINGLE_ISSUER`, `DEFER_TASKRUN` (completions only for the submitting
//! thread, which may be parked) and `COOP_TASKRUN` (no interrupt to a parked
//! submitter): the ring is a plain one ([`SharedRing`]). The lock is taken
//! by one thread almost always, so it costs two uncontended atomic operations
//! per submission.
//!
//! Completions are collected under the lock and completed after it is
//! released: completing runs user code (a waker, a buffer's drop) that may
//! submit again.
//!
//! # Registered files
//!
//! A file's ops move from ring to ring with the threads that make them, so
//! no ring can own a file's registration the way a home ring does. Instead
//! each ring fills its own sparse file table with the files its ops use: a
//! file's view of this ring (`file.rs`) registers the file here the first
//! time the ring's thread makes an op on it
//! ([`register_file_shared`](Reactor::register_file_shared)), its ops name
//! the slot (`IOSQE_FIXED_FILE`, counted in `Metrics::fixed_file_ops`), so
//! the kernel takes no reference on the shared open file per op, and the
//! view's drop takes the file out again ([`release`](Reactor::release)).
//! Both are `io_uring_register` calls under the ring's lock, from whichever
//! thread: the lock orders them against the ring's close (which closes the
//! ring's fd, and the table with it) and serialises the table's slot map. A
//! view goes only once no op holds it, so no SQE queued here or in the
//! kernel names its slot when the update empties it (an op in the kernel
//! would hold its own reference to the file anyway), and the slot is free
//! for another file only once the update has returned. An op names a slot
//! only if it comes through this ring's view ([`Anchored::through_ring_view`]):
//! one made for another ring's view and moved here (first polled on this
//! ring's thread) is made to name its file by fd before its SQE is built.
//! Where the table is missing (a kernel before 5.19 refuses a sparse one;
//! `registered_file_slots(0)`) or full, the file's ops name its fd, as
//! before.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use futures::task::AtomicWaker;
use tokio::io::unix::AsyncFd;

use crate::backend::common::{Common, Placement, Release};
use crate::backend::fallback::Fallback;
use crate::backend::uring::probe_opcodes;
use crate::backend::uring::slots::Slots;
use crate::backend::uring::tables::Tables;
use crate::backend::{Anchored, Reactor};
use crate::error::{Cqe, shutdown_error};
use crate::home_thread::HomeThread;
use crate::lifecycle::{Canceller, Fresh, FutureHalf};
use crate::metrics::{Counters, RingFlags};
use crate::ops::{OnRing, OpRef, Operation, erase};
use crate::ring::{RingConfig, SharedRing, Sqe};

mod core;

use self::core::{Waiting, WorkerCore, complete_all, scratch};

/// A worker ring: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Worker {
    state: Arc<WorkerState>,
    /// Runs the ops the ring has no SQE for (a directory listing, the
    /// namespace ops whose opcode the kernel lacks), as the home ring does.
    blocking: Arc<Fallback>,
    /// Bit `code` set: the kernel lacks optional opcode `code`.
    lacking: u64,
}

struct WorkerState {
    common: Common,
    core: Mutex<WorkerCore>,
    flags: RingFlags,
    /// The ring's eventfd, until the reaper task takes it.
    eventfd: Mutex<Option<OwnedFd>>,
    /// What to run once closed.
    on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Submissions asking the reaper task to enter.
    flush: FlushRequest,
}

/// A submission's request that the reaper task enter the ring.
struct FlushRequest {
    requested: AtomicBool,
    reaper: AtomicWaker,
}

impl FlushRequest {
    /// Asks for a flush, waking the reaper task.
    fn raise(&self) {
        // Release: pairs with the Acquire swap in `take`; the SQE was pushed
        // under the ring's lock, which the flush takes too, so this only
        // orders the flag against the waker below.
        self.requested.store(true, Ordering::Release);
        self.reaper.wake();
    }

    /// Whether a flush was asked for since the last call; registers `waker`
    /// to be woken by the next request first (the park order of park.rs:
    /// register, then check).
    fn take(&self, waker: &Waker) -> bool {
        self.reaper.register(waker);
        // Acquire: pairs with `raise`'s Release store.
        self.requested.swap(false, Ordering::Acquire)
    }
}

impl Worker {
    /// Sets up a shared ring for the calling thread, its owner.
    ///
    /// # Errors
    ///
    /// The ring's setup error.
    pub(crate) fn new(
        config: RingConfig,
        home: HomeThread,
        runtime: &tokio::runtime::Handle,
    ) -> io::Result<Worker> {
        let ring = SharedRing::new(config)?;
        let lacking = probe_opcodes(&ring)?;
        let flags = ring.flags();
        let eventfd = ring.eventfd()?;
        let limit = ring.cq_capacity();
        let tables = Tables::of(&ring);
        Ok(Worker {
            state: Arc::new(WorkerState {
                common: Common::new(home),
                core: Mutex::new(WorkerCore {
                    ring: Some(ring),
                    slots: Slots::with_limit(limit),
                    tables,
                    backlog: VecDeque::new(),
                    pending_cancels: Vec::new(),
                    closed: false,
                    flush_asked: false,
                }),
                flags,
                eventfd: Mutex::new(Some(eventfd)),
                on_close: Mutex::new(None),
                flush: FlushRequest {
                    requested: AtomicBool::new(false),
                    reaper: AtomicWaker::new(),
                },
            }),
            blocking: Arc::new(Fallback::new(runtime.clone(), home)),
            lacking,
        })
    }

    /// Submits `op` now (or into the backlog), enters, and reaps.
    /// `fixed_file`: its SQE names its file by a slot of this ring's table.
    fn submit(&self, op: OpRef, sqe: Sqe, fixed_file: bool) {
        let counters = &self.state.common.counters;
        self.file_and_turn(op, |core, op| {
            count_fixed_file(counters, fixed_file);
            let waiting = match core.backlog.is_empty() {
                true => core.push(op, &sqe).err(),
                false => Some(op),
            };
            if let Some(op) = waiting {
                core.backlog.push_back(Waiting::Op(op, sqe));
                Counters::add_shared(&counters.backlogged, 1);
            }
        });
    }

    /// Under the ring's lock, `file` puts `op` in the ring (or its backlog);
    /// the reaper task's next flush enters (module docs). A closed ring
    /// completes `op` with the shutdown error.
    #[inline]
    fn file_and_turn(&self, op: OpRef, file: impl FnOnce(&mut WorkerCore, OpRef)) {
        let state = &*self.state;
        let ask = {
            let mut core = state.lock();
            if core.closed {
                drop(core);
                op.complete(Cqe::not_run(shutdown_error()));
                return;
            }
            state.common.count_op();
            file(&mut core, op);
            !std::mem::replace(&mut core.flush_asked, true)
        };
        if ask {
            state.flush.raise();
        }
    }

    /// Reaps what is ready (and sends what waited for room): the reaper
    /// task's turn.
    fn reap_now(&self) {
        let mut done = scratch();
        {
            let mut core = self.state.lock();
            if core.closed {
                return;
            }
            core.turn(&self.state.common, &mut done);
        }
        complete_all(done);
    }

    /// Closes the ring: fails what never went in, cancels what is in the
    /// kernel and waits for it, resolving every op. Idempotent; from any
    /// thread.
    pub(crate) fn close(&self) {
        let state = &*self.state;
        state.common.shutdown.raise();
        let mut done = scratch();
        {
            let mut core = state.lock();
            if !core.closed {
                core.closed = true;
                core.drain(&mut done);
                // Closes the ring's fd; the tables and memory go with it.
                core.ring = None;
            }
        }
        complete_all(done);
        let then = state
            .on_close
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(then) = then {
            then();
        }
    }
}

impl WorkerState {
    fn lock(&self) -> MutexGuard<'_, WorkerCore> {
        // Critical sections only touch the ring and its tables and complete
        // no op (completions run after the lock): poisoning cannot leave
        // them half-done.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Reactor for Worker {
    const NAME: &'static str = "io_uring-worker";

    fn common(&self) -> &Common {
        &self.state.common
    }

    fn start<K: Operation, A: Anchored>(
        &self,
        mut fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement) {
        let blocking = match K::ON_RING {
            OnRing::Sqe => false,
            OnRing::Blocking => true,
            OnRing::IfProbed((code, _)) => self.lacking & 1 << code != 0,
        };
        if blocking {
            return self.blocking.start(fresh, waker);
        }
        // A slot in the op's fd is in the table of the ring whose view of the
        // file made it: this ring's if the op still comes through that view
        // (placed on its ring's thread), another's if it moved here.
        let through_view = fresh.anchor().through_ring_view();
        let name_file = |kind: &mut K| {
            if !through_view {
                kind.name_file_by(None);
            }
            kind.names_fixed_file()
        };
        if K::BATCH {
            let (fixed_file, sqes) = fresh.with_kind(|kind| (name_file(kind), kind.batch_sqes()));
            let (half, op) = fresh.share(waker.clone());
            self.submit_batch(erase(op), sqes, fixed_file);
            return (half, Placement::Here);
        }
        let (fixed_file, sqe) = fresh.with_kind(|kind| (name_file(kind), kind.sqe()));
        // Shared with a placeholder: an op that completes inside its enter
        // (a page-cache read) never clones or wakes its task's waker.
        let (half, op) = fresh.share(Waker::noop().clone());
        self.submit(erase(op), sqe, fixed_file);
        half.register(waker);
        (half, Placement::Here)
    }

    fn cancel(&self, canceller: Canceller) {
        let state = &*self.state;
        let Some(tag) = canceller.header().tag() else {
            return;
        };
        let mut done = scratch();
        {
            let mut core = state.lock();
            if core.closed {
                return;
            }
            for user_data in core.slots.in_kernel(tag) {
                core.push_cancel(&state.common, user_data);
            }
            core.turn(&state.common, &mut done);
        }
        complete_all(done);
    }

    /// Spawns the reaper task: it wakes on the ring's eventfd (completions
    /// that came after their enter) and reaps, on whichever worker runs it,
    /// until the ring closes.
    fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        let fd = self
            .state
            .eventfd
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("a worker ring's reaper is spawned once"))?;
        // SAFETY: `EventFd` owns the fd, so it stays open and unchanged for
        // the life of the registration.
        let completions =
            unsafe { AsyncFd::register_with_interest(EventFd(fd), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        drop(self.blocking.spawn_driver()?);
        let worker = self.clone();
        // However the task ends (the ring closed, or the runtime dropped
        // under it), the ring is closed and every op in it resolved.
        let closer = CloseOnDrop(self.clone());
        Ok(tokio::spawn(async move {
            let _closer = closer;
            let shutdown = &worker.state.common.shutdown;
            loop {
                let woken = std::future::poll_fn(|cx| {
                    // The park order of park.rs: register, then check.
                    shutdown.register(cx.waker());
                    if shutdown.is_raised() {
                        return Poll::Ready(Woken::ShutDown);
                    }
                    if worker.state.flush.take(cx.waker()) {
                        return Poll::Ready(Woken::Flush);
                    }
                    match completions.poll_read_ready(cx) {
                        Poll::Ready(Ok(mut guard)) => {
                            guard.clear_ready();
                            Poll::Ready(Woken::Completions)
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::error!(error = %e, "polling a worker ring's eventfd failed");
                            Poll::Ready(Woken::ShutDown)
                        }
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                match woken {
                    Woken::ShutDown => break,
                    Woken::Flush => {
                        // Deferred until this worker's queue is empty: the
                        // SQEs of every task that runs meanwhile go in with
                        // one enter.
                        tokio::task::yield_now().await;
                        worker.reap_now();
                        continue;
                    }
                    Woken::Completions => {}
                }
                // Reset the eventfd's count; its next signal fires it anew.
                let mut count = [0u8; 8];
                // SAFETY: read(2) of 8 bytes into a local array, on our
                // non-blocking fd; an error (nothing to read) is harmless.
                let _read = unsafe {
                    libc::read(
                        completions.get_ref().as_raw_fd(),
                        count.as_mut_ptr().cast(),
                        8,
                    )
                };
                worker.reap_now();
            }
        }))
    }

    fn shut_down(&self) {
        self.close();
        self.blocking.shut_down();
    }

    fn on_close(&self, then: Box<dyn FnOnce() + Send>) -> bool {
        let state = &*self.state;
        let closed = state.lock().closed;
        if closed {
            then();
        } else {
            *state
                .on_close
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(then);
        }
        true
    }

    fn ring_flags(&self) -> RingFlags {
        self.state.flags
    }

    /// Registers `fd` in the ring's file table, under the ring's lock; see
    /// the module docs. `None` where the ring has no table, or has closed.
    fn register_file_shared(&self, fd: RawFd) -> io::Result<Option<u32>> {
        let mut guard = self.state.lock();
        let core = &mut *guard;
        match (core.closed, core.ring.as_mut()) {
            (false, Some(ring)) if core.tables.has_files() => {
                core.tables.register_file(ring, fd).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Takes a file out of the ring's table, under the ring's lock, then
    /// drops what the release kept; once the ring is shutting down, its
    /// table goes with it at its close.
    fn release(&self, release: Release) {
        // A ring shutting down takes its table with it at its close, whose
        // drain may hold the lock for a while: not waited for.
        if self.state.common.shutdown.is_raised() {
            drop(release);
            return;
        }
        let mut guard = self.state.lock();
        let core = &mut *guard;
        if let (false, Some(ring)) = (core.closed, core.ring.as_mut()) {
            core.tables.release(ring, release);
            return;
        }
        // What it kept (an fd, if any) is dropped after the lock.
        drop(guard);
        drop(release);
    }
}

/// Counts an op whose SQE names its file by a slot of the ring's table.
/// Under the ring's lock, which orders every writer of the counter: a plain
/// load and store suffice.
#[inline]
fn count_fixed_file(counters: &Counters, fixed_file: bool) {
    if fixed_file {
        Counters::add_single_writer(&counters.fixed_file_ops, 1);
    }
}

impl Worker {
    /// Submits a batch: one slot, as many members as fit now, the rest when
    /// room frees. `fixed_file`: as for [`submit`](Worker::submit).
    fn submit_batch(&self, op: OpRef, sqes: Vec<(u16, Sqe)>, fixed_file: bool) {
        if sqes.is_empty() {
            op.complete(Cqe::from_raw(0, 0));
            return;
        }
        let counters = &self.state.common.counters;
        self.file_and_turn(op, |core, op| {
            count_fixed_file(counters, fixed_file);
            let span = sqes
                .iter()
                .map(|(m, _)| usize::from(*m) + 1)
                .max()
                .unwrap_or(0);
            let batch = core.slots.insert_batch(op, sqes.len(), span, 0);
            core.backlog.push_back(Waiting::Members {
                batch,
                sqes: sqes.into(),
            });
        });
    }
}

/// What woke the reaper task.
enum Woken {
    ShutDown,
    /// A submission asked for its SQE to go in.
    Flush,
    /// The ring's eventfd: completions came after their enter.
    Completions,
}

/// Closes a worker ring when dropped: the reaper task's guard.
struct CloseOnDrop(Worker);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// Our own fd for the ring's eventfd, registered with Tokio's reactor.
struct EventFd(OwnedFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
