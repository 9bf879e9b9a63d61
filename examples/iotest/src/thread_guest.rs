//! The thread guest: the seed's `iotest` loop as a Rust function on a plain std thread standing
//! in for the vCPU, for machines without `/dev/kvm`. Its disk is a trait with two
//! implementations: the private ring of `direct` (`direct.rs`), and [`EmulatedDisk`], whose
//! doorbell runs through the [`Machine`]'s MMIO exit and whose completions come back over a
//! channel raised under the big lock.

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use aioctx::buf::AlignedBuf;
use aioctx::fs::File;

use super::backing::{self, Backing};
use super::direct::PrivateRingDisk;
use super::machine::{ContextStats, Machine};
use super::{BadChunk, BatchTiming, Config, Error, GuestRun, Mode, Workload};

/// A disk as the guest sees it: a doorbell that takes a batch of reads, and one completion per
/// read.
pub trait Disk {
    /// Queues one `chunk`-byte read at each offset: one doorbell write (an MMIO exit in the
    /// emulated modes).
    fn submit(&mut self, offsets: &[u64]) -> Result<(), Error>;

    /// Waits for the next completion and hands `consume` its offset, the bytes read, and when
    /// the device finished the read (as closely as the disk can tell).
    fn complete_one(&mut self, consume: impl FnOnce(u64, &[u8], Instant)) -> Result<(), Error>;
}

/// Runs the thread guest once in `mode` and returns what it measured and, for the emulated
/// modes, what the main context saw.
pub fn run(
    mode: Mode,
    config: &Config,
    workload: &Workload,
    backing: &Backing,
) -> Result<(GuestRun, Option<ContextStats>), Error> {
    if mode == Mode::Direct {
        let guest = super::on_vcpu_thread(|| {
            let mut disk = PrivateRingDisk::open(&backing.path, config.direct_io, workload)?;
            run_guest(workload, &backing.chunk_checksums, &mut disk)
        })?;
        return Ok((guest, None));
    }
    let machine = Machine::start(mode, config, &backing.path)?;
    let before = machine.baseline();
    let (to_vcpu, interrupts) = mpsc::channel();
    let controller = DiskController {
        image: Arc::clone(&machine.image),
        interrupt_line: InterruptLine {
            bql: Arc::clone(&machine.bql),
            to_vcpu,
        },
    };
    let guest = super::on_vcpu_thread(|| {
        let mut disk = EmulatedDisk {
            machine: &machine,
            controller,
            interrupts,
            free_buffers: (0..workload.batch)
                .map(|_| AlignedBuf::with_capacity(workload.chunk))
                .collect(),
            chunk: workload.chunk,
            // Even without the kick a read waits at most one timer period; past a few, the
            // main loop is not turning at all.
            interrupt_deadline: config.timer * 4 + Duration::from_secs(10),
        };
        run_guest(workload, &backing.chunk_checksums, &mut disk)
    })?;
    Ok((guest, Some(machine.stats_since(&before))))
}

/// The guest program: the seed's `iotest`, run on the calling thread (the vCPU thread). Each
/// chunk's checksum is checked against `expected`, indexed by chunk.
fn run_guest(
    workload: &Workload,
    expected: &[u64],
    disk: &mut impl Disk,
) -> Result<GuestRun, Error> {
    let offsets: Vec<u64> = (0..workload.size).step_by(workload.chunk).collect();
    let mut sleep_floor = Duration::ZERO;
    let mut sleep = || {
        let before = Instant::now();
        thread::sleep(workload.delay);
        sleep_floor += before.elapsed();
    };
    let mut completion_wait = Duration::ZERO;
    let mut checksum = 0u64;
    let mut bytes = 0u64;
    let mut bad_chunk = None;
    let mut batches = Vec::new();
    let started = Instant::now();
    for batch in offsets.chunks(workload.batch) {
        sleep();
        let doorbell = Instant::now();
        disk.submit(batch)?;
        let mut last_completion = doorbell;
        for _ in batch {
            let waiting = Instant::now();
            disk.complete_one(|offset, data, completed_at| {
                completion_wait += waiting.elapsed();
                last_completion = last_completion.max(completed_at);
                let sum = backing::checksum_chunk(offset, data);
                let index = offset / workload.chunk as u64;
                if sum != expected[index as usize] && bad_chunk.is_none() {
                    bad_chunk = Some(BadChunk {
                        index,
                        offset,
                        got: sum,
                        expected: expected[index as usize],
                    });
                }
                checksum = checksum.wrapping_add(sum);
                bytes += data.len() as u64;
            })?;
            sleep();
        }
        batches.push(BatchTiming {
            at: doorbell - started,
            latency: last_completion - doorbell,
        });
    }
    let wall = started.elapsed();
    Ok(GuestRun {
        wall,
        sleep_floor,
        completion_wait,
        bytes,
        checksum,
        bad_chunk,
        batches,
    })
}

/// One read the guest asked for, with the buffer the device reads into.
#[derive(Debug)]
struct ReadRequest {
    offset: u64,
    buf: AlignedBuf,
}

/// A completion, as the interrupt hands it to the guest.
#[derive(Debug)]
struct Interrupt {
    offset: u64,
    raised_at: Instant,
    result: io::Result<usize>,
    buf: AlignedBuf,
}

/// The device model: it owns the image and raises an interrupt per finished read.
#[derive(Debug)]
struct DiskController {
    image: Arc<File>,
    interrupt_line: InterruptLine,
}

impl DiskController {
    /// The doorbell handler, deep in the device model: it finds the context through
    /// [`aioctx::current`], as QEMU's block layer does, and enters one read per request. Each
    /// read's SQE is pushed from this (the vCPU) thread; its completion runs on the home thread.
    fn handle_doorbell(&self, requests: Vec<ReadRequest>) {
        let context =
            aioctx::current().expect("an MMIO exit runs with the vCPU bound to the main context");
        for ReadRequest { offset, buf } in requests {
            let image = Arc::clone(&self.image);
            let interrupt_line = self.interrupt_line.clone();
            // Detached: the interrupt, not the handle, reports the completion.
            drop(context.enter(async move {
                let (result, buf) = image.read_at(buf, offset).await;
                interrupt_line.raise(Interrupt {
                    offset,
                    raised_at: Instant::now(),
                    result,
                    buf,
                });
            }));
        }
    }
}

/// The wire from the controller to the vCPU: completions are raised under the BQL, as QEMU's
/// completion callbacks run with it held.
#[derive(Clone, Debug)]
struct InterruptLine {
    bql: Arc<Mutex<()>>,
    to_vcpu: Sender<Interrupt>,
}

impl InterruptLine {
    fn raise(&self, interrupt: Interrupt) {
        let _bql = self.bql.lock().unwrap_or_else(PoisonError::into_inner);
        // The guest stops listening only when its run has failed; nothing is left to tell.
        let _ = self.to_vcpu.send(interrupt);
    }
}

/// The disk as the guest on the vCPU thread sees it.
struct EmulatedDisk<'machine> {
    machine: &'machine Machine,
    controller: DiskController,
    interrupts: Receiver<Interrupt>,
    /// The guest's DMA buffers not lent to the device.
    free_buffers: Vec<AlignedBuf>,
    chunk: usize,
    /// How long to wait for one interrupt before declaring the main loop stuck.
    interrupt_deadline: Duration,
}

impl Disk for EmulatedDisk<'_> {
    fn submit(&mut self, offsets: &[u64]) -> Result<(), Error> {
        let requests = offsets
            .iter()
            .map(|&offset| ReadRequest {
                offset,
                buf: self
                    .free_buffers
                    .pop()
                    .expect("the guest never has more than one batch in flight"),
            })
            .collect();
        self.machine
            .mmio_exit(|| self.controller.handle_doorbell(requests));
        Ok(())
    }

    fn complete_one(&mut self, consume: impl FnOnce(u64, &[u8], Instant)) -> Result<(), Error> {
        let Interrupt {
            offset,
            raised_at,
            result,
            buf,
        } = self
            .interrupts
            .recv_timeout(self.interrupt_deadline)
            .map_err(|err| Error::Io {
                context: "waiting for the disk's interrupt".to_owned(),
                source: match err {
                    RecvTimeoutError::Timeout => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no completion within {:?}: the main loop never submitted the read",
                            self.interrupt_deadline
                        ),
                    ),
                    RecvTimeoutError::Disconnected => {
                        io::Error::other("the main loop dropped the read")
                    }
                },
            })?;
        let outcome = match result {
            Ok(read) if read == self.chunk => {
                consume(offset, &buf[..read], raised_at);
                Ok(())
            }
            Ok(read) => Err(Error::short_read(offset, read, self.chunk)),
            Err(source) => Err(Error::Io {
                context: format!("reading at offset {offset}"),
                source,
            }),
        };
        self.free_buffers.push(buf);
        outcome
    }
}
