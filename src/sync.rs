//! The one switch between `std` and `loom` synchronisation primitives.
//!
//! Code that the loom model exercises (the inbox and its wake protocol) imports
//! its atomics and locks from here, so `RUSTFLAGS="--cfg aioctx_loom"` swaps every one
//! of them for loom's model-checked versions without touching that code.

#[cfg(aioctx_loom)]
pub(crate) use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};

#[cfg(not(aioctx_loom))]
pub(crate) use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicU8, Ordering},
};
