//! The core's submission side: requests from other threads, home-thread ops
//! straight into the SQ, and the backlog for ops that cannot go in yet
//! (invariant 6: nothing is dropped when the SQ is full).

use std::collections::VecDeque;
use std::time::Instant;

use crate::backend::common::{Common, Release};
use crate::error::{Cqe, cancelled, shutdown_error};
use crate::lifecycle::Canceller;
use crate::metrics::Counters;
use crate::ops::OpRef;
use crate::ring::Sqe;

use super::core::Core;
use super::slots::Slots;

/// A request to the driver, from any thread.
pub(super) enum Request {
    /// Submit this op.
    Submit(Submission),
    /// Submit this batch.
    SubmitBatch(BatchSubmission),
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

/// A batch on its way to the SQ: its op, and each member's SQE with its
/// index.
pub(super) struct BatchSubmission {
    pub(super) op: OpRef,
    pub(super) sqes: Vec<(u16, Sqe)>,
    pub(super) pushed_at: Option<Instant>,
}

/// What waits in the backlog, in order.
pub(super) enum Waiting {
    /// An op, not in a slot yet.
    Op(Submission),
    /// A batch's members that did not fit yet; the batch has its slot.
    Members {
        batch: u64,
        sqes: VecDeque<(u16, Sqe)>,
        pushed_at: Option<Instant>,
    },
}

impl Core {
    /// Files a batch in a slot and sends as many of its members as fit; the
    /// rest wait in the backlog. From the home thread (`pushed_at` `None`)
    /// or the inbox.
    pub(super) fn submit_batch(&mut self, common: &Common, batch: BatchSubmission) {
        let BatchSubmission {
            op,
            sqes,
            pushed_at,
        } = batch;
        if self.closing {
            op.complete(Cqe::not_run(shutdown_error()));
            return;
        }
        if pushed_at.is_none() {
            Counters::add_single_writer(&common.counters.ops_local, 1);
        }
        let span = sqes
            .iter()
            .map(|(member, _)| usize::from(*member) + 1)
            .max()
            .unwrap_or(0);
        let batch = self
            .slots
            .insert_batch(op, sqes.len(), span, self.enters + 1);
        let members = Waiting::Members {
            batch,
            sqes: sqes.into(),
            pushed_at,
        };
        let waiting = match self.backlog.is_empty() {
            true => self.push_members(members),
            false => Some(members),
        };
        if let Some(waiting) = waiting {
            Counters::add_single_writer(&common.counters.backlogged, 1);
            self.backlog.push_back(waiting);
        }
        if pushed_at.is_none() {
            self.after_local_push(common, false);
        }
    }

    /// Sends a batch's waiting members while the in-flight limit and the SQ
    /// allow; gives back those left. A batch whose future is gone gives its
    /// waiting members up instead.
    fn push_members(&mut self, members: Waiting) -> Option<Waiting> {
        let Waiting::Members {
            batch,
            mut sqes,
            pushed_at,
        } = members
        else {
            unreachable!("push_members takes a batch's members")
        };
        let dropped = self
            .slots
            .op(batch)
            .is_none_or(|op| op.header().is_dropped());
        if dropped {
            for (member, _) in sqes {
                let user_data = Slots::member_user_data(batch, member);
                if let Some((op, _)) = self.slots.member_given_up(user_data) {
                    op.complete(Cqe::not_run(cancelled()));
                }
            }
            return None;
        }
        while let Some((member, sqe)) = sqes.front() {
            if self.slots.is_full() {
                break;
            }
            let user_data = Slots::member_user_data(batch, *member);
            // SAFETY: the member's SQE was built from resources inside the
            // batch's cell, and the batch's slot holds the backend reference
            // that keeps the cell alive until its last member's CQE.
            if !unsafe { self.ring.push_with(|| sqe.clone().user_data(user_data)) } {
                break;
            }
            self.slots.member_sent(user_data);
            self.dwell.pushed(pushed_at);
            sqes.pop_front();
        }
        (!sqes.is_empty()).then_some(Waiting::Members {
            batch,
            sqes,
            pushed_at,
        })
    }

    /// Queues a home-thread op straight into the SQ (or backlog), entering at
    /// once under the eager policy.
    #[inline]
    /// `one_thread`: the op's cell is of one thread (a `LocalOp`), so its
    /// task runs in the home `LocalSet`, whose turn task schedules its turn.
    pub(super) fn submit_local(&mut self, common: &Common, op: OpRef, sqe: &Sqe, one_thread: bool) {
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
            self.backlog.push_back(Waiting::Op(Submission {
                op,
                sqe: sqe.clone(),
                pushed_at: None,
            }));
        }
        self.after_local_push(common, one_thread);
    }

    /// After a home-thread push: enter at once under the eager policy,
    /// otherwise make sure a turn comes to submit it.
    #[inline]
    fn after_local_push(&mut self, common: &Common, one_thread: bool) {
        // `needs_enter`: on an SQPOLL ring its kernel thread takes the SQE
        // without an enter, unless it has gone to sleep.
        if self.policy.is_eager() && self.ring.queued() > 0 && self.ring.needs_enter() {
            // Ops that go to a device: hand this one over now, as fio does,
            // instead of at the end of the batch.
            self.enter(common);
            self.reap(common);
            return;
        }
        match one_thread {
            true => self.schedule_local_turn(),
            false => self.schedule_turn(),
        }
    }

    /// Makes sure a turn comes to submit what a home-thread call queued
    /// (an op, a dropped op's cancel): the driver task is woken once until
    /// that turn begins.
    #[inline]
    pub(super) fn schedule_turn(&mut self) {
        if !self.turn_scheduled {
            self.turn_scheduled = true;
            if let Some(waker) = &self.waker {
                waker.wake_by_ref();
            }
        }
    }

    /// [`schedule_turn`](Core::schedule_turn) for a one-thread op, whose
    /// task is in the home `LocalSet`: the turn is the `LocalSet`'s turn
    /// task's, once it runs (the driver task's before).
    #[inline]
    fn schedule_local_turn(&mut self) {
        match &self.local_waker {
            Some(waker) if !self.turn_scheduled => {
                self.turn_scheduled = true;
                waker.wake_by_ref();
            }
            Some(_) => {}
            None => self.schedule_turn(),
        }
    }

    /// Handles a request drained from the inbox.
    pub(super) fn handle(&mut self, common: &Common, request: Request) {
        match request {
            Request::Submit(submission) => self.queue(common, submission),
            Request::SubmitBatch(batch) => self.submit_batch(common, batch),
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
        self.backlog.push_back(Waiting::Op(submission));
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
        while let Some(waiting) = self.backlog.pop_front() {
            let left = match waiting {
                Waiting::Op(submission) => self.try_push(submission).err().map(Waiting::Op),
                members @ Waiting::Members { .. } => self.push_members(members),
            };
            if let Some(left) = left {
                self.backlog.push_front(left);
                break;
            }
        }
    }
}
