//! The test-only fault-injection controls on [`Context`], compiled with the
//! `fault-injection` cargo feature; what a fault does is in `fault`.

use std::io;

use crate::context::Context;
use crate::fault::Fault;

impl Context {
    /// Queues `faults` for the completions of this context's next transfers
    /// (`read_at`, `write_at`, `readv_at`, `writev_at`, and the reads and
    /// writes `read_exact_at` and `write_all_at` issue), one fault per
    /// completion, in order, after any still waiting. See [`Fault`].
    ///
    /// Test-only: present with the `fault-injection` feature.
    ///
    /// # Errors
    ///
    /// `Unsupported` off io_uring: only the ring has completions to change
    /// (the simulator has fault injection of its own, in `SimConfig`).
    pub fn inject_faults(&self, faults: impl IntoIterator<Item = Fault>) -> io::Result<()> {
        let queue = self.shared().backend.faults().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "fault injection works on the io_uring backend only",
            )
        })?;
        queue.push(faults);
        Ok(())
    }

    /// Faults queued by [`inject_faults`](Context::inject_faults) and not yet
    /// applied (0 off io_uring).
    pub fn pending_faults(&self) -> usize {
        self.shared()
            .backend
            .faults()
            .map_or(0, |queue| queue.pending())
    }
}
