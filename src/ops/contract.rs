//! What the backends need of an op: one trait per backend, behind the
//! sealed public [`OpKind`](super::OpKind).
//!
//! These traits (and the types in their signatures) are declared `pub`
//! inside this private module: the sealed-trait pattern. The public `OpKind`
//! can then require them as its supertrait, so any `OpKind` has what the
//! backends need, while nothing outside the crate can name, implement or call
//! them, and the public docs list none of their methods.

#![allow(unreachable_pub)]

use std::io;
use std::time::Duration;

use crate::error::Cqe;
use crate::ring::Sqe;

use super::Opcode;
use super::blocking::BlockingCall;
use super::simulated::SimFs;

/// Links [`OpKind`](super::OpKind) to [`Operation`]; implemented for every
/// operation.
pub trait Sealed: Operation {}

impl<K: Operation> Sealed for K {}

/// What every backend needs of an op.
pub trait Operation: Send + 'static + UringOp + BlockingOp + SimulatedOp {
    /// What the op's future resolves to: `OpKind::Output`.
    type Resolved;

    /// Refuses input that no backend may run, before any backend sees it
    /// (an offset the kernel would read as "the current position").
    fn validate(&self) -> io::Result<()> {
        Ok(())
    }

    /// Turns the completion into the future's output, handing resources back.
    fn complete(self, cqe: Cqe) -> Self::Resolved;

    /// Called instead of [`complete`](Self::complete) when the future was
    /// dropped before the op finished. Ops that produce a resource (an opened
    /// fd) or took one over (an fd to close) release it here; the default
    /// just drops `self`.
    fn abandon(self, cqe: Cqe)
    where
        Self: Sized,
    {
        let _ = cqe;
    }
}

/// How the ring runs an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRing {
    /// Its SQE, always: the opcode is one the ring must have, probed at
    /// setup (where the kernel lacks one, `Backend::Auto` falls back).
    Sqe,
    /// Its SQE where the kernel's probe found this opcode, and its blocking
    /// call on the home runtime's blocking pool where it did not (a kernel
    /// older than the opcode): never an error, never a reason to fall back.
    IfProbed(Opcode),
    /// Its blocking call: io_uring has no opcode for it.
    Blocking,
}

/// What the ring needs of an op.
pub trait UringOp {
    /// Whether the op is a batch: several SQEs, from
    /// [`batch_sqes`](UringOp::batch_sqes), instead of one from
    /// [`sqe`](UringOp::sqe).
    const BATCH: bool = false;

    /// How the ring runs the op; [`sqe`](UringOp::sqe) is called only when
    /// it runs on the ring.
    const ON_RING: OnRing = OnRing::Sqe;

    /// Builds the SQE. Called once, with `self` at its final address (inside
    /// the op's cell), so pointers into `self` stay valid until completion.
    fn sqe(&mut self) -> Sqe;

    /// A batch's SQEs, each with its member's index: called once instead of
    /// `sqe`, as `sqe` is. Members not listed (refused) have their outcome
    /// already.
    fn batch_sqes(&mut self) -> Vec<(u16, Sqe)> {
        Vec::new()
    }

    /// Records the completion of a batch's member.
    fn member_done(&mut self, member: u16, cqe: Cqe) {
        let _ = (member, cqe);
    }

    /// Whether the op's SQE names its file by a slot of the ring's file
    /// table (`IOSQE_FIXED_FILE`) rather than by its fd.
    fn names_fixed_file(&self) -> bool {
        false
    }

    /// Makes the op name its file by `slot` of the file table of the ring
    /// it goes to (`fs::File::op`), or with `None` by its fd (it goes to
    /// another ring than the one whose table its slot is in; see
    /// `backend/worker`). Called before the SQE is built; nothing for an
    /// op that names no file.
    fn name_file_by(&mut self, slot: Option<u32>) {
        let _ = slot;
    }
}

/// What the thread-pool fallback needs of an op.
pub trait BlockingOp {
    /// The blocking syscall the fallback runs on a pool thread. It owns
    /// everything it touches (bounce buffers, fd clones), so the op's own
    /// resources are never in use by a thread the future cannot see.
    type Call: BlockingCall;

    /// How the fallback runs the op. Called once, on submission.
    fn fallback(&mut self) -> Fallback<Self::Call>;

    /// Lands a finished call's results in the op (copying read data into the
    /// caller's buffer), before [`Operation::complete`] sees `cqe`.
    fn land(&mut self, call: Self::Call, cqe: &mut Cqe) {
        let _ = (call, cqe);
    }
}

/// How the fallback runs an op.
#[derive(Debug)]
pub enum Fallback<C> {
    /// A blocking syscall on a pool thread.
    Call(C),
    /// Nothing but waiting (a timeout): a Tokio timer on the home runtime,
    /// which a dropped future cancels, rather than a sleeping pool thread.
    Wait(Duration),
}

/// What the simulated backend needs of an op.
pub trait SimulatedOp {
    /// Runs the op against the simulator's in-memory files, when its
    /// simulated latency has passed.
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe;

    /// Simulated time the op takes beyond the configured latency (a
    /// timeout's duration).
    fn sim_delay(&self) -> Duration {
        Duration::ZERO
    }
}
