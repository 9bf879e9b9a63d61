//! io_uring AioContexts for Tokio: any thread can queue I/O into a reactor's
//! ring, and the reactor picks it up at once, never at its next timer tick.
//!
//! Work in progress; see the README.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

#[cfg(not(loom))]
mod context;
#[cfg(not(loom))]
mod driver;
#[cfg(not(loom))]
mod enter;
mod inbox;
#[cfg(not(loom))]
mod metrics;
#[cfg(not(loom))]
mod op;
#[cfg(not(loom))]
pub mod ops;
#[cfg(not(loom))]
mod ring;
mod sync;

#[cfg(not(loom))]
pub use context::{BindGuard, Builder, Context, current, is_shutdown};
#[cfg(not(loom))]
pub use enter::{JoinError, JoinHandle};
#[cfg(not(loom))]
pub use metrics::{Dwell, Metrics, RingFlags};
