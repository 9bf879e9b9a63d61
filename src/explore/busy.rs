//! The bound on a busy run: a run whose runtime never idles (a scenario, or
//! a task it spawned, looping on `yield_now`) keeps Tokio's paused clock
//! from advancing, so the time limit, a timer on that clock, never fires.
//! [`Bounded`] wraps the scenario's future and fails the run when, at one
//! instant of virtual time, the scenario has been polled more than the poll
//! limit or more than the real-time limit has passed. Neither needs the
//! runtime to idle. Owned by `explore`; imports nothing of the crate.
//!
//! ```text
//!   block_on ──poll──► Bounded ──poll──► timeout(time limit, scenario)
//!                        │  counts polls and real time while the virtual clock stands still
//!                        └─ its waker ──► Watchdog thread: wakes it at the real-time deadline
//! ```
//!
//! The poll count catches a busy scenario future: every turn of its loop
//! polls the wrapper. A task the scenario spawned can spin while the
//! scenario's future waits and is never polled; the watchdog, a thread of
//! its own sleeping on the real clock, wakes the wrapper at the real-time
//! deadline so that it checks. A task that spins without ever yielding
//! holds the runtime's only thread, and nothing short of the process ending
//! stops it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a busy run was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Busy {
    /// Polled more than the poll limit at one virtual instant.
    Polls { polls: u64, at: Duration },
    /// More than the real-time limit at one virtual instant.
    RealTime { real: Duration, at: Duration },
}

/// How much a run may do while the virtual clock stands still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) polls: u64,
    pub(super) real_time: Duration,
}

/// A scenario's future, failed with [`Busy`] when it exceeds its
/// [`Limits`] at one instant of virtual time.
pub(super) struct Bounded<'w, F> {
    inner: Pin<Box<F>>,
    limits: Limits,
    watchdog: &'w Watchdog,
    /// The run's start, in virtual time, for the report.
    start: tokio::time::Instant,
    /// The virtual instant the counts are for.
    instant: tokio::time::Instant,
    /// Polls at `instant`.
    polls: u64,
    /// When, in real time, `instant` was first seen.
    since: Instant,
    /// The waker the watchdog holds.
    armed: Option<Waker>,
}

impl<'w, F: Future> Bounded<'w, F> {
    pub(super) fn new(inner: F, limits: Limits, watchdog: &'w Watchdog) -> Bounded<'w, F> {
        let now = tokio::time::Instant::now();
        Bounded {
            inner: Box::pin(inner),
            limits,
            watchdog,
            start: now,
            instant: now,
            polls: 0,
            since: Instant::now(),
            armed: None,
        }
    }

    /// Counts this poll; the reason to stop, if the run is over a limit.
    fn check(&mut self, waker: &Waker) -> Option<Busy> {
        let now = tokio::time::Instant::now();
        if now != self.instant {
            // The clock moved: the run is not stuck.
            self.instant = now;
            self.polls = 0;
            self.since = Instant::now();
            self.armed = None;
        }
        self.polls += 1;
        let at = self.instant - self.start;
        if self.polls > self.limits.polls {
            return Some(Busy::Polls {
                polls: self.polls - 1,
                at,
            });
        }
        let real = self.since.elapsed();
        if real >= self.limits.real_time {
            return Some(Busy::RealTime { real, at });
        }
        if self
            .armed
            .as_ref()
            .is_none_or(|armed| !armed.will_wake(waker))
        {
            self.watchdog
                .arm(self.since + self.limits.real_time, waker.clone());
            self.armed = Some(waker.clone());
        }
        None
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Busy>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Bounded` is `Unpin`: the scenario is boxed.
        let this = self.get_mut();
        if let Some(busy) = this.check(cx.waker()) {
            return Poll::Ready(Err(busy));
        }
        this.inner.as_mut().poll(cx).map(Ok)
    }
}

impl<F> Drop for Bounded<'_, F> {
    fn drop(&mut self) {
        // However the run ended (a panic included), its waker is not woken.
        self.watchdog.disarm();
    }
}

/// A thread that wakes the run's [`Bounded`] at its real-time deadline, so
/// that it checks its limits though nothing else polls it. One per
/// exploration, serving its runs in turn; ends when dropped.
pub(super) struct Watchdog {
    shared: Arc<(Mutex<Watch>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// What the watchdog thread is asked to do.
struct Watch {
    /// When to wake `waker`, if it is set.
    deadline: Instant,
    waker: Option<Waker>,
    /// The exploration is over: the thread ends.
    done: bool,
}

impl Watchdog {
    /// Starts the thread. If it cannot be started, runs are bounded by
    /// their poll limit and by the real-time limit checked when polled.
    pub(super) fn start() -> Watchdog {
        let shared = Arc::new((
            Mutex::new(Watch {
                deadline: Instant::now(),
                waker: None,
                done: false,
            }),
            Condvar::new(),
        ));
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("aioctx-explore-watchdog".to_owned())
            .spawn(move || watch(&watched))
            .ok();
        Watchdog { shared, thread }
    }

    fn lock(&self) -> MutexGuard<'_, Watch> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes `waker` at `deadline` (unless armed again or disarmed first).
    fn arm(&self, deadline: Instant, waker: Waker) {
        let mut watch = self.lock();
        let idle = watch.waker.is_none();
        watch.deadline = deadline;
        watch.waker = Some(waker);
        drop(watch);
        // Only a thread waiting for a waker needs telling: deadlines only
        // move later while armed (each is the real instant the virtual clock
        // last moved, plus a fixed limit), and a thread sleeping until an
        // earlier one wakes, finds it not yet due, and sleeps on.
        if idle {
            self.shared.1.notify_one();
        }
    }

    /// Wakes nothing until armed again: the run is over.
    fn disarm(&self) {
        self.lock().waker = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.lock().done = true;
        self.shared.1.notify_one();
        if let Some(thread) = self.thread.take() {
            // It only waits and wakes: it cannot have panicked.
            let _ = thread.join();
        }
    }
}

/// The watchdog thread: sleeps until the deadline, wakes the waker, and
/// waits to be armed again.
fn watch(shared: &(Mutex<Watch>, Condvar)) {
    let (lock, armed) = shared;
    let mut watch = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if watch.done {
            return;
        }
        let now = Instant::now();
        let Some(waker) = &watch.waker else {
            watch = armed.wait(watch).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        if now >= watch.deadline {
            // Once: the wrapper fails the run, or (the clock moved meanwhile)
            // arms again.
            waker.wake_by_ref();
            watch.waker = None;
            continue;
        }
        let timeout = watch.deadline - now;
        watch = armed
            .wait_timeout(watch, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
