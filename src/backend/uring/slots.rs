//! The ops the ring's driver has in the kernel, by `user_data`, and the
//! in-flight limit that keeps the completion queue from overflowing.
//!
//! The low half of an op's `user_data` is its slot's index; the high half is
//! the slot's generation, bumped each time the slot is freed, so a late cancel
//! never hits a reused slot. A slot is freed only by [`Slots::remove`], called
//! when the op's CQE is reaped (invariant 5), and the backend reference it
//! holds keeps the op's resources alive until then (invariant 4).
//!
//! # The in-flight limit
//!
//! Every SQE the driver submits posts exactly one CQE: each op's (the crate
//! has no multishot ops) and each `ASYNC_CANCEL`'s. So if the ops in flight
//! plus the cancels in flight never exceed the CQ's size, every CQE the
//! kernel posts has room in the CQ, however late the driver reaps: the kernel
//! never has to hold completions back in its overflow list (which costs it an
//! allocation per CQE, and where an allocation failure would lose one).
//!
//! The table enforces that sum, and neither [`insert`](Slots::insert) nor
//! [`cancel_sent`](Slots::cancel_sent) may pass it (debug-asserted). Ops
//! alone may use all but a reserve of an eighth of the CQ (at least one
//! entry), which only cancels can take: ops that never complete (pipe reads)
//! can fill the table, and their cancels must still get in. A cancel's CQE
//! comes at once (the kernel answers it when it is submitted, or with the
//! next task work), so a cancel that finds the reserve taken waits a turn at
//! most. Ops over their share wait in the driver's backlog, cancels in its
//! list of pending cancels. Shutdown's drain is the one exception: it cancels
//! everything at once and reaps until done, and the kernel's overflow list
//! (`IORING_FEAT_NODROP`) absorbs the excess.

use crate::ops::OpRef;
use crate::ring::IGNORED_USER_DATA;

pub(super) struct Slots {
    entries: Vec<SlotEntry>,
    free: Vec<u32>,
    /// Ops in flight.
    len: usize,
    /// Cancel requests in flight (sent, CQE not yet reaped): their CQEs need
    /// room in the CQ too.
    cancels: usize,
    /// The CQ's size: `len + cancels` never exceeds it.
    limit: usize,
    /// Entries of the limit that ops alone may not take: `len` never exceeds
    /// `limit - reserve`.
    reserve: usize,
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
    /// A table whose ops and cancels in flight together stay within `limit`,
    /// the CQ's size (see [the module docs](self#the-in-flight-limit)).
    pub(super) fn with_limit(limit: usize) -> Slots {
        assert!(limit < u32::MAX as usize, "slot indexes fit in 32 bits");
        assert!(limit > 1, "room for an op and its cancel");
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            cancels: 0,
            limit,
            reserve: (limit / 8).max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// No room for another op until a CQE is reaped.
    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.len + self.reserve >= self.limit || self.len + self.cancels >= self.limit
    }

    /// Room for another cancel.
    pub(super) fn can_cancel(&self) -> bool {
        self.len + self.cancels < self.limit
    }

    /// The CQ cannot overflow: what is in flight fits in it.
    fn check_limit(&self) {
        debug_assert!(
            self.len + self.cancels <= self.limit,
            "{} ops and {} cancels in flight, over the CQ's {} entries: the CQ could overflow",
            self.len,
            self.cancels,
            self.limit
        );
    }

    /// Counts a cancel request sent to the kernel.
    ///
    /// # Panics
    ///
    /// Without room: the caller checks [`can_cancel`](Slots::can_cancel)
    /// first.
    pub(super) fn cancel_sent(&mut self) {
        assert!(self.can_cancel(), "cancel sent over the in-flight limit");
        self.cancels += 1;
        self.check_limit();
    }

    /// Counts a cancel request's CQE reaped.
    pub(super) fn cancel_reaped(&mut self) {
        debug_assert!(
            self.cancels > 0,
            "a cancel's CQE without a cancel in flight"
        );
        self.cancels = self.cancels.saturating_sub(1);
    }

    /// Files `op` under a fresh `user_data`, which it also records in the
    /// op's cell (for a later cancel), and returns. The caller checks
    /// [`is_full`](Slots::is_full) first (debug-asserted here).
    #[inline]
    pub(super) fn insert(&mut self, op: OpRef, submitted_by: u64) -> u64 {
        debug_assert!(!self.is_full(), "slot table over its limit");
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
        self.check_limit();
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
    #[inline]
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
        assert_eq!(
            reused as u32, first as u32,
            "the free list hands the slot back"
        );
        assert_ne!(reused, first, "with a new generation");
        assert!(
            slots.remove(first).is_none(),
            "a stale user_data hits nothing"
        );
        assert!(slots.contains(reused) && slots.contains(second));
        complete(&mut slots, reused);
        complete(&mut slots, second);
        assert!(slots.is_empty());
    }

    #[test]
    fn generations_wrap_without_matching_the_stale_value() {
        let mut slots = Slots::with_limit(2);
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
    fn cancels_in_flight_count_against_the_limit() {
        let mut slots = Slots::with_limit(2);
        let a = slots.insert(op(), 1);
        assert!(slots.is_full(), "the other entry is the cancels' reserve");
        assert!(slots.can_cancel());
        slots.cancel_sent();
        assert!(
            !slots.can_cancel(),
            "one op and one cancel fill a CQ of two"
        );
        complete(&mut slots, a);
        assert!(!slots.is_full(), "an op fits beside the cancel in flight");
        let b = slots.insert(op(), 2);
        assert!(!slots.can_cancel(), "the cancel's CQE is still to come");
        slots.cancel_reaped();
        complete(&mut slots, b);
        assert!(!slots.is_full() && slots.can_cancel());
        assert!(slots.is_empty());
    }

    #[test]
    fn ops_leave_an_eighth_to_cancels() {
        let mut slots = Slots::with_limit(16);
        let ops: Vec<u64> = (0..14).map(|_| slots.insert(op(), 1)).collect();
        assert!(slots.is_full(), "14 ops and a reserve of 2 fill 16");
        slots.cancel_sent();
        slots.cancel_sent();
        assert!(!slots.can_cancel());
        for user_data in ops {
            complete(&mut slots, user_data);
        }
        slots.cancel_reaped();
        slots.cancel_reaped();
        assert!(slots.is_empty() && !slots.is_full());
    }

    #[test]
    fn the_limit_is_the_number_in_flight() {
        let mut slots = Slots::with_limit(3);
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
