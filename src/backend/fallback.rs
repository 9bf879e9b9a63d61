//! The thread-pool backend, for machines where io_uring is unavailable
//! (`ENOSYS`, `EPERM` from seccomp or `kernel.io_uring_disabled`, or a kernel
//! missing an opcode the crate needs).
//!
//! The context keeps its home thread and Tokio runtime, so `enter`, `spawn`,
//! `block_on`, `current()` and metrics behave as on the ring. Each op instead
//! runs as one blocking syscall on the home runtime's blocking pool (bounded
//! by [`Builder::fallback_threads`](crate::Builder::fallback_threads)), or,
//! if all it does is wait (a timeout), as a Tokio timer:
//!
//! ```text
//!   op future ──start──► pending table ──spawn_blocking──► pool thread
//!       ▲                    │ (claim)                       syscall on a bounce buffer
//!       └──── wake ◄── land + complete ◄───────────────────── returns
//! ```
//!
//! # Ownership and cancellation
//!
//! An op prepares its syscall up front: the call owns copies of everything it
//! touches (a bounce buffer shaped like the caller's buffer, so `O_DIRECT`
//! alignment errors match the ring's), and the pool thread holds a clone of
//! the op's anchor, which keeps the fd open. The op's own buffer is never
//! touched by a pool thread; the result is copied into it when the call
//! returns. Whoever removes an op from the pending table completes it: the
//! pool thread or the timer when done, a cancel when the future is dropped
//! before its call started, or shutdown. A pool thread that finds its op gone
//! before it starts skips the syscall; one that finds it gone after (taken by
//! shutdown) drops what the call produced (an opened fd is closed). A dropped
//! timeout's timer is aborted. A call already running is left to finish, as a
//! blocking syscall cannot be interrupted, and its op keeps its buffers until
//! then.
//!
//! # Shutdown
//!
//! Shutdown resolves every op still in the table with the shutdown error at
//! once. A syscall that never returns (a read of a pipe nobody writes)
//! therefore cannot hang shutdown: its future resolves and gets its buffer
//! back, while the blocked thread keeps its own bounce buffer and fd alive
//! until the syscall returns. The home runtime is shut down without waiting
//! for such threads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::backend::common::{Common, Placement};
use crate::backend::{Anchored, Reactor};
use crate::error::{Cqe, cancelled, shutdown_error};
use crate::home_thread::HomeThread;
use crate::lifecycle::{BackendRef, Canceller, Fresh, FutureHalf, OpCell};
use crate::metrics::Counters;
use crate::ops::blocking::BlockingCall;
use crate::ops::{Fallback as Run, OpRef, Operation, erase};
use crate::trace;

/// A fallback backend: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Fallback {
    shared: Arc<FallbackState>,
}

struct FallbackState {
    common: Common,
    /// The home runtime, whose blocking pool runs the calls and whose timers
    /// run the waits.
    runtime: tokio::runtime::Handle,
    pending: Mutex<Pending>,
    /// Test-only faults applied to the calls' results as they return.
    #[cfg(feature = "fault-injection")]
    faults: crate::fault::FaultQueue,
}

#[derive(Default)]
struct Pending {
    /// Set by shutdown; no op starts afterwards.
    closed: bool,
    next_id: u64,
    ops: HashMap<u64, Entry>,
}

struct Entry {
    op: OpRef,
    stage: Stage,
}

/// Where a pending op is.
enum Stage {
    /// Its call waits for a pool thread (or its timer is being set up).
    Queued,
    /// A pool thread runs its call: a cancel leaves it to finish, as the
    /// kernel does a blocking syscall.
    Running,
    /// Its timer runs; a cancel aborts it.
    Timer(tokio::task::AbortHandle),
}

impl Fallback {
    pub(crate) fn new(runtime: tokio::runtime::Handle, home: HomeThread) -> Fallback {
        Fallback {
            shared: Arc::new(FallbackState {
                common: Common::new(home),
                runtime,
                pending: Mutex::new(Pending::default()),
                #[cfg(feature = "fault-injection")]
                faults: crate::fault::FaultQueue::default(),
            }),
        }
    }

    /// Starts `op` as the fallback runs it. `anchor` (the op's context or
    /// file) goes with a blocking call, keeping its fd open until the
    /// syscall returns, whoever resolves the future.
    fn submit<K, A>(&self, op: BackendRef<OpCell<K, A>>, anchor: &A) -> Placement
    where
        K: Operation,
        A: Clone + crate::lifecycle::CellAnchor,
    {
        // SAFETY: `op` is the backend reference, not yet completed.
        let run = unsafe { op.cell().with_kind(|kind| kind.fallback()) }
            .expect("an op in flight keeps its op");
        self.shared.common.count_op();
        match run {
            Run::Wait(duration) => match self.shared.register(erase(op)) {
                Some(id) => {
                    self.shared.start_timer(id, duration);
                    Placement::Queued
                }
                None => Placement::Here,
            },
            Run::Call(call) => {
                let Some(id) = self.shared.register(erase(op)) else {
                    return Placement::Here;
                };
                Counters::add_shared(&self.shared.common.counters.sqes_submitted, 1);
                let shared = self.shared.clone();
                let anchor = anchor.clone();
                let started = Instant::now();
                // If the runtime is shutting down the closure is dropped
                // unrun; shutdown has closed the table and resolved the op.
                drop(
                    self.shared
                        .runtime
                        .spawn_blocking(move || shared.run::<K, A>(id, call, anchor, started)),
                );
                Placement::Queued
            }
        }
    }
}

impl Reactor for Fallback {
    const NAME: &'static str = "fallback";

    fn common(&self) -> &Common {
        &self.shared.common
    }

    #[cfg(feature = "fault-injection")]
    fn faults(&self) -> Option<&crate::fault::FaultQueue> {
        Some(&self.shared.faults)
    }

    fn start<K: Operation, A: Anchored>(
        &self,
        fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement) {
        let anchor = fresh.anchor().clone();
        let (half, op) = fresh.share(waker.clone());
        (half, self.submit(op, &anchor))
    }

    /// Cancels a dropped op: a call not yet run is skipped, a timer
    /// aborted, a syscall in progress left to finish on its own (its op keeps
    /// its resources until then, as on the ring).
    fn cancel(&self, canceller: Canceller) {
        let Some(id) = canceller.header().tag() else {
            return;
        };
        let entry = {
            let mut pending = self.shared.lock();
            match pending.ops.get(&id) {
                Some(Entry {
                    stage: Stage::Running,
                    ..
                })
                | None => return,
                Some(_) => pending.ops.remove(&id).expect("just seen"),
            }
        };
        if let Stage::Timer(timer) = entry.stage {
            timer.abort();
        }
        Counters::add_shared(&self.shared.common.counters.cancels_sent, 1);
        entry.op.complete(Cqe::not_run(cancelled()));
    }

    /// Spawns the task that waits for shutdown on the home runtime, in the
    /// context's span. However the task ends (shutdown, or the runtime
    /// dropped under it), the pending table is closed and every op in it
    /// resolved.
    fn spawn_driver(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let guard = ShutDownOnDrop(self.shared.clone());
        let span = self.shared.common.span.clone();
        Ok(tokio::spawn(
            async move {
                guard.0.common.shutdown.raised().await;
                drop(guard);
            }
            .instrument(span),
        ))
    }
}

impl FallbackState {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding this lock; ignore poisoning.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `op` in the pending table and returns its id; once shut down,
    /// completes it with the shutdown error instead.
    fn register(&self, op: OpRef) -> Option<u64> {
        let mut pending = self.lock();
        if pending.closed {
            drop(pending);
            op.complete(Cqe::not_run(shutdown_error()));
            return None;
        }
        let id = pending.next_id;
        pending.next_id += 1;
        // The tag leads a later cancel to the entry.
        op.header().set_tag(id);
        pending.ops.insert(
            id,
            Entry {
                op,
                stage: Stage::Queued,
            },
        );
        Some(id)
    }

    /// Removes op `id` from the table, if nobody else has.
    fn claim(&self, id: u64) -> Option<OpRef> {
        self.lock().ops.remove(&id).map(|entry| entry.op)
    }

    fn start_timer(self: &Arc<Self>, id: u64, duration: Duration) {
        let shared = self.clone();
        let timer = self.runtime.spawn(async move {
            tokio::time::sleep(duration).await;
            if let Some(op) = shared.claim(id) {
                op.complete(Cqe::from_raw(-libc::ETIME, 0));
            }
        });
        match self.lock().ops.get_mut(&id) {
            Some(entry) => entry.stage = Stage::Timer(timer.abort_handle()),
            // Fired, cancelled or shut down meanwhile.
            None => timer.abort(),
        }
    }

    /// A pool thread's work: run op `id`'s call unless it was cancelled
    /// first, then land and complete it unless something else resolved it
    /// meanwhile.
    fn run<K, A>(&self, id: u64, mut call: K::Call, anchor: A, started: Instant)
    where
        K: Operation,
        A: crate::lifecycle::CellAnchor,
    {
        // Keeps the op's fd open for the syscall, whoever resolves the future;
        // released before the op completes (below), so a caller that has its
        // result finds the file held by nothing of the op's
        // (`File::close` then closes it at once).
        let anchor = anchor;
        let counters = &self.common.counters;
        match self.lock().ops.get_mut(&id) {
            Some(entry) => entry.stage = Stage::Running,
            // Cancelled or shut down before it ran: skip the syscall.
            None => return,
        }
        // Recorded once the call is running: a dwell counted means a cancel
        // can no longer take the call back.
        counters.dwell.record(started.elapsed());
        let mut cqe = call.run();
        Counters::add_shared(&counters.cqes_reaped, 1);
        // Not claimed: the future was resolved already; `call` drops here,
        // releasing what the syscall produced.
        let Some(op) = self.claim(id) else { return };
        drop(anchor);
        #[cfg(feature = "fault-injection")]
        self.faults.apply_to_cqe(op.cell().kind_name(), &mut cqe);
        if let Err(error) = &cqe.result {
            let _span = self.common.span.enter();
            let dropped = op.header().is_dropped();
            trace::op_failed(|| op.cell().kind_name(), error, dropped);
        }
        // SAFETY: entry `id` was filed by `submit::<K, A>` with this very
        // op, whose cell is an `OpCell<K, A>`.
        let op = unsafe { op.assume_type::<OpCell<K, A>>() };
        // SAFETY: `op` is the backend reference, not yet completed.
        unsafe { op.cell().with_kind(|kind| kind.land(call, &mut cqe)) };
        op.complete(cqe);
    }

    /// Closes the table and resolves every pending op with the shutdown
    /// error. Pool threads still in a syscall find their op gone and release
    /// their own resources when it returns.
    fn shut_down_now(&self) {
        self.common.shutdown.raise();
        let entries: Vec<Entry> = {
            let mut pending = self.lock();
            pending.closed = true;
            pending.ops.drain().map(|(_, entry)| entry).collect()
        };
        if !entries.is_empty() {
            tracing::debug!(
                pending = entries.len(),
                "fallback shutdown resolves pending ops"
            );
        }
        for entry in entries {
            if let Stage::Timer(timer) = entry.stage {
                timer.abort();
            }
            entry.op.complete(Cqe::not_run(shutdown_error()));
        }
    }
}

/// Shuts the backend down when the driver task ends, however it ends.
struct ShutDownOnDrop(Arc<FallbackState>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.shut_down_now();
    }
}
