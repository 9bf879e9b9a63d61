//! `IORING_OP_NOP`: a round trip through the ring that does nothing.

use std::io;

use crate::error::Cqe;
use crate::ops::simulated::SimFs;
use crate::ops::{BlockingOp, Fallback, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op};

pub(crate) const OPCODE: Opcode = (op::Nop::CODE, "NOP");

/// The arguments of [`Context::nop`](crate::Context::nop) (it has none).
#[derive(Debug)]
pub struct Nop(());

impl Nop {
    pub(crate) fn new() -> Nop {
        Nop(())
    }
}

impl OpKind for Nop {
    type Output = io::Result<()>;
}

impl Operation for Nop {
    type Resolved = io::Result<()>;

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for Nop {
    fn sqe(&mut self) -> Sqe {
        op::Nop::new().build()
    }
}

impl BlockingOp for Nop {
    type Call = ();

    fn fallback(&mut self) -> Fallback<()> {
        // A round trip through the pool, as a NOP is one through the ring.
        Fallback::Call(())
    }
}

impl SimulatedOp for Nop {
    fn simulate(&mut self, _fs: &mut dyn SimFs) -> Cqe {
        Cqe::from_raw(0, 0)
    }
}
