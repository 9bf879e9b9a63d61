//! Test-only fault injection on the ring: completions of data transfers that
//! come back as an error or cut short, as a kernel may return them, so that
//! tests can check what the crate does with them. A leaf: imports nothing from
//! the crate.
//!
//! Compiled only with the `fault-injection` cargo feature (off by default).
//! A test queues [`Fault`]s with `Context::inject_faults`; the ring's driver
//! applies them in order, one per completion of a transfer (`read_at`,
//! `write_at`, `readv_at`, `writev_at`, and the reads and writes that
//! `read_exact_at` and `write_all_at` issue), when it reaps the CQE. Other
//! ops never get a fault: a faked error on an `openat` would leak the fd the
//! kernel did open.
//!
//! A fault changes only what is *reported*: the kernel did the transfer.
//! Bytes a read reported short or failed may have landed in the buffer past
//! what the future says was read, and a write reported failed may have
//! written; the buffer is the caller's again either way.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

/// What to do to one transfer's completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The completion reports `-errno` (`libc::EIO`, `libc::EINTR`, ...)
    /// instead of its result.
    Errno(i32),
    /// A transfer that moved more than this many bytes reports this many
    /// (a short read or write); a smaller result or an error passes as is.
    Short(u32),
    /// The completion passes untouched: lets a test aim later faults past
    /// the first transfers.
    Pass,
}

/// The op kinds (their type names) whose completions get faults.
const TRANSFERS: &[&str] = &["ReadAt", "WriteAt", "ReadvAt", "WritevAt"];

/// Faults waiting for transfers' completions, shared by every thread that
/// injects and the driver that applies them.
#[derive(Default)]
pub(crate) struct FaultQueue {
    queue: Mutex<VecDeque<Fault>>,
}

impl fmt::Debug for FaultQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultQueue")
            .field("pending", &self.pending())
            .finish()
    }
}

impl FaultQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Fault>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `faults` after those already waiting.
    pub(crate) fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().extend(faults);
    }

    /// Faults not yet applied.
    pub(crate) fn pending(&self) -> usize {
        self.lock().len()
    }

    /// The result a completion of an op of kind `kind` reports: `res` as the
    /// kernel posted it, or changed by the next fault if `kind` is a
    /// transfer.
    pub(crate) fn apply(&self, kind: &str, res: i32) -> i32 {
        if !TRANSFERS.contains(&kind) {
            return res;
        }
        let Some(fault) = self.lock().pop_front() else {
            return res;
        };
        let changed = match fault {
            Fault::Errno(errno) => -errno.abs(),
            Fault::Short(n) if res > 0 && res as u32 > n => n as i32,
            Fault::Short(_) | Fault::Pass => res,
        };
        tracing::debug!(kind, res, changed, ?fault, "injected a fault");
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::{Fault, FaultQueue};

    #[test]
    fn faults_apply_in_order_to_transfers_only() {
        let faults = FaultQueue::default();
        faults.push([Fault::Short(3), Fault::Pass, Fault::Errno(libc::EIO)]);
        assert_eq!(faults.apply("OpenAt", 7), 7, "not a transfer");
        assert_eq!(faults.apply("ReadAt", 10), 3);
        assert_eq!(faults.apply("WriteAt", 10), 10);
        assert_eq!(faults.pending(), 1);
        assert_eq!(faults.apply("ReadvAt", 10), -libc::EIO);
        assert_eq!(faults.apply("ReadAt", 10), 10, "none left");
    }

    #[test]
    fn short_leaves_small_results_and_errors_alone() {
        let faults = FaultQueue::default();
        faults.push([Fault::Short(8), Fault::Short(8)]);
        assert_eq!(faults.apply("ReadAt", 5), 5);
        assert_eq!(faults.apply("ReadAt", -libc::EBADF), -libc::EBADF);
        assert_eq!(faults.pending(), 0);
    }
}
