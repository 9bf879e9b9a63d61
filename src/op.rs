//! [`Op`], the future that runs one operation.
//!
//! An op starts as an [`OpKind`](crate::ops::OpKind) value: the opcode's
//! arguments and the resources it owns (buffers, fds). On its first poll the
//! future moves it into a heap cell (`lifecycle`), hands the backend a
//! reference to the cell, and keeps the other:
//!
//! ```text
//!   future ──FutureHalf──► OpCell { state, waker, outcome, op, anchor } ◄──backend reference
//! ```
//!
//! The backend keeps its reference until the op is over (on the ring: until
//! the CQE arrives), so the kernel never writes memory that has been freed
//! (invariant 4), whatever the future does. A future dropped early gives its
//! reference to the backend as a cancel request; the op's resources are
//! released when the op is over. Where the op goes is decided by its anchor
//! (`pool/placement.rs`) at the first poll.

use std::task::{Context as TaskContext, Poll};
use std::{fmt, future::Future, pin::Pin};

use crate::backend::{Anchored, Placement, start};
use crate::lifecycle::FutureHalf;
use crate::ops::OpKind;
use crate::pool::placement::Anchor;

/// The future of one operation. Created unsubmitted; submitted on first poll.
///
/// Dropping it before it resolves is always safe and never blocks: the op's
/// resources go to the driver until the kernel is done with them, and the
/// driver asks the kernel to cancel the op. See [the ops
/// module](crate::ops#cancel-safety).
#[must_use = "ops do nothing unless polled"]
pub struct Op<K: OpKind> {
    flight: Flight<K, Anchor>,
}

impl<K: OpKind> fmt::Debug for Op<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("kind", &std::any::type_name::<K>())
            .field("stage", &self.flight.stage())
            .finish()
    }
}

impl<K: OpKind> Op<K> {
    pub(crate) fn new(anchor: Anchor, kind: K) -> Op<K> {
        Op {
            flight: Flight::new(anchor, kind),
        }
    }
}

impl<K: OpKind> Future for Op<K> {
    type Output = K::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        self.get_mut().flight.poll(cx)
    }
}

/// One op's way through its backend, whatever its anchor: what [`Op`] and
/// [`LocalOp`](crate::local::LocalOp) run.
pub(crate) struct Flight<K: OpKind, A: Anchored> {
    /// The op and its anchor until the first poll moves them into a cell.
    unsubmitted: Option<(K, A)>,
    /// The future's half of the op's cell, from the first poll until the op
    /// resolves. Apart from `unsubmitted`, so the collecting poll moves a
    /// pointer, not the op.
    half: Option<FutureHalf<K, A>>,
}

// Nothing in a flight is ever pinned: the kind moves into a heap cell on
// first poll, and the cell is reached through a pointer.
impl<K: OpKind, A: Anchored> Unpin for Flight<K, A> {}

impl<K: OpKind, A: Anchored> Flight<K, A> {
    pub(crate) fn new(anchor: A, kind: K) -> Flight<K, A> {
        Flight {
            unsubmitted: Some((kind, anchor)),
            half: None,
        }
    }

    pub(crate) fn stage(&self) -> &'static str {
        match (&self.unsubmitted, &self.half) {
            (Some(_), _) => "Unsubmitted",
            (None, Some(_)) => "Submitted",
            (None, None) => "Done",
        }
    }

    #[inline(always)]
    pub(crate) fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        let half = match self.half.take() {
            Some(half) => half,
            None => {
                let (kind, anchor) = self
                    .unsubmitted
                    .take()
                    .expect("aioctx: op polled after it resolved");
                let (half, placement) = start(kind, anchor.place(), cx.waker());
                // An op handled on this thread may be complete already
                // (refused, or run by the home driver on the spot). One
                // queued for another thread always waits for a wake, even if
                // it raced to completion: where the code after it runs must
                // not depend on timing.
                if placement == Placement::Queued || !half.is_complete() {
                    self.half = Some(half);
                    return Poll::Pending;
                }
                half
            }
        };
        match half.poll(cx.waker()) {
            Ok((kind, cqe)) => Poll::Ready(kind.complete(cqe)),
            Err(half) => {
                self.half = Some(half);
                Poll::Pending
            }
        }
    }
}

impl<K: OpKind, A: Anchored> Drop for Flight<K, A> {
    fn drop(&mut self) {
        // Resolved ops (the common case) have nothing to hand over.
        let Some(half) = self.half.take() else {
            return;
        };
        // Dropped in flight (rare): the context outlives the cancel request.
        let anchor = half.anchor().clone();
        if let Some(canceller) = half.abandon() {
            // Best effort: a backend that cannot cancel drops the request, and
            // shutdown cancels everything in flight anyway.
            anchor.backend().cancel(canceller);
        }
    }
}
