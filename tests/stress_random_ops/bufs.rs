//! The buffers ops take: the crate's own kinds and one of this test's that
//! counts itself alive, built as read targets (pre-filled with a canary or
//! not) or write sources, and held back after they return to catch late
//! writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use aioctx::buf::{AlignedBuf, IoBuf, IoBufMut};

use crate::model::{Dice, checksum};

/// What a read buffer is pre-filled with, to see what the kernel touched.
pub(crate) const CANARY: u8 = 0xA5;

/// A buffer that counts itself alive, to check that every buffer an op took
/// (a dropped op's included) is dropped by the end of the round.
pub(crate) struct TrackedBuf {
    pub(crate) data: Vec<u8>,
    pub(crate) live: Arc<AtomicUsize>,
}

impl TrackedBuf {
    pub(crate) fn new(data: Vec<u8>, live: &Arc<AtomicUsize>) -> TrackedBuf {
        live.fetch_add(1, SeqCst);
        TrackedBuf {
            data,
            live: live.clone(),
        }
    }
}

impl Drop for TrackedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, SeqCst);
    }
}

// SAFETY: delegates to the Vec, whose heap block does not move with it.
unsafe impl IoBuf for TrackedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.data.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.data.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.data.bytes_total()
    }
}

// SAFETY: delegates to the Vec.
unsafe impl IoBufMut for TrackedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.data.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.data.set_init(pos) }
    }
}

/// The initialised bytes of a buffer.
pub(crate) fn init_bytes<B: IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: IoBuf promises `bytes_init` initialised bytes at `stable_ptr`.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) }
}

/// All of a buffer's bytes.
///
/// # Safety
///
/// All `bytes_total` bytes must be initialised: only for buffers this test
/// pre-filled.
pub(crate) unsafe fn all_bytes<B: IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_total()) }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum BufKind {
    Vec,
    Bytes,
    Boxed,
    Aligned,
    Tracked,
}

impl BufKind {
    pub(crate) fn draw(dice: &mut Dice) -> BufKind {
        [
            BufKind::Vec,
            BufKind::Bytes,
            BufKind::Boxed,
            BufKind::Aligned,
            BufKind::Tracked,
        ][dice.below(5) as usize]
    }
}

/// A read target of `len` bytes, pre-filled with the canary or not.
pub(crate) trait ReadTarget: IoBufMut + Sync + Sized {
    /// Whether `bytes_init` says how much was read (a boxed slice is all
    /// initialised from the start).
    const TRACKS_INIT: bool = true;
    fn target(len: usize, prefill: bool, live: &Arc<AtomicUsize>) -> Self;
}

pub(crate) fn vec_target(len: usize, prefill: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    if prefill {
        v.resize(v.capacity(), CANARY);
        v.clear();
    }
    v
}

impl ReadTarget for Vec<u8> {
    fn target(len: usize, prefill: bool, _: &Arc<AtomicUsize>) -> Self {
        vec_target(len, prefill)
    }
}

impl ReadTarget for bytes::BytesMut {
    fn target(len: usize, prefill: bool, _: &Arc<AtomicUsize>) -> Self {
        let mut b = bytes::BytesMut::with_capacity(len);
        if prefill {
            b.resize(b.capacity(), CANARY);
            b.clear();
        }
        b
    }
}

impl ReadTarget for Box<[u8]> {
    const TRACKS_INIT: bool = false;
    fn target(len: usize, _: bool, _: &Arc<AtomicUsize>) -> Self {
        // Always initialised: a boxed slice's every byte is its data.
        vec![CANARY; len].into_boxed_slice()
    }
}

impl ReadTarget for AlignedBuf {
    fn target(len: usize, _: bool, _: &Arc<AtomicUsize>) -> Self {
        // Zeroed by its allocator; filled with the canary like the others.
        let mut a = AlignedBuf::with_capacity(len);
        a.set_len(len);
        a.fill(CANARY);
        a.clear();
        a
    }
}

impl ReadTarget for TrackedBuf {
    fn target(len: usize, prefill: bool, live: &Arc<AtomicUsize>) -> Self {
        TrackedBuf::new(vec_target(len, prefill), live)
    }
}

/// Whether `target(.., prefill)` leaves every byte initialised.
pub(crate) fn fully_initialised(kind: BufKind, prefill: bool) -> bool {
    prefill || matches!(kind, BufKind::Boxed | BufKind::Aligned)
}

/// A write source holding `data`.
pub(crate) trait WriteSource: IoBuf + Sync + Sized {
    fn source(data: &[u8], live: &Arc<AtomicUsize>) -> Self;
}

impl WriteSource for Vec<u8> {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        data.to_vec()
    }
}

impl WriteSource for bytes::BytesMut {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        bytes::BytesMut::from(data)
    }
}

impl WriteSource for Box<[u8]> {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        data.to_vec().into_boxed_slice()
    }
}

impl WriteSource for AlignedBuf {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        let mut a = AlignedBuf::with_capacity(data.len());
        a.extend_from_slice(data);
        a
    }
}

impl WriteSource for TrackedBuf {
    fn source(data: &[u8], live: &Arc<AtomicUsize>) -> Self {
        TrackedBuf::new(data.to_vec(), live)
    }
}

/// A returned buffer held back; its checksum must not change.
pub(crate) struct Held {
    pub(crate) bytes: Box<dyn Fn() -> u64 + Send + Sync>,
    pub(crate) sum: u64,
    pub(crate) what: String,
}

/// Holds a fully initialised buffer for a later re-check.
pub(crate) fn hold<B: IoBuf + Sync>(buf: B, what: String) -> Held {
    // SAFETY: only called for fully initialised buffers.
    let sum = checksum(unsafe { all_bytes(&buf) });
    Held {
        // SAFETY: as above; the closure owns the buffer.
        bytes: Box::new(move || checksum(unsafe { all_bytes(&buf) })),
        sum,
        what,
    }
}

pub(crate) fn check_held(held: &Held) {
    assert_eq!(
        (held.bytes)(),
        held.sum,
        "{}: the buffer changed after it was handed back",
        held.what
    );
}
