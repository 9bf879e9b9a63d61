//! One run of the KVM guest: the machine for the mode (the main loop, or nothing for `direct`),
//! guest RAM, the VM and its block device, and the vCPU thread's exit loop, which handles every
//! `KVM_RUN` return: the device's MMIO registers and the guest's ports (sleep, report a
//! checksum, wait for a completion, done).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuExit;

use super::backing::Backing;
use super::blockdev::{self, BlockDevice, MAX_BATCH, MMIO_BASE, MMIO_SIZE};
use super::direct::PrivateRing;
use super::kvm_guest::{self, Program, layout, params, ports};
use super::kvm_vm::{GuestRam, Vm};
use super::machine::{ContextStats, Machine};
use super::{BadChunk, Config, Error, GuestRun, Inject, Mode, Workload};

/// `KVM_RUN` returns during one run, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Writes to the device's registers: `TABLE` once, then one `DOORBELL` per batch.
    pub mmio_write: u64,
    /// Reads of the device's `STATUS`: one per batch.
    pub mmio_read: u64,
    /// Port writes: a `SLEEP` per batch and per chunk, a `REPORT` per chunk, `DONE`.
    pub io_out: u64,
    /// Halts (`WAIT` port writes): the guest had taken every published completion and waited
    /// for the next.
    pub wait: u64,
    /// Returns for a signal or task work on the vCPU thread (`EINTR`), not the guest's doing.
    pub intr: u64,
    pub total: u64,
}

/// What the vCPU thread saw over one run of the KVM guest.
#[derive(Clone, Debug, Default)]
pub struct KvmStats {
    pub exits: ExitCounts,
    /// Exits per second of the guest's wall time.
    pub exits_per_sec: f64,
    /// From a completion being published to the halted vCPU re-entering the guest: 50th
    /// percentile, 99th and maximum over the run's halts.
    pub delivery_p50: Duration,
    pub delivery_p99: Duration,
    pub delivery_max: Duration,
    /// `direct` only: from the doorbell exit to the batch's SQEs being in the kernel (the main
    /// loop's equivalent is the context's dwell), 50th percentile and maximum.
    pub submit_p50: Option<Duration>,
    pub submit_max: Option<Duration>,
}

/// Runs the KVM guest once in `mode`.
pub fn run(
    mode: Mode,
    config: &Config,
    workload: &Workload,
    backing: &Backing,
) -> Result<(GuestRun, Option<ContextStats>, KvmStats), Error> {
    let machine = match mode {
        Mode::Direct => None,
        _ => Some(Machine::start(mode, config, &backing.path)?),
    };
    let before = machine.as_ref().map(Machine::baseline);
    let ram = Arc::new(
        GuestRam::new(ram_size(workload)).map_err(|source| Error::Io {
            context: "cannot map guest RAM".to_owned(),
            source,
        })?,
    );
    let program = match config.inject {
        Some(Inject::GuestFault) => Program::FaultAtBoot,
        _ => Program::Iotest,
    };
    let code = kvm_guest::assemble(program, MMIO_BASE).map_err(|err| Error::Io {
        context: "cannot assemble the guest program".to_owned(),
        source: std::io::Error::other(err.to_string()),
    })?;
    let corrupt_chunk = match config.inject {
        Some(Inject::CorruptChunk(chunk)) => Some(chunk),
        _ => None,
    };
    let (guest, kvm) = super::on_vcpu_thread(|| {
        let mut vm = Vm::boot(Arc::clone(&ram), &code)?;
        write_params(&ram, workload);
        let mut device = BlockDevice::new(
            Arc::clone(&ram),
            machine.as_ref(),
            || PrivateRing::open(&backing.path, config.direct_io, workload.batch),
            corrupt_chunk,
            // Even without the kick a read waits at most one timer period; past a few, the
            // main loop is not turning at all.
            config.timer * 4 + Duration::from_secs(10),
        )?;
        exit_loop(&mut vm, &mut device, workload, &backing.chunk_checksums)
    })?;
    let context = machine
        .as_ref()
        .zip(before)
        .map(|(machine, before)| machine.stats_since(&before));
    // Shutting the main context down cancels and drains any read still in flight, releasing
    // its guest memory before the RAM's last reference goes.
    drop(machine);
    Ok((guest, context, kvm))
}

/// RAM for the machine's own pages and one batch of DMA buffers, in whole 2 MiB pages.
pub fn ram_size(workload: &Workload) -> u64 {
    let data = (workload.batch * workload.chunk) as u64;
    (layout::DATA + data).next_multiple_of(2 << 20)
}

/// Checks that a workload fits the KVM guest's memory map and device.
pub fn check_fits(batch: usize, chunk: usize) -> Result<(), String> {
    if batch > MAX_BATCH {
        return Err(format!(
            "--batch {batch}: the KVM guest's device takes at most {MAX_BATCH} reads \
             per doorbell"
        ));
    }
    let data = (batch as u64).saturating_mul(chunk as u64);
    if layout::DATA.saturating_add(data).next_multiple_of(2 << 20) > MMIO_BASE {
        return Err(format!(
            "--batch {batch} x --chunk {chunk} does not fit below the KVM guest's MMIO \
             window at {MMIO_BASE:#x}"
        ));
    }
    Ok(())
}

fn write_params(ram: &GuestRam, workload: &Workload) {
    let chunks = workload.size / workload.chunk as u64;
    ram.write_u64(layout::PARAMS + params::CHUNKS, chunks);
    ram.write_u64(layout::PARAMS + params::BATCH, workload.batch as u64);
    ram.write_u64(layout::PARAMS + params::CHUNK_BYTES, workload.chunk as u64);
    ram.write_u64(
        layout::PARAMS + params::DELAY_US,
        workload.delay.as_micros() as u64,
    );
    ram.write_u64(layout::PARAMS + params::DATA, layout::DATA);
}

/// What one exit asks of the loop once the exit's borrow of the vCPU has ended.
enum Step {
    Resume,
    Out(u16, u32),
    Wait,
    Fault(String),
}

/// Runs the vCPU until the guest writes `DONE`, handling every exit on this (the vCPU) thread.
fn exit_loop(
    vm: &mut Vm,
    device: &mut BlockDevice<'_>,
    workload: &Workload,
    expected: &[u64],
) -> Result<(GuestRun, KvmStats), Error> {
    let mut exits = ExitCounts::default();
    let mut sleep_floor = Duration::ZERO;
    let mut completion_wait = Duration::ZERO;
    let mut checksum = 0u64;
    let mut bytes = 0u64;
    let mut bad_chunk = None;
    let started = Instant::now();
    device.start_clock(started);
    loop {
        let exit = vm.vcpu.run();
        exits.total += 1;
        let step = match exit {
            Ok(VcpuExit::IoOut(ports::WAIT, _)) => {
                exits.wait += 1;
                Step::Wait
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                exits.io_out += 1;
                let mut value = [0u8; 4];
                let len = data.len().min(4);
                value[..len].copy_from_slice(&data[..len]);
                Step::Out(port, u32::from_le_bytes(value))
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                exits.mmio_write += 1;
                match addr.checked_sub(MMIO_BASE).filter(|&at| at < MMIO_SIZE) {
                    Some(at) => device
                        .mmio_write(at, data)
                        .map_or_else(Step::Fault, |()| Step::Resume),
                    None => Step::Fault(format!("MMIO write to {addr:#x}, outside any device")),
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                exits.mmio_read += 1;
                match addr.checked_sub(MMIO_BASE).filter(|&at| at < MMIO_SIZE) {
                    Some(at) => device
                        .mmio_read(at, data)
                        .map_or_else(Step::Fault, |()| Step::Resume),
                    None => Step::Fault(format!("MMIO read of {addr:#x}, outside any device")),
                }
            }
            Err(err) if err.errno() == libc::EINTR => {
                exits.intr += 1;
                Step::Resume
            }
            Ok(VcpuExit::InternalError) => Step::Fault(format!(
                "KVM_EXIT_INTERNAL_ERROR, suberror {}",
                internal_suberror(vm)
            )),
            Ok(VcpuExit::Shutdown) => {
                Step::Fault("KVM_EXIT_SHUTDOWN: a triple fault (the guest has no IDT)".to_owned())
            }
            Ok(other) => Step::Fault(format!("unexpected exit {other:?}")),
            Err(err) => Step::Fault(format!("KVM_RUN failed: {err}")),
        };
        match step {
            Step::Resume => {}
            Step::Wait => {
                let waiting = Instant::now();
                device.halt()?;
                completion_wait += waiting.elapsed();
            }
            Step::Out(ports::SLEEP, micros) => {
                let before = Instant::now();
                thread::sleep(Duration::from_micros(u64::from(micros)));
                sleep_floor += before.elapsed();
            }
            Step::Out(ports::REPORT, slot) => {
                let Some(table) = device.table().filter(|_| (slot as usize) < MAX_BATCH) else {
                    return Err(vm.fault_report(&format!("REPORT of descriptor {slot}")));
                };
                let desc = blockdev::descriptor(table, slot);
                let offset = vm.ram.read_u64(desc + blockdev::DESC_OFFSET);
                let len = vm.ram.read_u32(desc + blockdev::DESC_LEN);
                let sum = vm.ram.read_u64(desc + blockdev::DESC_CHECKSUM);
                let index = offset / workload.chunk as u64;
                let Some(&want) = expected.get(index as usize) else {
                    return Err(vm.fault_report(&format!("REPORT of offset {offset}")));
                };
                if sum != want && bad_chunk.is_none() {
                    bad_chunk = Some(BadChunk {
                        index,
                        offset,
                        got: sum,
                        expected: want,
                    });
                }
                checksum = checksum.wrapping_add(sum);
                bytes += u64::from(len);
            }
            Step::Out(ports::DONE, _) => break,
            Step::Out(ports::PANIC, status) => {
                return Err(device.failure().unwrap_or_else(|| {
                    vm.fault_report(&format!("the guest panicked with STATUS {status:#x}"))
                }));
            }
            Step::Out(port, value) => {
                return Err(vm.fault_report(&format!("out {value:#x} to unknown port {port:#x}")));
            }
            Step::Fault(exit) => return Err(vm.fault_report(&exit)),
        }
        device.poll();
    }
    let wall = started.elapsed();
    let timings = device.timings();
    let mut deliveries = timings.deliveries;
    deliveries.sort_unstable();
    let mut submits = timings.submits;
    submits.sort_unstable();
    let stats = KvmStats {
        exits,
        exits_per_sec: exits.total as f64 / wall.as_secs_f64(),
        delivery_p50: percentile(&deliveries, 0.50),
        delivery_p99: percentile(&deliveries, 0.99),
        delivery_max: deliveries.last().copied().unwrap_or_default(),
        submit_p50: (!submits.is_empty()).then(|| percentile(&submits, 0.50)),
        submit_max: submits.last().copied(),
    };
    let guest = GuestRun {
        wall,
        sleep_floor,
        completion_wait,
        bytes,
        checksum,
        bad_chunk,
        batches: timings.batches,
    };
    Ok((guest, stats))
}

/// The `q` quantile of `sorted` (nearest rank); zero when empty.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `kvm_run.internal.suberror`, valid after a `KVM_EXIT_INTERNAL_ERROR`.
fn internal_suberror(vm: &mut Vm) -> u32 {
    let run = vm.vcpu.get_kvm_run();
    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member of the
    // exit union; it is plain integers.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}
