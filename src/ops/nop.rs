//! `IORING_OP_NOP`: a round trip through the ring that does nothing.

use std::io;

use crate::context::Context;
use crate::op::sealed::Sealed;
use crate::op::{Cqe, Op, OpKind};
use crate::ring::{Sqe, op};

/// The arguments of [`Context::nop`] (it has none).
#[derive(Debug)]
pub struct Nop(());

impl Sealed for Nop {}

impl OpKind for Nop {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        op::Nop::new().build()
    }

    type Blocking = ();

    fn blocking(&mut self) {}

    fn simulate(&mut self, _files: &mut crate::sim::Files) -> Cqe {
        Cqe::from_raw(0, 0)
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl Context {
    /// Submits a no-op and resolves when its completion comes back: the
    /// cheapest way to measure the path through the ring.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    ///
    /// # Errors
    ///
    /// Only if the context has shut down ([`is_shutdown`](crate::is_shutdown)).
    pub fn nop(&self) -> Op<Nop> {
        Op::new(self.shared().clone(), Nop(()))
    }
}
