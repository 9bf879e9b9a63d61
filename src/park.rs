//! The driver's park: the order in which a backend's driver task registers
//! with its wake sources before it sleeps, and why no wake is lost. A
//! protocol module: it imports `sync` and the inbox only.
//!
//! A driver sleeps on up to three sources, each with a waker it stores and a
//! condition it can check:
//!
//! ```text
//!   source        stores the waker         condition                  set by
//!   ──────        ────────────────         ─────────                  ──────
//!   shutdown      Signal::register         Signal::is_raised          any thread (Signal::raise)
//!   inbox         Inbox::park (PARKED)     NOTIFIED seen by park      any pushing thread
//!   completions   Readiness::take          the eventfd fired          the kernel, through Tokio's reactor
//! ```
//!
//! [`park`] goes through them in that order, and for each *stores the waker
//! first, then checks the condition*; any condition found set means "turn
//! again", and only when all three are clear does the driver sleep. Each
//! source's setter does the opposite: it makes the condition true first,
//! then wakes the stored waker. So for each source, either the setter's
//! condition is visible to the check (the driver turns again), or the
//! setter's wake comes after the store and finds the waker (the sleep is
//! woken). The three sources are independent: each has its own store and
//! check, so no source's wake can be taken by another's. The inbox's half
//! is the protocol written out in `inbox.rs`; the shutdown signal's is
//! [`Signal`]; completions are Tokio's `AsyncFd` readiness, whose
//! `poll_read_ready` registers the task before it reports "not ready".
//!
//! The completion signal is also taken at the start of each turn, *before*
//! the turn reaps: a completion posted after that take fires the eventfd
//! anew, so a completion reaped by the turn may cost one spurious turn, and
//! one posted after the reap is never missed.
//!
//! # What the loom model covers
//!
//! `loom_model` below runs a driver future that turns and calls the real
//! [`park`] against threads that raise the shutdown, push into the inbox, and
//! fire a modelled readiness (a flag and a stored waker, as `AsyncFd`
//! behaves), and checks that the driver sees every one of them without a lost
//! wake (loom reports a parked driver nobody wakes as a deadlock). It does
//! not model Tokio's reactor or the ring; the integration tests cover them.

use std::task::Waker;

use crate::inbox::Inbox;
use crate::sync::{AtomicBool, Mutex, Ordering};

/// A source that fires without a queue: the ring's eventfd.
pub(crate) trait Readiness {
    /// Clears the source and returns `true` if it fired; otherwise stores
    /// `waker` to be woken when it fires, and returns `false`.
    fn take(&mut self, waker: &Waker) -> bool;
}

/// What the driver does after [`park`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Park {
    /// Every source is registered and clear: return `Pending`.
    Sleep,
    /// A source has something: turn again instead of sleeping.
    TurnAgain,
}

/// Registers `waker` with each source and checks it, in the order of the
/// module docs. `completions` is `None` for a driver without a ring.
pub(crate) fn park<T>(
    waker: &Waker,
    shutdown: &Signal,
    inbox: Option<&Inbox<T>>,
    completions: Option<&mut dyn Readiness>,
) -> Park {
    shutdown.register(waker);
    if shutdown.is_raised() {
        return Park::TurnAgain;
    }
    if let Some(inbox) = inbox
        && !inbox.park(waker)
    {
        return Park::TurnAgain;
    }
    if let Some(completions) = completions
        && completions.take(waker)
    {
        return Park::TurnAgain;
    }
    Park::Sleep
}

/// A one-way flag that wakes the task waiting for it: how a backend's driver
/// learns that its context is shutting down. Separate from the inbox, so a
/// shutdown is never mistaken for (or counted as) a kick.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waiter: Mutex<Option<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes the waiter; later calls do nothing.
    pub(crate) fn raise(&self) {
        // Release: pairs with the Acquire in `is_raised`, so a driver that
        // sees the flag sees everything done before the shutdown request.
        // The flag is set before the waiter is taken under the lock, and
        // `register` stores under that lock before its caller checks the
        // flag: either this lock sees the stored waker, or the check sees
        // the flag (see the module docs).
        if !self.raised.swap(true, Ordering::AcqRel) {
            let waiter = lock(&self.waiter).take();
            if let Some(waker) = waiter {
                waker.wake();
            }
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        // Acquire: pairs with the Release in `raise`.
        self.raised.load(Ordering::Acquire)
    }

    /// Stores the task to wake at `raise`. The caller checks
    /// [`is_raised`](Signal::is_raised) after this, so a raise between the
    /// caller's last check and this registration is not missed.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut waiter = lock(&self.waiter);
        if !waiter.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *waiter = Some(waker.clone());
        }
    }

    /// Resolves once the flag is raised.
    #[cfg(not(aioctx_loom))]
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

fn lock<T>(mutex: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    // The critical sections are a single store or take: poisoning cannot
    // leave the slot half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(all(test, aioctx_loom))]
mod loom_model {
    //! The park order against each wake source and against all of them.

    use super::{Park, Readiness, Signal, park};
    use crate::inbox::Inbox;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::task::{Poll, Waker};

    /// A completion and its readiness, as the kernel and Tokio's `AsyncFd`
    /// behave: the CQE is posted, then the flag set, then the stored waker
    /// woken; `take` stores the waker, then takes the flag. The driver's
    /// turn reaps the CQE whatever the flag said.
    #[derive(Default)]
    struct Fired {
        cqe: AtomicBool,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Fired {
        fn fire(&self) {
            self.cqe.store(true, Ordering::Release);
            self.ready.store(true, Ordering::Release);
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
    }

    impl Readiness for &Fired {
        fn take(&mut self, waker: &Waker) -> bool {
            *self.waker.lock().unwrap() = Some(waker.clone());
            self.ready.swap(false, Ordering::AcqRel)
        }
    }

    /// What the driver must see before it ends.
    struct Expect {
        shutdown: bool,
        item: bool,
        completion: bool,
    }

    /// A driver that turns (taking the completion signal first, then
    /// reaping, draining the inbox, checking the shutdown flag) and parks,
    /// until it has seen what `expect` asks for; on shutdown it closes the
    /// inbox, taking what is left, and ends, as the ring's driver does.
    /// Returns whether it saw an item.
    fn driver(signal: &Signal, inbox: &Inbox<u8>, fired: &Fired, expect: &Expect) -> bool {
        let (mut item, mut completion) = (false, false);
        let mut batch = Vec::new();
        loom::future::block_on(std::future::poll_fn(|cx| {
            loop {
                let mut readiness = fired;
                readiness.take(cx.waker());
                completion |= fired.cqe.load(Ordering::Acquire);
                if signal.is_raised() {
                    item |= !inbox.close().is_empty();
                    return Poll::Ready(());
                }
                inbox.begin_turn();
                inbox.drain_into(&mut batch);
                item |= !batch.is_empty();
                batch.clear();
                if !expect.shutdown && (item || !expect.item) && (completion || !expect.completion)
                {
                    return Poll::Ready(());
                }
                let mut readiness = fired;
                if park(cx.waker(), signal, Some(inbox), Some(&mut readiness)) == Park::Sleep {
                    return Poll::Pending;
                }
            }
        }));
        item
    }

    fn run(expect: Expect) {
        let signal = Arc::new(Signal::default());
        let inbox = Arc::new(Inbox::new(true));
        let fired = Arc::new(Fired::default());
        let raiser = expect.shutdown.then(|| {
            let signal = signal.clone();
            thread::spawn(move || signal.raise())
        });
        let pusher = expect.item.then(|| {
            let inbox = inbox.clone();
            thread::spawn(move || inbox.push(1).is_ok())
        });
        let firer = expect.completion.then(|| {
            let fired = fired.clone();
            thread::spawn(move || fired.fire())
        });
        let seen = driver(&signal, &inbox, &fired, &expect);
        if let Some(raiser) = raiser {
            raiser.join().unwrap();
        }
        if let Some(firer) = firer {
            firer.join().unwrap();
        }
        // An item the inbox accepted is seen, by a turn or by the close.
        let accepted = pusher.is_some_and(|pusher| pusher.join().unwrap());
        assert_eq!(seen, accepted, "an accepted push was left behind");
    }

    #[test]
    fn shutdown_raised_while_parking_wakes_the_driver() {
        loom::model(|| {
            run(Expect {
                shutdown: true,
                item: false,
                completion: false,
            })
        });
    }

    #[test]
    fn completion_fired_while_parking_wakes_the_driver() {
        loom::model(|| {
            run(Expect {
                shutdown: false,
                item: false,
                completion: true,
            })
        });
    }

    #[test]
    fn push_and_completion_while_parking_both_reach_the_driver() {
        loom::model(|| {
            run(Expect {
                shutdown: false,
                item: true,
                completion: true,
            })
        });
    }

    #[test]
    fn shutdown_and_push_while_parking_both_reach_the_driver() {
        loom::model(|| {
            run(Expect {
                shutdown: true,
                item: true,
                completion: false,
            })
        });
    }
}
