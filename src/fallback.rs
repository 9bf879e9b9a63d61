//! The thread-pool backend, for machines where io_uring is unavailable
//! (`ENOSYS`, `EPERM` from seccomp or `kernel.io_uring_disabled`, or a kernel
//! missing an opcode the crate needs).
//!
//! The context keeps its home thread and Tokio runtime, so `enter`, `spawn`,
//! `block_on`, `current()` and metrics behave as on the ring. Each op instead
//! runs as one blocking syscall on the home runtime's blocking pool (bounded
//! by [`Builder::fallback_threads`](crate::Builder::fallback_threads)):
//!
//! ```text
//!   op future ──start──► pending table ──spawn_blocking──► pool thread
//!       ▲                    │ (claim)                       syscall on a bounce buffer
//!       └──── wake ◄── land + complete ◄───────────────────── returns
//! ```
//!
//! # Ownership and cancellation
//!
//! An op prepares its syscall up front ([`OpKind::blocking`]): the call owns
//! copies of everything it touches (a bounce buffer shaped like the caller's
//! buffer, so `O_DIRECT` alignment errors match the ring's), and the pool
//! thread holds a clone of the op's anchor, which keeps the fd open. The op's own buffer is never touched by a pool thread, and
//! the result is copied into it when the call returns. A blocking syscall
//! cannot be cancelled, so a dropped future's call runs to the end, then its
//! output is released (an opened fd is closed).
//!
//! # Shutdown
//!
//! Every pending op is in the pending table. Whoever removes it from the table
//! completes it: the pool thread when its syscall returns, or shutdown, which
//! resolves every op still there with the shutdown error at once. A syscall
//! that never returns (a read of a pipe nobody writes) therefore cannot hang
//! shutdown: its future resolves with the shutdown error and gets its buffer
//! back, while the blocked thread keeps its own bounce buffer and fd alive
//! until the syscall returns, then drops them. The home runtime is shut down
//! without waiting for such threads.
//!
//! [`OpKind::blocking`]: crate::ops::OpKind

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::context::{Shared, shutdown_error};
use crate::metrics::Counters;
use crate::lifecycle::{BackendRef, OpCell};
use crate::op::{Anchor, BlockingCall, Cqe, Handoff, OpKind, OpRef, erase};

/// The fallback backend's state, shared by every thread.
pub(crate) struct Pool {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Set by shutdown; no op starts afterwards.
    closed: bool,
    next_id: u64,
    ops: HashMap<u64, OpRef>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new() -> Pool {
        Pool {
            pending: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Nothing panics while holding this lock; ignore poisoning.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `op` on the blocking pool as `call`, prepared from it. If the
    /// context has shut down, the op completes with the shutdown error.
    pub(crate) fn start<K: OpKind>(
        &self,
        shared: &Arc<Shared>,
        op: BackendRef<OpCell<K>>,
        mut call: K::Blocking,
        anchor: Anchor,
    ) -> Handoff {
        let id = {
            let mut pending = self.lock();
            if pending.closed {
                drop(pending);
                op.complete(Cqe::error(shutdown_error()));
                return Handoff::Here;
            }
            let id = pending.next_id;
            pending.next_id += 1;
            pending.ops.insert(id, erase(op));
            id
        };
        let counters = &shared.counters;
        if shared.runtime_is_home() {
            Counters::add(&counters.ops_local, 1);
        } else {
            Counters::add(&counters.ops_foreign, 1);
        }
        Counters::add(&counters.sqes_submitted, 1);
        let pushed_at = std::time::Instant::now();
        let shared = shared.clone();
        // If the runtime is already shutting down the closure is dropped
        // unrun; shutdown closed the table first and resolved this op.
        drop(shared.runtime.spawn_blocking({
            let shared = shared.clone();
            move || {
                // Keeps the op's fd open for the syscall, whoever resolves
                // the future.
                let _anchor = anchor;
                shared.counters.dwell.record(pushed_at.elapsed());
                let mut cqe = call.run();
                let claimed = match &shared.engine {
                    crate::context::Engine::Fallback(pool) => pool.lock().ops.remove(&id),
                    _ => unreachable!("fallback op on another backend"),
                };
                Counters::add(&shared.counters.cqes_reaped, 1);
                // Not claimed: shutdown resolved the future already; `call`
                // drops here, releasing what the syscall produced.
                let Some(op) = claimed else { return };
                let cell = op
                    .cell()
                    .as_any()
                    .downcast_ref::<OpCell<K>>()
                    .expect("a fallback op's cell has the op's type");
                // SAFETY: `op` is the backend reference, not yet completed.
                unsafe { cell.with_kind(|kind| kind.land(call, &mut cqe)) };
                op.complete(cqe);
            }
        }));
        Handoff::Queued
    }

    /// Closes the table and resolves every pending op with the shutdown
    /// error. Pool threads still in a syscall find their op gone and release
    /// their own resources when it returns.
    pub(crate) fn shut_down(&self) {
        let ops: Vec<_> = {
            let mut pending = self.lock();
            pending.closed = true;
            pending.ops.drain().map(|(_, op)| op).collect()
        };
        if !ops.is_empty() {
            tracing::debug!(
                pending = ops.len(),
                "fallback shutdown resolves pending ops"
            );
        }
        for op in ops {
            op.complete(Cqe::error(shutdown_error()));
        }
    }
}
