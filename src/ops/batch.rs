//! [`BatchOp`]: reads and writes submitted together as one op, which resolves
//! once all of them are done, with one wake of its task.
//!
//! Each member is a [`ReadAt`] or [`WriteAt`] of its own, with its own
//! buffer, offset and file; the batch reuses their SQEs, blocking calls and
//! simulations, and records each member's outcome as it comes:
//!
//! ```text
//!   ring       one SQE per member, all under the batch's one slot; each
//!              member's CQE lands in the batch; the last completes it
//!   fallback   one blocking call that runs the members in turn on a pool thread
//!   sim        the members run in an order drawn from the seed
//! ```
//!
//! A member whose input is invalid (an offset past `i64::MAX`, a registered
//! buffer for another context's fds) fails on its own, with the error the
//! same op would have alone; the others run.

use std::any::Any;
use std::io;
use std::sync::Arc;

use crate::buf::IoBufMut;
use crate::error::{Cqe, cancelled};
use crate::ops::blocking::{BlockingCall, Positional};
use crate::ops::simulated::SimFs;
use crate::ops::{BlockingOp, Fallback, OpKind, Operation, ReadAt, SimulatedOp, UringOp, WriteAt};
use crate::ring::Sqe;

/// The most members one batch may have (member indexes share the SQE's
/// `user_data` with the slot and its generation).
pub(crate) const MAX_MEMBERS: usize = 1 << 12;

/// Reads and writes that run as one op, built with [`fs::Batch`](crate::fs::Batch) or
/// [`File::read_batch`](crate::fs::File::read_batch).
///
/// Its output is each member's result with its buffer, in the order the
/// members were added.
pub struct BatchOp<B> {
    members: Vec<Member<B>>,
    /// Each member's outcome, once known.
    outcomes: Vec<Option<Cqe>>,
    /// The files the members name, kept open until the batch is over.
    _files: Vec<Arc<dyn Any + Send + Sync>>,
}

enum Member<B> {
    Read(ReadAt<B>),
    Write(WriteAt<B>),
}

impl<B> std::fmt::Debug for BatchOp<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchOp")
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl<B: IoBufMut> BatchOp<B> {
    pub(crate) fn new() -> BatchOp<B> {
        BatchOp {
            members: Vec::new(),
            outcomes: Vec::new(),
            _files: Vec::new(),
        }
    }

    pub(crate) fn push_read(&mut self, read: ReadAt<B>) {
        self.members.push(Member::Read(read));
        self.outcomes.push(None);
    }

    pub(crate) fn push_write(&mut self, write: WriteAt<B>) {
        self.members.push(Member::Write(write));
        self.outcomes.push(None);
    }

    /// Keeps `file` (the handle to one of the members' files) open for as
    /// long as the batch.
    pub(crate) fn keep(&mut self, file: Arc<dyn Any + Send + Sync>) {
        self._files.push(file);
    }

    /// Records the outcome of invalid members, which run nowhere; returns
    /// whether any member is left to run.
    fn refuse_invalid(&mut self) -> bool {
        let mut runnable = false;
        for (member, outcome) in self.members.iter().zip(&mut self.outcomes) {
            let valid = match member {
                Member::Read(read) => read.validate(),
                Member::Write(write) => write.validate(),
            };
            match valid {
                Ok(()) if outcome.is_none() => runnable = true,
                Ok(()) => {}
                Err(e) => *outcome = Some(Cqe::not_run(e)),
            }
        }
        runnable
    }

    /// The members still to run, by index.
    fn to_run(&self) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(index, _)| index)
    }
}

impl<B: IoBufMut> OpKind for BatchOp<B> {
    type Output = Vec<(io::Result<usize>, B)>;
}

impl<B: IoBufMut> Operation for BatchOp<B> {
    type Resolved = Vec<(io::Result<usize>, B)>;

    fn validate(&self) -> io::Result<()> {
        if self.members.len() > MAX_MEMBERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a batch of {} ops: at most {MAX_MEMBERS} fit in one",
                    self.members.len()
                ),
            ));
        }
        Ok(())
    }

    fn complete(self, cqe: Cqe) -> Self::Resolved {
        // A member without an outcome never ran: the batch as a whole was
        // refused or shut down before it did (each such member gets that
        // error), or its member was never handed over (cancelled).
        let whole = cqe.result.err();
        let never_ran = || {
            let error = match &whole {
                Some(e) if crate::error::is_shutdown(e) => crate::error::shutdown_error(),
                Some(e) => match e.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(e.kind(), e.to_string()),
                },
                None => cancelled(),
            };
            Cqe::not_run(error)
        };
        self.members
            .into_iter()
            .zip(self.outcomes)
            .map(|(member, outcome)| {
                let cqe = outcome.unwrap_or_else(never_ran);
                match member {
                    Member::Read(read) => read.complete(cqe),
                    Member::Write(write) => write.complete(cqe),
                }
            })
            .collect()
    }
}

impl<B: IoBufMut> UringOp for BatchOp<B> {
    const BATCH: bool = true;

    fn sqe(&mut self) -> Sqe {
        unreachable!("a batch submits batch_sqes")
    }

    fn batch_sqes(&mut self) -> Vec<(u16, Sqe)> {
        self.refuse_invalid();
        let runnable: Vec<usize> = self.to_run().collect();
        runnable
            .into_iter()
            .map(|index| {
                let sqe = match &mut self.members[index] {
                    Member::Read(read) => read.sqe(),
                    Member::Write(write) => write.sqe(),
                };
                (index as u16, sqe)
            })
            .collect()
    }

    fn member_done(&mut self, member: u16, cqe: Cqe) {
        self.outcomes[usize::from(member)] = Some(cqe);
    }

    fn names_fixed_file(&self) -> bool {
        self.members.iter().any(|member| match member {
            Member::Read(read) => read.names_fixed_file(),
            Member::Write(write) => write.names_fixed_file(),
        })
    }

    /// Each member: with `None`, by its own fd; with a slot, which only a
    /// batch of one file's members is given, by that file's slot.
    fn name_file_by(&mut self, slot: Option<u32>) {
        for member in &mut self.members {
            match member {
                Member::Read(read) => read.name_file_by(slot),
                Member::Write(write) => write.name_file_by(slot),
            }
        }
    }
}

/// The fallback's call for a batch: each runnable member's call, in turn.
pub struct BatchCall {
    calls: Vec<(usize, Positional, Option<Cqe>)>,
}

impl std::fmt::Debug for BatchCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCall")
            .field("members", &self.calls.len())
            .finish()
    }
}

impl BlockingCall for BatchCall {
    fn run(&mut self) -> Cqe {
        for (_, call, outcome) in &mut self.calls {
            *outcome = Some(call.run());
        }
        Cqe::from_raw(0, 0)
    }
}

impl<B: IoBufMut> BlockingOp for BatchOp<B> {
    type Call = BatchCall;

    fn fallback(&mut self) -> Fallback<BatchCall> {
        self.refuse_invalid();
        let runnable: Vec<usize> = self.to_run().collect();
        let calls = runnable
            .into_iter()
            .map(|index| {
                let run = match &mut self.members[index] {
                    Member::Read(read) => read.fallback(),
                    Member::Write(write) => write.fallback(),
                };
                let Fallback::Call(call) = run else {
                    unreachable!("reads and writes are blocking calls")
                };
                (index, call, None)
            })
            .collect();
        Fallback::Call(BatchCall { calls })
    }

    fn land(&mut self, call: BatchCall, _cqe: &mut Cqe) {
        for (index, call, outcome) in call.calls {
            let mut cqe = outcome.unwrap_or_else(|| Cqe::not_run(cancelled()));
            match &mut self.members[index] {
                Member::Read(read) => read.land(call, &mut cqe),
                Member::Write(write) => write.land(call, &mut cqe),
            }
            self.outcomes[index] = Some(cqe);
        }
    }
}

impl<B: IoBufMut> SimulatedOp for BatchOp<B> {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        self.refuse_invalid();
        let runnable: Vec<usize> = self.to_run().collect();
        for position in fs.order(runnable.len()) {
            let index = runnable[position];
            let cqe = match &mut self.members[index] {
                Member::Read(read) => read.simulate(fs),
                Member::Write(write) => write.simulate(fs),
            };
            self.outcomes[index] = Some(cqe);
        }
        Cqe::from_raw(0, 0)
    }
}
