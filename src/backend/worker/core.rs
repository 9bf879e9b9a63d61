//! A worker ring's state behind its lock: the ring, its slot table, its
//! registered file table, the backlog and pending cancels, and the turn
//! that sends what waits, enters and reaps (see the parent module for who
//! calls it and when). Completions are collected here and completed by the
//! caller after the lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backend::common::Common;
use crate::backend::uring::slots::{Reaped, Slots};
use crate::backend::uring::tables::Tables;
use crate::error::{Cqe, cancelled, shutdown_error};
use crate::metrics::Counters;
use crate::ops::OpRef;
use crate::ring::{IGNORED_USER_DATA, SharedRing, Sqe};

/// How long closing waits for the kernel to finish cancelled ops before it
/// leaks their resources rather than free memory still in use.
const CLOSE_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The ring and what is in it, behind the lock.
pub(super) struct WorkerCore {
    /// `None` once closed: the ring (and its fd) goes at close, whoever
    /// still holds the backend.
    pub(super) ring: Option<SharedRing>,
    pub(super) slots: Slots,
    /// Which slots of the ring's file table are taken: a file's slot is
    /// taken the first time this ring uses the file, and freed when the
    /// file's view of this ring goes (see `file.rs`). The table goes with
    /// the ring at close.
    pub(super) tables: Tables,
    /// Ops, and batches' members, waiting for room in the SQ or under the
    /// in-flight limit. FIFO.
    pub(super) backlog: VecDeque<Waiting>,
    /// Cancels waiting for room.
    pub(super) pending_cancels: Vec<u64>,
    /// Set once closed: every later op fails with the shutdown error.
    pub(super) closed: bool,
    /// SQEs are queued and a flush is asked for: later submissions need not
    /// ask again. Cleared by the turn that enters.
    pub(super) flush_asked: bool,
}

/// Completions reaped under the lock, to complete after it.
pub(super) type Done = Vec<(OpRef, Cqe)>;

thread_local! {
    /// A reused [`Done`], so a submission allocates nothing: taken for one
    /// use, given back after (a submission from inside a completion finds it
    /// taken and uses a fresh one).
    static SCRATCH: std::cell::Cell<Done> = const { std::cell::Cell::new(Vec::new()) };
}

/// The thread's reused list of completions, empty.
pub(super) fn scratch() -> Done {
    SCRATCH
        .try_with(|scratch| scratch.take())
        .unwrap_or_default()
}

/// What waits in the backlog.
pub(super) enum Waiting {
    Op(OpRef, Sqe),
    /// A batch's members that did not fit yet; the batch has its slot.
    Members {
        batch: u64,
        sqes: VecDeque<(u16, Sqe)>,
    },
}

/// Completes what a turn reaped, outside the lock, and gives the list back
/// for reuse.
pub(super) fn complete_all(mut done: Done) {
    for (op, cqe) in done.drain(..) {
        op.complete(cqe);
    }
    // An error means the thread is exiting: the list just goes.
    let _reused = SCRATCH.try_with(|scratch| scratch.set(done));
}

impl WorkerCore {
    /// The ring, while open: every caller checks `closed` first.
    pub(super) fn ring(&mut self) -> &mut SharedRing {
        self.ring
            .as_mut()
            .expect("a worker ring is used only while open")
    }

    /// Files the op in a slot and pushes its SQE, if there is room.
    pub(super) fn push(&mut self, op: OpRef, sqe: &Sqe) -> Result<(), OpRef> {
        if self.slots.is_full() {
            return Err(op);
        }
        let (ring, slots) = (self.ring.as_mut().expect("open"), &mut self.slots);
        let mut op = Some(op);
        // SAFETY: the SQE was built by its op from resources inside the op's
        // cell, and the slot filed here holds the backend reference that
        // keeps the cell alive until the CQE for its `user_data` is reaped.
        let pushed = unsafe {
            ring.push_with(|| {
                let op = op.take().expect("filed once");
                sqe.clone().user_data(slots.insert(op, 0))
            })
        };
        match op {
            None => {
                debug_assert!(pushed);
                Ok(())
            }
            Some(op) => Err(op),
        }
    }

    /// Sends a batch's members while they fit; gives back those left. A
    /// batch whose future is gone gives its waiting members up.
    pub(super) fn push_members(
        &mut self,
        batch: u64,
        mut sqes: VecDeque<(u16, Sqe)>,
        done: &mut Done,
    ) -> Option<Waiting> {
        if self
            .slots
            .op(batch)
            .is_none_or(|op| op.header().is_dropped())
        {
            for (member, _) in sqes {
                let user_data = Slots::member_user_data(batch, member);
                if let Some((op, _)) = self.slots.member_given_up(user_data) {
                    done.push((op, Cqe::not_run(cancelled())));
                }
            }
            return None;
        }
        while let Some((member, sqe)) = sqes.front() {
            let user_data = Slots::member_user_data(batch, *member);
            if self.slots.is_full() {
                break;
            }
            // SAFETY: the member's SQE was built from resources inside the
            // batch's cell, and the batch's slot holds the backend reference
            // that keeps the cell alive until its last member's CQE.
            let pushed = unsafe { self.ring().push_with(|| sqe.clone().user_data(user_data)) };
            if !pushed {
                break;
            }
            self.slots.member_sent(user_data);
            sqes.pop_front();
        }
        (!sqes.is_empty()).then_some(Waiting::Members { batch, sqes })
    }

    /// Sends what waited (cancels, the backlog) while it fits, enters if
    /// anything is queued, and reaps into `done`; again while something
    /// waits that can go in now, because the enter emptied the SQ or the
    /// reap freed slots (what completes inside its enter frees room at once,
    /// and signals no eventfd that would bring a later turn; and a turn that
    /// found the in-flight limit full has no SQE to enter, but its reap may
    /// free the slots the backlog waits for: the eventfd that brought it
    /// fires no more).
    pub(super) fn turn(&mut self, common: &Common, done: &mut Done) {
        // Everything queued so far goes in now.
        self.flush_asked = false;
        loop {
            for user_data in std::mem::take(&mut self.pending_cancels) {
                if self.slots.contains(user_data) {
                    self.push_cancel(common, user_data);
                }
            }
            self.flush_backlog(done);
            let mut entered = false;
            if self.ring().queued() > 0 {
                match self.ring().enter() {
                    Ok(submitted) => {
                        Counters::add_shared(&common.counters.submits, 1);
                        Counters::add_shared(&common.counters.sqes_submitted, submitted as u64);
                        entered = submitted > 0;
                    }
                    Err(e) => tracing::error!(error = %e, "io_uring_enter failed"),
                }
            }
            let reaped = self.reap(common, done);
            let waiting = (!self.backlog.is_empty() && !self.slots.is_full())
                || (!self.pending_cancels.is_empty() && self.slots.can_cancel());
            // Neither entered nor reaped (nothing queued, or an enter that
            // failed): the SQ and the slots are as the pass found them, and
            // another would find the same; the next flush or completion
            // tries again.
            if !waiting || (!entered && reaped == 0) {
                return;
            }
        }
    }

    /// Moves backlog entries into the SQ while they fit.
    pub(super) fn flush_backlog(&mut self, done: &mut Done) {
        while let Some(waiting) = self.backlog.pop_front() {
            let left = match waiting {
                Waiting::Op(op, _) if op.header().is_dropped() => {
                    done.push((op, Cqe::not_run(cancelled())));
                    None
                }
                Waiting::Op(op, sqe) => self.push(op, &sqe).err().map(|op| Waiting::Op(op, sqe)),
                Waiting::Members { batch, sqes } => self.push_members(batch, sqes, done),
            };
            if let Some(left) = left {
                self.backlog.push_front(left);
                break;
            }
        }
    }

    /// Collects every CQE ready now into `done`; returns how many.
    pub(super) fn reap(&mut self, common: &Common, done: &mut Done) -> usize {
        let (ring, slots) = (self.ring.as_mut().expect("open"), &mut self.slots);
        let reaped = ring.reap(|user_data, res, flags| {
            if user_data == IGNORED_USER_DATA {
                slots.cancel_reaped();
                return;
            }
            let reaped = slots.reaped(user_data, |batch, index| {
                // SAFETY: the slot holds the batch's backend reference, and
                // the batch is not complete while a member is in the kernel.
                unsafe { batch.cell().member_done(index, Cqe::from_raw(res, flags)) };
            });
            match reaped {
                Reaped::Done(op, _) => done.push((op, Cqe::from_raw(res, flags))),
                Reaped::BatchDone(op, _) => done.push((op, Cqe::from_raw(0, 0))),
                Reaped::Member => {}
                Reaped::Unknown => tracing::error!(user_data, "CQE for an unknown slot"),
            }
        });
        Counters::add_shared(&common.counters.cqes_reaped, reaped as u64);
        reaped
    }

    /// Sends a cancel for `user_data`, or keeps it for the next turn.
    pub(super) fn push_cancel(&mut self, common: &Common, user_data: u64) {
        if !self.slots.can_cancel() {
            self.pending_cancels.push(user_data);
            return;
        }
        let entry = crate::ring::Ring::cancel_entry(user_data);
        // SAFETY: a cancel SQE points at no memory.
        if unsafe { self.ring().push(&entry) } {
            self.slots.cancel_sent();
            Counters::add_shared(&common.counters.cancels_sent, 1);
        } else {
            self.pending_cancels.push(user_data);
        }
    }

    /// Fails the backlog, cancels everything in the kernel and waits for it;
    /// past [`CLOSE_DRAIN_LIMIT`] leaks what is left.
    pub(super) fn drain(&mut self, done: &mut Done) {
        for waiting in std::mem::take(&mut self.backlog) {
            match waiting {
                Waiting::Op(op, _) => done.push((op, Cqe::not_run(shutdown_error()))),
                Waiting::Members { batch, sqes } => {
                    for (member, _) in sqes {
                        let user_data = Slots::member_user_data(batch, member);
                        if let Some((op, _)) = self.slots.member_given_up(user_data) {
                            done.push((op, Cqe::not_run(shutdown_error())));
                        }
                    }
                }
            }
        }
        self.pending_cancels.clear();
        for user_data in self.slots.all_user_data() {
            let entry = crate::ring::Ring::cancel_entry(user_data);
            // SAFETY: a cancel SQE points at no memory.
            if !unsafe { self.ring().push(&entry) } {
                if let Err(e) = self.ring().enter() {
                    tracing::error!(error = %e, "io_uring_enter failed while closing a worker ring");
                }
                // SAFETY: as above.
                if !unsafe { self.ring().push(&entry) } {
                    tracing::error!(user_data, "no room for a cancel; its op runs to its end");
                }
            }
        }
        let deadline = Instant::now() + CLOSE_DRAIN_LIMIT;
        while !self.slots.is_empty() {
            if Instant::now() >= deadline {
                tracing::error!(
                    leaked = self.slots.len(),
                    "ops still in the kernel after a worker ring's drain limit; leaking their buffers"
                );
                self.slots.leak();
                break;
            }
            if let Err(e) = self
                .ring()
                .enter_and_wait_timeout(1, Duration::from_millis(100))
            {
                tracing::error!(error = %e, "io_uring_enter failed while closing; leaking what is in flight");
                self.slots.leak();
                break;
            }
            let (ring, slots) = (self.ring.as_mut().expect("open"), &mut self.slots);
            ring.reap(|user_data, res, flags| {
                let reaped = slots.reaped(user_data, |batch, index| {
                    // SAFETY: as in `reap`.
                    unsafe { batch.cell().member_done(index, Cqe::from_raw(res, flags)) };
                });
                match reaped {
                    Reaped::Done(op, _) => done.push((op, Cqe::from_raw(res, flags))),
                    Reaped::BatchDone(op, _) => done.push((op, Cqe::from_raw(0, 0))),
                    Reaped::Member | Reaped::Unknown => {}
                }
            });
        }
    }
}
