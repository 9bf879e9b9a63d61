//! What every backend keeps, whatever it runs ops on: its counters, its
//! shutdown signal (the park protocol's [`Signal`]), its home thread, its
//! context's tracing span, where it left an op, and the registered resources
//! it releases. Imports the leaves and the park protocol; each backend
//! imports it.

use std::any::Any;
use std::os::fd::OwnedFd;

use crate::home_thread::HomeThread;
use crate::metrics::{Counters, Metrics, RingFlags};
pub(crate) use crate::park::Signal;

/// The part of a backend's state every backend has.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) counters: Counters,
    pub(crate) shutdown: Signal,
    pub(crate) home: HomeThread,
    /// The context's span, for work the backend does off the home thread's
    /// own stack of spans (the fallback's pool threads, a simulator driven by
    /// the caller's runtime). The span current when the backend is set up:
    /// `home/start.rs` enters the context's span around the setup.
    pub(crate) span: tracing::Span,
}

impl Common {
    /// What a backend set up now on `home` keeps; see [`Common::span`].
    pub(crate) fn new(home: HomeThread) -> Common {
        Common {
            counters: Counters::default(),
            shutdown: Signal::default(),
            home,
            span: tracing::Span::current(),
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

/// Where a backend left an op it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Handled on the calling thread: refused, or queued by the home
    /// thread's own driver (which may have completed it already).
    Here,
    /// Queued for another thread, which will wake the op's future.
    Queued,
}

/// Registered resources to take out of a backend's table, and what they kept
/// alive, dropped once they are out (see [`Reactor::release`](super::Reactor::release)).
pub(crate) enum Release {
    /// A registered file: its slot, then its fd, closed once the slot is
    /// free (`None` when the caller closes it itself after `done`).
    File {
        slot: u32,
        _fd: Option<OwnedFd>,
        /// Told, by being dropped after the fd, once the slot is free.
        _done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// A registered buffer pool: its run of slots, then its memory, freed
    /// once the slots are clear.
    Buffers {
        first: u16,
        count: usize,
        _memory: Box<dyn Any + Send>,
    },
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Release::File { slot, .. } => f
                .debug_struct("File")
                .field("slot", slot)
                .finish_non_exhaustive(),
            Release::Buffers { first, count, .. } => f
                .debug_struct("Buffers")
                .field("first", first)
                .field("count", count)
                .finish_non_exhaustive(),
        }
    }
}
