//! `IORING_OP_TIMEOUT`: a timer that runs in the kernel, on the ring.

use std::io;
use std::time::Duration;

use crate::context::Context;
use crate::op::sealed::Sealed;
use crate::op::{Cqe, Op, OpKind};
use crate::ring::{Sqe, op, ty};

/// The arguments of [`Context::timeout`]: the timespec the kernel reads,
/// owned by the op so it outlives the SQE.
#[derive(Debug)]
pub struct Timeout {
    timespec: ty::Timespec,
    duration: Duration,
}

/// The fallback's timeout: a pool thread sleeps (real time, like the ring's).
#[doc(hidden)]
#[derive(Debug)]
pub struct Sleep(Duration);

impl crate::op::BlockingCall for Sleep {
    fn run(&mut self) -> Cqe {
        std::thread::sleep(self.0);
        Cqe::from_raw(-libc::ETIME, 0)
    }
}

impl Sealed for Timeout {}

impl OpKind for Timeout {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        op::Timeout::new(&self.timespec).build()
    }

    type Blocking = Sleep;

    fn blocking(&mut self) -> Sleep {
        Sleep(self.duration)
    }

    fn simulate(&mut self, _files: &mut crate::sim::Files) -> Cqe {
        Cqe::from_raw(-libc::ETIME, 0)
    }

    fn sim_delay(&self) -> Duration {
        self.duration
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        match cqe.result {
            // A pure timeout "fails" with ETIME when it fires: that is success.
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            other => other.map(drop),
        }
    }
}

impl Context {
    /// Resolves after `duration`, timed by the kernel (`CLOCK_MONOTONIC`, real
    /// time: Tokio's paused clock does not apply).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    ///
    /// # Errors
    ///
    /// `ECANCELED` if the context shut down first; a shutdown error if it had
    /// already.
    pub fn timeout(&self, duration: Duration) -> Op<Timeout> {
        Op::new(
            self.shared().clone(),
            Timeout {
                timespec: ty::Timespec::from(duration),
                duration,
            },
        )
    }
}
