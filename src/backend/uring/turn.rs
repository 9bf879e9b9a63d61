//! The ring driver's state on the home thread, [`Core`], and its turn: drain
//! the inbox, submit, reap. Also the shutdown drain.
//!
//! ```text
//!   1  begin_turn; drain the inbox        foreign ops and cancels → SQ / backlog
//!   2  pending cancels, backlog → SQ      while the SQ and in-flight limit allow
//!   3  io_uring_enter (once)              submit everything queued, run task work
//!   4  reap CQEs                          free slots, wake futures
//! ```
//!
//! The in-flight limit (ops plus cancels in the kernel never more than the
//! CQ holds, so the CQ never overflows) is kept by the slot table; see
//! `slots.rs`.
//!
//! The core lives in a [`HomeOnly`](crate::home_thread::HomeOnly) cell: ops
//! created on the home thread reach it without a lock, and no other thread
//! can reach it at all. It owns the [`Ring`] and the ops in flight; the inbox
//! and the counters it works on belong to every thread and are passed in.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::backend::common::Common;
use crate::error::{Cqe, cancelled, shutdown_error};
use crate::inbox::Inbox;
use crate::lifecycle::Canceller;
use crate::metrics::Counters;
use crate::ops::OpRef;
use crate::ring::{IGNORED_USER_DATA, Ring, Sqe};

use super::policy::SubmitPolicy;
use super::registry::TableSlots;
use super::slots::Slots;

/// How long shutdown waits for the kernel to finish cancelled ops before it
/// gives up and leaks their resources rather than free memory still in use.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// A request to the driver, from any thread.
pub(super) enum Request {
    /// Submit this op.
    Submit(Submission),
    /// The op's future was dropped in flight: cancel it if it is in the kernel.
    Cancel(Canceller),
}

/// An op on its way to the SQ.
pub(super) struct Submission {
    pub(super) op: OpRef,
    pub(super) sqe: Sqe,
    /// When a foreign thread pushed the op: the start of its dwell time.
    /// `None` for home-thread ops, which are not timed.
    pub(super) pushed_at: Option<Instant>,
}

/// What a turn leaves behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TurnOutcome {
    /// Nothing left that this thread can do: the driver may park.
    Idle,
    /// The backlog still holds ops that fit now: turn again.
    MoreWork,
    /// The context is shut down and drained: the driver task ends.
    ShutDown,
}

/// The driver's state: the ring, the ops in flight, and the backlog.
pub(super) struct Core {
    ring: Ring,
    slots: Slots,
    /// Ops waiting for room in the SQ or under the in-flight limit. FIFO.
    backlog: VecDeque<Submission>,
    /// `user_data` of dropped ops whose cancel waits for room in the SQ or
    /// under the in-flight limit.
    pending_cancels: Vec<u64>,
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
    policy: SubmitPolicy,
    /// Which slots of the ring's buffer and file tables are taken.
    buffers: TableSlots,
    files: TableSlots,
    /// Set once shutdown begins; later submissions fail.
    closing: bool,
    /// Test-only faults applied to completions as they are reaped.
    #[cfg(feature = "fault-injection")]
    faults: std::sync::Arc<crate::fault::FaultQueue>,
}

impl Core {
    pub(super) fn new(ring: Ring) -> Core {
        let limit = ring.cq_capacity();
        let buffers = TableSlots::new(ring.buffer_slots());
        let files = TableSlots::new(ring.file_slots());
        Core {
            ring,
            slots: Slots::with_limit(limit),
            backlog: VecDeque::new(),
            pending_cancels: Vec::new(),
            dwell: VecDeque::new(),
            sqes_pushed: 0,
            sqes_taken: 0,
            drained: Vec::new(),
            waker: None,
            turn_scheduled: false,
            enters: 0,
            policy: SubmitPolicy::default(),
            buffers,
            files,
            closing: false,
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }

    /// Registers `iovecs` in consecutive slots of the buffer table; returns
    /// the first.
    ///
    /// # Safety
    ///
    /// The memory must stay valid until [`unregister_buffers`](Core::unregister_buffers)
    /// clears the slots, or the ring closes.
    pub(super) unsafe fn register_buffers(
        &mut self,
        iovecs: &[libc::iovec],
    ) -> std::io::Result<u16> {
        let Some(first) = self.buffers.take(iovecs.len()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!(
                    "the ring's buffer table has {} free slots and the pool needs {} \
                     (Builder::registered_buffer_slots)",
                    self.buffers.free(),
                    iovecs.len()
                ),
            ));
        };
        let first16 = first as u16;
        // SAFETY: the caller vouches for the memory.
        if let Err(e) = unsafe { self.ring.update_buffers(first16, iovecs) } {
            self.buffers.give_back(first, iovecs.len());
            return Err(e);
        }
        Ok(first16)
    }

    /// Clears `count` buffer slots from `first` and frees them.
    pub(super) fn unregister_buffers(&mut self, first: u16, count: usize) {
        if let Err(e) = self.ring.clear_buffers(first, count as u16) {
            tracing::error!(error = %e, "clearing registered buffers failed; their slots stay taken");
            return;
        }
        self.buffers.give_back(u32::from(first), count);
    }

    /// Puts `fd` into a free slot of the file table; returns the slot.
    pub(super) fn register_file(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<u32> {
        let Some(slot) = self.files.take(1) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "the ring's file table is full (Builder::registered_file_slots)",
            ));
        };
        if let Err(e) = self.ring.update_files(slot, &[fd]) {
            self.files.give_back(slot, 1);
            return Err(e);
        }
        Ok(slot)
    }

    /// Takes the file out of `slot`: the table's reference to it is dropped
    /// (ops already in flight keep theirs until they complete).
    pub(super) fn unregister_file(&mut self, slot: u32) {
        if let Err(e) = self.ring.update_files(slot, &[-1]) {
            tracing::error!(error = %e, slot, "unregistering a file failed; its slot stays taken");
            return;
        }
        self.files.give_back(slot, 1);
    }

    /// The core with `faults` applied to its completions.
    #[cfg(feature = "fault-injection")]
    pub(super) fn with_faults(mut self, faults: std::sync::Arc<crate::fault::FaultQueue>) -> Core {
        self.faults = faults;
        self
    }

    pub(super) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Remembers the driver task's waker, for local pushes to schedule a turn.
    pub(super) fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    /// Queues a home-thread op straight into the SQ (or backlog), entering at
    /// once under the eager policy.
    pub(super) fn submit_local(&mut self, common: &Common, submission: Submission) {
        if self.closing {
            submission.op.complete(Cqe::not_run(shutdown_error()));
            return;
        }
        Counters::add_single_writer(&common.counters.ops_local, 1);
        self.queue(common, submission);
        // `needs_enter`: on an SQPOLL ring its kernel thread takes the SQE
        // without an enter, unless it has gone to sleep.
        if self.policy.is_eager() && self.ring.queued() > 0 && self.ring.needs_enter() {
            // Ops that go to a device: hand this one over now, as fio does,
            // instead of at the end of the batch.
            self.enter(common);
            self.reap(common);
            return;
        }
        if !self.turn_scheduled {
            self.turn_scheduled = true;
            if let Some(waker) = &self.waker {
                waker.wake_by_ref();
            }
        }
    }

    /// Asks the kernel to cancel a dropped op, if it is in flight. An op not
    /// yet in the kernel is given up by `try_push` when its turn comes.
    pub(super) fn cancel(&mut self, common: &Common, canceller: Canceller) {
        if self.closing {
            return;
        }
        if let Some(user_data) = canceller.header().tag()
            && self.slots.contains(user_data)
        {
            self.push_cancel(common, user_data);
        }
    }

    fn handle(&mut self, common: &Common, request: Request) {
        match request {
            Request::Submit(submission) => self.queue(common, submission),
            Request::Cancel(canceller) => self.cancel(common, canceller),
        }
    }

    /// Puts an op into the SQ, or the backlog when it cannot go in now.
    fn queue(&mut self, common: &Common, submission: Submission) {
        let submission = if self.backlog.is_empty() {
            match self.try_push(submission) {
                Ok(()) => return,
                Err(submission) => submission,
            }
        } else {
            submission
        };
        Counters::add_single_writer(&common.counters.backlogged, 1);
        self.backlog.push_back(submission);
    }

    /// Pushes into the SQ if there is room and the in-flight limit allows;
    /// gives the submission back otherwise. An op whose future is already
    /// gone is given up instead of submitted.
    fn try_push(&mut self, submission: Submission) -> Result<(), Submission> {
        if submission.op.header().is_dropped() {
            submission.op.complete(Cqe::not_run(cancelled()));
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

    /// Sends a cancel for the op in flight under `user_data`, or keeps it for
    /// a later turn when the in-flight limit or the SQ leaves no room.
    fn push_cancel(&mut self, common: &Common, user_data: u64) {
        if !self.slots.can_cancel() {
            // The reserve is taken by cancels whose CQEs come at the next
            // enter: this one goes in a turn later.
            self.pending_cancels.push(user_data);
            return;
        }
        let entry = Ring::cancel_entry(user_data);
        // SAFETY: a cancel SQE points at no memory.
        let mut pushed = unsafe { self.ring.push(&entry) };
        if !pushed {
            // SQ full: submit what is there to make room. Cancels are rare.
            self.enter(common);
            // SAFETY: as above.
            pushed = unsafe { self.ring.push(&entry) };
        }
        if pushed {
            self.slots.cancel_sent();
            self.sqes_pushed += 1;
            Counters::add_single_writer(&common.counters.cancels_sent, 1);
        } else {
            // The kernel took nothing (EBUSY): try again next turn.
            self.pending_cancels.push(user_data);
        }
    }

    /// Sends the cancels that waited for room, for ops still in flight.
    fn send_pending_cancels(&mut self, common: &Common) {
        if self.pending_cancels.is_empty() {
            return;
        }
        for user_data in std::mem::take(&mut self.pending_cancels) {
            // An op that completed meanwhile has nothing left to cancel; its
            // slot's generation moved on, so a reused slot never matches.
            if self.slots.contains(user_data) {
                self.push_cancel(common, user_data);
            }
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
    fn enter(&mut self, common: &Common) {
        // Dwell ends when the SQE is handed to the kernel, so the clock is
        // read before the syscall (which may issue the I/O inline), and only
        // if a foreign push is waiting.
        let now = (!self.dwell.is_empty()).then(Instant::now);
        self.enters += 1;
        match self.ring.enter() {
            Ok(submitted) => {
                let counters = &common.counters;
                Counters::add_single_writer(&counters.submits, 1);
                Counters::add_single_writer(&counters.sqes_submitted, submitted as u64);
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
    fn reap(&mut self, common: &Common) {
        let slots = &mut self.slots;
        let (enters, policy) = (self.enters, &mut self.policy);
        #[cfg(feature = "fault-injection")]
        let faults = &*self.faults;
        let reaped = self.ring.reap(|user_data, res, flags| {
            if user_data == IGNORED_USER_DATA {
                // Only cancels carry it.
                slots.cancel_reaped();
                return;
            }
            match slots.remove(user_data) {
                Some((op, submitted_by)) => {
                    policy.record(submitted_by == enters);
                    #[cfg(feature = "fault-injection")]
                    let res = faults.apply(crate::ops::Inflight::kind_name(op.cell()), res);
                    op.complete(Cqe::from_raw(res, flags));
                }
                None => tracing::error!(user_data, "CQE for an unknown slot"),
            }
        });
        Counters::add_single_writer(&common.counters.cqes_reaped, reaped as u64);
    }

    /// Whether completions are awaited from an SQPOLL ring's kernel thread:
    /// it posts them without a wake the driver would see soon.
    pub(super) fn awaits_sqpoll_completions(&self) -> bool {
        self.ring.flags().sqpoll && !self.slots.is_empty()
    }

    /// One turn: drain, submit, reap.
    pub(super) fn turn(&mut self, inbox: &Inbox<Request>, common: &Common) -> TurnOutcome {
        self.turn_scheduled = false;
        Counters::add_single_writer(&common.counters.turns, 1);
        if self.closing || common.shutdown.is_raised() {
            self.shut_down(inbox, common);
            return TurnOutcome::ShutDown;
        }

        inbox.begin_turn();
        let mut drained = std::mem::take(&mut self.drained);
        inbox.drain_into(&mut drained);
        for request in drained.drain(..) {
            self.handle(common, request);
        }
        self.drained = drained;

        self.send_pending_cancels(common);
        self.flush_backlog();
        if self.ring.needs_enter() {
            self.enter(common);
        }
        self.reap(common);
        let waiting = (!self.backlog.is_empty() && !self.slots.is_full())
            || (!self.pending_cancels.is_empty() && self.slots.can_cancel());
        if waiting && self.ring.has_room() {
            TurnOutcome::MoreWork
        } else {
            TurnOutcome::Idle
        }
    }

    /// Closes the inbox, fails everything not yet in the kernel, cancels
    /// everything in it, and waits for the kernel to finish with all of it.
    /// Idempotent.
    pub(super) fn shut_down(&mut self, inbox: &Inbox<Request>, common: &Common) {
        common.shutdown.raise();
        let mut not_submitted: Vec<Submission> = Vec::new();
        for request in inbox.close() {
            if let Request::Submit(submission) = request {
                not_submitted.push(submission);
            }
        }
        if !self.closing {
            tracing::debug!(in_flight = self.slots.len(), "aioctx ring shutting down");
        }
        self.closing = true;
        for submission in not_submitted {
            submission.op.complete(Cqe::not_run(shutdown_error()));
        }
        self.drain();
    }

    /// Fails the backlog, cancels every op in the kernel and waits for its
    /// CQE; past [`SHUTDOWN_DRAIN_LIMIT`] leaks what is left rather than free
    /// memory the kernel may still write.
    fn drain(&mut self) {
        // Every op in flight is cancelled below, these with the rest.
        self.pending_cancels.clear();
        for submission in self.backlog.drain(..) {
            submission.op.complete(Cqe::not_run(shutdown_error()));
        }
        for user_data in self.slots.all_user_data() {
            let entry = Ring::cancel_entry(user_data);
            // SAFETY: a cancel SQE points at no memory.
            if !unsafe { self.ring.push(&entry) } {
                // SQ full: what is queued goes in with the next enter below,
                // and the rest of the cancels after it.
                let _ = self.ring.enter();
                // SAFETY: as above.
                let _ = unsafe { self.ring.push(&entry) };
            }
        }
        // Nothing is timed during the drain.
        self.dwell.clear();
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
            if let Err(e) = self
                .ring
                .enter_and_wait_timeout(1, Duration::from_millis(100))
            {
                tracing::error!(error = %e, "io_uring_enter failed during shutdown; leaking what is in flight");
                self.slots.leak();
                break;
            }
            let slots = &mut self.slots;
            self.ring.reap(|user_data, res, flags| {
                if let Some((op, _)) = slots.remove(user_data) {
                    op.complete(Cqe::from_raw(res, flags));
                }
            });
        }
    }
}

impl Drop for Core {
    /// A core dropped without a shutdown (its driver ended some other way)
    /// still lets the kernel finish with every op before the ring closes
    /// (invariants 4 and 7).
    fn drop(&mut self) {
        if !self.slots.is_empty() || !self.backlog.is_empty() {
            self.closing = true;
            self.drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::task::Waker;
    use std::time::Duration;

    use super::{Core, Submission, TurnOutcome};
    use crate::backend::common::Common;
    use crate::home_thread::HomeThread;
    use crate::inbox::Inbox;
    use crate::lifecycle::Fresh;
    use crate::ops::{FileFd, ReadAt, UringOp, erase};
    use crate::ring::{Ring, RingConfig};

    /// The in-flight limit counts cancels: a ring full of reads that never
    /// complete, all dropped at once, gets every read cancelled without the
    /// CQ overflowing. Before cancels were counted, the ops alone could fill
    /// the CQ, and their cancels' CQEs, with the cancelled reads', spilled
    /// into the kernel's overflow list.
    #[test]
    fn cancels_of_a_full_ring_never_overflow_the_cq() {
        let ring = match Ring::new(RingConfig {
            entries: 4,
            single_issuer: true,
            sqpoll_idle: None,
            buffer_slots: 0,
            file_slots: 0,
        }) {
            Ok(ring) => ring,
            Err(e) => return eprintln!("skipping: io_uring is unavailable ({e})"),
        };
        let cq = ring.cq_capacity();
        let mut core = Core::new(ring);
        let common = Common::new(HomeThread::current());
        let inbox = Inbox::new(true);
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fresh fds on success.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are fresh and owned by nobody else.
        let (reader, _writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        // As many reads as the CQ holds: the pipe stays empty, so none
        // completes until it is cancelled.
        let halves: Vec<_> = (0..cq)
            .map(|_| {
                let read =
                    ReadAt::new(FileFd::new(reader.as_raw_fd()), Vec::with_capacity(8), 0, 0);
                let mut fresh = Fresh::new(read, ());
                let sqe = fresh.with_kind(|kind| kind.sqe());
                let (half, op) = fresh.share(Waker::noop().clone());
                let submission = Submission {
                    op: erase(op),
                    sqe,
                    pushed_at: None,
                };
                core.submit_local(&common, submission);
                half
            })
            .collect();
        while core.turn(&inbox, &common) == TurnOutcome::MoreWork {}
        assert!(
            core.slots.is_full(),
            "{} of {cq} in flight",
            core.slots.len()
        );
        let in_kernel = core.slots.len();

        for half in halves {
            if let Some(canceller) = half.abandon() {
                core.cancel(&common, canceller);
            }
        }
        for _ in 0..1000 {
            core.turn(&inbox, &common);
            assert!(!core.ring.cq_overflowed(), "the CQ overflowed");
            if core.slots.is_empty() && core.backlog.is_empty() && core.pending_cancels.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(core.slots.is_empty(), "every read was cancelled");
        assert!(core.backlog.is_empty(), "backlogged reads were given up");
        assert!(core.slots.can_cancel() && !core.slots.is_full());
        let cancels = common
            .counters
            .cancels_sent
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            cancels as usize, in_kernel,
            "one cancel per read in the kernel"
        );
    }
}
