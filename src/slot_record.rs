//! A file view's slot record: which ring's file table holds the file, and at
//! which slot. Read without a lock on every op a worker ring's thread makes
//! on the file; written the first time a ring uses the view, under the
//! view's lock (`file.rs` says when a record may be replaced). A protocol
//! module: it imports only `sync`.
//!
//! # The protocol
//!
//! The record is two words: `ring`, the id of the ring it speaks for (or
//! none), and `slot`, that ring's slot for the file (or none: that ring
//! names the file by its fd). A reader asks about one ring, its own:
//!
//! ```text
//!   reader (any thread, asks about ring R)   writer (one at a time, for ring S)
//!   1 ring == R? (Acquire)  no: a miss       1 ring := none
//!   2 read slot                              2 fence(Release)
//!   3 fence(Acquire)                         3 slot := s
//!   4 ring == R?            no: a miss       4 ring := S (Release)
//!   the answer: the slot read at 2
//! ```
//!
//! A seqlock whose sequence number is the ring's id. What it guarantees: a
//! reader that answers for R answers the slot a write for R stored, never
//! one stored for another ring, provided the writes are serialised and no
//! write names a ring the record spoke for before (ring ids are never reused,
//! and `file.rs` replaces a ring's record only once that ring has shut down,
//! which it never undoes). Why: the reader's load 1 read write W_R's store 4
//! (Acquire, pairing with that Release store), so its read 2 sees W_R's store
//! 3 or a later write's. Had it seen a later write W's store 3, its fence 3
//! would pair with W's fence 2, and W's store 1 would happen before its load
//! 4, which could then read neither W_R's store of R nor anything before it
//! (and nothing after stores R again): a miss. A miss is never wrong, only
//! slower: the caller takes the view's lock and looks again.
//!
//! The loom model below checks a reader against a replacing writer; it does
//! not model the lock that serialises writers (a precondition here).

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};

/// `ring` when the record speaks for no ring (context ids count up from 0).
const NO_RING: u64 = u64::MAX;
/// `slot` when the ring names the file by its fd (a table has fewer slots).
const NO_SLOT: u32 = u32::MAX;

/// Which ring's file table holds a file, and at which slot; see the module
/// docs for who reads and writes it.
#[derive(Debug)]
pub(crate) struct SlotRecord {
    /// The id of the ring the record speaks for, or [`NO_RING`].
    ring: AtomicU64,
    /// That ring's slot for the file, or [`NO_SLOT`].
    slot: AtomicU32,
}

impl SlotRecord {
    /// A record that speaks for no ring.
    pub(crate) fn new() -> SlotRecord {
        SlotRecord {
            ring: AtomicU64::new(NO_RING),
            slot: AtomicU32::new(NO_SLOT),
        }
    }

    /// What the record says about ring `ring`: `None` if it speaks for
    /// another ring (or none, or a write is under way); `Some(Some(slot))`
    /// if the file is in that ring's table at `slot`; `Some(None)` if that
    /// ring names the file by its fd. Steps 1-4 of the reader.
    #[inline]
    pub(crate) fn get(&self, ring: u64) -> Option<Option<u32>> {
        // Acquire: pairs with the Release store of `ring` in `set` (its
        // step 4), so the slot stored before it is seen.
        if self.ring.load(Ordering::Acquire) != ring {
            return None;
        }
        // Relaxed: the fence below orders it against the re-check.
        let slot = self.slot.load(Ordering::Relaxed);
        // Pairs with the Release fence in `set` (its step 2): a slot stored
        // by a later write makes that write's clearing of `ring` visible to
        // the re-check.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the slot's load by the fence above.
        if self.ring.load(Ordering::Relaxed) != ring {
            return None;
        }
        Some((slot != NO_SLOT).then_some(slot))
    }

    /// Makes the record speak for ring `ring`: its slot for the file, or
    /// `None` where it names the file by its fd. Steps 1-4 of the writer.
    ///
    /// Callers serialise their calls (a lock), and never name a ring the
    /// record spoke for before: see the module docs.
    pub(crate) fn set(&self, ring: u64, slot: Option<u32>) {
        debug_assert_ne!(ring, NO_RING, "a ring id");
        debug_assert_ne!(slot, Some(NO_SLOT), "a slot inside a table");
        // Relaxed: published by the fence below.
        self.ring.store(NO_RING, Ordering::Relaxed);
        // Pairs with the reader's Acquire fence (its step 3).
        fence(Ordering::Release);
        // Relaxed: published by the Release store below.
        self.slot.store(slot.unwrap_or(NO_SLOT), Ordering::Relaxed);
        // Release: pairs with the reader's Acquire load (its step 1).
        self.ring.store(ring, Ordering::Release);
    }
}

#[cfg(all(test, not(aioctx_loom)))]
mod tests {
    use super::SlotRecord;

    #[test]
    fn a_record_answers_for_its_ring_only() {
        let record = SlotRecord::new();
        assert_eq!(record.get(0), None, "a new record speaks for no ring");
        record.set(3, Some(7));
        assert_eq!(record.get(3), Some(Some(7)));
        assert_eq!(record.get(4), None, "another ring's ops learn nothing");
        record.set(4, None);
        assert_eq!(record.get(4), Some(None), "ring 4 names the file by its fd");
        assert_eq!(record.get(3), None, "the replaced ring's slot is gone");
    }
}

#[cfg(all(test, aioctx_loom))]
mod loom_model {
    //! A reader against a writer that replaces the record: the reader never
    //! answers with a slot stored for another ring than the one it asked
    //! about.

    use super::SlotRecord;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_reader_never_takes_another_rings_slot() {
        loom::model(|| {
            let record = Arc::new(SlotRecord::new());
            record.set(1, Some(10));
            let writer = {
                let record = record.clone();
                thread::spawn(move || {
                    record.set(2, Some(20));
                    record.set(3, None);
                })
            };
            for ring in [1, 2, 3] {
                let answer = record.get(ring);
                let stored = match ring {
                    1 => Some(Some(10)),
                    2 => Some(Some(20)),
                    _ => Some(None),
                };
                assert!(
                    answer.is_none() || answer == stored,
                    "asked about ring {ring}, answered {answer:?}"
                );
            }
            writer.join().unwrap();
            assert_eq!(record.get(3), Some(None), "the last write stands");
        });
    }
}
