//! The `direct` mode: the vCPU thread submits to a private io_uring ring of its own and waits on
//! it. No context, no lock, no other thread: the floor every other mode is measured against, like
//! the seed's virtio-blk and NVMe lines.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{IoUring, opcode, types};

use super::backing;
use super::dma::DmaBuffer;
use super::{Disk, Error, Workload};

/// A disk the guest drives through its own ring: one `io_uring_enter` per doorbell.
pub(crate) struct PrivateRingDisk {
    ring: IoUring,
    /// Read by the kernel for every in-flight SQE: dropped only after they all complete.
    file: File,
    chunk: usize,
    /// One buffer per request in a batch. A buffer whose index is in flight belongs to the
    /// kernel until its CQE is reaped: nothing reads or moves its storage until then.
    buffers: Vec<DmaBuffer>,
    /// The offset each buffer is reading, by buffer index; `None` when the buffer is free.
    in_flight: Vec<Option<u64>>,
}

impl PrivateRingDisk {
    /// Opens the image and sets up a ring large enough for one batch.
    pub(crate) fn open(path: &Path, direct_io: bool, workload: &Workload) -> Result<Self, Error> {
        let file = backing::open_for_reading(path, direct_io).map_err(|source| Error::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        let entries = workload.batch.next_power_of_two().max(8) as u32;
        let ring = IoUring::new(entries).map_err(Error::RingUnavailable)?;
        Ok(Self {
            ring,
            file,
            chunk: workload.chunk,
            buffers: (0..workload.batch)
                .map(|_| DmaBuffer::new(workload.chunk))
                .collect(),
            in_flight: vec![None; workload.batch],
        })
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.iter().filter(|slot| slot.is_some()).count()
    }

    /// Waits until at least one CQE is ready, then reaps one: returns its buffer index and result.
    fn reap_one(&mut self) -> io::Result<(usize, i32)> {
        loop {
            if let Some(cqe) = self.ring.completion().next() {
                return Ok((cqe.user_data() as usize, cqe.result()));
            }
            match self.ring.submit_and_wait(1) {
                Err(err) if err.kind() != io::ErrorKind::Interrupted => return Err(err),
                _ => {}
            }
        }
    }
}

impl Disk for PrivateRingDisk {
    fn submit(&mut self, offsets: &[u64]) -> Result<(), Error> {
        for &offset in offsets {
            let index = self
                .in_flight
                .iter()
                .position(Option::is_none)
                .expect("the guest never has more than one batch in flight");
            let read = opcode::Read::new(
                types::Fd(self.file.as_raw_fd()),
                self.buffers[index].as_mut_ptr(),
                self.chunk as u32,
            )
            .offset(offset)
            .build()
            .user_data(index as u64);
            // SAFETY: the buffer (`chunk` bytes of heap storage owned by `self.buffers`) and the
            // fd (`self.file`) stay alive and untouched until this SQE's CQE is reaped by
            // `complete_one` or by `Drop`, which waits for every in-flight read first.
            unsafe { self.ring.submission().push(&read) }.map_err(|_| Error::Io {
                context: "submitting a batch".to_owned(),
                source: io::Error::other("the private ring's submission queue is full"),
            })?;
            self.in_flight[index] = Some(offset);
        }
        self.ring.submit().map_err(|source| Error::Io {
            context: "submitting a batch".to_owned(),
            source,
        })?;
        Ok(())
    }

    fn complete_one(&mut self, consume: impl FnOnce(u64, &[u8])) -> Result<(), Error> {
        let (index, result) = self.reap_one().map_err(|source| Error::Io {
            context: "waiting for a completion".to_owned(),
            source,
        })?;
        let offset = self.in_flight[index]
            .take()
            .expect("every CQE belongs to an in-flight read");
        let read = usize::try_from(result).map_err(|_| Error::Io {
            context: format!("reading at offset {offset}"),
            source: io::Error::from_raw_os_error(-result),
        })?;
        if read != self.chunk {
            return Err(Error::short_read(offset, read, self.chunk));
        }
        consume(offset, self.buffers[index].filled(read));
        Ok(())
    }
}

impl Drop for PrivateRingDisk {
    /// Waits for every read still in flight (after an error) before the buffers and the file go.
    /// If the ring cannot be waited on, the buffers are leaked rather than freed under the kernel.
    fn drop(&mut self) {
        while self.in_flight_count() > 0 {
            match self.reap_one() {
                Ok((index, _)) => self.in_flight[index] = None,
                Err(err) => {
                    eprintln!("iotest: cannot reap in-flight reads, leaking their buffers: {err}");
                    std::mem::forget(std::mem::take(&mut self.buffers));
                    return;
                }
            }
        }
    }
}
