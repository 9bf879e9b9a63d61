//! The memory one op shares between its future and its backend, and the
//! lock-free protocol that decides who may touch which part of it, and who
//! frees it. A protocol module: it imports `sync`, `error` and `cell_cache`
//! (where cells' memory comes from) only, and is generic over what the op
//! anchors (its context, its file).
//!
//! An [`OpCell`] is one heap allocation holding an atomic state word, the
//! future's waker, the outcome, the op itself (its arguments and the buffers
//! the kernel uses), and the op's anchor (its context, or the file whose fd
//! the op names; never written after the cell is made). Three kinds of handle
//! hold references to it:
//!
//! ```text
//!   FutureHalf<K>  ── owned by the op's future (typed: it takes the op back)
//!   BackendRef<T>  ── owned by the backend (the driver's slot table, the
//!                     fallback pool, the simulator); type-erased
//!   Canceller      ── what a future dropped in flight becomes: its reference,
//!                     sent to the driver to ask for a cancel
//! ```
//!
//! # The state word
//!
//! ```text
//!   bit 0  WAKER     the waker slot holds the waker to wake at completion,
//!                    and belongs to the backend
//!   bit 1  COMPLETE  the outcome is written; the backend is done with the op
//!   bit 2  DROPPED   the future is gone
//!   3..    refs      live handles
//! ```
//!
//! Ownership of each part follows from the bits:
//!
//! - The op (`kind`) belongs to the backend until `COMPLETE`, then to the
//!   future; to the backend for good if `DROPPED` was set first. So the kernel
//!   and the backend never see the op freed under them (invariant 4).
//! - The outcome slot belongs to the backend until `COMPLETE`.
//! - The waker slot belongs to the backend while `WAKER` is set, and to the
//!   future while it is clear. The backend only reads it if `WAKER` was set
//!   when it set `COMPLETE`; the future clears `WAKER` before replacing the
//!   waker, and sets it again after.
//! - The memory is freed by whoever drops the last reference.
//!
//! The common path costs the backend two read-modify-writes (set `COMPLETE`,
//! drop its reference) and the future none: the completion poll finds
//! `COMPLETE` with one reference left (its own) and frees the cell with a plain
//! load. The loom models at the end of this file check every interleaving of
//! completion against polls, re-registration and drop.
//!
//! # Cells of one thread
//!
//! A cell whose anchor says [`CellAnchor::ONE_THREAD`] (a home-thread op's,
//! `local.rs`) has every handle on one thread, the home thread of its ring:
//! its future is `!Send`, and the ring's driver runs there. The same state
//! word then changes with plain loads and stores instead of read-modify-
//! writes, through the same steps in the same order. The handles that do not
//! know the op's type ([`BackendRef`]'s drop, [`Canceller`]) still use
//! read-modify-writes: on one thread that is only slower, never wrong.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::task::Waker;

use crate::sync::{AtomicU64, AtomicUsize, Ordering, UnsafeCell};

/// What a backend reports when an op finishes: the CQE.
#[cfg(not(aioctx_loom))]
pub(crate) type Outcome = crate::error::Cqe;
#[cfg(aioctx_loom)]
pub(crate) type Outcome = u32;

/// The outcome of an op whose backend reference was dropped without
/// completing it: the context shut down before the op ran.
fn lost() -> Outcome {
    #[cfg(not(aioctx_loom))]
    return crate::error::Cqe::not_run(crate::error::shutdown_error());
    #[cfg(aioctx_loom)]
    return u32::MAX;
}

/// What a cell's anchor says about the cell's handles.
pub(crate) trait CellAnchor: Send + Sync + 'static {
    /// Every handle of the cell is made, used and dropped on one thread (see
    /// [the module docs](self#cells-of-one-thread)): the typed handles then
    /// update the state word without read-modify-writes.
    const ONE_THREAD: bool = false;
}

impl CellAnchor for () {}

const WAKER: usize = 1;
const COMPLETE: usize = 2;
const DROPPED: usize = 4;
const REF: usize = 8;
const REFS: usize = !(REF - 1);

/// What a cell holds: an op that can be given up when its future is gone.
pub(crate) trait Payload: Send + 'static {
    /// Releases what the op produced (an opened fd), when its future was
    /// dropped before collecting the outcome.
    fn abandon(self, outcome: Outcome);
}

/// The part of a cell every handle can reach without knowing the op's type.
pub(crate) struct Header {
    state: AtomicUsize,
    /// The backend's own word (the driver keeps the SQE's `user_data` here),
    /// [`NO_TAG`] until it sets one. Only the backend's thread reads and
    /// writes it, hence `Relaxed`.
    tag: AtomicU64,
}

/// The tag of a cell its backend has not tagged.
const NO_TAG: u64 = u64::MAX;

impl Header {
    /// Drops one reference. Returns whether it was the last, in which case
    /// the caller frees the cell.
    fn release(&self) -> bool {
        // Release: every access this handle made to the cell happens before
        // the free; Acquire: the freeing side sees the other handles' accesses
        // (pairs with this same fetch_sub on the other handles).
        self.state.fetch_sub(REF, Ordering::AcqRel) & REFS == REF
    }

    /// [`release`](Header::release) for a cell whose anchor type is `A`.
    #[inline(always)]
    fn release_as<A: CellAnchor>(&self) -> bool {
        if A::ONE_THREAD {
            // Relaxed: as in `set_as`; the freeing side is this thread.
            let state = self.state.load(Ordering::Relaxed);
            self.state.store(state - REF, Ordering::Relaxed);
            return state & REFS == REF;
        }
        self.release()
    }

    /// Sets `bits`, returning the state before, as `fetch_or` would, for a
    /// cell whose anchor type is `A`. `order` is for the read-modify-write.
    #[inline(always)]
    fn set_as<A: CellAnchor>(&self, bits: usize, order: Ordering) -> usize {
        if A::ONE_THREAD {
            // Relaxed: one thread reads and writes the word (module docs);
            // there is no other side to pair with.
            let state = self.state.load(Ordering::Relaxed);
            self.state.store(state | bits, Ordering::Relaxed);
            return state;
        }
        self.state.fetch_or(bits, order)
    }

    /// Clears `bits`, returning the state before, as `fetch_and(!bits)`
    /// would, for a cell whose anchor type is `A`.
    #[inline(always)]
    fn clear_as<A: CellAnchor>(&self, bits: usize, order: Ordering) -> usize {
        if A::ONE_THREAD {
            // Relaxed: as in `set_as`.
            let state = self.state.load(Ordering::Relaxed);
            self.state.store(state & !bits, Ordering::Relaxed);
            return state;
        }
        self.state.fetch_and(!bits, order)
    }

    pub(crate) fn tag(&self) -> Option<u64> {
        let tag = self.tag.load(Ordering::Relaxed);
        (tag != NO_TAG).then_some(tag)
    }

    pub(crate) fn set_tag(&self, tag: u64) {
        self.tag.store(tag, Ordering::Relaxed);
    }

    /// Whether the future is gone. A backend skips such an op if it has not
    /// started it yet.
    pub(crate) fn is_dropped(&self) -> bool {
        self.state.load(Ordering::Relaxed) & DROPPED != 0
    }
}

/// One op's shared memory. See the module docs.
///
/// `A` is what the op holds on to for as long as the cell exists (its
/// context, and for a file's op the file whose fd the op names). It is set
/// when the cell is made and never changed, so every handle may read it.
///
/// `repr(C)` with the header first: a handle of any op type reaches the
/// header at the cell's address, without a call through the vtable.
#[repr(C)]
pub(crate) struct OpCell<K, A> {
    header: Header,
    waker: UnsafeCell<Option<Waker>>,
    outcome: UnsafeCell<Option<Outcome>>,
    kind: UnsafeCell<Option<K>>,
    anchor: A,
}

// SAFETY: every access to the `UnsafeCell`s follows the ownership rules of
// the state word (module docs), which hand each part to one thread at a time
// with Acquire/Release edges between owners; `K`, the waker and the outcome
// are `Send`, so passing them between threads is sound. The anchor is never
// written after the cell is made, and is `Send + Sync` itself.
unsafe impl<K: Send, A: CellAnchor> Sync for OpCell<K, A> {}
// SAFETY: as above; the cell owns `Send` values only.
unsafe impl<K: Send, A: CellAnchor> Send for OpCell<K, A> {}

/// What a backend reference can do to a cell of any op type.
///
/// # Safety
///
/// Implemented only by [`OpCell`], whose header is at its address (see
/// [`header_of`]).
pub(crate) unsafe trait Cell: Send + Sync {
    /// Records the outcome and wakes the future (or, if the future is gone,
    /// gives the op up), then drops the backend's reference. Returns whether
    /// that was the last reference.
    ///
    /// # Safety
    ///
    /// The caller holds the backend reference, and calls this once.
    unsafe fn complete(&self, outcome: Outcome) -> bool;
}

// SAFETY: `OpCell` is `repr(C)` with its header first.
unsafe impl<K: Payload, A: CellAnchor> Cell for OpCell<K, A> {
    unsafe fn complete(&self, outcome: Outcome) -> bool {
        // SAFETY: the outcome slot is the backend's until COMPLETE.
        self.outcome
            .with_mut(|slot| unsafe { *slot = Some(outcome) });
        // Release: publishes the outcome, and the backend's writes into the
        // op, to the future's Acquire load in `poll`/`abandon`. Acquire:
        // pairs with the future's Release when it set WAKER (so the waker
        // written before it is visible) or DROPPED.
        let prev = self.header.set_as::<A>(COMPLETE, Ordering::AcqRel);
        debug_assert_eq!(prev & COMPLETE, 0, "op completed twice");
        if prev & DROPPED != 0 {
            // The future left before the outcome: the op is ours to give up.
            // SAFETY: DROPPED before COMPLETE hands kind and outcome to the
            // backend for good; the future never touches them again.
            let (kind, outcome) = unsafe { self.take_kind_and_outcome() };
            if let Some(kind) = kind {
                // Drops the user's buffers: user code, on the backend's thread.
                contain("dropping an abandoned op's resources", || {
                    kind.abandon(outcome)
                });
            }
            return self.header.release_as::<A>();
        }
        let waker = if prev & WAKER != 0 {
            // SAFETY: WAKER was set when COMPLETE went in, so the slot is
            // ours; the future clears WAKER before it touches the slot, and
            // it cannot do so usefully now that COMPLETE is set.
            self.waker.with_mut(|slot| unsafe { (*slot).take() })
        } else {
            None
        };
        let last = self.header.release_as::<A>();
        // Woken after the reference is gone: the moved-out waker is ours, and
        // the task it schedules finds the cell with its own reference only.
        if let Some(waker) = waker {
            contain("a waker", || waker.wake());
        }
        last
    }
}

/// The header of the cell at `cell`, whatever its op type.
///
/// # Safety
///
/// `cell` points at a live cell, which every `Cell` is: an `OpCell`, whose
/// header is its first field (`repr(C)`).
unsafe fn header_of<'a, T: ?Sized + Cell>(cell: NonNull<T>) -> &'a Header {
    // SAFETY: by the caller's contract, the header is at the cell's address.
    unsafe { cell.cast::<Header>().as_ref() }
}

/// Runs user code on a backend's thread (a waker, the drop of a user's
/// buffer) so that its panic cannot unwind into the driver and end it
/// (invariant 9). The panic hook has already reported the panic; the op it
/// happened in is complete either way.
fn contain(what: &'static str, user_code: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(user_code)).is_err() {
        #[cfg(not(aioctx_loom))]
        tracing::error!("{what} panicked on an aioctx driver; the panic was contained");
        #[cfg(aioctx_loom)]
        let _ = what;
    }
}

impl<K, A> OpCell<K, A> {
    /// # Safety
    ///
    /// The caller owns both slots (see the module docs).
    unsafe fn take_kind_and_outcome(&self) -> (Option<K>, Outcome) {
        // SAFETY: exclusive by the caller's contract.
        let kind = self.kind.with_mut(|slot| unsafe { (*slot).take() });
        // SAFETY: as above.
        let outcome = self.outcome.with_mut(|slot| unsafe { (*slot).take() });
        (kind, outcome.unwrap_or_else(lost))
    }

    /// Runs `f` on the op while it is in flight (a backend reading the
    /// write data or filling the read buffer).
    ///
    /// # Safety
    ///
    /// The caller holds the backend reference and has not completed the op.
    pub(crate) unsafe fn with_kind<R>(&self, f: impl FnOnce(&mut K) -> R) -> Option<R> {
        // SAFETY: the op belongs to the backend until COMPLETE.
        self.kind
            .with_mut(|slot| unsafe { (*slot).as_mut().map(f) })
    }
}

/// Frees a cell whose last reference the caller just dropped.
///
/// # Safety
///
/// `ptr` came from [`Fresh::new`], and no handle to it is left.
unsafe fn free<T: ?Sized>(ptr: NonNull<T>) {
    #[cfg(aioctx_loom)]
    // SAFETY: by the caller's contract; under loom cells are boxed.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
    #[cfg(not(aioctx_loom))]
    {
        // SAFETY: by the caller's contract the cell is alive until here.
        let layout = std::alloc::Layout::for_value(unsafe { ptr.as_ref() });
        // SAFETY: the last reference: nobody uses the value after this drop,
        // and its block goes back to the cache it came from.
        unsafe {
            std::ptr::drop_in_place(ptr.as_ptr());
            crate::cell_cache::release(ptr.cast::<u8>(), layout);
        }
    }
}

/// A cell not yet shared: the future owns all of it.
pub(crate) struct Fresh<K: Payload, A: CellAnchor> {
    ptr: NonNull<OpCell<K, A>>,
}

impl<K: Payload, A: CellAnchor> Fresh<K, A> {
    pub(crate) fn new(kind: K, anchor: A) -> Fresh<K, A> {
        let cell = OpCell {
            header: Header {
                state: AtomicUsize::new(REF),
                tag: AtomicU64::new(NO_TAG),
            },
            waker: UnsafeCell::new(None),
            outcome: UnsafeCell::new(None),
            kind: UnsafeCell::new(Some(kind)),
            anchor,
        };
        #[cfg(aioctx_loom)]
        let ptr = NonNull::from(Box::leak(Box::new(cell)));
        #[cfg(not(aioctx_loom))]
        let ptr = {
            let block = crate::cell_cache::allocate(std::alloc::Layout::new::<OpCell<K, A>>());
            let ptr = block.cast::<OpCell<K, A>>();
            // SAFETY: a fresh block of the cell's layout, owned by nobody else.
            unsafe { ptr.as_ptr().write(cell) };
            ptr
        };
        Fresh { ptr }
    }

    fn cell(&self) -> &OpCell<K, A> {
        // SAFETY: the cell lives until this handle frees it.
        unsafe { self.ptr.as_ref() }
    }

    /// The cell's anchor.
    pub(crate) fn anchor(&self) -> &A {
        &self.cell().anchor
    }

    /// The op, at its final address: pointers into it stay valid until the
    /// cell is freed.
    pub(crate) fn with_kind<R>(&mut self, f: impl FnOnce(&mut K) -> R) -> R {
        // SAFETY: nobody else holds a reference to a fresh cell.
        unsafe { self.cell().with_kind(f) }.expect("a fresh cell holds its op")
    }

    /// Shares the cell: the future keeps one half and waits with `waker`,
    /// the backend gets the other.
    pub(crate) fn share(self, waker: Waker) -> (FutureHalf<K, A>, BackendRef<OpCell<K, A>>) {
        let this = ManuallyDrop::new(self);
        let cell = this.cell();
        // SAFETY: still exclusive: the other half does not exist yet.
        cell.waker.with_mut(|slot| unsafe { *slot = Some(waker) });
        // Relaxed: the backend half reaches its thread through a queue or a
        // thread-local hand-off that orders this store before its use.
        cell.header
            .state
            .store((2 * REF) | WAKER, Ordering::Relaxed);
        (FutureHalf { ptr: this.ptr }, BackendRef { ptr: this.ptr })
    }
}

impl<K: Payload, A: CellAnchor> Drop for Fresh<K, A> {
    fn drop(&mut self) {
        // SAFETY: the only reference; nothing was shared.
        unsafe { free(self.ptr) };
    }
}

/// The future's reference to its op's cell.
pub(crate) struct FutureHalf<K: Payload, A: CellAnchor> {
    ptr: NonNull<OpCell<K, A>>,
}

// SAFETY: the handle only does what the state word allows it (module docs),
// from whichever thread holds it.
unsafe impl<K: Payload, A: CellAnchor> Send for FutureHalf<K, A> {}
// SAFETY: `&FutureHalf` gives no access to the cell beyond the anchor, which
// is `Sync`.
unsafe impl<K: Payload, A: CellAnchor> Sync for FutureHalf<K, A> {}

impl<K: Payload, A: CellAnchor> FutureHalf<K, A> {
    fn cell(&self) -> &OpCell<K, A> {
        // SAFETY: this handle's reference keeps the cell alive.
        unsafe { self.ptr.as_ref() }
    }

    /// The cell's anchor: immutable, so readable while the op is in flight.
    pub(crate) fn anchor(&self) -> &A {
        &self.cell().anchor
    }

    /// Whether the backend has completed the op (a hint: `poll` decides).
    pub(crate) fn is_complete(&self) -> bool {
        self.cell().header.state.load(Ordering::Relaxed) & COMPLETE != 0
    }

    /// The op and its outcome, once complete; otherwise makes sure `waker`
    /// is the one woken at completion and gives the half back.
    pub(crate) fn poll(self, waker: &Waker) -> Result<(K, Outcome), FutureHalf<K, A>> {
        let state = &self.cell().header.state;
        // Acquire: pairs with the Release of `complete`'s fetch_or (the
        // outcome and the op's buffers) and of its reference drop.
        let seen = state.load(Ordering::Acquire);
        if seen & COMPLETE != 0 {
            return Ok(self.finish(seen));
        }
        // Not complete: a poll the completion did not cause (a `select!`, a
        // task moved to another runtime). Make sure `waker` is the one woken.
        if self.register(waker) {
            // Acquire: as above; the op completed meanwhile.
            let seen = state.load(Ordering::Acquire);
            return Ok(self.finish(seen));
        }
        Err(self)
    }

    /// Makes `waker` the one woken at completion; returns `true` instead if
    /// the op is complete already (then nothing is registered, and
    /// [`poll`](FutureHalf::poll) collects it). For a backend that shared the
    /// cell with a placeholder waker and ran the op on the spot: the task's
    /// waker is cloned only if the op did not complete there.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        let header = &self.cell().header;
        // Acquire: as in `poll`.
        let seen = header.clear_as::<A>(WAKER, Ordering::Acquire);
        if seen & COMPLETE != 0 {
            return true;
        }
        // SAFETY: WAKER is clear and COMPLETE was not set before it, so the
        // backend will not touch the slot.
        self.cell().waker.with_mut(|slot| unsafe {
            match &mut *slot {
                Some(current) if current.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        });
        // Release: publishes the waker to `complete`'s Acquire fetch_or.
        // Acquire: the outcome, if the op completed meanwhile.
        header.set_as::<A>(WAKER, Ordering::AcqRel) & COMPLETE != 0
    }

    /// Takes the op and outcome after COMPLETE (seen in `seen`), and drops
    /// this reference.
    fn finish(self, seen: usize) -> (K, Outcome) {
        let this = ManuallyDrop::new(self);
        let cell = this.cell();
        // SAFETY: COMPLETE without DROPPED: the op and outcome are the
        // future's, and this half is the future.
        let (kind, outcome) = unsafe { cell.take_kind_and_outcome() };
        let kind = kind.expect("a completed op keeps its op for the future");
        // Our reference was the only one left when `seen` was loaded (the
        // backend's drop, with Release, is what we read): no RMW needed.
        if seen & REFS == REF || cell.header.release_as::<A>() {
            // SAFETY: the last reference, just dropped.
            unsafe { free(this.ptr) };
        }
        (kind, outcome)
    }

    /// Gives the op up: the future was dropped before collecting it.
    ///
    /// If the op already completed, its output is released here (an opened
    /// fd closed) and `None` returned. Otherwise the backend gives it up when
    /// it completes, and the returned [`Canceller`] carries this reference to
    /// whoever can cancel the op early.
    pub(crate) fn abandon(self) -> Option<Canceller> {
        let this = ManuallyDrop::new(self);
        let cell = this.cell();
        // Acquire: as in `poll`.
        let seen = cell.header.state.load(Ordering::Acquire);
        let seen = if seen & COMPLETE != 0 {
            seen
        } else {
            // Set DROPPED and take the waker slot back in one step.
            // AcqRel: Release so the backend's Acquire in `complete` sees the
            // waker gone; Acquire for the outcome if it completed meanwhile.
            let prev = match A::ONE_THREAD {
                // Relaxed: as in `Header::set_as`; `seen` is the word now.
                true => {
                    cell.header
                        .state
                        .store((seen | DROPPED) & !WAKER, Ordering::Relaxed);
                    seen
                }
                false => cell
                    .header
                    .state
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                        Some((s | DROPPED) & !WAKER)
                    })
                    .expect("the closure always returns Some"),
            };
            if prev & COMPLETE == 0 {
                if prev & WAKER != 0 {
                    // SAFETY: we cleared WAKER before COMPLETE: the slot is
                    // ours, and the task it wakes no longer waits.
                    drop(cell.waker.with_mut(|slot| unsafe { (*slot).take() }));
                }
                let erased: NonNull<dyn Cell> = this.ptr;
                return Some(Canceller { ptr: erased });
            }
            prev
        };
        // Completed but never collected.
        // SAFETY: COMPLETE came before DROPPED: the op and outcome are ours.
        let (kind, outcome) = unsafe { cell.take_kind_and_outcome() };
        if let Some(kind) = kind {
            kind.abandon(outcome);
        }
        if seen & REFS == REF || cell.header.release_as::<A>() {
            // SAFETY: the last reference, just dropped.
            unsafe { free(this.ptr) };
        }
        None
    }
}

impl<K: Payload, A: CellAnchor> Drop for FutureHalf<K, A> {
    fn drop(&mut self) {
        let half = FutureHalf { ptr: self.ptr };
        drop(half.abandon());
    }
}

/// The backend's reference to a cell: completing through it is the only way
/// an op's future resolves.
///
/// Dropping it without [`complete`](BackendRef::complete) completes the op
/// with the shutdown error (so a future never hangs because a queue holding
/// the reference was dropped); [`leak`](BackendRef::leak) is the only way to
/// drop it otherwise.
pub(crate) struct BackendRef<T: ?Sized + Cell> {
    ptr: NonNull<T>,
}

// SAFETY: as for `FutureHalf`.
unsafe impl<T: ?Sized + Cell> Send for BackendRef<T> {}
// SAFETY: `&BackendRef` only reaches the header (atomics) and, through
// `with_kind`, what the holder's contract allows.
unsafe impl<T: ?Sized + Cell> Sync for BackendRef<T> {}

impl<T: ?Sized + Cell> BackendRef<T> {
    pub(crate) fn cell(&self) -> &T {
        // SAFETY: this handle's reference keeps the cell alive.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: this handle's reference keeps the cell alive.
        unsafe { header_of(self.ptr) }
    }

    /// Completes the op with `outcome`: wakes its future, or gives the op up
    /// if the future is gone.
    pub(crate) fn complete(self, outcome: Outcome) {
        let this = ManuallyDrop::new(self);
        // SAFETY: this is the backend reference, consumed here.
        if unsafe { this.cell().complete(outcome) } {
            // SAFETY: the last reference, just dropped.
            unsafe { free(this.ptr) };
        }
    }

    /// The same reference, as a reference to a cell of type `U`.
    ///
    /// # Safety
    ///
    /// The cell is a `U`: the caller erased it from one.
    pub(crate) unsafe fn assume_type<U: Cell>(self) -> BackendRef<U> {
        let this = ManuallyDrop::new(self);
        BackendRef {
            ptr: this.ptr.cast::<U>(),
        }
    }

    /// Gives up on the cell without completing it: its memory is never
    /// freed. For ops the kernel may still write into after shutdown's limit.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl<K: Payload, A: CellAnchor> BackendRef<OpCell<K, A>> {
    /// The same reference, with the op's type erased into `dyn T`.
    pub(crate) fn erase<T: ?Sized + Cell>(
        self,
        coerce: fn(NonNull<OpCell<K, A>>) -> NonNull<T>,
    ) -> BackendRef<T> {
        let this = ManuallyDrop::new(self);
        BackendRef {
            ptr: coerce(this.ptr),
        }
    }
}

impl<T: ?Sized + Cell> Drop for BackendRef<T> {
    fn drop(&mut self) {
        let this = BackendRef { ptr: self.ptr };
        this.complete(lost());
    }
}

/// The reference of a future dropped while its op was in flight, on its way
/// to the backend that may cancel the op. Dropping it drops the reference.
pub(crate) struct Canceller {
    ptr: NonNull<dyn Cell>,
}

// SAFETY: it only reaches the header, which is atomics.
unsafe impl Send for Canceller {}
// SAFETY: as above.
unsafe impl Sync for Canceller {}

impl Canceller {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: this handle's reference keeps the cell alive.
        unsafe { header_of(self.ptr) }
    }
}

impl Drop for Canceller {
    fn drop(&mut self) {
        if self.header().release() {
            // SAFETY: the last reference, just dropped.
            unsafe { free(self.ptr) };
        }
    }
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller").finish_non_exhaustive()
    }
}

#[cfg(all(test, aioctx_loom))]
mod loom_model {
    //! Model checks of the lifecycle: completion against the future's polls,
    //! re-registration, drop, and the cancel reference. A lost wake shows up
    //! as loom's deadlock report; a double completion or abandon as a failed
    //! count; a use after free as loom's access checks on the cell.

    use super::{BackendRef, Fresh, FutureHalf, OpCell, Outcome, Payload};
    use loom::future::block_on;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::task::{Poll, Waker};

    /// An op that counts how often it is given up, and with what.
    struct TestOp {
        abandoned: Arc<AtomicUsize>,
    }

    impl Payload for TestOp {
        fn abandon(self, outcome: Outcome) {
            assert_eq!(outcome, 7, "given up with the backend's outcome");
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fresh() -> (Fresh<TestOp, ()>, Arc<AtomicUsize>) {
        let abandoned = Arc::new(AtomicUsize::new(0));
        let op = TestOp {
            abandoned: abandoned.clone(),
        };
        (Fresh::new(op, ()), abandoned)
    }

    /// Polls `half` as `Op` does, keeping it in `slot` while pending.
    fn poll_half(
        slot: &mut Option<FutureHalf<TestOp, ()>>,
        half: FutureHalf<TestOp, ()>,
        waker: &Waker,
    ) -> Poll<(TestOp, Outcome)> {
        match half.poll(waker) {
            Ok(done) => Poll::Ready(done),
            Err(pending) => {
                *slot = Some(pending);
                Poll::Pending
            }
        }
    }

    /// Waits on `half` in loom's `block_on`, whose waker differs from the
    /// one the half was shared with: the first poll re-registers.
    fn wait(half: FutureHalf<TestOp, ()>) -> Outcome {
        let mut slot = Some(half);
        let (_op, outcome) = block_on(std::future::poll_fn(|cx| {
            let half = slot.take().expect("polled after ready");
            poll_half(&mut slot, half, cx.waker())
        }));
        outcome
    }

    fn complete_on_thread(op: BackendRef<OpCell<TestOp, ()>>) -> thread::JoinHandle<()> {
        thread::spawn(move || op.complete(7))
    }

    #[test]
    fn completion_wakes_the_waiting_future() {
        loom::model(|| {
            let (fresh, abandoned) = fresh();
            // Shared inside the first poll, with that poll's waker, as `Op`
            // does; the backend picks the reference up from a queue.
            let queue = Arc::new(Mutex::new(None));
            let backend = thread::spawn({
                let queue = queue.clone();
                move || {
                    loop {
                        if let Some(op) = queue.lock().unwrap().take() {
                            let op: BackendRef<OpCell<TestOp, ()>> = op;
                            op.complete(7);
                            return;
                        }
                        thread::yield_now();
                    }
                }
            });
            let mut fresh = Some(fresh);
            let mut half: Option<FutureHalf<TestOp, ()>> = None;
            let (_op, outcome) = block_on(std::future::poll_fn(|cx| {
                let current = match half.take() {
                    Some(current) => current,
                    None => {
                        let (current, op) = fresh.take().unwrap().share(cx.waker().clone());
                        *queue.lock().unwrap() = Some(op);
                        if !current.is_complete() {
                            half = Some(current);
                            return Poll::Pending;
                        }
                        current
                    }
                };
                poll_half(&mut half, current, cx.waker())
            }));
            assert_eq!(outcome, 7);
            backend.join().unwrap();
            assert_eq!(abandoned.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn re_registered_waker_is_the_one_woken() {
        loom::model(|| {
            let (fresh, abandoned) = fresh();
            let (half, op) = fresh.share(Waker::noop().clone());
            let backend = complete_on_thread(op);
            assert_eq!(wait(half), 7);
            backend.join().unwrap();
            assert_eq!(abandoned.load(Ordering::Relaxed), 0);
        });
    }

    /// A backend that runs the op on the spot shares the cell with a
    /// placeholder waker, and the task's waker is registered after: a
    /// completion racing that registration must still reach the task.
    #[test]
    fn waker_registered_after_a_placeholder_is_woken() {
        loom::model(|| {
            let (fresh, abandoned) = fresh();
            let (half, op) = fresh.share(Waker::noop().clone());
            let backend = complete_on_thread(op);
            let mut slot = Some(half);
            let (_op, outcome) = block_on(std::future::poll_fn(|cx| {
                let half = slot.take().expect("polled after ready");
                // The first poll registers (as the worker ring's start
                // does); later polls are the future's own.
                if !half.is_complete() && !half.register(cx.waker()) {
                    slot = Some(half);
                    return Poll::Pending;
                }
                poll_half(&mut slot, half, cx.waker())
            }));
            assert_eq!(outcome, 7);
            backend.join().unwrap();
            assert_eq!(abandoned.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn drop_racing_completion_gives_the_op_up_once() {
        loom::model(|| {
            let (fresh, abandoned) = fresh();
            let (half, op) = fresh.share(Waker::noop().clone());
            let backend = complete_on_thread(op);
            // The cancel request may outlive the backend's reference, on a
            // third thread.
            let canceller = half.abandon();
            let driver = thread::spawn(move || drop(canceller));
            backend.join().unwrap();
            driver.join().unwrap();
            assert_eq!(abandoned.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn dropped_backend_reference_resolves_the_future() {
        loom::model(|| {
            let (fresh, abandoned) = fresh();
            let (half, op) = fresh.share(Waker::noop().clone());
            let backend = thread::spawn(move || drop(op));
            assert_eq!(wait(half), super::lost());
            backend.join().unwrap();
            assert_eq!(abandoned.load(Ordering::Relaxed), 0);
        });
    }
}
