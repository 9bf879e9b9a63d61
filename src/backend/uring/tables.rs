//! The ring's registered-resource tables: which slots of the buffer table
//! and of the file table are taken, and the updates that fill and clear
//! them. Registered buffers come in runs of consecutive slots, one run per
//! buffer pool, so a pool's buffer `i` is slot `first + i`; a registered
//! file takes one slot. Only the home thread reaches a home ring's tables
//! (through the core), which is what makes registration safe there; a
//! worker ring keeps its tables behind the ring's lock (`backend/worker`),
//! with the ring.

use std::io;
use std::os::fd::RawFd;

use crate::backend::common::Release;
use crate::ring::Ring;

/// The buffer and file tables of one ring.
pub(in crate::backend) struct Tables {
    buffers: TableSlots,
    files: TableSlots,
}

impl Tables {
    /// The tables `ring` was set up with, all slots free.
    pub(in crate::backend) fn of(ring: &Ring) -> Tables {
        Tables {
            buffers: TableSlots::new(ring.buffer_slots()),
            files: TableSlots::new(ring.file_slots()),
        }
    }

    /// Registers `iovecs` in consecutive slots of the buffer table; returns
    /// the first.
    ///
    /// # Safety
    ///
    /// The memory must stay valid until
    /// [`unregister_buffers`](Tables::unregister_buffers) clears the slots,
    /// or the ring closes.
    pub(super) unsafe fn register_buffers(
        &mut self,
        ring: &mut Ring,
        iovecs: &[libc::iovec],
    ) -> io::Result<u16> {
        let Some(first) = self.buffers.take(iovecs.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "the ring's buffer table has {} free slots and the pool needs {} \
                     (Builder::registered_buffer_slots)",
                    self.buffers.free(),
                    iovecs.len()
                ),
            ));
        };
        let first16 = first as u16;
        // SAFETY: the caller vouches for the memory.
        if let Err(e) = unsafe { ring.update_buffers(first16, iovecs) } {
            self.buffers.give_back(first, iovecs.len());
            return Err(e);
        }
        Ok(first16)
    }

    /// Clears `count` buffer slots from `first` and frees them.
    ///
    /// # Errors
    ///
    /// The kernel's refusal to clear them; the slots then stay taken (their
    /// memory must not be freed).
    pub(super) fn unregister_buffers(
        &mut self,
        ring: &mut Ring,
        first: u16,
        count: usize,
    ) -> io::Result<()> {
        ring.clear_buffers(first, count as u16)?;
        self.buffers.give_back(u32::from(first), count);
        Ok(())
    }

    /// Puts `fd` into a free slot of the file table; returns the slot.
    pub(in crate::backend) fn register_file(
        &mut self,
        ring: &mut Ring,
        fd: RawFd,
    ) -> io::Result<u32> {
        let Some(slot) = self.files.take(1) else {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the ring's file table is full (Builder::registered_file_slots)",
            ));
        };
        if let Err(e) = ring.update_files(slot, &[fd]) {
            self.files.give_back(slot, 1);
            return Err(e);
        }
        Ok(slot)
    }

    /// Takes the file out of `slot`: the table's reference to it is dropped
    /// (ops already in flight keep theirs until they complete).
    ///
    /// # Errors
    ///
    /// The kernel's refusal; the slot then stays taken.
    pub(super) fn unregister_file(&mut self, ring: &mut Ring, slot: u32) -> io::Result<()> {
        ring.update_files(slot, &[-1])?;
        self.files.give_back(slot, 1);
        Ok(())
    }

    /// Whether the ring has a file table (the kernel may have refused it,
    /// or the builder asked for none).
    pub(in crate::backend) fn has_files(&self) -> bool {
        !self.files.taken.is_empty()
    }

    /// Releases registered resources: out of the table, then what
    /// `release` kept alive (the fd, the memory) dropped. A refusal by the
    /// kernel is reported; the slot then stays taken, and nothing else uses
    /// it.
    pub(in crate::backend) fn release(&mut self, ring: &mut Ring, release: Release) {
        let refused = match &release {
            Release::File { slot, .. } => self.unregister_file(ring, *slot).err(),
            Release::Buffers { first, count, .. } => {
                self.unregister_buffers(ring, *first, *count).err()
            }
        };
        if let Some(e) = refused {
            match &release {
                // The memory stays with the table: freeing it while the kernel
                // holds it registered would be the bug this exists to prevent.
                Release::Buffers { .. } => {
                    tracing::error!(error = %e, "unregistering buffers failed; their memory is leaked");
                    std::mem::forget(release);
                    return;
                }
                Release::File { slot, .. } => {
                    tracing::error!(error = %e, slot, "unregistering a file failed; its slot stays taken")
                }
            }
        }
        drop(release);
    }
}

/// Which slots of one table are taken.
struct TableSlots {
    taken: Vec<bool>,
}

impl TableSlots {
    /// A table of `slots` slots, all free.
    fn new(slots: u32) -> TableSlots {
        TableSlots {
            taken: vec![false; slots as usize],
        }
    }

    /// Takes `count` consecutive free slots (the first that fit); returns the
    /// first, or `None` if no run is long enough.
    fn take(&mut self, count: usize) -> Option<u32> {
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
    fn give_back(&mut self, first: u32, count: usize) {
        let first = first as usize;
        debug_assert!(self.taken[first..first + count].iter().all(|&t| t));
        self.taken[first..first + count].fill(false);
    }

    /// Free slots in all.
    fn free(&self) -> usize {
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
