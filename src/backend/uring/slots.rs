//! The ops the ring's driver has in the kernel, by `user_data`.
//!
//! The low half of an op's `user_data` is its slot's index; the high half is
//! the slot's generation, bumped each time the slot is freed, so a late cancel
//! never hits a reused slot. A slot is freed only by [`Slots::remove`], called
//! when the op's CQE is reaped (invariant 5), and the backend reference it
//! holds keeps the op's resources alive until then (invariant 4).

use crate::ops::OpRef;
use crate::ring::IGNORED_USER_DATA;

pub(super) struct Slots {
    entries: Vec<SlotEntry>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
}

struct SlotEntry {
    generation: u32,
    /// Number of the `io_uring_enter` that submits (or submitted) the op.
    submitted_by: u64,
    op: Option<OpRef>,
}

fn user_data(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn split(user_data: u64) -> (usize, u32) {
    ((user_data as u32) as usize, (user_data >> 32) as u32)
}

impl Slots {
    /// A table that holds at most `limit` ops (the CQ size: more in flight
    /// could overflow the CQ).
    pub(super) fn with_limit(limit: usize) -> Slots {
        assert!(limit < u32::MAX as usize, "slot indexes fit in 32 bits");
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// At the in-flight limit.
    pub(super) fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    /// Files `op` under a fresh `user_data`, which it also records in the
    /// op's cell (for a later cancel), and returns.
    ///
    /// # Panics
    ///
    /// When full: the caller checks [`is_full`](Slots::is_full) first.
    pub(super) fn insert(&mut self, op: OpRef, submitted_by: u64) -> u64 {
        assert!(!self.is_full(), "slot table over its limit");
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(SlotEntry {
                    generation: 0,
                    submitted_by: 0,
                    op: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.op.is_none(), "free list held an occupied slot");
        let user_data = user_data(index, entry.generation);
        debug_assert_ne!(user_data, IGNORED_USER_DATA);
        op.header().set_tag(user_data);
        entry.op = Some(op);
        entry.submitted_by = submitted_by;
        self.len += 1;
        user_data
    }

    /// Whether `user_data` names an op still in flight.
    pub(super) fn contains(&self, user_data: u64) -> bool {
        let (index, generation) = split(user_data);
        self.entries
            .get(index)
            .is_some_and(|entry| entry.generation == generation && entry.op.is_some())
    }

    /// Frees the op's slot; returns it with the number of the enter that
    /// submitted it. `None` for a `user_data` that names no op in flight.
    pub(super) fn remove(&mut self, user_data: u64) -> Option<(OpRef, u64)> {
        let (index, generation) = split(user_data);
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        let op = entry.op.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Some((op, entry.submitted_by))
    }

    /// The `user_data` of every op in flight.
    pub(super) fn all_user_data(&self) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.op.is_some())
            .map(|(index, entry)| user_data(index as u32, entry.generation))
            .collect()
    }

    /// Gives up on the ops still in flight: their resources are never freed,
    /// because the kernel may still write to them.
    pub(super) fn leak(&mut self) {
        for entry in &mut self.entries {
            if let Some(op) = entry.op.take() {
                op.leak();
            }
        }
        self.len = 0;
    }

    #[cfg(test)]
    fn set_generation(&mut self, index: usize, generation: u32) {
        self.entries[index].generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use crate::error::Cqe;
    use crate::lifecycle::Fresh;
    use crate::ops::{OpRef, erase, nop::Nop};

    /// A NOP's backend reference; its future half is dropped, so completing
    /// the reference frees the cell.
    fn op() -> OpRef {
        let (half, op) = Fresh::new(Nop::new(), ()).share(std::task::Waker::noop().clone());
        drop(half);
        erase(op)
    }

    fn complete(slots: &mut Slots, user_data: u64) {
        let (op, _) = slots.remove(user_data).expect("in flight");
        op.complete(Cqe::from_raw(0, 0));
    }

    #[test]
    fn freed_slots_are_reused_with_a_new_generation() {
        let mut slots = Slots::with_limit(4);
        let first = slots.insert(op(), 1);
        let second = slots.insert(op(), 1);
        assert_ne!(first, second);
        assert_eq!(slots.len(), 2);
        complete(&mut slots, first);
        assert!(!slots.contains(first), "a freed op is gone");
        let reused = slots.insert(op(), 2);
        assert_eq!(reused as u32, first as u32, "the free list hands the slot back");
        assert_ne!(reused, first, "with a new generation");
        assert!(slots.remove(first).is_none(), "a stale user_data hits nothing");
        assert!(slots.contains(reused) && slots.contains(second));
        complete(&mut slots, reused);
        complete(&mut slots, second);
        assert!(slots.is_empty());
    }

    #[test]
    fn generations_wrap_without_matching_the_stale_value() {
        let mut slots = Slots::with_limit(1);
        let first = slots.insert(op(), 1);
        complete(&mut slots, first);
        slots.set_generation(0, u32::MAX);
        let last = slots.insert(op(), 2);
        assert_eq!(last >> 32, u64::from(u32::MAX));
        complete(&mut slots, last);
        let wrapped = slots.insert(op(), 3);
        assert_eq!(wrapped >> 32, 0, "the generation wrapped to zero");
        assert!(!slots.contains(last));
        complete(&mut slots, wrapped);
    }

    #[test]
    fn the_limit_is_the_number_in_flight() {
        let mut slots = Slots::with_limit(2);
        let a = slots.insert(op(), 1);
        let _b = slots.insert(op(), 1);
        assert!(slots.is_full());
        complete(&mut slots, a);
        assert!(!slots.is_full());
        assert_eq!(slots.all_user_data().len(), 1);
        let (op, submitted_by) = slots.remove(slots.all_user_data()[0]).unwrap();
        assert_eq!(submitted_by, 1);
        op.complete(Cqe::from_raw(0, 0));
    }
}
