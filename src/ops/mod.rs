//! The operations, one file per kind, and what each backend needs of them.
//!
//! Users see an op as an [`OpKind`]: a sealed trait whose only item is the
//! future's output. What the backends need is crate-private, one trait each,
//! so the public docs show none of it:
//!
//! ```text
//!   OpKind (public: Output)
//!     └─ Operation      validate, complete, abandon          every backend
//!          ├─ UringOp       the SQE, at the op's final address    io_uring
//!          ├─ BlockingOp    the blocking call and its landing     fallback
//!          └─ SimulatedOp   the effect on in-memory files          sim
//! ```
//!
//! The backend traits live in the private `contract` module (see there for
//! why they are declared `pub`).
//!
//! Each op file declares its opcode; `OPCODES` collects the ones the ring
//! must have, probed at setup, and `OPTIONAL_OPCODES` the ones it may lack
//! (the namespace ops' opcodes and `FTRUNCATE`, newer than the rest): an op whose
//! optional opcode the kernel lacks, or which has no opcode at all (a
//! directory listing), runs on the ring as its blocking call
//! (`UringOp::ON_RING`, in `contract`). Adding an op is its
//! file, a line here, and a constructor on [`Context`](crate::Context),
//! [`File`](crate::fs::File) or in [`fs`](crate::fs).
//! This layer imports the protocols (`lifecycle`, `ring`) and the leaves,
//! never a backend or the surface.
//!
//! Every op is a `Send` future usable from any thread and any runtime, and
//! every op shares one cancel-safety contract, stated once here:
//!
//! # Cancel safety
//!
//! Dropping an op future before it resolves never blocks and never frees
//! memory the kernel may still write: the op's buffers and fds move to the
//! driver until the kernel reports the op done, and the driver asks the kernel
//! to cancel it (`IORING_OP_ASYNC_CANCEL`). The op itself may still take
//! effect: a dropped write may have written, and a dropped open's fd is closed
//! when it arrives.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::Cqe;
use crate::lifecycle::{BackendRef, Cell, OpCell, Payload};

/// Builds an SQE on a [`FileFd`]: `$target` is the file's slot in the ring's
/// file table where it has one (the SQE then carries `IOSQE_FIXED_FILE`),
/// its fd otherwise.
macro_rules! on_file {
    ($fd:expr, $target:ident => $build:expr) => {
        match $fd.slot() {
            Some(slot) => {
                let $target = $crate::ring::ty::Fixed(slot);
                $build
            }
            None => {
                let $target = $crate::ring::ty::Fd(std::os::fd::AsRawFd::as_raw_fd(&$fd));
                $build
            }
        }
    };
}

/// The [`UringOp`] methods of an op whose SQE names its file with
/// [`on_file!`] through its [`FileFd`] field `$fd`.
macro_rules! names_file_by {
    ($fd:ident) => {
        fn names_fixed_file(&self) -> bool {
            self.$fd.slot().is_some()
        }

        fn name_file_by(&mut self, slot: Option<u32>) {
            self.$fd = self.$fd.by(slot);
        }
    };
}

pub(crate) mod batch;
pub(crate) mod blocking;
mod contract;
pub(crate) mod direct;
pub(crate) mod link;
pub(crate) mod mkdir;
pub(crate) mod nop;
pub(crate) mod open;
pub(crate) mod path;
pub(crate) mod raw;
pub(crate) mod read_dir;
pub(crate) mod rename;
pub(crate) mod rw;
pub(crate) mod simulated;
pub(crate) mod statx;
pub(crate) mod symlink;
pub(crate) mod sync;
pub(crate) mod timeout;
pub(crate) mod unlink;
pub(crate) mod vectored;

pub use batch::{BatchCall, BatchOp};
pub use link::LinkAt;
pub use mkdir::MkdirAt;
pub use nop::Nop;
pub use open::{Close, OpenAt};
pub use raw::{RawCompletion, RawOp};
pub use read_dir::{DirEntry, FileType, ReadDir};
pub use rename::{RenameAt, RenameMode};
pub use rw::{ReadAt, WriteAt};
pub use statx::{Metadata, Statx};
pub use symlink::SymlinkAt;
pub use sync::{Fallocate, Fsync, Ftruncate};
pub use timeout::Timeout;
pub use unlink::UnlinkAt;
pub use vectored::{ReadvAt, WritevAt};

pub(crate) use contract::{BlockingOp, Fallback, OnRing, Operation, SimulatedOp, UringOp};
use simulated::SimFs;

/// An operation: its arguments and the resources it owns until it
/// completes. [`Op`](crate::Op) is the future that runs one.
///
/// Sealed: the crate's op types are the only implementations, because a
/// wrong SQE can make the kernel write freed memory. Submit a hand-built SQE
/// with [`Context::submit_raw`](crate::Context::submit_raw) instead.
pub trait OpKind: Send + 'static + contract::Sealed<Resolved = <Self as OpKind>::Output> {
    /// What the op's future resolves to.
    type Output;
}

/// An opcode the crate's ops use, with its name for error messages.
pub(crate) type Opcode = (u8, &'static str);

/// Every opcode the ops need, for the ring's probe at setup.
pub(crate) const OPCODES: &[Opcode] = &[
    nop::OPCODE,
    rw::READ,
    rw::WRITE,
    rw::READ_FIXED,
    rw::WRITE_FIXED,
    vectored::READV,
    vectored::WRITEV,
    sync::FSYNC,
    sync::FALLOCATE,
    open::OPENAT,
    open::CLOSE,
    statx::OPCODE,
    timeout::OPCODE,
];

/// The opcodes the ring may lack: the namespace ops' (kernels 5.11 and 5.15)
/// and `FTRUNCATE` (6.9). Where the probe does not find one, its op runs as a
/// blocking call, so a kernel from 5.6 on keeps every other op on the ring.
/// Each below 64, so a ring keeps them in one bit set.
pub(crate) const OPTIONAL_OPCODES: &[Opcode] = &[
    sync::FTRUNCATE,
    rename::OPCODE,
    unlink::OPCODE,
    mkdir::OPCODE,
    link::OPCODE,
    symlink::OPCODE,
];

const _: () = {
    let mut i = 0;
    while i < OPTIONAL_OPCODES.len() {
        assert!(
            OPTIONAL_OPCODES[i].0 < 64,
            "an optional opcode above the ring's bit set"
        );
        i += 1;
    }
};

impl<K: Operation> Payload for K {
    fn abandon(self, outcome: Cqe) {
        Operation::abandon(self, outcome);
    }
}

/// What a backend sees of an op in flight, whatever its type and anchor.
pub(crate) trait Inflight: Cell {
    /// Runs the op on the simulator's files.
    ///
    /// # Safety
    ///
    /// The caller holds the op's backend reference and has not completed it.
    unsafe fn simulate(&self, fs: &mut dyn SimFs) -> Cqe;

    /// Simulated time the op takes beyond the configured latency.
    ///
    /// # Safety
    ///
    /// As [`simulate`](Inflight::simulate).
    unsafe fn sim_delay(&self) -> Duration;

    /// Records the completion of member `member` of a batch.
    ///
    /// # Safety
    ///
    /// As [`simulate`](Inflight::simulate).
    unsafe fn member_done(&self, member: u16, cqe: Cqe);

    /// The op's type, for the simulator's completion log.
    fn kind_name(&self) -> &'static str;
}

impl<K: Operation, A: crate::lifecycle::CellAnchor> Inflight for OpCell<K, A> {
    unsafe fn simulate(&self, fs: &mut dyn SimFs) -> Cqe {
        // SAFETY: the caller holds the backend reference, uncompleted.
        unsafe { self.with_kind(|kind| kind.simulate(fs)) }.expect("an op in flight keeps its op")
    }

    unsafe fn sim_delay(&self) -> Duration {
        // SAFETY: as above.
        unsafe { self.with_kind(|kind| kind.sim_delay()) }.unwrap_or_default()
    }

    unsafe fn member_done(&self, member: u16, cqe: Cqe) {
        // SAFETY: the caller holds the backend reference, uncompleted.
        unsafe { self.with_kind(|kind| kind.member_done(member, cqe)) };
    }

    fn kind_name(&self) -> &'static str {
        let name = std::any::type_name::<K>();
        let base = name.split('<').next().unwrap_or(name);
        base.rsplit("::").next().unwrap_or(base)
    }
}

/// A backend's reference to an op in flight: completing it resolves the op's
/// future.
pub(crate) type OpRef = BackendRef<dyn Inflight>;

/// Erases an op's type for the backends' queues and tables.
pub(crate) fn erase<K: Operation, A: crate::lifecycle::CellAnchor>(
    op: BackendRef<OpCell<K, A>>,
) -> OpRef {
    op.erase(|cell| -> NonNull<dyn Inflight> { cell })
}

/// The fd a file's op works on, and its slot in the ring's file table if the
/// file is registered there. The op's anchor (the file's shared state) keeps
/// both until the op's cell is freed, so neither can be closed and reused
/// while the kernel or a pool thread uses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileFd {
    raw: RawFd,
    slot: Option<u32>,
}

impl FileFd {
    /// A file's fd, not registered.
    pub(crate) fn new(raw: RawFd) -> FileFd {
        FileFd { raw, slot: None }
    }

    /// A file's fd and its slot in the file table of the ring the op goes to.
    pub(crate) fn registered(raw: RawFd, slot: u32) -> FileFd {
        FileFd {
            raw,
            slot: Some(slot),
        }
    }

    /// The slot in the ring's file table, if the op uses one.
    pub(crate) fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// The same file, named by `slot` of the table of the ring the op goes
    /// to, or by its fd only.
    pub(crate) fn by(self, slot: Option<u32>) -> FileFd {
        FileFd {
            raw: self.raw,
            slot,
        }
    }
}

impl AsRawFd for FileFd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw
    }
}

/// Refuses an offset the kernel would misread: io_uring takes `-1` (`u64::MAX`)
/// as "the current file position", and every offset above `i64::MAX` is
/// negative to the kernel.
pub(crate) fn check_offset(offset: u64) -> io::Result<()> {
    if offset > i64::MAX as u64 {
        return Err(crate::error::invalid());
    }
    Ok(())
}
