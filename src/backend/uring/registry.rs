//! Which slots of the ring's registered-resource tables are taken: the
//! buffer table (registered buffers come in runs of consecutive slots, one
//! run per buffer pool, so a pool's buffer `i` is slot `first + i`) and the
//! file table (one slot per registered file).

pub(super) struct TableSlots {
    taken: Vec<bool>,
}

impl TableSlots {
    /// A table of `slots` slots, all free.
    pub(super) fn new(slots: u32) -> TableSlots {
        TableSlots {
            taken: vec![false; slots as usize],
        }
    }

    /// Takes `count` consecutive free slots (the first that fit); returns the
    /// first, or `None` if no run is long enough.
    pub(super) fn take(&mut self, count: usize) -> Option<u32> {
        if count == 0 {
            return None;
        }
        let mut run = 0;
        for index in 0..self.taken.len() {
            run = if self.taken[index] { 0 } else { run + 1 };
            if run == count {
                let first = index + 1 - count;
                self.taken[first..=index].fill(true);
                return Some(first as u32);
            }
        }
        None
    }

    /// Frees `count` slots from `first`.
    pub(super) fn give_back(&mut self, first: u32, count: usize) {
        let first = first as usize;
        debug_assert!(self.taken[first..first + count].iter().all(|&t| t));
        self.taken[first..first + count].fill(false);
    }

    /// Free slots in all.
    pub(super) fn free(&self) -> usize {
        self.taken.iter().filter(|&&t| !t).count()
    }
}

#[cfg(test)]
mod tests {
    use super::TableSlots;

    #[test]
    fn runs_are_taken_first_fit_and_given_back() {
        let mut slots = TableSlots::new(8);
        assert_eq!(slots.take(3), Some(0));
        assert_eq!(slots.take(3), Some(3));
        assert_eq!(slots.take(3), None, "only two free slots left");
        slots.give_back(0, 3);
        assert_eq!(slots.take(2), Some(0));
        assert_eq!(slots.take(2), Some(6));
        assert_eq!(slots.free(), 1);
        assert_eq!(slots.take(0), None);
    }
}
