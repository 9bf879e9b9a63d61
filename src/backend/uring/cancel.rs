//! The core's cancels: an `IORING_OP_ASYNC_CANCEL` for each op whose future
//! was dropped while the op was in the kernel. A cancel needs room in the SQ
//! and under the in-flight limit (its CQE takes a CQ entry); one that finds
//! neither waits in the pending list, and the turn comes back for it.

use crate::backend::common::Common;
use crate::lifecycle::Canceller;
use crate::metrics::Counters;
use crate::ring::Ring;

use super::core::Core;

impl Core {
    /// Asks the kernel to cancel a dropped op, if it is in flight. An op not
    /// yet in the kernel is given up by `try_push` when its turn comes.
    pub(super) fn cancel(&mut self, common: &Common, canceller: Canceller) {
        if self.closing {
            return;
        }
        let Some(tag) = canceller.header().tag() else {
            return;
        };
        // An op's own `user_data`, or each of a batch's members in the
        // kernel; nothing once it is done.
        for user_data in self.slots.in_kernel(tag) {
            self.push_cancel(common, user_data);
        }
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
            // SQ full: make room (submit what is there, or wait for an SQPOLL
            // ring's kernel thread to take some). Cancels are rare.
            self.make_room(common);
            // SAFETY: as above.
            pushed = unsafe { self.ring.push(&entry) };
        }
        if pushed {
            self.slots.cancel_sent();
            self.dwell.pushed(None);
            Counters::add_single_writer(&common.counters.cancels_sent, 1);
        } else {
            // The kernel took nothing (EBUSY): the turn tries again.
            self.pending_cancels.push(user_data);
        }
    }

    /// Sends the cancels that waited for room, for ops still in flight.
    pub(super) fn send_pending_cancels(&mut self, common: &Common) {
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
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::task::Waker;
    use std::time::Duration;

    use super::super::core::{Core, TurnOutcome};
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
        let ring = match Ring::new(RingConfig::for_test(4)) {
            Ok(ring) => ring,
            Err(e) => return eprintln!("skipping: io_uring is unavailable ({e})"),
        };
        let cq = ring.cq_capacity();
        let mut core = Core::new(ring, None);
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
                core.submit_local(&common, erase(op), &sqe, false);
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
