//! The block device the KVM guest drives: a small MMIO controller whose doorbell queues reads
//! straight into guest RAM, and a completion queue in guest RAM that the device fills.
//!
//! # Register map
//!
//! A 4 KiB window at [`MMIO_BASE`], with no RAM behind it, so every access is an MMIO exit
//! handled on the vCPU thread:
//!
//! | offset | name        | access    | meaning                                                   |
//! |--------|-------------|-----------|-----------------------------------------------------------|
//! | `0x00` | `TABLE`     | write, 64 | guest-physical address of the command table               |
//! | `0x08` | `DOORBELL`  | write, 32 | start descriptors `0..n` of the table; `n` is the value   |
//! | `0x0c` | `STATUS`    | read, 32  | bit 0 `BUSY` a batch is in flight; bit 1 `ERROR` a read   |
//! |        |             |           | failed and the device stopped; bit 2 `IRQ` completions    |
//! |        |             |           | were published since the last read (reading clears it)    |
//! | `0x10` | `COMPLETED` | read, 32  | completions published for the current batch               |
//!
//! # Command table (guest RAM, at `TABLE`)
//!
//! | offset            | field                 | written by | meaning                              |
//! |-------------------|-----------------------|------------|--------------------------------------|
//! | `0x000`           | `produced: u32`       | device     | completions in `used` this batch     |
//! | `0x004`           | `consumed: u32`       | guest      | completions taken, set before `WAIT` |
//! | `0x040`           | `used: [u32; 256]`    | device     | descriptor index per completion, in  |
//! |                   |                       |            | completion order                     |
//! | `0x440 + 32 * i`  | descriptor `i`        |            | 32 bytes:                            |
//! | `+0x00`           | `offset: u64`         | guest      | byte offset in the disk              |
//! | `+0x08`           | `addr: u64`           | guest      | guest-physical address of the buffer |
//! | `+0x10`           | `len: u32`            | guest      | bytes to read                        |
//! | `+0x14`           | `result: i32`         | device     | bytes read, or `-errno`              |
//! | `+0x18`           | `checksum: u64`       | guest      | the chunk's checksum, for `REPORT`   |
//!
//! # The paths from doorbell to kernel
//!
//! On a `DOORBELL` write the vCPU thread takes the big lock, binds the main context and, for
//! each descriptor, `current()`-enters a read whose buffer is the guest's own memory (an
//! [`ExternalBuf`](aioctx::buf::ExternalBuf) over the descriptor's range: no bounce copy). The
//! read's completion runs on the main loop's home thread, which takes the big lock, writes the
//! descriptor's `result` and the `used` entry, bumps `produced` with a release store, and wakes
//! the vCPU if it is waiting. In `direct` the doorbell instead pushes the reads to the vCPU
//! thread's private ring; the vCPU thread reaps completions at every exit, and blocks on the ring
//! when the guest waits.
//!
//! # Completion delivery: a halt, not an interrupt
//!
//! The guest runs with interrupts off and there is no in-kernel irqchip. A guest with nothing to
//! take writes `consumed` and halts: it writes the `WAIT` port, its `hlt` (why not `hlt` itself
//! is in `kvm_guest.rs`). The exit returns to the vCPU thread, which waits until
//! `produced > consumed` (a level, so a completion published between the guest's check and its
//! halt is not lost) and re-enters the guest. That wait is where a real vCPU would sleep until
//! an interrupt; its cost is measured as the delivery latency: from a completion being published
//! to the vCPU thread calling `KVM_RUN` again.

use std::io;

use aioctx::buf::ExternalBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::direct::PrivateRing;
use super::kvm_vm::GuestRam;
use super::machine::Machine;
use super::{BatchTiming, Error};

/// The guest-physical base of the register window.
pub const MMIO_BASE: u64 = 0x3000_0000;
/// The register window's size.
pub const MMIO_SIZE: u64 = 0x1000;

pub const REG_TABLE: u64 = 0x00;
pub const REG_DOORBELL: u64 = 0x08;
pub const REG_STATUS: u64 = 0x0c;
pub const REG_COMPLETED: u64 = 0x10;

pub const STATUS_BUSY: u32 = 1 << 0;
pub const STATUS_ERROR: u32 = 1 << 1;
pub const STATUS_IRQ: u32 = 1 << 2;

pub const TABLE_PRODUCED: u64 = 0x000;
pub const TABLE_CONSUMED: u64 = 0x004;
pub const TABLE_USED: u64 = 0x040;
/// Descriptors in the table: the most a doorbell may start.
pub const MAX_BATCH: usize = 256;
pub const DESCRIPTORS: u64 = TABLE_USED + 4 * MAX_BATCH as u64;
/// log2 of a descriptor's size (32 bytes).
pub const DESCRIPTOR_SHIFT: u32 = 5;
pub const DESC_OFFSET: u64 = 0x00;
pub const DESC_ADDR: u64 = 0x08;
pub const DESC_LEN: u64 = 0x10;
pub const DESC_RESULT: u64 = 0x14;
pub const DESC_CHECKSUM: u64 = 0x18;
/// The table's size in bytes.
pub const TABLE_SIZE: u64 = DESCRIPTORS + ((MAX_BATCH as u64) << DESCRIPTOR_SHIFT);

/// The guest-physical address of descriptor `index` of the table at `table`.
pub fn descriptor(table: u64, index: u32) -> u64 {
    table + DESCRIPTORS + (u64::from(index) << DESCRIPTOR_SHIFT)
}

/// What the device measured over one run.
#[derive(Clone, Debug, Default)]
pub struct DeviceTimings {
    /// Per batch: when its doorbell rang, and how long until its last read completed.
    pub batches: Vec<BatchTiming>,
    /// Per halt: from the completion that ended it being published to the vCPU thread
    /// re-entering the guest.
    pub deliveries: Vec<Duration>,
    /// `direct` only, per doorbell: from the exit to the batch's SQEs being in the kernel.
    pub submits: Vec<Duration>,
}

/// The device's completion side, shared with the reads' completions on the home thread.
#[derive(Debug)]
struct CompletionQueue {
    ram: Arc<GuestRam>,
    /// Chunk whose data the device corrupts after reading it (`--inject corrupt-chunk`).
    corrupt_chunk: Option<u64>,
    state: Mutex<QueueState>,
    /// Signalled at every publish; a halted vCPU waits on it.
    published: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    table: u64,
    /// Reads in the current batch, and how many have been published.
    expected: u32,
    produced: u32,
    doorbell_at: Option<Instant>,
    /// When each of this batch's completions was published, in `used` order.
    published_at: Vec<Instant>,
    irq: bool,
    /// Why the device stopped, if it did.
    failure: Option<String>,
    batches: Vec<BatchTiming>,
    run_started: Option<Instant>,
}

impl CompletionQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes one finished read into the guest's completion queue and wakes a halted vCPU.
    fn publish(&self, read: Read, result: io::Result<usize>) {
        let mut state = self.lock();
        let now = Instant::now();
        let Read {
            slot,
            offset,
            addr,
            len,
        } = read;
        let value = match result {
            Ok(done) if done as u64 == len => {
                if self.corrupt_chunk == Some(offset / len) {
                    self.ram.flip_bit(addr);
                }
                done as i32
            }
            Ok(done) => {
                state.failure.get_or_insert(format!(
                    "reading at offset {offset}: short read: {done} of {len} bytes"
                ));
                done as i32
            }
            Err(err) => {
                state
                    .failure
                    .get_or_insert(format!("reading at offset {offset}: {err}"));
                -err.raw_os_error().unwrap_or(libc::EIO)
            }
        };
        let desc = descriptor(state.table, slot);
        self.ram.write_u32(desc + DESC_RESULT, value as u32);
        let index = state.produced;
        self.ram
            .write_u32(state.table + TABLE_USED + 4 * u64::from(index), slot);
        state.produced += 1;
        self.ram
            .store_release_u32(state.table + TABLE_PRODUCED, state.produced);
        state.published_at.push(now);
        state.irq = true;
        if let (true, Some(doorbell), Some(started)) = (
            state.produced == state.expected,
            state.doorbell_at,
            state.run_started,
        ) {
            state.batches.push(BatchTiming {
                at: doorbell - started,
                latency: now - doorbell,
            });
        }
        drop(state);
        self.published.notify_one();
    }
}

/// One read a descriptor asked for, as the doorbell found it.
#[derive(Clone, Copy, Debug)]
struct Read {
    slot: u32,
    offset: u64,
    addr: u64,
    len: u64,
}

/// Where the doorbell sends reads.
enum Path<'m> {
    /// Into the main context, from the vCPU thread under the big lock (`kick`, `no-kick`,
    /// `no-kick-busy`).
    MainLoop(&'m Machine),
    /// Into the vCPU thread's private ring (`direct`); the ring's tags are descriptor indexes.
    PrivateRing(Box<PrivateRing>),
}

/// The controller, as the vCPU thread sees it.
pub struct BlockDevice<'m> {
    queue: Arc<CompletionQueue>,
    path: Path<'m>,
    /// The table address the guest wrote to `TABLE`.
    table: Option<u64>,
    /// Reads in the private ring and their lent buffers, by descriptor: released as the
    /// reads are reaped.
    lent: Vec<Option<(Read, ExternalBuf)>>,
    /// How long a halted vCPU waits for one completion before declaring the device stuck.
    halt_deadline: Duration,
    deliveries: Vec<Duration>,
    submits: Vec<Duration>,
}

impl<'m> BlockDevice<'m> {
    /// A device whose reads go to `machine`'s main context, or (with `None`) to a private ring
    /// on `image`.
    pub fn new(
        ram: Arc<GuestRam>,
        machine: Option<&'m Machine>,
        private_ring: impl FnOnce() -> Result<PrivateRing, Error>,
        corrupt_chunk: Option<u64>,
        halt_deadline: Duration,
    ) -> Result<Self, Error> {
        let path = match machine {
            Some(machine) => Path::MainLoop(machine),
            None => Path::PrivateRing(Box::new(private_ring()?)),
        };
        Ok(Self {
            queue: Arc::new(CompletionQueue {
                ram,
                corrupt_chunk,
                state: Mutex::new(QueueState::default()),
                published: Condvar::new(),
            }),
            path,
            table: None,
            lent: (0..MAX_BATCH).map(|_| None).collect(),
            halt_deadline,
            deliveries: Vec::new(),
            submits: Vec::new(),
        })
    }

    /// Marks the start of the run: batch times are measured from here.
    pub fn start_clock(&self, at: Instant) {
        self.queue.lock().run_started = Some(at);
    }

    /// An MMIO write of `data` at `offset` in the window. `Err` is a guest programming error.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let mut value = [0u8; 8];
        value[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let value = u64::from_le_bytes(value);
        match (offset, data.len()) {
            (REG_TABLE, 8) => {
                if value % 8 != 0 || value.saturating_add(TABLE_SIZE) > self.queue.ram.size() {
                    return Err(format!(
                        "TABLE {value:#x} is not an aligned table inside RAM"
                    ));
                }
                self.table = Some(value);
                Ok(())
            }
            (REG_DOORBELL, 4) => self.doorbell(value as u32),
            _ => Err(format!(
                "{}-byte write of {value:#x} to register {offset:#x}",
                data.len()
            )),
        }
    }

    /// An MMIO read of `data.len()` bytes at `offset` in the window.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), String> {
        self.poll();
        let mut state = self.queue.lock();
        let value = match (offset, data.len()) {
            (REG_STATUS, 4) => {
                let mut status = 0;
                if state.produced < state.expected {
                    status |= STATUS_BUSY;
                }
                if state.failure.is_some() {
                    status |= STATUS_ERROR;
                }
                if std::mem::take(&mut state.irq) {
                    status |= STATUS_IRQ;
                }
                status
            }
            (REG_COMPLETED, 4) => state.produced,
            _ => return Err(format!("{}-byte read of register {offset:#x}", data.len())),
        };
        data.copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    /// The doorbell: starts descriptors `0..count`, from the vCPU thread.
    fn doorbell(&mut self, count: u32) -> Result<(), String> {
        let exit_at = Instant::now();
        let table = self.table.ok_or("DOORBELL rung before TABLE was written")?;
        if count == 0 || count as usize > MAX_BATCH {
            return Err(format!(
                "DOORBELL {count}: a batch is 1..={MAX_BATCH} reads"
            ));
        }
        {
            let mut state = self.queue.lock();
            if state.produced < state.expected {
                return Err("DOORBELL rung while a batch is in flight".to_owned());
            }
            state.table = table;
            state.expected = count;
            state.produced = 0;
            state.published_at.clear();
            state.doorbell_at = Some(exit_at);
        }
        let ram = &self.queue.ram;
        ram.store_release_u32(table + TABLE_PRODUCED, 0);
        let reads: Vec<Read> = (0..count)
            .map(|slot| {
                let desc = descriptor(table, slot);
                Read {
                    slot,
                    offset: ram.read_u64(desc + DESC_OFFSET),
                    addr: ram.read_u64(desc + DESC_ADDR),
                    len: u64::from(ram.read_u32(desc + DESC_LEN)),
                }
            })
            .collect();
        let lend = |read: &Read| {
            ram.lend(read.addr, read.len).ok_or_else(|| {
                format!(
                    "descriptor {}: {} bytes at {:#x} are not guest RAM",
                    read.slot, read.len, read.addr
                )
            })
        };
        match &mut self.path {
            Path::MainLoop(machine) => {
                let bufs = reads
                    .iter()
                    .map(|read| Ok((*read, lend(read)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                let queue = &self.queue;
                machine.mmio_exit(|| {
                    // Deep in the device model: the context comes from the binding, as QEMU's
                    // block layer finds it with qemu_get_current_aio_context().
                    let context = aioctx::current()
                        .expect("an MMIO exit runs with the vCPU bound to the main context");
                    for (read, buf) in bufs {
                        let image = Arc::clone(&machine.image);
                        let bql = Arc::clone(&machine.bql);
                        let queue = Arc::clone(queue);
                        // Detached: the completion queue, not the handle, reports the result.
                        drop(context.enter(async move {
                            let (result, buf) = image.read_at(buf, read.offset).await;
                            // The guest's memory is the guest's again before it learns so.
                            drop(buf);
                            let _bql = bql.lock().unwrap_or_else(PoisonError::into_inner);
                            queue.publish(read, result);
                        }));
                    }
                });
            }
            Path::PrivateRing(ring) => {
                for read in reads {
                    let mut buf = lend(&read)?;
                    // SAFETY: the buffer is guest RAM kept mapped while lent; it stays in
                    // `self.lent` until this read's CQE is reaped (by `poll`, `halt` or this
                    // device's `Drop`, which reaps every read before `self.lent` goes).
                    let pushed = unsafe {
                        ring.push_read(
                            buf.as_mut_ptr(),
                            read.len as u32,
                            read.offset,
                            u64::from(read.slot),
                        )
                    };
                    pushed.map_err(|err| err.to_string())?;
                    self.lent[read.slot as usize] = Some((read, buf));
                }
                ring.submit().map_err(|err| err.to_string())?;
                self.submits.push(exit_at.elapsed());
            }
        }
        Ok(())
    }

    /// Publishes the private ring's ready completions; called at every exit. Nothing to do when
    /// the main loop publishes.
    pub fn poll(&mut self) {
        if let Path::PrivateRing(ring) = &mut self.path {
            while let Some((slot, result)) = ring.reap() {
                Self::finish_private(&self.queue, &mut self.lent, slot, result);
            }
        }
    }

    fn finish_private(
        queue: &CompletionQueue,
        lent: &mut [Option<(Read, ExternalBuf)>],
        slot: u64,
        result: i32,
    ) {
        let (read, buf) = lent[slot as usize]
            .take()
            .expect("every CQE belongs to a read in the ring");
        drop(buf);
        let result = usize::try_from(result).map_err(|_| io::Error::from_raw_os_error(-result));
        queue.publish(read, result);
    }

    /// The guest's halt (its `WAIT` exit): waits until a completion the guest has not taken is
    /// published (the guest wrote how many it took to `consumed`), then records how long the
    /// delivery took.
    pub fn halt(&mut self) -> Result<(), Error> {
        self.poll();
        let table = self.table.unwrap_or_default();
        let consumed = self.queue.ram.read_u32(table + TABLE_CONSUMED);
        let deadline = Instant::now() + self.halt_deadline;
        let published_at = loop {
            let state = self.queue.lock();
            if let Some(failure) = &state.failure {
                return Err(device_error(failure));
            }
            if state.produced > consumed {
                break state.published_at[consumed as usize];
            }
            if state.produced >= state.expected {
                return Err(Error::Io {
                    context: "the guest waits".to_owned(),
                    source: io::Error::other("it waits for a completion no read will publish"),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Io {
                    context: "waiting for the disk's completion".to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no completion within {:?}: the main loop never submitted the read",
                            self.halt_deadline
                        ),
                    ),
                });
            }
            match &mut self.path {
                Path::MainLoop(_) => {
                    // A halted vCPU sleeps until the device raises the line.
                    let (state, _) = self
                        .queue
                        .published
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner);
                    drop(state);
                }
                Path::PrivateRing(ring) => {
                    drop(state);
                    let (slot, result) = ring.wait().map_err(|source| Error::Io {
                        context: "waiting for the private ring".to_owned(),
                        source,
                    })?;
                    Self::finish_private(&self.queue, &mut self.lent, slot, result);
                }
            }
        };
        self.deliveries.push(published_at.elapsed());
        Ok(())
    }

    /// Why the device stopped, for the guest's `PANIC` report.
    pub fn failure(&self) -> Option<Error> {
        self.queue.lock().failure.as_deref().map(device_error)
    }

    /// What the device measured.
    pub fn timings(&self) -> DeviceTimings {
        DeviceTimings {
            batches: self.queue.lock().batches.clone(),
            deliveries: self.deliveries.clone(),
            submits: self.submits.clone(),
        }
    }

    /// The command table's address, once the guest has written `TABLE`.
    pub fn table(&self) -> Option<u64> {
        self.table
    }
}

impl Drop for BlockDevice<'_> {
    /// Reaps every read still in the private ring before the lent buffers are released.
    fn drop(&mut self) {
        if let Path::PrivateRing(ring) = &mut self.path {
            while ring.is_busy() {
                match ring.wait() {
                    Ok((slot, _)) => drop(self.lent[slot as usize].take()),
                    Err(err) => {
                        eprintln!("iotest: cannot reap the private ring, leaking guest RAM: {err}");
                        std::mem::forget(std::mem::take(&mut self.lent));
                        return;
                    }
                }
            }
        }
    }
}

fn device_error(failure: &str) -> Error {
    Error::Io {
        context: "the block device failed".to_owned(),
        source: io::Error::other(failure.to_owned()),
    }
}
