//! Dwell time: how long an SQE pushed by a foreign thread waits before the
//! kernel takes it, the number that exposes the seed's bug class (an SQE left
//! in a ring nobody enters). A plain record, kept by the driver's core.
//!
//! The kernel's progress is read from the SQ itself: every SQE pushed and no
//! longer queued has been taken, whether an `io_uring_enter` submitted it or
//! an SQPOLL ring's kernel thread picked it up on its own. So the record
//! stays bounded on both (a foreign push leaves an entry only until the
//! kernel has its SQE), and the count of SQEs submitted adds up on both.

use std::collections::VecDeque;
use std::time::Instant;

use crate::metrics::Histogram;

/// Foreign pushes whose SQE the kernel has not taken yet, and the SQ's
/// progress.
#[derive(Debug, Default)]
pub(super) struct DwellClock {
    /// The number of each waiting foreign push's SQE, and when its op was
    /// pushed into the inbox. Home-thread ops are not timed and leave none.
    waiting: VecDeque<(u64, Instant)>,
    /// SQEs pushed into the SQ so far, and how many of them the kernel has
    /// taken: an SQE numbered at most `taken` has left the SQ.
    pushed: u64,
    taken: u64,
}

impl DwellClock {
    /// Notes an SQE pushed into the SQ; `foreign` is when its op was pushed
    /// into the inbox, for a foreign op.
    #[inline]
    pub(super) fn pushed(&mut self, foreign: Option<Instant>) {
        self.pushed += 1;
        if let Some(at) = foreign {
            self.waiting.push_back((self.pushed, at));
        }
    }

    /// Whether a foreign push waits for the kernel: the caller reads the
    /// clock before its enter only then.
    #[inline]
    pub(super) fn is_timing(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Notes that `queued` SQEs are still in the SQ: the rest were taken by
    /// `now` (read before the enter that handed them over, or when the
    /// progress was seen). Records their dwell in `histogram`; returns how
    /// many SQEs the kernel took since the last call.
    pub(super) fn progress(
        &mut self,
        queued: usize,
        now: Option<Instant>,
        histogram: &Histogram,
    ) -> u64 {
        let taken = self.pushed - queued as u64;
        let newly = taken.saturating_sub(self.taken);
        self.taken = self.taken.max(taken);
        while let Some(&(sqe, pushed_at)) = self.waiting.front()
            && sqe <= self.taken
        {
            self.waiting.pop_front();
            let now = now.unwrap_or_else(Instant::now);
            histogram.record(now.saturating_duration_since(pushed_at));
        }
        newly
    }

    /// Forgets the waiting pushes (shutdown times nothing).
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
    }

    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::DwellClock;
    use crate::metrics::Histogram;

    #[test]
    fn taken_sqes_leave_the_record_whoever_took_them() {
        let histogram = Histogram::default();
        let mut clock = DwellClock::default();
        let at = Instant::now();
        clock.pushed(Some(at));
        clock.pushed(None);
        clock.pushed(Some(at));
        // An SQPOLL thread took two of three, with no enter of ours.
        assert_eq!(
            clock.progress(1, Some(at + Duration::from_micros(5)), &histogram),
            2
        );
        assert_eq!(clock.waiting(), 1, "the third is still in the SQ");
        assert_eq!(
            clock.progress(0, Some(at + Duration::from_micros(9)), &histogram),
            1
        );
        assert_eq!(clock.waiting(), 0);
        assert_eq!(histogram.summary().count, 2, "one dwell per foreign push");
        assert_eq!(clock.progress(0, None, &histogram), 0, "nothing new taken");
    }
}
