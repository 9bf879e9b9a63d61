//! The `direct` mode: the vCPU thread submits to a private io_uring ring of its own and waits on
//! it. No context, no lock, no other thread: the floor every other mode is measured against, like
//! the seed's virtio-blk and NVMe lines. [`PrivateRing`] is that ring, shared by both guests:
//! the thread guest drives it through [`PrivateRingDisk`], the KVM guest's block device through
//! its doorbell and halt exits.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use io_uring::{IoUring, opcode, types};

use super::backing;
use super::dma::DmaBuffer;
use super::thread_guest::Disk;
use super::{Error, Workload};

/// A ring and the image it reads, owned by one thread: one `io_uring_enter` per doorbell.
pub struct PrivateRing {
    ring: IoUring,
    /// Read by the kernel for every in-flight SQE: dropped only after they all complete.
    file: File,
    in_flight: usize,
}

impl PrivateRing {
    /// Opens the image and sets up a ring with room for `batch` reads.
    pub fn open(path: &Path, direct_io: bool, batch: usize) -> Result<Self, Error> {
        let file = backing::open_for_reading(path, direct_io).map_err(|source| Error::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        let entries = batch.next_power_of_two().max(8) as u32;
        let ring = IoUring::new(entries).map_err(Error::RingUnavailable)?;
        Ok(Self {
            ring,
            file,
            in_flight: 0,
        })
    }

    /// Queues a read of `len` bytes at `offset` into `dst`, tagged `tag`; [`submit`] sends it.
    ///
    /// # Safety
    ///
    /// `dst` must stay valid for writes of `len` bytes, and untouched, until the read's
    /// completion is reaped (by [`reap`](Self::reap), [`wait`](Self::wait) or `Drop`).
    ///
    /// [`submit`]: Self::submit
    pub unsafe fn push_read(
        &mut self,
        dst: *mut u8,
        len: u32,
        offset: u64,
        tag: u64,
    ) -> Result<(), Error> {
        let read = opcode::Read::new(types::Fd(self.file.as_raw_fd()), dst, len)
            .offset(offset)
            .build()
            .user_data(tag);
        // SAFETY: the caller keeps `dst` valid until the CQE; the fd is `self.file`, which
        // outlives every in-flight read (`Drop` reaps them first).
        unsafe { self.ring.submission().push(&read) }.map_err(|_| Error::Io {
            context: "submitting a batch".to_owned(),
            source: io::Error::other("the private ring's submission queue is full"),
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// Sends every queued read to the kernel with one `io_uring_enter`.
    pub fn submit(&mut self) -> Result<(), Error> {
        self.ring.submit().map_err(|source| Error::Io {
            context: "submitting a batch".to_owned(),
            source,
        })?;
        Ok(())
    }

    /// A completion that is ready now: its tag and result. Never blocks.
    pub fn reap(&mut self) -> Option<(u64, i32)> {
        let cqe = self.ring.completion().next()?;
        self.in_flight -= 1;
        Some((cqe.user_data(), cqe.result()))
    }

    /// Waits until a completion is ready, then reaps it.
    pub fn wait(&mut self) -> io::Result<(u64, i32)> {
        loop {
            if let Some(done) = self.reap() {
                return Ok(done);
            }
            match self.ring.submit_and_wait(1) {
                Err(err) if err.kind() != io::ErrorKind::Interrupted => return Err(err),
                _ => {}
            }
        }
    }

    /// Whether reads are still in the kernel.
    pub fn is_busy(&self) -> bool {
        self.in_flight > 0
    }
}

impl Drop for PrivateRing {
    /// Waits for every read still in flight (after an error) before the file goes, and before
    /// whoever owns the buffers may free them. If the ring cannot be waited on, the process
    /// aborts rather than let the kernel write freed memory.
    fn drop(&mut self) {
        while self.in_flight > 0 {
            if let Err(err) = self.wait() {
                eprintln!("iotest: cannot reap in-flight reads of the private ring: {err}");
                std::process::abort();
            }
        }
    }
}

/// The thread guest's disk on a [`PrivateRing`], with buffers of its own.
pub struct PrivateRingDisk {
    // Declared first, so it drops (waiting for in-flight reads) before the buffers.
    ring: PrivateRing,
    chunk: usize,
    /// One buffer per request in a batch. A buffer whose index is in flight belongs to the
    /// kernel until its CQE is reaped: nothing reads or moves its storage until then.
    buffers: Vec<DmaBuffer>,
    /// The offset each buffer is reading, by buffer index; `None` when the buffer is free.
    in_flight: Vec<Option<u64>>,
    /// Completions reaped but not yet handed to the guest: buffer index, result, reap time.
    /// Reaping every ready CQE at each call dates each completion to within one guest sleep.
    reaped: VecDeque<(usize, i32, Instant)>,
}

impl PrivateRingDisk {
    /// Opens the image and sets up a ring large enough for one batch.
    pub fn open(path: &Path, direct_io: bool, workload: &Workload) -> Result<Self, Error> {
        Ok(Self {
            ring: PrivateRing::open(path, direct_io, workload.batch)?,
            chunk: workload.chunk,
            buffers: (0..workload.batch)
                .map(|_| DmaBuffer::new(workload.chunk))
                .collect(),
            in_flight: vec![None; workload.batch],
            reaped: VecDeque::new(),
        })
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
            let dst = self.buffers[index].as_mut_ptr();
            // SAFETY: the buffer (`chunk` bytes of heap storage owned by `self.buffers`) stays
            // alive and untouched until this read's CQE is reaped by `complete_one`, or by the
            // ring's `Drop`, which runs before the buffers are freed.
            unsafe {
                self.ring
                    .push_read(dst, self.chunk as u32, offset, index as u64)
            }?;
            self.in_flight[index] = Some(offset);
        }
        self.ring.submit()
    }

    fn complete_one(&mut self, consume: impl FnOnce(u64, &[u8], Instant)) -> Result<(), Error> {
        if self.reaped.is_empty() {
            let (index, result) = self.ring.wait().map_err(|source| Error::Io {
                context: "waiting for a completion".to_owned(),
                source,
            })?;
            self.reaped
                .push_back((index as usize, result, Instant::now()));
        }
        while let Some((index, result)) = self.ring.reap() {
            self.reaped
                .push_back((index as usize, result, Instant::now()));
        }
        let (index, result, completed_at) = self.reaped.pop_front().expect("one was reaped");
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
        consume(offset, self.buffers[index].filled(read), completed_at);
        Ok(())
    }
}
