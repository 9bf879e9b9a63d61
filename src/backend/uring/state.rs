//! What every thread shares of a ring backend: the inbox that carries foreign
//! ops to the home thread, the counters, the shutdown signal, and the home
//! thread's core in a cell only that thread can open. No logic: the
//! submission side is in `mod.rs`, the driver in `task.rs` and `turn.rs`.

use crate::backend::common::Common;
use crate::home_thread::HomeOnly;
use crate::inbox::Inbox;
use crate::metrics::RingFlags;

use super::core::Core;
use super::submit::Request;

pub(super) struct UringState {
    pub(super) common: Common,
    pub(super) inbox: Inbox<Request>,
    pub(super) core: HomeOnly<Core>,
    /// The setup flags the kernel accepted.
    pub(super) flags: RingFlags,
    /// Whether the ring has a file table (for registered files).
    pub(super) file_table: bool,
    /// Test-only faults for the driver to apply to completions.
    #[cfg(feature = "fault-injection")]
    pub(super) faults: std::sync::Arc<crate::fault::FaultQueue>,
}
