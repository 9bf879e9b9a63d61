//! Which thread is a context's home, and state that only that thread may
//! touch. A leaf: imports nothing from the crate.
//!
//! A context records its home once, in a [`HomeThread`] made on that thread;
//! every part of the crate that asks "is this the home thread?" asks it. The
//! check compares a per-thread token (one thread-local read), so it is cheap
//! enough for every op's submission, and it is per context: one thread can be
//! home to several contexts.
//!
//! [`HomeOnly`] keeps a value (the ring's driver state) where every thread can
//! see the cell, but hands the value out only on its home thread. That is how
//! ops created on the home thread reach the submission queue without a lock,
//! and why no other thread can ever reach `io_uring_enter` (invariant 3).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, ThreadId};

/// Tokens handed out so far; never reused, so a dead thread's token never
/// matches a new thread.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's token, 0 until first asked for.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

fn current_token() -> u64 {
    TOKEN.with(|token| match token.get() {
        0 => {
            // Relaxed: the counter only has to hand out distinct values.
            let fresh = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            token.set(fresh);
            fresh
        }
        known => known,
    })
}

/// A context's home thread, recorded on that thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HomeThread {
    id: ThreadId,
    token: u64,
}

impl HomeThread {
    /// The calling thread, as the home of a context being set up.
    pub(crate) fn current() -> HomeThread {
        HomeThread {
            id: thread::current().id(),
            token: current_token(),
        }
    }

    /// Whether the calling thread is this home thread.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        current_token() == self.token
    }

    pub(crate) fn id(&self) -> ThreadId {
        self.id
    }
}

/// A value only its home thread may use, in a cell any thread may hold.
///
/// [`with`](HomeOnly::with) lends the value on the home thread and refuses
/// everywhere else (and on re-entry, while it is lent). The value is dropped
/// on the home thread by [`take`](HomeOnly::take); a `HomeOnly` dropped
/// elsewhere with its value still in leaks the value instead, because code
/// written for one thread (a ring that must not be entered elsewhere) may not
/// run its destructor on another.
pub(crate) struct HomeOnly<T> {
    home: HomeThread,
    value: RefCell<Option<T>>,
}

// SAFETY: the value is reached only through `with` and `take`, which check
// that the caller is the home thread; the `RefCell` is therefore only ever
// borrowed by that one thread. `Drop` touches the value only on the home
// thread too, and leaks it elsewhere.
unsafe impl<T> Sync for HomeOnly<T> {}
// SAFETY: as above: moving the cell to another thread moves no access to the
// value with it.
unsafe impl<T> Send for HomeOnly<T> {}

impl<T> HomeOnly<T> {
    /// Keeps `value` for `home`. Called on the home thread.
    pub(crate) fn new(home: HomeThread, value: T) -> HomeOnly<T> {
        debug_assert!(home.is_current(), "HomeOnly made off its home thread");
        HomeOnly {
            home,
            value: RefCell::new(Some(value)),
        }
    }

    /// Runs `f` on the value if the caller is the home thread, the value is
    /// still there, and it is not lent already (a call from inside `f`).
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if !self.home.is_current() {
            return None;
        }
        let mut value = self.value.try_borrow_mut().ok()?;
        value.as_mut().map(f)
    }

    /// As [`with`](HomeOnly::with), handing `arg` to `f`; gives `arg` back
    /// when `f` cannot run here.
    #[inline]
    pub(crate) fn try_with<A, R>(&self, arg: A, f: impl FnOnce(&mut T, A) -> R) -> Result<R, A> {
        if !self.home.is_current() {
            return Err(arg);
        }
        match self.value.try_borrow_mut() {
            Ok(mut value) => match value.as_mut() {
                Some(value) => Ok(f(value, arg)),
                None => Err(arg),
            },
            Err(_) => Err(arg),
        }
    }

    /// Whether the value has been taken out (on the home thread; `false`
    /// elsewhere, and while it is lent).
    pub(crate) fn is_taken(&self) -> bool {
        self.home.is_current() && self.value.try_borrow().is_ok_and(|value| value.is_none())
    }

    /// Takes the value out, on the home thread (`None` elsewhere or once
    /// taken).
    pub(crate) fn take(&self) -> Option<T> {
        if !self.home.is_current() {
            return None;
        }
        self.value.try_borrow_mut().ok()?.take()
    }
}

impl<T> Drop for HomeOnly<T> {
    fn drop(&mut self) {
        if !self.home.is_current() && self.value.get_mut().is_some() {
            std::mem::forget(self.value.get_mut().take());
        }
    }
}

impl<T> std::fmt::Debug for HomeOnly<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeOnly")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{HomeOnly, HomeThread};

    #[test]
    fn only_the_home_thread_reaches_the_value() {
        let home = HomeThread::current();
        let cell = std::sync::Arc::new(HomeOnly::new(home, 7));
        assert_eq!(cell.with(|v| *v), Some(7));
        let elsewhere = std::thread::spawn({
            let cell = cell.clone();
            move || {
                (
                    cell.with(|v| *v),
                    cell.take(),
                    HomeThread::current() == home,
                )
            }
        })
        .join()
        .unwrap();
        assert_eq!(elsewhere, (None, None, false));
        // Re-entry is refused, not a panic.
        assert_eq!(cell.with(|_| cell.with(|v| *v)), Some(None));
        assert_eq!(cell.take(), Some(7));
        assert_eq!(cell.with(|v| *v), None);
    }

    #[test]
    fn one_thread_can_be_home_to_several_values() {
        let home = HomeThread::current();
        let (a, b) = (HomeOnly::new(home, 'a'), HomeOnly::new(home, 'b'));
        assert_eq!((a.with(|v| *v), b.with(|v| *v)), (Some('a'), Some('b')));
    }
}
