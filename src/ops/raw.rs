//! The escape hatch: an SQE built by the caller, together with the resources
//! it points at, like QEMU's `aio_add_sqe(prep, opaque, cqe_handler)`. See
//! [`Context::submit_raw`](crate::Context::submit_raw).

use std::io;

use crate::error::{Cqe, unsupported};
use crate::ops::blocking::BlockingCall;
use crate::ops::simulated::SimFs;
use crate::ops::{BlockingOp, Fallback, OpKind, Operation, SimulatedOp, UringOp};
use crate::ring::Sqe;

const RAW_UNSUPPORTED: &str = "submit_raw needs the io_uring backend";

/// The arguments of [`Context::submit_raw`](crate::Context::submit_raw): an
/// SQE and what it borrows.
pub struct RawOp<R> {
    entry: Sqe,
    resources: R,
}

impl<R> RawOp<R> {
    /// # Safety
    ///
    /// As [`Context::submit_raw`](crate::Context::submit_raw): every pointer
    /// and fd in `entry` stays valid until the op completes.
    pub(crate) unsafe fn new(entry: Sqe, resources: R) -> RawOp<R> {
        RawOp { entry, resources }
    }
}

impl<R> std::fmt::Debug for RawOp<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOp")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// What a raw op resolves to: the CQE's result and flags, and the resources
/// handed back.
#[derive(Debug)]
pub struct RawCompletion<R> {
    /// `res` of the CQE: a non-negative value, or the kernel's errno.
    pub result: io::Result<u32>,
    /// `flags` of the CQE.
    pub flags: u32,
    /// The resources passed to [`Context::submit_raw`](crate::Context::submit_raw).
    pub resources: R,
}

impl<R: Send + 'static> OpKind for RawOp<R> {
    type Output = RawCompletion<R>;
}

impl<R: Send + 'static> Operation for RawOp<R> {
    type Resolved = RawCompletion<R>;

    fn complete(self, cqe: Cqe) -> RawCompletion<R> {
        RawCompletion {
            result: cqe.result,
            flags: cqe.flags,
            resources: self.resources,
        }
    }
}

impl<R: Send + 'static> UringOp for RawOp<R> {
    fn sqe(&mut self) -> Sqe {
        self.entry.clone()
    }
}

impl<R: Send + 'static> BlockingOp for RawOp<R> {
    type Call = Refuse;

    fn fallback(&mut self) -> Fallback<Refuse> {
        Fallback::Call(Refuse)
    }
}

/// The fallback's answer to a raw SQE, which it cannot run.
#[derive(Debug)]
pub struct Refuse;

impl BlockingCall for Refuse {
    fn run(&mut self) -> Cqe {
        Cqe::error(unsupported(RAW_UNSUPPORTED))
    }
}

impl<R: Send + 'static> SimulatedOp for RawOp<R> {
    fn simulate(&mut self, _fs: &mut dyn SimFs) -> Cqe {
        Cqe::error(unsupported(RAW_UNSUPPORTED))
    }
}
