//! The driver: the home thread's turn loop, its slot table of ops in flight, the
//! backlog for a full SQ, and the shutdown drain.
//!
//! # A turn
//!
//! ```text
//!   1  begin_turn; drain the inbox        foreign ops and cancels → SQ / backlog
//!   2  backlog → SQ                       while the SQ and in-flight limit allow
//!   3  io_uring_enter (once)              submit everything queued, run task work
//!   4  reap CQEs                          free slots, wake futures
//!   5  park                               register wakers; prepare_park; sleep
//! ```
//!
//! The driver is a Tokio task on the home runtime. It sleeps on three wake
//! sources: the ring's eventfd (completions, through Tokio's reactor), the
//! inbox's kick (foreign pushes, see [`crate::inbox`]), and local pushes (ops
//! created on the home thread go straight into the SQ and schedule a turn with
//! a same-thread wake, which costs no syscall). Whatever was queued while other
//! tasks ran goes to the kernel in the next turn's single `io_uring_enter`.
//!
//! The driver's state, [`Core`], lives in a thread-local of the home thread:
//! ops submitted there reach it without a lock, and nothing on another thread
//! can reach the ring at all.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::context::{Shared, shutdown_error};
use crate::metrics::Counters;
use crate::lifecycle::Canceller;
use crate::op::{Cqe, OpRef, Request, Submission};
use crate::ring::{IGNORED_USER_DATA, Ring};

thread_local! {
    /// The driver state of the context whose home this thread is, if any.
    static HOME: RefCell<Option<Core>> = const { RefCell::new(None) };
}

/// How long shutdown waits for the kernel to finish cancelled ops before it
/// gives up and leaks their resources rather than free memory still in use.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Turns per driver poll before it yields to other tasks.
const TURNS_PER_POLL: usize = 8;

/// The driver's state: the ring, the ops in flight, and the backlog.
pub(crate) struct Core {
    shared: Arc<Shared>,
    ring: Ring,
    slots: Slots,
    /// Ops waiting for room in the SQ or under the in-flight limit. FIFO.
    backlog: VecDeque<Submission>,
    /// Dwell-time accounting for foreign pushes still in the SQ: the number
    /// of each one's SQE and when its op was pushed. Home-thread ops are not
    /// timed and leave no entry.
    dwell: VecDeque<(u64, Instant)>,
    /// SQEs pushed into the SQ so far, and how many of them the kernel has
    /// taken: an SQE numbered at most `sqes_taken` has left the SQ.
    sqes_pushed: u64,
    sqes_taken: u64,
    /// Reused buffer for draining the inbox.
    drained: Vec<Request>,
    /// The driver task's waker, for same-thread wakes from local pushes.
    waker: Option<Waker>,
    /// A turn is already scheduled; local pushes need not wake again.
    turn_scheduled: bool,
    /// `io_uring_enter` calls so far: an SQE pushed now goes in with number
    /// `enters + 1`.
    enters: u64,
    /// Whether local pushes enter at once or wait for the turn.
    policy: SubmitPolicy,
    /// Set once shutdown begins; later submissions fail.
    closing: bool,
}

/// What a turn leaves behind.
#[derive(Debug, PartialEq, Eq)]
enum TurnOutcome {
    /// Nothing left that this thread can do: the driver may park.
    Idle,
    /// The backlog still holds ops that fit now: turn again.
    MoreWork,
    /// The context is shut down and drained: the driver task ends.
    ShutDown,
}

impl Core {
    /// Installs the driver state on the calling thread, the ring's home.
    pub(crate) fn install(shared: Arc<Shared>, ring: Ring) {
        let cq_capacity = ring.cq_capacity();
        HOME.with(|home| {
            let mut home = home.borrow_mut();
            assert!(
                home.is_none(),
                "aioctx: a thread can be home to one context only"
            );
            *home = Some(Core {
                shared,
                ring,
                slots: Slots::with_limit(cq_capacity),
                backlog: VecDeque::new(),
                dwell: VecDeque::new(),
                sqes_pushed: 0,
                sqes_taken: 0,
                drained: Vec::new(),
                waker: None,
                turn_scheduled: false,
                enters: 0,
                policy: SubmitPolicy::default(),
                closing: false,
            });
        });
    }

    /// Removes the driver state from the calling thread, closing the ring.
    pub(crate) fn uninstall() {
        let core = HOME.with(|home| home.borrow_mut().take());
        drop(core);
    }

    /// Runs `accept` on the driver if the calling thread is `shared`'s home
    /// thread and the driver is not running; otherwise gives `value` back.
    fn try_local<T>(
        shared: &Arc<Shared>,
        value: T,
        accept: impl FnOnce(&mut Core, T),
    ) -> Result<(), T> {
        HOME.with(|home| {
            let Ok(mut home) = home.try_borrow_mut() else {
                // The driver itself is running (a completion's waker polled
                // inline): go through the inbox, drained before it parks.
                return Err(value);
            };
            match home.as_mut() {
                Some(core) if Arc::ptr_eq(&core.shared, shared) => {
                    accept(core, value);
                    Ok(())
                }
                _ => Err(value),
            }
        })
    }

    /// Queues a home-thread op straight into the SQ (or backlog).
    pub(crate) fn try_submit_local(
        shared: &Arc<Shared>,
        submission: Submission,
    ) -> Result<(), Submission> {
        Core::try_local(shared, submission, Core::submit_local)
    }

    /// Handles a home-thread cancel at once.
    pub(crate) fn try_cancel_local(
        shared: &Arc<Shared>,
        canceller: Canceller,
    ) -> Result<(), Canceller> {
        Core::try_local(shared, canceller, |core, canceller| {
            if !core.closing {
                core.cancel(canceller);
            }
        })
    }

    fn submit_local(&mut self, submission: Submission) {
        if self.closing {
            submission.op.complete(Cqe::error(shutdown_error()));
            return;
        }
        Counters::bump(&self.shared.counters.ops_local, 1);
        self.queue(submission);
        if self.policy.eager && self.ring.queued() > 0 {
            // Ops that go to a device: hand this one over now, as fio does,
            // instead of at the end of the batch.
            self.enter();
            self.reap();
            return;
        }
        if !self.turn_scheduled {
            self.turn_scheduled = true;
            if let Some(waker) = &self.waker {
                waker.wake_by_ref();
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Submit(submission) => self.queue(submission),
            Request::Cancel(canceller) => self.cancel(canceller),
        }
    }

    /// Puts an op into the SQ, or the backlog when it cannot go in now.
    fn queue(&mut self, submission: Submission) {
        let submission = if self.backlog.is_empty() {
            match self.try_push(submission) {
                Ok(()) => return,
                Err(submission) => submission,
            }
        } else {
            submission
        };
        Counters::bump(&self.shared.counters.backlogged, 1);
        self.backlog.push_back(submission);
    }

    /// Pushes into the SQ if there is room and the in-flight limit allows;
    /// gives the submission back otherwise. An op whose future is already
    /// gone is given up instead of submitted.
    fn try_push(&mut self, submission: Submission) -> Result<(), Submission> {
        if submission.op.header().is_dropped() {
            let cancelled = io::Error::from_raw_os_error(libc::ECANCELED);
            submission.op.complete(Cqe::error(cancelled));
            return Ok(());
        }
        if self.slots.is_full() || !self.ring.has_room() {
            return Err(submission);
        }
        let Submission { op, sqe, pushed_at } = submission;
        let user_data = self.slots.insert(op, self.enters + 1);
        let sqe = sqe.user_data(user_data);
        // SAFETY: the SQE was built by its op from resources inside the op's
        // cell, and the slot just inserted holds the backend reference that
        // keeps the cell alive until the CQE for `user_data` is reaped (see
        // `Slots` and tests/op_drop_in_flight.rs).
        let pushed = unsafe { self.ring.push(&sqe) };
        debug_assert!(pushed, "has_room was checked");
        self.sqes_pushed += 1;
        if let Some(pushed_at) = pushed_at {
            self.dwell.push_back((self.sqes_pushed, pushed_at));
        }
        Ok(())
    }

    /// Asks the kernel to cancel a dropped op, if it is in flight. An op not
    /// yet in the kernel is given up by `try_push` when its turn comes.
    fn cancel(&mut self, canceller: Canceller) {
        if let Some(user_data) = canceller.header().tag()
            && self.slots.contains(user_data)
        {
            self.push_cancel(user_data);
        }
    }

    fn push_cancel(&mut self, user_data: u64) {
        let entry = Ring::cancel_entry(user_data);
        // SAFETY: a cancel SQE points at no memory.
        let mut pushed = unsafe { self.ring.push(&entry) };
        if !pushed {
            // SQ full: submit what is there to make room. Cancels are rare.
            self.enter();
            // SAFETY: as above.
            pushed = unsafe { self.ring.push(&entry) };
        }
        if pushed {
            self.sqes_pushed += 1;
            Counters::bump(&self.shared.counters.cancels_sent, 1);
        }
    }

    /// Moves backlog entries into the SQ while they fit.
    fn flush_backlog(&mut self) {
        while let Some(submission) = self.backlog.pop_front() {
            if let Err(submission) = self.try_push(submission) {
                self.backlog.push_front(submission);
                break;
            }
        }
    }

    /// The one `io_uring_enter` of a turn (more only when the backlog refills
    /// the SQ after it drained).
    fn enter(&mut self) {
        // Dwell ends when the SQE is handed to the kernel, so the clock is
        // read before the syscall (which may issue the I/O inline), and only
        // if a foreign push is waiting.
        let now = (!self.dwell.is_empty()).then(Instant::now);
        self.enters += 1;
        match self.ring.enter() {
            Ok(submitted) => {
                let counters = &self.shared.counters;
                Counters::bump(&counters.submits, 1);
                Counters::bump(&counters.sqes_submitted, submitted as u64);
                self.sqes_taken += submitted as u64;
                // `now` is `None` only when no foreign push was waiting.
                if let Some(now) = now {
                    while let Some(&(sqe, pushed_at)) = self.dwell.front()
                        && sqe <= self.sqes_taken
                    {
                        self.dwell.pop_front();
                        counters
                            .dwell
                            .record(now.saturating_duration_since(pushed_at));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "io_uring_enter failed"),
        }
    }

    /// Reaps every CQE ready now and completes its op.
    fn reap(&mut self) {
        let slots = &mut self.slots;
        let (enters, policy) = (self.enters, &mut self.policy);
        let reaped = self.ring.reap(|user_data, res, flags| {
            if user_data == IGNORED_USER_DATA {
                return;
            }
            match slots.remove(user_data) {
                Some((op, submitted_by)) => {
                    policy.record(submitted_by == enters);
                    op.complete(Cqe::from_raw(res, flags));
                }
                None => tracing::error!(user_data, "CQE for an unknown slot"),
            }
        });
        Counters::bump(&self.shared.counters.cqes_reaped, reaped as u64);
    }

    /// One turn: drain, submit, reap.
    fn turn(&mut self) -> TurnOutcome {
        self.turn_scheduled = false;
        Counters::bump(&self.shared.counters.turns, 1);
        if self.shared.is_closing() {
            self.shut_down();
            return TurnOutcome::ShutDown;
        }

        self.shared.inbox.begin_turn();
        let mut drained = std::mem::take(&mut self.drained);
        self.shared.inbox.drain_into(&mut drained);
        for request in drained.drain(..) {
            self.handle(request);
        }
        self.drained = drained;

        self.flush_backlog();
        if self.ring.needs_enter() {
            self.enter();
        }
        self.reap();
        if !self.backlog.is_empty() && !self.slots.is_full() && self.ring.has_room() {
            TurnOutcome::MoreWork
        } else {
            TurnOutcome::Idle
        }
    }

    /// Fails everything not yet in the kernel, cancels everything in it, and
    /// waits for the kernel to finish with all of it.
    fn shut_down(&mut self) {
        self.closing = true;
        tracing::debug!(in_flight = self.slots.len(), "aioctx context shutting down");
        let mut not_submitted: Vec<Submission> = self.backlog.drain(..).collect();
        for request in self.shared.inbox.close() {
            if let Request::Submit(submission) = request {
                not_submitted.push(submission);
            }
        }
        for submission in not_submitted {
            submission.op.complete(Cqe::error(shutdown_error()));
        }
        for user_data in self.slots.all_user_data() {
            self.push_cancel(user_data);
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN_LIMIT;
        while !self.slots.is_empty() {
            if Instant::now() >= deadline {
                tracing::error!(
                    leaked = self.slots.len(),
                    "ops still in the kernel after shutdown's drain limit; leaking their buffers"
                );
                self.slots.leak();
                break;
            }
            // Nothing is timed during the drain.
            self.dwell.clear();
            self.sqes_taken = self.sqes_pushed;
            if let Err(e) = self
                .ring
                .enter_and_wait_timeout(1, Duration::from_millis(100))
            {
                tracing::error!(error = %e, "io_uring_enter failed during shutdown");
                break;
            }
            self.reap();
        }
    }
}

/// The driver as a Tokio task on the home runtime.
pub(crate) struct DriverTask {
    shared: Arc<Shared>,
    completions: AsyncFd<EventFd>,
}

/// Our own fd for the ring's eventfd, registered with Tokio's reactor.
struct EventFd(OwnedFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl DriverTask {
    /// Must run on the home thread, inside the home runtime, after
    /// [`Core::install`].
    pub(crate) fn new(shared: Arc<Shared>) -> io::Result<DriverTask> {
        let fd = HOME.with(|home| {
            home.borrow()
                .as_ref()
                .map(|core| core.ring.eventfd())
                .expect("driver task created off its home thread")
        })?;
        // SAFETY: `EventFd` owns the fd, so it stays open and unchanged for
        // the life of the registration.
        let completions =
            unsafe { AsyncFd::register_with_interest(EventFd(fd), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(DriverTask {
            shared,
            completions,
        })
    }

    /// Clears the eventfd's readiness if it fired. Returns whether it had.
    ///
    /// Called *before* reaping, so a completion posted after this point sets
    /// readiness anew and is never lost; when it returns `Pending` the task's
    /// waker is registered with the reactor.
    fn take_completion_signal(&self, cx: &mut TaskContext<'_>) -> bool {
        match self.completions.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                true
            }
            Poll::Ready(Err(e)) => {
                tracing::error!(error = %e, "polling the ring's eventfd failed");
                true
            }
            Poll::Pending => false,
        }
    }
}

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..TURNS_PER_POLL {
            this.take_completion_signal(cx);
            let outcome = HOME.with(|home| {
                let mut home = home.borrow_mut();
                let core = home
                    .as_mut()
                    .expect("driver task polled off its home thread");
                if !core.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    core.waker = Some(cx.waker().clone());
                }
                core.turn()
            });
            match outcome {
                TurnOutcome::ShutDown => return Poll::Ready(()),
                TurnOutcome::MoreWork => continue,
                TurnOutcome::Idle => {}
            }
            // Park: register for kicks first, then announce it (see inbox.rs).
            this.shared.driver_waker.register(cx.waker());
            if !this.shared.inbox.prepare_park() {
                continue;
            }
            if this.take_completion_signal(cx) {
                continue;
            }
            return Poll::Pending;
        }
        // Busy: let the tasks this driver woke run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// When home-thread ops go to the kernel: at the end of the turn (batched) or
/// at once (eager).
///
/// Ops that complete inside the `io_uring_enter` that submits them (NOPs,
/// page-cache reads) gain from batching: one syscall for many. Ops that go to
/// a device lose from it: a replacement read that waits for the rest of the
/// batch reaches the device late, and measured randread at QD32 drops to
/// ~0.87x of fio's (BENCHMARKS.md). So the driver watches where completions
/// arrive and, when most of the last window arrived after their own enter,
/// enters at once for each local push, as fio does.
#[derive(Debug, Default)]
struct SubmitPolicy {
    inline: u32,
    total: u32,
    eager: bool,
}

impl SubmitPolicy {
    /// Completions per decision.
    const WINDOW: u32 = 64;

    fn record(&mut self, completed_inline: bool) {
        self.total += 1;
        self.inline += u32::from(completed_inline);
        if self.total == Self::WINDOW {
            self.eager = self.inline * 2 < self.total;
            self.inline = 0;
            self.total = 0;
        }
    }
}

/// The ops in flight, indexed by the low half of their `user_data`; the high
/// half is a generation, so a late cancel never hits a reused slot.
///
/// A slot is freed only by [`Slots::remove`], called when the op's CQE is
/// reaped (invariant 5), and its backend reference keeps the op's resources
/// alive until then (invariant 4).
struct Slots {
    entries: Vec<SlotEntry>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
}

struct SlotEntry {
    generation: u32,
    /// Number of the `io_uring_enter` that submits (or submitted) the op.
    submitted_by: u64,
    op: Option<OpRef>,
}

impl Slots {
    fn with_limit(limit: usize) -> Slots {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// At the in-flight limit (the CQ size): more ops would risk CQ overflow.
    fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    /// Files `op` under a fresh `user_data`, which it also records in the
    /// op's cell (for a later cancel), and returns.
    fn insert(&mut self, op: OpRef, submitted_by: u64) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(SlotEntry {
                    generation: 0,
                    submitted_by: 0,
                    op: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.op.is_none(), "free list held an occupied slot");
        let user_data = (u64::from(entry.generation) << 32) | u64::from(index);
        op.header().set_tag(user_data);
        entry.op = Some(op);
        entry.submitted_by = submitted_by;
        self.len += 1;
        user_data
    }

    /// Whether `user_data` names an op still in flight.
    fn contains(&self, user_data: u64) -> bool {
        let (index, generation) = (user_data as u32, (user_data >> 32) as u32);
        self.entries
            .get(index as usize)
            .is_some_and(|entry| entry.generation == generation && entry.op.is_some())
    }

    /// Frees the op's slot; returns it with the number of the enter that
    /// submitted it.
    fn remove(&mut self, user_data: u64) -> Option<(OpRef, u64)> {
        let (index, generation) = (user_data as u32, (user_data >> 32) as u32);
        let entry = self.entries.get_mut(index as usize)?;
        if entry.generation != generation {
            return None;
        }
        let op = entry.op.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        Some((op, entry.submitted_by))
    }

    fn all_user_data(&self) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.op.is_some())
            .map(|(index, entry)| (u64::from(entry.generation) << 32) | index as u64)
            .collect()
    }

    /// Gives up on the ops still in flight: their resources are never freed,
    /// because the kernel may still write to them.
    fn leak(&mut self) {
        for entry in &mut self.entries {
            if let Some(op) = entry.op.take() {
                op.leak();
            }
        }
        self.len = 0;
    }
}
