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
    #[inline]
    pub(super) fn submit_local(&mut self, common: &Common, op: OpRef, sqe: &Sqe) {
        if self.closing {
            op.complete(Cqe::not_run(shutdown_error()));
            return;
        }
        Counters::add_single_writer(&common.counters.ops_local, 1);
        // Fresh from its future's first poll: the future is alive, so the
        // op goes in without the dropped check of `queue`.
        let pushed = match self.backlog.is_empty() {
            true => self.push(op, sqe, None),
            false => Err(op),
        };
        if let Err(op) = pushed {
            Counters::add_single_writer(&common.counters.backlogged, 1);
            self.backlog.push_back(Submission {
                op,
                sqe: sqe.clone(),
                pushed_at: None,
            });
        }
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
        let Submission { op, sqe, pushed_at } = submission;
        if op.header().is_dropped() {
            op.complete(Cqe::not_run(cancelled()));
            return Ok(());
        }
        self.push(op, &sqe, pushed_at)
            .map_err(|op| Submission { op, sqe, pushed_at })
    }

    /// Files the op in a slot and pushes its SQE, if the in-flight limit and
    /// the SQ have room; gives the op back otherwise. `pushed_at` is when a
    /// foreign thread pushed it, for its dwell time.
    #[inline]
    fn push(&mut self, op: OpRef, sqe: &Sqe, pushed_at: Option<Instant>) -> Result<(), OpRef> {
        if self.slots.is_full() {
            return Err(op);
        }
        let slots = &mut self.slots;
        let submitted_by = self.enters + 1;
        let mut op = Some(op);
        // SAFETY: the SQE was built by its op from resources inside the op's
        // cell, and the slot filed here holds the backend reference that
        // keeps the cell alive until the CQE for `user_data` is reaped (see
        // `Slots` and tests/op_drop_in_flight.rs).
        let pushed = unsafe {
            self.ring.push_with(|| {
                let op = op.take().expect("filed once");
                sqe.clone().user_data(slots.insert(op, submitted_by))
            })
        };
        match op {
            None => {
                debug_assert!(pushed);
                self.dwell.pushed(pushed_at);
                Ok(())
            }
            // The SQ is full.
            Some(op) => Err(op),
        }
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
