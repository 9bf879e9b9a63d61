//! A file view's slot record: which ring's file table holds the file, and
//! at which slot, in one atomic word. Read without a lock on every op a
//! worker ring's thread makes on the file; written the first time a ring
//! uses the view, under the view's lock (`file.rs` says when a record may be
//! replaced). A leaf: it imports nothing of the crate.
//!
//! ```text
//!   bits 63..21  the id of the ring the record speaks for (a context id)
//!   bits 20..0   that ring's slot for the file, or NO_SLOT: it names the fd
//!   all ones     the record speaks for no ring
//! ```
//!
//! One word, so a reader sees one write whole: it never pairs a ring with
//! a slot stored for another. Context ids count up from 0 and are never
//! reused, so a record names a ring only if that ring wrote it; a ring whose
//! id does not fit in the word's 43 bits (after 8.8e12 contexts) gets no
//! record, and its ops name the file by its fd.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the slot; the kernel's file tables have at most 2^20 slots.
const SLOT_BITS: u32 = 21;
/// The slot of a ring that names the file by its fd.
const NO_SLOT: u64 = (1 << SLOT_BITS) - 1;
/// The record of no ring.
const EMPTY: u64 = u64::MAX;

/// Which ring's file table holds a file, and at which slot; see the module
/// docs.
#[derive(Debug)]
pub(crate) struct SlotRecord(AtomicU64);

impl SlotRecord {
    /// A record that speaks for no ring.
    pub(crate) fn new() -> SlotRecord {
        SlotRecord(AtomicU64::new(EMPTY))
    }

    /// Whether ring `ring` may have a record: its id fits in the word.
    pub(crate) fn fits(ring: u64) -> bool {
        ring < EMPTY >> SLOT_BITS
    }

    /// What the record says about ring `ring`: `None` if it speaks for
    /// another ring (or none); `Some(Some(slot))` if the file is in that
    /// ring's table at `slot`; `Some(None)` if that ring names the file by
    /// its fd.
    #[inline]
    pub(crate) fn get(&self, ring: u64) -> Option<Option<u32>> {
        // Acquire: pairs with the Release store in `set`, so a ring that
        // finds its record also sees the registration made before it.
        let word = self.0.load(Ordering::Acquire);
        if word == EMPTY || word >> SLOT_BITS != ring {
            return None;
        }
        let slot = word & NO_SLOT;
        Some((slot != NO_SLOT).then_some(slot as u32))
    }

    /// Makes the record speak for ring `ring`, which [`fits`](Self::fits):
    /// its slot for the file, or `None` where it names the file by its fd.
    pub(crate) fn set(&self, ring: u64, slot: Option<u32>) {
        assert!(Self::fits(ring), "ring id {ring} does not fit in a record");
        let slot = match slot.map(u64::from) {
            Some(slot) => {
                assert!(
                    slot < NO_SLOT,
                    "slot {slot} is past any kernel file table (they have at most 2^20)"
                );
                slot
            }
            None => NO_SLOT,
        };
        // Release: pairs with the Acquire load in `get`.
        self.0.store(ring << SLOT_BITS | slot, Ordering::Release);
    }
}

#[cfg(test)]
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
        record.set(0, Some(0));
        assert_eq!(record.get(0), Some(Some(0)), "ring 0, slot 0");
    }

    #[test]
    fn the_largest_ids_and_slots_stay_apart() {
        let record = SlotRecord::new();
        let last = (u64::MAX >> 21) - 1;
        assert!(SlotRecord::fits(last) && !SlotRecord::fits(last + 1));
        record.set(last, Some((1 << 20) - 1));
        assert_eq!(record.get(last), Some(Some((1 << 20) - 1)));
        assert_eq!(record.get(last - 1), None);
    }
}
