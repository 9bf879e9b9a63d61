//! The core's shutdown: close the inbox, fail what never reached the kernel,
//! cancel what is in it, and wait for the kernel to finish with all of it
//! before the ring closes (invariants 4 and 7), however the driver ended.

use std::time::{Duration, Instant};

use crate::backend::common::Common;
use crate::error::{Cqe, shutdown_error};
use crate::inbox::Inbox;
use crate::ring::Ring;

use super::core::Core;
use super::submit::Request;

/// How long shutdown waits for the kernel to finish cancelled ops before it
/// gives up and leaks their resources rather than free memory still in use.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

impl Core {
    /// Closes the inbox, fails everything not yet in the kernel, cancels
    /// everything in it, and waits for the kernel to finish with all of it.
    /// Idempotent.
    pub(super) fn shut_down(&mut self, inbox: &Inbox<Request>, common: &Common) {
        common.shutdown.raise();
        let mut not_submitted = Vec::new();
        for request in inbox.close() {
            match request {
                Request::Submit(submission) => not_submitted.push(submission),
                // Registered resources leave their table while it exists.
                Request::Release(release) => self.release(release),
                Request::Cancel(_) => {}
            }
        }
        if !self.closing {
            tracing::debug!(in_flight = self.slots.len(), "aioctx ring shutting down");
        }
        self.closing = true;
        for submission in not_submitted {
            submission.op.complete(Cqe::not_run(shutdown_error()));
        }
        self.drain();
    }

    /// Fails the backlog, cancels every op in the kernel and waits for its
    /// CQE; past [`SHUTDOWN_DRAIN_LIMIT`] leaks what is left rather than free
    /// memory the kernel may still write.
    fn drain(&mut self) {
        // Every op in flight is cancelled below, these with the rest.
        self.pending_cancels.clear();
        for submission in self.backlog.drain(..) {
            submission.op.complete(Cqe::not_run(shutdown_error()));
        }
        for user_data in self.slots.all_user_data() {
            let entry = Ring::cancel_entry(user_data);
            // SAFETY: a cancel SQE points at no memory.
            if unsafe { self.ring.push(&entry) } {
                continue;
            }
            // SQ full: what is queued goes in first (an SQPOLL ring's thread
            // takes it), then this cancel.
            if let Err(e) = self.ring.make_room() {
                tracing::error!(error = %e, "io_uring_enter failed during shutdown");
            }
            // SAFETY: as above.
            if !unsafe { self.ring.push(&entry) } {
                tracing::error!(
                    user_data,
                    "no room for a cancel during shutdown; its op runs to its end"
                );
            }
        }
        // Nothing is timed during the drain.
        self.dwell.clear();
        let deadline = Instant::now() + SHUTDOWN_DRAIN_LIMIT;
        while !self.slots.is_empty() {
            if Instant::now() >= deadline {
                tracing::error!(
                    leaked = self.slots.len(),
                    "ops still in the kernel after shutdown's drain limit; leaking their buffers"
                );
                self.slots.leak();
                break;
            }
            if let Err(e) = self
                .ring
                .enter_and_wait_timeout(1, Duration::from_millis(100))
            {
                tracing::error!(error = %e, "io_uring_enter failed during shutdown; leaking what is in flight");
                self.slots.leak();
                break;
            }
            let slots = &mut self.slots;
            self.ring.reap(|user_data, res, flags| {
                if let Some((op, _)) = slots.remove(user_data) {
                    op.complete(Cqe::from_raw(res, flags));
                }
            });
        }
    }
}

impl Drop for Core {
    /// A core dropped without a shutdown (its driver ended some other way)
    /// still lets the kernel finish with every op before the ring closes
    /// (invariants 4 and 7).
    fn drop(&mut self) {
        if !self.slots.is_empty() || !self.backlog.is_empty() {
            self.closing = true;
            self.drain();
        }
    }
}
