//! The inbox: how threads other than the home thread hand work to the driver,
//! and the wake protocol that makes a lost kick impossible.
//!
//! # The protocol
//!
//! The inbox is a queue (a mutex around a `Vec`, swapped out whole by the
//! driver) plus one byte of wake state with two bits:
//!
//! ```text
//!   PARKED   (0b01)  the driver finished a turn, found nothing to do, and is
//!                    about to sleep (or is asleep) until somebody wakes it
//!   NOTIFIED (0b10)  something was pushed since the driver last began a turn
//! ```
//!
//! Every step is a single read-modify-write on that byte, so all steps of all
//! threads fall into one total order (the byte's modification order), and each
//! step sees the result of every step before it.
//!
//! ```text
//!   pusher                                driver
//!   ──────                                ──────
//!   push:    lock, append, unlock         begin_turn:   swap(0)         — awake
//!            prev = fetch_or(NOTIFIED)    drain:        lock, take all, unlock
//!            prev == PARKED  → kick       (…submit, reap, complete…)
//!            otherwise       → coalesced  prepare_park: prev = fetch_or(PARKED)
//!                                           prev has NOTIFIED → turn again
//!                                           otherwise         → sleep
//! ```
//!
//! # What is guaranteed
//!
//! * **No lost kick.** Take a push whose `fetch_or(NOTIFIED)` is ordered
//!   - *before* the driver's `begin_turn` swap: that swap acquires the push's
//!     release, so the drain after it sees the item;
//!   - *between* `begin_turn` and `prepare_park`: `prepare_park` sees
//!     `NOTIFIED` and the driver turns again instead of sleeping;
//!   - *after* `prepare_park`: the pusher sees `PARKED`, or `PARKED|NOTIFIED`
//!     when an earlier pusher in the same sleep already saw `PARKED` and
//!     kicked. Either the push itself kicks, or a kick for this sleep is
//!     already on its way, and the turn that kick causes begins with a swap
//!     ordered after this push, so its drain sees the item.
//! * **Coalescing.** Exactly one pusher per sleep sees `prev == PARKED`: the
//!   first `fetch_or(NOTIFIED)` after `prepare_park`. Pushes while the driver
//!   is awake see `PARKED` clear and send nothing. So there is at most one kick
//!   per driver sleep, and none while the driver will drain again anyway.
//! * **Close.** [`Inbox::close`] sets a flag under the queue lock, so a push
//!   either lands before the close (and is returned by it) or fails; nothing
//!   is left behind in a queue nobody drains.
//!
//! The kick itself is the caller's business (the driver task's waker, in this
//! crate). It must be a *permit*: a kick delivered before the driver actually
//! blocks must make that block return at once. Tokio's task wakers and
//! `thread::unpark` both behave so.
//!
//! # What the loom model leaves out
//!
//! The model (`cargo test --lib` under `--cfg aioctx_loom`) checks this file with
//! loom's atomics and mutex, and models the kick with `thread::park` /
//! `unpark`. It does not model Tokio's waker or scheduler, the io_uring ring,
//! or the `AtomicWaker` through which the real kick travels; those are covered
//! by the integration tests instead.

use crate::sync::{AtomicU8, Mutex, MutexGuard, Ordering};

/// Set by the driver in [`Inbox::prepare_park`]; cleared by [`Inbox::begin_turn`].
const PARKED: u8 = 0b01;
/// Set by every [`Inbox::push`]; cleared by [`Inbox::begin_turn`].
const NOTIFIED: u8 = 0b10;

/// A multi-producer, single-consumer queue with a coalescing wake protocol.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    queue: Mutex<Queue<T>>,
    /// `PARKED | NOTIFIED` bits; see the module docs.
    state: AtomicU8,
}

#[derive(Debug)]
struct Queue<T> {
    items: Vec<T>,
    /// Set once by [`Inbox::close`]; afterwards every push fails.
    closed: bool,
}

/// What a pusher must do after [`Inbox::push`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The driver is parked and nobody has woken it: the pusher must.
    Send,
    /// The driver is awake, or another pusher has already woken it.
    Coalesced,
}

/// The inbox was closed: the driver is shutting down. Carries the item back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub(crate) T);

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        Inbox {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
            }),
            state: AtomicU8::new(0),
        }
    }

    /// Appends `item` and tells the caller whether it must kick the driver.
    pub(crate) fn push(&self, item: T) -> Result<Kick, Closed<T>> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Closed(item));
            }
            queue.items.push(item);
        }
        // Release: pairs with the Acquire of `begin_turn`'s swap and of
        // `prepare_park`'s fetch_or, so a driver that observes this bit also
        // observes the append above.
        let prev = self.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        if prev == PARKED {
            Ok(Kick::Send)
        } else {
            Ok(Kick::Coalesced)
        }
    }

    /// Driver: marks the start of a turn. Pushes from now on cost no kick until
    /// the next [`prepare_park`](Self::prepare_park).
    pub(crate) fn begin_turn(&self) {
        // Acquire: pairs with the Release of `push`'s fetch_or, so the drain
        // that follows sees every item whose NOTIFIED this swap clears.
        self.state.swap(0, Ordering::AcqRel);
    }

    /// Driver: moves every queued item into `out` (which should be empty, so
    /// its allocation is swapped in and reused).
    pub(crate) fn drain_into(&self, out: &mut Vec<T>) {
        let mut queue = self.lock();
        if out.is_empty() {
            std::mem::swap(&mut queue.items, out);
        } else {
            out.append(&mut queue.items);
        }
    }

    /// Driver: announces that it is about to sleep. Returns `false` when
    /// something was pushed since [`begin_turn`](Self::begin_turn): the driver
    /// must turn again instead of sleeping.
    ///
    /// The caller must have registered its waker *before* this call, so that a
    /// pusher that sees `PARKED` finds it.
    pub(crate) fn prepare_park(&self) -> bool {
        // AcqRel: Release publishes the waker registration made before this
        // call to the pusher whose fetch_or reads PARKED; Acquire pairs with
        // `push`'s Release as in `begin_turn`.
        let prev = self.state.fetch_or(PARKED, Ordering::AcqRel);
        prev & NOTIFIED == 0
    }

    /// Closes the inbox and returns everything still queued. Every later push
    /// fails with [`Closed`].
    pub(crate) fn close(&self) -> Vec<T> {
        let mut queue = self.lock();
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // A panic while holding this lock cannot leave the queue half-written
        // (push and take are single operations), so poisoning is ignored.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(all(test, aioctx_loom))]
mod loom_model {
    //! Model checks of the wake protocol. The driver thread runs the real
    //! `begin_turn` / `drain_into` / `prepare_park` sequence and sleeps in
    //! `thread::park`; pushers `unpark` it when told to kick. A lost kick shows
    //! up as loom's deadlock report (the driver parked forever).

    use super::{Inbox, Kick};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// Runs a driver that parks until it has drained `expected` items.
    /// Returns the number of times it decided to sleep.
    fn driver(inbox: &Inbox<usize>, expected: usize) -> usize {
        let mut seen = Vec::new();
        let mut batch = Vec::new();
        let mut sleeps = 0;
        loop {
            inbox.begin_turn();
            inbox.drain_into(&mut batch);
            seen.append(&mut batch);
            if seen.len() == expected {
                return sleeps;
            }
            if inbox.prepare_park() {
                sleeps += 1;
                thread::park();
            }
        }
    }

    fn pusher(inbox: &Inbox<usize>, driver: &thread::Thread, kicks: &AtomicUsize, item: usize) {
        if inbox.push(item).expect("inbox open") == Kick::Send {
            kicks.fetch_add(1, Ordering::Relaxed);
            driver.unpark();
        }
    }

    #[test]
    fn push_vs_park_race() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let kicks = Arc::new(AtomicUsize::new(0));
            let driver_thread = {
                let inbox = inbox.clone();
                thread::spawn(move || driver(&inbox, 1))
            };
            pusher(&inbox, driver_thread.thread(), &kicks, 1);
            let sleeps = driver_thread.join().unwrap();
            assert!(kicks.load(Ordering::Relaxed) <= sleeps);
        });
    }

    #[test]
    fn many_pushers_one_park() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let kicks = Arc::new(AtomicUsize::new(0));
            let driver_thread = {
                let inbox = inbox.clone();
                thread::spawn(move || driver(&inbox, 2))
            };
            let handle = driver_thread.thread().clone();
            let others: Vec<_> = (0..1)
                .map(|_| {
                    let (inbox, kicks, handle) = (inbox.clone(), kicks.clone(), handle.clone());
                    thread::spawn(move || pusher(&inbox, &handle, &kicks, 0))
                })
                .collect();
            pusher(&inbox, &handle, &kicks, 1);
            for other in others {
                other.join().unwrap();
            }
            let sleeps = driver_thread.join().unwrap();
            // Coalescing: never more kicks than sleeps.
            assert!(kicks.load(Ordering::Relaxed) <= sleeps);
        });
    }

    #[test]
    fn push_during_drain() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let kicks = Arc::new(AtomicUsize::new(0));
            // The item is pushed first; a second one races with the drain.
            inbox.push(0).unwrap();
            let driver_thread = {
                let inbox = inbox.clone();
                thread::spawn(move || driver(&inbox, 2))
            };
            pusher(&inbox, driver_thread.thread(), &kicks, 1);
            let sleeps = driver_thread.join().unwrap();
            assert!(kicks.load(Ordering::Relaxed) <= sleeps);
        });
    }

    #[test]
    fn wake_coalescing_while_awake() {
        loom::model(|| {
            let inbox = Inbox::new();
            // The driver is awake (between begin_turn and prepare_park): no
            // push may ask for a kick, and the park must be refused.
            inbox.begin_turn();
            assert_eq!(inbox.push(1).unwrap(), Kick::Coalesced);
            assert_eq!(inbox.push(2).unwrap(), Kick::Coalesced);
            assert!(!inbox.prepare_park());
            // After a clean turn the driver may park; the first push kicks,
            // the second coalesces into that kick.
            inbox.begin_turn();
            let mut out = Vec::new();
            inbox.drain_into(&mut out);
            assert_eq!(out, vec![1, 2]);
            assert!(inbox.prepare_park());
            assert_eq!(inbox.push(3).unwrap(), Kick::Send);
            assert_eq!(inbox.push(4).unwrap(), Kick::Coalesced);
        });
    }

    #[test]
    fn close_races_push() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let pusher = {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.push(7).is_ok())
            };
            let left = inbox.close();
            let accepted = pusher.join().unwrap();
            // Nothing is stranded: an accepted push is handed back by close.
            assert_eq!(accepted, left == vec![7]);
        });
    }
}

#[cfg(all(test, not(aioctx_loom)))]
mod tests {
    use super::{Inbox, Kick};

    #[test]
    fn first_push_after_park_kicks_once() {
        let inbox = Inbox::new();
        inbox.begin_turn();
        assert!(inbox.prepare_park());
        assert_eq!(inbox.push(1).unwrap(), Kick::Send);
        assert_eq!(inbox.push(2).unwrap(), Kick::Coalesced);
        inbox.begin_turn();
        assert!(inbox.prepare_park());
        assert_eq!(inbox.push(3).unwrap(), Kick::Send);
    }

    #[test]
    fn push_after_close_fails_and_returns_item() {
        let inbox = Inbox::new();
        inbox.push(1).unwrap();
        assert_eq!(inbox.close(), vec![1]);
        assert_eq!(inbox.push(2).unwrap_err().0, 2);
        assert!(inbox.is_closed());
    }
}
