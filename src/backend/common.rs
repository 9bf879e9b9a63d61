//! What every backend keeps, whatever it runs ops on: its counters, its
//! shutdown signal, its home thread, and the rule that contains user code.
//! Imports the leaves only; each backend imports it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use futures::task::AtomicWaker;

use crate::home_thread::HomeThread;
use crate::metrics::{Counters, Metrics, RingFlags};

/// The part of a backend's state every backend has.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) counters: Counters,
    pub(crate) shutdown: Signal,
    pub(crate) home: HomeThread,
}

impl Common {
    pub(crate) fn new(home: HomeThread) -> Common {
        Common {
            counters: Counters::default(),
            shutdown: Signal::default(),
            home,
        }
    }

    /// Counts an op as submitted from the home thread or from another.
    pub(crate) fn count_op(&self) {
        if self.home.is_current() {
            Counters::add_shared(&self.counters.ops_local, 1);
        } else {
            Counters::add_shared(&self.counters.ops_foreign, 1);
        }
    }

    pub(crate) fn metrics(&self, backend: &'static str, ring_flags: RingFlags) -> Metrics {
        self.counters.snapshot(backend, ring_flags)
    }
}

/// A one-way flag that wakes the task waiting for it: how a backend's driver
/// learns that its context is shutting down. Separate from the inbox, so a
/// shutdown is never mistaken for (or counted as) a kick.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waiter: AtomicWaker,
}

impl Signal {
    /// Raises the flag and wakes the waiter; later calls do nothing.
    pub(crate) fn raise(&self) {
        // Release: pairs with the Acquire in `is_raised`, so a driver that
        // sees the flag sees everything done before the shutdown request.
        if !self.raised.swap(true, Ordering::AcqRel) {
            self.waiter.wake();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        // Acquire: pairs with the Release in `raise`.
        self.raised.load(Ordering::Acquire)
    }

    /// Registers the task to wake at `raise`. The caller checks
    /// [`is_raised`](Signal::is_raised) after this, so a raise between the
    /// caller's last check and this registration is not missed.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waiter.register(waker);
    }

    /// Resolves once the flag is raised.
    pub(crate) async fn raised(&self) {
        std::future::poll_fn(|cx| {
            self.register(cx.waker());
            if self.is_raised() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// Where a backend left an op it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Handled on the calling thread: refused, or queued by the home
    /// thread's own driver (which may have completed it already).
    Here,
    /// Queued for another thread, which will wake the op's future.
    Queued,
}
