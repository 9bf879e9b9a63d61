//! The one switch between `std` and `loom` synchronisation primitives.
//!
//! Code that the loom models exercise (the inbox's wake protocol and an op's
//! lifecycle) imports its atomics, locks and cells from here, so
//! `RUSTFLAGS="--cfg aioctx_loom"` swaps every one of them for loom's
//! model-checked versions without touching that code.

#[cfg(aioctx_loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
};

#[cfg(not(aioctx_loom))]
pub(crate) use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
};

/// `std`'s `UnsafeCell` behind loom's closure-based API, so the code reads
/// the same under both.
#[cfg(not(aioctx_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(aioctx_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to the value; the caller's protocol must make
    /// the access exclusive.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
