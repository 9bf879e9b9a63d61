//! The operations, one file per kind. Each defines an [`OpKind`] (its
//! arguments and owned resources, how it becomes an SQE, and how its CQE
//! becomes an output) and the `Context` method that starts it.
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
//! effect: a dropped write may have written.
//!
//! [`OpKind`]: crate::op::OpKind

pub(crate) mod nop;
pub(crate) mod raw;
pub(crate) mod timeout;

pub use crate::op::{Cqe, Op, OpKind};
pub use nop::Nop;
pub use raw::{RawCompletion, RawOp};
pub use timeout::Timeout;
