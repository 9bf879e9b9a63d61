//! `IORING_OP_TIMEOUT`: a timer that runs in the kernel, on the ring.

use std::io;
use std::time::Duration;

use crate::error::Cqe;
use crate::ops::simulated::SimFs;
use crate::ops::{BlockingOp, Fallback, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::Timeout::CODE, "TIMEOUT");

/// The arguments of [`Context::timeout`](crate::Context::timeout): the
/// timespec the kernel reads, owned by the op so it outlives the SQE.
#[derive(Debug)]
pub struct Timeout {
    timespec: ty::Timespec,
    duration: Duration,
}

impl Timeout {
    pub(crate) fn new(duration: Duration) -> Timeout {
        Timeout {
            timespec: ty::Timespec::from(duration),
            duration,
        }
    }
}

impl OpKind for Timeout {
    type Output = io::Result<()>;
}

impl Operation for Timeout {
    type Resolved = io::Result<()>;

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        match cqe.result {
            // A pure timeout "fails" with ETIME when it fires: that is success.
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            other => other.map(drop),
        }
    }
}

impl UringOp for Timeout {
    fn sqe(&mut self) -> Sqe {
        op::Timeout::new(&self.timespec).build()
    }
}

impl BlockingOp for Timeout {
    type Call = ();

    fn fallback(&mut self) -> Fallback<()> {
        // A Tokio timer that a dropped future cancels, not a pool thread
        // asleep for the whole duration.
        Fallback::Wait(self.duration)
    }
}

impl SimulatedOp for Timeout {
    fn simulate(&mut self, _fs: &mut dyn SimFs) -> Cqe {
        Cqe::from_raw(-libc::ETIME, 0)
    }

    fn sim_delay(&self) -> Duration {
        self.duration
    }
}
