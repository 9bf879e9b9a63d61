//! The inbox: how threads other than the home thread hand work to the driver,
//! the wake protocol that makes a lost kick impossible, and the kick itself.
//! A protocol module: it imports only `sync`.
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
//!   push:    lock, append, unlock         begin_turn: swap(0)            — awake
//!            prev = fetch_or(NOTIFIED)    drain:      lock, take all, unlock
//!            prev == PARKED  → kick:      (…submit, reap, complete…)
//!              wake the parked waker      park:       register the waker, then
//!            otherwise       → coalesced              prev = fetch_or(PARKED)
//!                                           prev has NOTIFIED → turn again
//!                                           otherwise         → sleep
//! ```
//!
//! # What is guaranteed
//!
//! * **No lost kick.** Take a push whose `fetch_or(NOTIFIED)` is ordered
//!   - *before* the driver's `begin_turn` swap: that swap acquires the push's
//!     release, so the drain after it sees the item;
//!   - *between* `begin_turn` and `park`: `park` sees
//!     `NOTIFIED` and the driver turns again instead of sleeping;
//!   - *after* `park`: the pusher sees `PARKED`, or `PARKED|NOTIFIED`
//!     when an earlier pusher in the same sleep already saw `PARKED` and
//!     kicked. Either the push itself kicks, or a kick for this sleep is
//!     already on its way, and the turn that kick causes begins with a swap
//!     ordered after this push, so its drain sees the item.
//! * **Coalescing.** Exactly one pusher per sleep sees `prev == PARKED`: the
//!   first `fetch_or(NOTIFIED)` after `park`. Pushes while the driver
//!   is awake see `PARKED` clear and send nothing. So there is at most one kick
//!   per driver sleep, and none while the driver will drain again anyway.
//! * **Close.** [`Inbox::close`] sets a flag under the queue lock, so a push
//!   either lands before the close (and is returned by it) or fails; nothing
//!   is left behind in a queue nobody drains.
//!
//! # The kick
//!
//! The kick is the driver's task waker, which [`Inbox::park`] stores before it
//! announces the park, and which the kicking [`Inbox::push`] wakes. Storing it
//! first is what makes the `PARKED` bit a promise that there is someone to wake.
//! A wake must be a *permit*: a kick delivered before the driver actually
//! returns `Pending` makes the driver's task run again at once. Tokio's task
//! wakers behave so, and so does loom's `block_on`.
//!
//! Shutdown does not travel through the inbox: it has a signal of its own (see
//! `backend::common`), so a shutdown is never counted as a kick.
//!
//! # What the loom model leaves out
//!
//! The model (`cargo test --lib` under `--cfg aioctx_loom`) runs this file's
//! real `push`, `begin_turn`, `drain_into` and `park` with loom's atomics and
//! mutex, the driver as a future in loom's `block_on` whose waker is the one
//! `park` registers. It does not model Tokio's scheduler or the io_uring ring;
//! the integration tests cover those.

use std::task::Waker;

use crate::sync::{AtomicU8, Mutex, MutexGuard, Ordering};

/// Set by the driver in [`Inbox::park`]; cleared by [`Inbox::begin_turn`].
const PARKED: u8 = 0b01;
/// Set by every [`Inbox::push`]; cleared by [`Inbox::begin_turn`].
const NOTIFIED: u8 = 0b10;

/// A multi-producer, single-consumer queue with a coalescing wake protocol.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    queue: Mutex<Queue<T>>,
    /// `PARKED | NOTIFIED` bits; see the module docs.
    state: AtomicU8,
    /// The driver's waker, stored by [`park`](Inbox::park) and woken by the
    /// push that finds `PARKED`.
    driver: Mutex<Option<Waker>>,
    /// `false` only under the diagnostic switch that reproduces the missing
    /// wake: a push that should kick counts as suppressed instead.
    kicks: bool,
}

#[derive(Debug)]
struct Queue<T> {
    items: Vec<T>,
    /// Set once by [`Inbox::close`]; afterwards every push fails.
    closed: bool,
}

/// What a push did about the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The driver was parked and nobody had woken it: this push woke it.
    Sent,
    /// The driver is awake, or another pusher has already woken it.
    Coalesced,
    /// The driver was parked, but kicks are switched off (diagnostics only):
    /// the item waits until the driver turns for another reason.
    Suppressed,
}

/// The inbox was closed: the driver is shutting down. Carries the item back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub(crate) T);

impl<T> Inbox<T> {
    /// An open, empty inbox; `kicks: false` reproduces the missing wake.
    pub(crate) fn new(kicks: bool) -> Self {
        Inbox {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
            }),
            state: AtomicU8::new(0),
            driver: Mutex::new(None),
            kicks,
        }
    }

    /// Appends `item` and wakes the driver if it is parked and nobody else
    /// has woken it yet.
    pub(crate) fn push(&self, item: T) -> Result<Kick, Closed<T>> {
        {
            let mut queue = lock(&self.queue);
            if queue.closed {
                return Err(Closed(item));
            }
            queue.items.push(item);
        }
        // Release: pairs with the Acquire of `begin_turn`'s swap and of
        // `park`'s fetch_or, so a driver that observes this bit also observes
        // the append above. Acquire: pairs with `park`'s Release, so a pusher
        // that reads PARKED also sees the waker stored before it.
        let prev = self.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        if prev != PARKED {
            return Ok(Kick::Coalesced);
        }
        if !self.kicks {
            return Ok(Kick::Suppressed);
        }
        self.kick();
        Ok(Kick::Sent)
    }

    /// Wakes the parked driver. Wakes outside the lock: the waker may run
    /// arbitrary code.
    fn kick(&self) {
        let waker = lock(&self.driver).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Driver: marks the start of a turn. Pushes from now on cost no kick until
    /// the next [`park`](Self::park).
    pub(crate) fn begin_turn(&self) {
        // Acquire: pairs with the Release of `push`'s fetch_or, so the drain
        // that follows sees every item whose NOTIFIED this swap clears.
        self.state.swap(0, Ordering::AcqRel);
    }

    /// Driver: moves every queued item into `out` (which should be empty, so
    /// its allocation is swapped in and reused).
    pub(crate) fn drain_into(&self, out: &mut Vec<T>) {
        let mut queue = lock(&self.queue);
        if out.is_empty() {
            std::mem::swap(&mut queue.items, out);
        } else {
            out.append(&mut queue.items);
        }
    }

    /// Driver: stores `waker` as the one a kick wakes, then announces that the
    /// driver is about to sleep. Returns `false` when something was pushed
    /// since [`begin_turn`](Self::begin_turn): the driver must turn again
    /// instead of sleeping.
    pub(crate) fn park(&self, waker: &Waker) -> bool {
        {
            let mut driver = lock(&self.driver);
            if !driver
                .as_ref()
                .is_some_and(|stored| stored.will_wake(waker))
            {
                *driver = Some(waker.clone());
            }
        }
        // Release: publishes the waker stored above to the pusher whose
        // fetch_or reads PARKED. Acquire: pairs with `push`'s Release as in
        // `begin_turn`.
        let prev = self.state.fetch_or(PARKED, Ordering::AcqRel);
        prev & NOTIFIED == 0
    }

    /// Closes the inbox and returns everything still queued. Every later push
    /// fails with [`Closed`].
    pub(crate) fn close(&self) -> Vec<T> {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.queue).closed
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding either lock cannot leave it half-written (each
    // critical section is a single push, take or store), so poisoning is
    // ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(all(test, aioctx_loom))]
mod loom_model {
    //! Model checks of the wake protocol. The driver thread runs the real
    //! `begin_turn` / `drain_into` / `park` sequence as a future in loom's
    //! `block_on`, so `park` stores the very waker that a kicking `push`
    //! wakes. A lost kick shows up as loom's deadlock report (the driver
    //! parked forever).

    use super::{Inbox, Kick};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;
    use std::task::Poll;

    /// Runs a driver that parks until it has drained `expected` items.
    /// Returns the number of times it went to sleep.
    fn driver(inbox: &Inbox<usize>, expected: usize) -> usize {
        let mut seen = Vec::new();
        let mut batch = Vec::new();
        let mut sleeps = 0;
        loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                inbox.begin_turn();
                inbox.drain_into(&mut batch);
                seen.append(&mut batch);
                if seen.len() == expected {
                    return Poll::Ready(sleeps);
                }
                if inbox.park(cx.waker()) {
                    sleeps += 1;
                    return Poll::Pending;
                }
            }
        }))
    }

    fn pusher(inbox: &Inbox<usize>, kicks: &AtomicUsize, item: usize) {
        if inbox.push(item).expect("inbox open") == Kick::Sent {
            kicks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a driver expecting `pushers + 1` items against `pushers` threads
    /// and the main thread pushing one each; checks coalescing.
    fn race(pushers: usize, preloaded: bool) {
        let inbox = Arc::new(Inbox::new(true));
        let kicks = Arc::new(AtomicUsize::new(0));
        if preloaded {
            inbox.push(0).unwrap();
        }
        let expected = pushers + 1 + usize::from(preloaded);
        let driver_thread = {
            let inbox = inbox.clone();
            thread::spawn(move || driver(&inbox, expected))
        };
        let others: Vec<_> = (0..pushers)
            .map(|i| {
                let (inbox, kicks) = (inbox.clone(), kicks.clone());
                thread::spawn(move || pusher(&inbox, &kicks, 10 + i))
            })
            .collect();
        pusher(&inbox, &kicks, 1);
        for other in others {
            other.join().unwrap();
        }
        let sleeps = driver_thread.join().unwrap();
        // Coalescing: never more kicks than sleeps.
        assert!(kicks.load(Ordering::Relaxed) <= sleeps);
    }

    #[test]
    fn push_vs_park_race() {
        loom::model(|| race(0, false));
    }

    #[test]
    fn many_pushers_one_park() {
        loom::model(|| race(1, false));
    }

    #[test]
    fn push_during_drain() {
        loom::model(|| race(0, true));
    }

    #[test]
    fn wake_coalescing_while_awake() {
        loom::model(|| {
            let inbox = Inbox::new(true);
            let waker = futures_noop_waker();
            // The driver is awake (between begin_turn and park): no push may
            // kick, and the park must be refused.
            inbox.begin_turn();
            assert_eq!(inbox.push(1).unwrap(), Kick::Coalesced);
            assert_eq!(inbox.push(2).unwrap(), Kick::Coalesced);
            assert!(!inbox.park(&waker));
            // After a clean turn the driver may park; the first push kicks,
            // the second coalesces into that kick.
            inbox.begin_turn();
            let mut out = Vec::new();
            inbox.drain_into(&mut out);
            assert_eq!(out, vec![1, 2]);
            assert!(inbox.park(&waker));
            assert_eq!(inbox.push(3).unwrap(), Kick::Sent);
            assert_eq!(inbox.push(4).unwrap(), Kick::Coalesced);
        });
    }

    #[test]
    fn close_races_push() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new(true));
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

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}

#[cfg(all(test, not(aioctx_loom)))]
mod tests {
    use super::{Inbox, Kick};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn first_push_after_park_wakes_the_parked_waker_once() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let inbox = Inbox::new(true);
        inbox.begin_turn();
        assert!(inbox.park(&waker));
        assert_eq!(inbox.push(1).unwrap(), Kick::Sent);
        assert_eq!(inbox.push(2).unwrap(), Kick::Coalesced);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        inbox.begin_turn();
        assert!(inbox.park(&waker));
        assert_eq!(inbox.push(3).unwrap(), Kick::Sent);
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn suppressed_kicks_wake_nobody() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let inbox = Inbox::new(false);
        assert!(inbox.park(&Waker::from(counter.clone())));
        assert_eq!(inbox.push(1).unwrap(), Kick::Suppressed);
        assert_eq!(inbox.push(2).unwrap(), Kick::Coalesced);
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn push_after_close_fails_and_returns_item() {
        let inbox = Inbox::new(true);
        inbox.push(1).unwrap();
        assert_eq!(inbox.close(), vec![1]);
        assert_eq!(inbox.push(2).unwrap_err().0, 2);
        assert!(inbox.is_closed());
    }
}
