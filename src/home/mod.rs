//! [`Builder`]: what a context is built from, and where it is started.
//! `settings.rs` holds the builder's settings, their defaults and the
//! [`Setup`](crate::backend::Setup) they make; `start.rs` starts a context's
//! home (a thread of its own, the caller's thread, the caller's runtime) and
//! runs it from setup to the drained shutdown, the surface's only file that
//! starts threads and runtimes. The struct is here, so both see its fields.

use std::time::Duration;

use crate::backend::Backend;

mod settings;
mod start;

pub use start::LocalContext;

/// Configures and starts a [`Context`](crate::Context).
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    thread_name: String,
    single_issuer: bool,
    defer_taskrun: bool,
    kick_foreign: bool,
    backend: Backend,
    fallback_threads: usize,
    cpu: Option<usize>,
    sqpoll_idle: Option<std::time::Duration>,
    buffer_slots: u32,
    file_slots: u32,
    dwell_warning: Option<Duration>,
    /// The index of the pool member this builds, for its span.
    member: Option<usize>,
    #[cfg(feature = "test-util")]
    start_paused: bool,
}
