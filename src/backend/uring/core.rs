//! The ring driver's state on the home thread, [`Core`], and its turn. Each
//! job of the core has a file of its own, all `impl Core`: `submit.rs` (ops
//! into the SQ or the backlog), `cancel.rs` (cancels for dropped ops),
//! `complete.rs` (the enter and the reap), `drain.rs` (shutdown),
//! `overflow.rs` (the backlog's overflow episodes), with `tables.rs`,
//! `dwell.rs`, `slots.rs` and `policy.rs` the records it keeps.
//!
//! ```text
//!   1  begin_turn; drain the inbox        foreign ops, cancels, releases → SQ / backlog
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
use std::time::Duration;

use crate::backend::common::{Common, Release};
use crate::inbox::Inbox;
use crate::metrics::Counters;
use crate::ring::Ring;

use super::dwell::DwellClock;
use super::overflow::Overflow;
use super::policy::SubmitPolicy;
use super::slots::Slots;
use super::submit::{Request, Waiting};
use super::tables::Tables;

/// What a turn leaves behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TurnOutcome {
    /// Nothing left that this thread can do: the driver may park.
    Idle,
    /// The backlog or a cancel still waits and can go in now: turn again.
    MoreWork,
    /// The context is shut down and drained: the driver task ends.
    ShutDown,
}

/// The driver's state: the ring, the ops in flight, and what waits to go in.
pub(super) struct Core {
    pub(super) ring: Ring,
    pub(super) slots: Slots,
    /// Ops, and batches' members, waiting for room in the SQ or under the
    /// in-flight limit. FIFO.
    pub(super) backlog: VecDeque<Waiting>,
    /// The backlog's overflow episode, for its warning.
    pub(super) overflow: Overflow,
    /// `user_data` of dropped ops whose cancel waits for room in the SQ or
    /// under the in-flight limit.
    pub(super) pending_cancels: Vec<u64>,
    /// Dwell-time accounting for foreign pushes still in the SQ.
    pub(super) dwell: DwellClock,
    /// Reused buffer for draining the inbox.
    drained: Vec<Request>,
    /// The driver task's waker, for same-thread wakes from local pushes.
    pub(super) waker: Option<Waker>,
    /// The home `LocalSet`'s turn task's waker ([`LocalTurns`](super::task::LocalTurns)),
    /// for the turns of one-thread ops.
    pub(super) local_waker: Option<Waker>,
    /// A turn is already scheduled; local pushes need not wake again.
    pub(super) turn_scheduled: bool,
    /// `io_uring_enter` calls so far: an SQE pushed now goes in with number
    /// `enters + 1`.
    pub(super) enters: u64,
    pub(super) policy: SubmitPolicy,
    /// Which slots of the ring's buffer and file tables are taken.
    pub(super) tables: Tables,
    /// Set once shutdown begins; later submissions fail.
    pub(super) closing: bool,
    /// Test-only faults applied to completions as they are reaped.
    #[cfg(feature = "fault-injection")]
    pub(super) faults: std::sync::Arc<crate::fault::FaultQueue>,
}

impl Core {
    /// The core of `ring`; foreign ops whose SQE waits longer than
    /// `dwell_warning` are warned about.
    pub(super) fn new(ring: Ring, dwell_warning: Option<Duration>) -> Core {
        let limit = ring.cq_capacity();
        let tables = Tables::of(&ring);
        Core {
            ring,
            slots: Slots::with_limit(limit),
            backlog: VecDeque::new(),
            overflow: Overflow::default(),
            pending_cancels: Vec::new(),
            dwell: DwellClock::new(dwell_warning),
            drained: Vec::new(),
            waker: None,
            local_waker: None,
            turn_scheduled: false,
            enters: 0,
            policy: SubmitPolicy::default(),
            tables,
            closing: false,
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
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

    /// Remembers the home `LocalSet`'s turn task's waker.
    pub(super) fn set_local_waker(&mut self, waker: &Waker) {
        if !self
            .local_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.local_waker = Some(waker.clone());
        }
    }

    /// Whether completions are awaited from an SQPOLL ring's kernel thread:
    /// it posts them without a wake the driver would see soon.
    pub(super) fn awaits_sqpoll_completions(&self) -> bool {
        self.ring.flags().sqpoll && !self.slots.is_empty()
    }

    /// Releases registered resources: see [`Tables::release`].
    pub(super) fn release(&mut self, release: Release) {
        self.tables.release(&mut self.ring, release);
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
        self.submit_and_reap(common)
    }

    /// A turn of the home `LocalSet`'s turn task, scheduled by one-thread
    /// ops: the turn less the inbox, which stays the driver task's (as do
    /// shutdown and parking). Run from a `LocalSet` task, its wakes of
    /// local tasks stay inside the `LocalSet`; the driver task's would go
    /// through the runtime's unpark and park (BENCHMARKS.md, "The third
    /// step").
    pub(super) fn local_turn(&mut self, common: &Common) {
        self.turn_scheduled = false;
        if self.closing || common.shutdown.is_raised() {
            // The driver task's turn shuts the ring down.
            self.schedule_turn();
            return;
        }
        Counters::add_single_writer(&common.counters.turns, 1);
        Counters::add_single_writer(&common.counters.local_turns, 1);
        if self.submit_and_reap(common) == TurnOutcome::MoreWork {
            self.schedule_turn();
        }
    }

    /// The part of a turn on the ring: what waits goes in, one enter, and
    /// every completion comes out.
    fn submit_and_reap(&mut self, common: &Common) -> TurnOutcome {
        self.send_pending_cancels(common);
        self.flush_backlog();
        self.watch_backlog(common);
        if self.ring.needs_enter() {
            self.enter(common);
        } else {
            // An SQPOLL ring's kernel thread took SQEs without an enter.
            self.note_progress(common, None);
        }
        self.reap(common);
        let waiting = (!self.backlog.is_empty() && !self.slots.is_full())
            || (!self.pending_cancels.is_empty() && self.slots.can_cancel());
        if !waiting {
            return TurnOutcome::Idle;
        }
        if !self.ring.has_room() {
            // Only an SQPOLL ring's SQ stays full after an enter: its kernel
            // thread drains it on its own time, and nothing would wake the
            // driver when it has. Wait for room here, then turn again.
            self.make_room(common);
        }
        TurnOutcome::MoreWork
    }
}
