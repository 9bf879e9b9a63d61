//! The operations, one file per kind. Each defines an [`OpKind`] (its
//! arguments and owned resources, how it becomes an SQE, and how its CQE
//! becomes an output); [`Context`](crate::Context) and
//! [`fs::File`](crate::fs::File) start them.
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

use std::os::fd::{AsRawFd, RawFd};

pub(crate) mod blocking;
pub(crate) mod nop;
pub(crate) mod open;
pub(crate) mod raw;
pub(crate) mod rw;
pub(crate) mod statx;
pub(crate) mod sync;
pub(crate) mod timeout;
pub(crate) mod vectored;

pub use crate::op::{Cqe, Op, OpKind};
pub use nop::Nop;
pub use open::{Close, OpenAt};
pub use raw::{RawCompletion, RawOp};
pub use rw::{ReadAt, WriteAt};
pub use statx::{Metadata, Statx};
pub use sync::{Fallocate, Fsync, Ftruncate};
pub use timeout::Timeout;
pub use vectored::{ReadvAt, WritevAt};

/// The fd a file's op works on. The op's anchor (the file's shared state, see
/// `op::Anchor`) keeps it open until the op's cell is freed, so its number
/// cannot be closed and reused while the kernel or a pool thread uses it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileFd(pub(crate) RawFd);

impl AsRawFd for FileFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
