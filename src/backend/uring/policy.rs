//! When home-thread ops go to the kernel: at the end of the turn (batched) or
//! at once (eager).
//!
//! Ops that complete inside the `io_uring_enter` that submits them (NOPs,
//! page-cache reads) gain from batching: one syscall for many. Ops that go to
//! a device lose from it: a replacement read that waits for the rest of the
//! batch reaches the device late, and measured randread at QD32 drops to
//! ~0.87x of fio's (BENCHMARKS.md). So the driver watches where completions
//! arrive and, when most of the last window arrived after their own enter,
//! enters at once for each local push, as fio does.

#[derive(Debug, Default)]
pub(super) struct SubmitPolicy {
    inline: u32,
    total: u32,
    eager: bool,
}

impl SubmitPolicy {
    /// Completions per decision.
    pub(super) const WINDOW: u32 = 64;

    /// Notes where one completion arrived: inside the enter that submitted
    /// its op, or later.
    pub(super) fn record(&mut self, completed_inline: bool) {
        self.total += 1;
        self.inline += u32::from(completed_inline);
        if self.total == Self::WINDOW {
            self.eager = self.inline * 2 < self.total;
            self.inline = 0;
            self.total = 0;
        }
    }

    /// Whether a local push should enter the ring at once.
    pub(super) fn is_eager(&self) -> bool {
        self.eager
    }
}

#[cfg(test)]
mod tests {
    use super::SubmitPolicy;

    fn window(policy: &mut SubmitPolicy, inline: u32) {
        for i in 0..SubmitPolicy::WINDOW {
            policy.record(i < inline);
        }
    }

    #[test]
    fn batched_until_a_window_says_otherwise() {
        let mut policy = SubmitPolicy::default();
        assert!(!policy.is_eager());
        // Half a window of late completions decides nothing yet.
        for _ in 0..SubmitPolicy::WINDOW / 2 {
            policy.record(false);
        }
        assert!(!policy.is_eager());
    }

    #[test]
    fn device_completions_make_it_eager_and_inline_ones_batch_again() {
        let mut policy = SubmitPolicy::default();
        window(&mut policy, 10);
        assert!(policy.is_eager(), "most completions came late");
        window(&mut policy, SubmitPolicy::WINDOW);
        assert!(!policy.is_eager(), "every completion came inline");
        // Exactly half inline is not "most late".
        window(&mut policy, SubmitPolicy::WINDOW / 2);
        assert!(!policy.is_eager());
        window(&mut policy, SubmitPolicy::WINDOW / 2 - 1);
        assert!(policy.is_eager());
    }
}
