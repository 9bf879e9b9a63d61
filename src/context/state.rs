//! [`ContextState`]: what every thread shares of a context, and what op
//! futures and files hold instead of a [`Context`](crate::Context), so that
//! they never keep a context alive. It owns the backend (and through it the
//! ring), the home runtime's handle and the home thread's identity. Imports
//! the backends and the leaves; nothing of the surface.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::backend::AnyBackend;
use crate::home_thread::{HomeOnly, HomeThread};

/// What every thread shares of a context.
pub(crate) struct ContextState {
    /// What runs this context's ops.
    pub(crate) backend: AnyBackend,
    runtime: tokio::runtime::Handle,
    home: HomeThread,
    /// Whether foreign pushes wake the driver (off only for diagnostics).
    pub(crate) kick_foreign: bool,
    /// Becomes `true` when the home thread has drained and closed the ring.
    pub(crate) finished: watch::Receiver<bool>,
    /// The home thread's set of `!Send` tasks, where the crate drives one.
    pub(crate) local: Option<HomeOnly<Rc<LocalSet>>>,
    /// Set by the first [`warn_once`](ContextState::warn_once).
    warned: AtomicBool,
}

// The compile-time promise the surface makes: ops and files that hold this
// are `Send + Sync`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ContextState>();
};

impl ContextState {
    pub(crate) fn new(
        backend: AnyBackend,
        runtime: tokio::runtime::Handle,
        home: HomeThread,
        kick_foreign: bool,
        finished: watch::Receiver<bool>,
    ) -> ContextState {
        ContextState {
            backend,
            runtime,
            home,
            kick_foreign,
            finished,
            local: None,
            warned: AtomicBool::new(false),
        }
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub(crate) fn home(&self) -> HomeThread {
        self.home
    }

    /// Whether the home thread has drained and closed the ring.
    pub(crate) fn has_drained(&self) -> bool {
        *self.finished.borrow()
    }

    /// Logs `message` at `warn`, once per context: for fallbacks a user
    /// should hear about but not on every op.
    pub(crate) fn warn_once(&self, message: &str) {
        // Relaxed: only one log line is at stake.
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{message}");
        }
    }
}
