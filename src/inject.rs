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
    /// `Unsupported` on the simulator, which has fault injection of its own
    /// (in `SimConfig`).
    pub fn inject_faults(&self, faults: impl IntoIterator<Item = Fault>) -> io::Result<()> {
        self.fault_queue()?.push(faults);
        Ok(())
    }

    /// Queues `faults` for the completions of this context's next fsyncs
    /// (`sync_all`, `sync_data`, on files and directories), one fault per
    /// completion, in order: `Fault::Errno(libc::EIO)` makes an fsync report
    /// a writeback error, as the kernel does when the disk fails a write.
    /// Only the report changes: the kernel did write the data. See
    /// [`Fault`].
    ///
    /// Test-only: present with the `fault-injection` feature.
    ///
    /// # Errors
    ///
    /// `Unsupported` on the simulator, which models writeback errors itself
    /// (a `SimConfig::fault` on `SimOp::Fsync`).
    pub fn inject_sync_faults(&self, faults: impl IntoIterator<Item = Fault>) -> io::Result<()> {
        self.fault_queue()?.push_syncs(faults);
        Ok(())
    }

    /// Test-only: from now on, the ring runs the namespace ops whose opcodes
    /// are named in `opcodes` (`"RENAMEAT"`, `"UNLINKAT"`, `"MKDIRAT"`,
    /// `"LINKAT"`, `"SYMLINKAT"`) as blocking calls, as it does on a kernel
    /// that lacks them; [`RingFlags::namespace_blocking`](crate::RingFlags)
    /// and [`Metrics::ops_blocking`](crate::Metrics) say so.
    ///
    /// # Errors
    ///
    /// `Unsupported` off io_uring; `InvalidInput` for another name.
    pub fn hide_opcodes(&self, opcodes: &[&str]) -> io::Result<()> {
        self.shared().backend.hide_opcodes(opcodes)
    }

    fn fault_queue(&self) -> io::Result<&crate::fault::FaultQueue> {
        self.shared().backend.faults().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "fault injection works on the io_uring and fallback backends only",
            )
        })
    }

    /// Faults queued by [`inject_faults`](Context::inject_faults) and
    /// [`inject_sync_faults`](Context::inject_sync_faults) and not yet
    /// applied (0 on the simulator).
    pub fn pending_faults(&self) -> usize {
        self.shared()
            .backend
            .faults()
            .map_or(0, |queue| queue.pending())
    }
}
