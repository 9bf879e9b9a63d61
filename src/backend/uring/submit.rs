//! The core's submission side: requests from other threads, home-thread ops
//! straight into the SQ, and the backlog for ops that cannot go in yet
//! (invariant 6: nothing is dropped when the SQ is full).

use std::time::Instant;

use crate::backend::common::{Common, Release};
use crate::error::{Cqe, cancelled, shutdown_error};
use crate::lifecycle::Canceller;
use crate::metrics::Counters;
use crate::ops::OpRef;
use crate::ring::Sqe;

use super::core::Core;

/// A request to the driver, from any thread.
pub(super) enum Request {
    /// Submit this op.
    Submit(Submission),
    /// The op's future was dropped in flight: cancel it if it is in the kernel.
    Cancel(Canceller),
    /// Take registered resources out of their table, then drop what they
    /// kept alive.
    Release(Release),
}

/// An op on its way to the SQ.
pub(super) struct Submission {
    pub(super) op: OpRef,
    pub(super) sqe: Sqe,
    /// When a foreign thread pushed the op: the start of its dwell time.
    /// `None` for home-thread ops, which are not timed.
    pub(super) pushed_at: Option<Instant>,
}

impl Core {
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

    /// Handles a request drained from the inbox.
    pub(super) fn handle(&mut self, common: &Common, request: Request) {
        match request {
            Request::Submit(submission) => self.queue(common, submission),
            Request::Cancel(canceller) => self.cancel(common, canceller),
            Request::Release(release) => self.release(release),
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
        self.dwell.pushed(pushed_at);
        Ok(())
    }

    /// Moves backlog entries into the SQ while they fit.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(submission) = self.backlog.pop_front() {
            if let Err(submission) = self.try_push(submission) {
                self.backlog.push_front(submission);
                break;
            }
        }
    }
}
