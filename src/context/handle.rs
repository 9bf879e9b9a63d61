//! The [`Context`] handle and its [`Owner`]: what users hold, and what shuts
//! the context down when the last handle goes. The handle's methods are in
//! `context/mod.rs`; this file owns the type and its lifetime rules, so that
//! `home/` (which makes contexts) and `bind.rs` (which keeps them per
//! thread) can name it without importing the methods.

use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use crate::context::state::ContextState;
use crate::pool::membership::Membership;

/// A handle to an io_uring AioContext: one ring, driven by one home thread.
///
/// Any thread may submit ops through a `Context`: the home thread's tasks put
/// them straight into the submission queue; every other thread (a Tokio task
/// on another runtime, a blocking thread, an emulator's vCPU thread) queues
/// them in the context's inbox, and the driver is woken at once if it sleeps.
/// Wakes coalesce: at most one per driver sleep, none while it is awake.
///
/// `Context` is `Clone + Send + Sync`; clones share one ring.
///
/// # Shutdown
///
/// Dropping the last `Context` shuts the context down and joins its home
/// thread. From async code prefer [`shutdown`](Context::shutdown), which does
/// not block: dropping the last handle inside a Tokio runtime before the
/// context has shut down blocks that runtime's thread until the drain ends,
/// and logs a warning saying so (after `shutdown().await` the drop neither
/// blocks nor warns). Ops still in flight are cancelled; their futures resolve
/// with an error ([`is_shutdown`](crate::is_shutdown) or `ECANCELED`). Ops
/// started afterwards fail at once. Op futures and files do not keep a
/// context alive.
#[derive(Clone)]
pub struct Context {
    pub(crate) owner: Arc<Owner>,
}

/// Owns the home thread (if the crate spawned it); dropped with the last
/// [`Context`], which shuts the context down.
pub(crate) struct Owner {
    pub(crate) state: Arc<ContextState>,
    /// The home thread to join, once the builder has handed it over.
    pub(crate) home_thread: Mutex<Option<thread::JoinHandle<()>>>,
    /// The pool this context belongs to, if any: set once by the pool.
    pub(crate) pool: OnceLock<Arc<Membership>>,
}

// A panic in user code never leaves a context half-updated for other
// threads: the driver contains user panics, every lock's critical section is
// a single push, take or store (so poisoning is ignored), and home-only state
// is only ever borrowed on the home thread. As Tokio's `Handle`, a `Context`
// may be used across `catch_unwind`.
impl std::panic::UnwindSafe for Context {}
impl std::panic::RefUnwindSafe for Context {}

// The compile-time promise the docs make.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
};

impl Owner {
    /// The owner of `state`; its home thread, if the crate spawns one, is
    /// handed over with [`set_home_thread`](Owner::set_home_thread).
    pub(crate) fn new(state: Arc<ContextState>) -> Arc<Owner> {
        Arc::new(Owner {
            state,
            home_thread: Mutex::new(None),
            pool: OnceLock::new(),
        })
    }

    pub(crate) fn set_home_thread(&self, thread: thread::JoinHandle<()>) {
        *self
            .home_thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(thread);
    }
}

impl Context {
    pub(crate) fn state(&self) -> &Arc<ContextState> {
        &self.owner.state
    }

    /// The pool this context is a member of.
    pub(crate) fn membership(&self) -> Option<&Arc<Membership>> {
        self.owner.pool.get()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let drained = self.state.has_drained();
        self.state.backend.shut_down();
        self.join_home_thread(drained, || {
            tracing::warn!(
                "the last aioctx::Context was dropped inside a Tokio runtime before it had shut \
                 down: the drop blocks this thread until the home thread has drained; \
                 `ctx.shutdown().await` first avoids that"
            );
        });
    }
}

impl Owner {
    /// Joins the home thread, if the crate spawned one and the caller is not
    /// it (the home thread cannot join itself; it exits on its own). When
    /// the context had not `drained` yet and the caller runs inside a Tokio
    /// runtime, the join blocks that runtime's thread for the drain: `warn`
    /// runs first. After a drain the join only waits for the thread to exit.
    pub(crate) fn join_home_thread(&self, drained: bool, warn: impl FnOnce()) {
        let home = self
            .home_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(home) = home else { return };
        if home.thread().id() == thread::current().id() {
            return;
        }
        if !drained && tokio::runtime::Handle::try_current().is_ok() {
            warn();
        }
        if home.join().is_err() {
            tracing::error!("aioctx home thread panicked");
        }
    }
}
