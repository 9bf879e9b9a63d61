//! The escape hatch: submit an SQE built by the caller, together with the
//! resources it points at, like QEMU's `aio_add_sqe(prep, opaque, cqe_handler)`.

use std::io;

use crate::context::Context;
use crate::op::sealed::Sealed;
use crate::op::{Cqe, Op, OpKind};
use crate::ops::blocking::Refuse;
use crate::ring::Sqe;

const RAW_UNSUPPORTED: &str = "submit_raw needs the io_uring backend";

/// The arguments of [`Context::submit_raw`]: an SQE and what it borrows.
pub struct RawOp<R> {
    entry: Sqe,
    resources: R,
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
    /// The resources passed to [`Context::submit_raw`].
    pub resources: R,
}

impl<R> Sealed for RawOp<R> {}

impl<R: Send + 'static> OpKind for RawOp<R> {
    type Output = RawCompletion<R>;

    fn sqe(&mut self) -> Sqe {
        self.entry.clone()
    }

    type Blocking = Refuse;

    fn blocking(&mut self) -> Refuse {
        Refuse(RAW_UNSUPPORTED)
    }

    fn simulate(&mut self, _files: &mut crate::sim::Files) -> Cqe {
        Cqe::error(crate::op::unsupported(RAW_UNSUPPORTED))
    }

    fn complete(self, cqe: Cqe) -> RawCompletion<R> {
        RawCompletion {
            result: cqe.result,
            flags: cqe.flags,
            resources: self.resources,
        }
    }
}

impl Context {
    /// Submits a caller-built SQE. `resources` are owned by the op until its
    /// CQE arrives, then handed back in the [`RawCompletion`], so memory the
    /// SQE points into can live there.
    ///
    /// The SQE's `user_data` is the driver's and is overwritten. Ops that post
    /// more than one CQE (multishot) are not supported: the op completes at
    /// the first.
    ///
    /// # Safety
    ///
    /// Every pointer and fd in `entry` must stay valid until the op completes:
    /// point only into heap memory owned by `resources` (a `Vec`'s or `Box`'s
    /// contents do not move when the value does), or into memory that lives
    /// for `'static`. The op must not outlive what it names in any other way.
    ///
    /// # Errors
    ///
    /// The op resolves with an `Unsupported` error (and the resources back)
    /// on the fallback and sim backends, which cannot run an arbitrary SQE.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub unsafe fn submit_raw<R: Send + 'static>(
        &self,
        entry: io_uring::squeue::Entry,
        resources: R,
    ) -> Op<RawOp<R>> {
        Op::new(self.shared().clone(), RawOp { entry, resources })
    }
}
