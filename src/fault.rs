//! Test-only fault injection on the ring and the fallback: completions of
//! data transfers and fsyncs that come back as an error or cut short, as a
//! kernel may return them, so that tests can check what the crate (and the
//! code on it) does with them. A leaf: imports only `error`.
//!
//! Compiled only with the `fault-injection` cargo feature (off by default).
//! A test queues [`Fault`]s with `Context::inject_faults` (for transfers:
//! `read_at`, `write_at`, `readv_at`, `writev_at`, and the reads and writes
//! that `read_exact_at` and `write_all_at` issue) or
//! `Context::inject_sync_faults` (for `sync_all` and `sync_data`); the ring's
//! driver applies them in order, one per completion of an op of that kind,
//! when it reaps the CQE, and the fallback when the blocking call returns.
//! Other ops never get a fault: a faked error on an `openat` would leak the
//! fd the kernel did open.
//!
//! A fault changes only what is *reported*: the kernel did the op. Bytes a
//! read reported short or failed may have landed in the buffer past what the
//! future says was read, a write reported failed may have written, and an
//! fsync reported failed did reach the disk; the buffer is the caller's
//! again either way. (The simulator models what a real writeback error does
//! to the data: see its `SimConfig::fault` on fsync.)

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use crate::error::Cqe;

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

/// The op kinds (their type names) whose completions get transfer faults.
const TRANSFERS: &[&str] = &["ReadAt", "WriteAt", "ReadvAt", "WritevAt"];

/// The op kind whose completions get sync faults.
const SYNC: &str = "Fsync";

/// Faults waiting for completions, shared by every thread that injects and
/// the driver that applies them.
#[derive(Default)]
pub(crate) struct FaultQueue {
    queue: Mutex<Queues>,
}

/// One queue per kind of op a fault is for.
#[derive(Default)]
struct Queues {
    transfers: VecDeque<Fault>,
    syncs: VecDeque<Fault>,
}

impl fmt::Debug for FaultQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultQueue")
            .field("pending", &self.pending())
            .finish()
    }
}

impl FaultQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `faults` for transfers, after those already waiting.
    pub(crate) fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().transfers.extend(faults);
    }

    /// Queues `faults` for fsyncs, after those already waiting.
    pub(crate) fn push_syncs(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().syncs.extend(faults);
    }

    /// Faults not yet applied.
    pub(crate) fn pending(&self) -> usize {
        let queues = self.lock();
        queues.transfers.len() + queues.syncs.len()
    }

    /// The result a completion of an op of kind `kind` reports: `res` as the
    /// kernel posted it, or changed by the next fault of its kind's queue if
    /// `kind` is a transfer or an fsync.
    pub(crate) fn apply(&self, kind: &str, res: i32) -> i32 {
        let fault = {
            let mut queues = self.lock();
            if TRANSFERS.contains(&kind) {
                queues.transfers.pop_front()
            } else if kind == SYNC {
                queues.syncs.pop_front()
            } else {
                None
            }
        };
        let Some(fault) = fault else {
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

    /// [`apply`](FaultQueue::apply) to a blocking call's result, as the
    /// fallback posts it: an error without an errno passes as it is.
    pub(crate) fn apply_to_cqe(&self, kind: &str, cqe: &mut Cqe) {
        let res = match &cqe.result {
            Ok(n) => (*n).min(i32::MAX as u32) as i32,
            Err(e) => match e.raw_os_error() {
                Some(errno) => -errno,
                None => return,
            },
        };
        let changed = self.apply(kind, res);
        if changed != res {
            *cqe = Cqe::from_raw(changed, cqe.flags);
        }
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
    fn sync_faults_hit_fsyncs_only() {
        let faults = FaultQueue::default();
        faults.push_syncs([Fault::Errno(libc::EIO)]);
        faults.push([Fault::Short(1)]);
        assert_eq!(faults.apply("WriteAt", 5), 1, "the transfer's own fault");
        assert_eq!(faults.apply("Fsync", 0), -libc::EIO);
        assert_eq!(faults.apply("Fsync", 0), 0, "reported once");
        assert_eq!(faults.pending(), 0);
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
