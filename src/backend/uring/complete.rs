//! The core's side of the kernel: the turn's `io_uring_enter`, with the dwell
//! accounting it ends, and the reap that completes ops from their CQEs.

use std::time::Instant;

use crate::backend::common::Common;
use crate::error::Cqe;
use crate::metrics::Counters;
use crate::ring::IGNORED_USER_DATA;

use super::core::Core;

impl Core {
    /// The one `io_uring_enter` of a turn (more only when the backlog refills
    /// the SQ after it drained).
    pub(super) fn enter(&mut self, common: &Common) {
        // Dwell ends when the SQE is handed to the kernel, so the clock is
        // read before the syscall (which may issue the I/O inline), and only
        // if a foreign push is waiting.
        let now = self.dwell.is_timing().then(Instant::now);
        self.enters += 1;
        match self.ring.enter() {
            Ok(_) => {
                Counters::add_single_writer(&common.counters.submits, 1);
                self.note_progress(common, now);
            }
            Err(e) => tracing::error!(error = %e, "io_uring_enter failed"),
        }
    }

    /// Makes room in a full SQ (see [`Ring::make_room`](crate::ring::Ring::make_room)).
    pub(super) fn make_room(&mut self, common: &Common) {
        let now = self.dwell.is_timing().then(Instant::now);
        self.enters += 1;
        match self.ring.make_room() {
            Ok(_) => {
                Counters::add_single_writer(&common.counters.submits, 1);
                self.note_progress(common, now);
            }
            Err(e) => tracing::error!(error = %e, "io_uring_enter failed making room in the SQ"),
        }
    }

    /// Counts the SQEs the kernel has taken since the last look (by an enter
    /// of ours, or an SQPOLL ring's kernel thread) and ends their dwell.
    pub(super) fn note_progress(&mut self, common: &Common, now: Option<Instant>) {
        let counters = &common.counters;
        let queued = self.ring.queued();
        let taken = self.dwell.progress(queued, now, &counters.dwell);
        if taken > 0 {
            Counters::add_single_writer(&counters.sqes_submitted, taken);
        }
    }

    /// Reaps every CQE ready now and completes its op.
    pub(super) fn reap(&mut self, common: &Common) {
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
}
