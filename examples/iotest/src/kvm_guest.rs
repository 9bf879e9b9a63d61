//! The KVM guest: the seed's `iotest` loop as x86-64 code, and the guest-physical memory map it
//! runs in. The code is assembled at run time with iced-x86's code assembler, so it reads as
//! the instruction list below rather than as bytes.
//!
//! The guest runs in long mode with paging (an identity map of the first GiB in 2 MiB pages),
//! because that gives it 64-bit registers: its checksum is then exactly
//! `backing::checksum_chunk`, the thread guest's, so both guests are checked against the same
//! per-chunk values. It runs with interrupts off and never takes one: it learns of completions
//! by reading the completion queue in its own memory, and waits when there is nothing to read.
//!
//! # Why ring 3, and a WAIT port instead of `hlt`
//!
//! The program runs at CPL 3 (guest user mode, IOPL 3 so it may use ports) rather than CPL 0.
//! On hosts whose KVM has no hardware virtualisation underneath (this project's machines run
//! `kvm_pvm`, which shadows the guest's page tables and runs guest user mode natively),
//! supervisor-mode guest code is emulated instruction by instruction: the checksum of 1 MiB took
//! 760 ms at CPL 0 and 18 ms at CPL 3. At CPL 3 `hlt` is privileged, so the guest waits for a
//! completion with a write to the `WAIT` port instead; the vCPU thread handles that exit as
//! it would an `HLT` exit without an in-kernel irqchip (see `blockdev.rs`). On VMX or SVM hosts
//! the same program runs unchanged.
//!
//! ```text
//!  boot:   rsp = stack; TABLE register = the command table          (MMIO write)
//!  batch:  out SLEEP, delay_us        the vCPU thread sleeps: the processing before a submit
//!          fill n descriptors: offset, buffer address, length
//!          DOORBELL register = n                                     (MMIO write)
//!  wait:   while taken < n:
//!            produced == taken?  consumed = taken; out WAIT          (wait for one)
//!            slot = used[taken]; checksum the slot's buffer into the descriptor
//!            out REPORT, slot                the host checks the chunk's checksum
//!            out SLEEP, delay_us             the processing after a completion
//!          read STATUS                                                (MMIO read)
//!          ERROR set?  out PANIC, status
//!  done:   out DONE, chunks
//! ```
//!
//! A guest cannot sleep for a millisecond by itself without a timer interrupt, so it asks the
//! vCPU thread to (the `SLEEP` port): the same `std::thread::sleep` the thread guest does, on the
//! same kind of thread, so the two guests' sleeps cost the same.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::backing::{INDEX_MIX, WORD_MIX};
use super::blockdev::{self, REG_DOORBELL, REG_STATUS, REG_TABLE, STATUS_ERROR};

/// The guest-physical memory map (guest-virtual addresses are the same). Everything below
/// [`DATA`](layout::DATA) is the machine's own.
pub mod layout {
    /// Page-map level 4: one entry, for the first 512 GiB.
    pub const PML4: u64 = 0x1000;
    /// Page-directory-pointer table: one entry, for the first GiB.
    pub const PDPT: u64 = 0x2000;
    /// Page directory: 512 entries of 2 MiB pages, identity-mapping the first GiB.
    pub const PD: u64 = 0x3000;
    /// The boot parameters the host writes for the guest: see [`super::params`].
    pub const PARAMS: u64 = 0x4000;
    /// The command table the guest hands the block device (see `blockdev.rs`).
    pub const TABLE: u64 = 0x5000;
    /// The guest program.
    pub const CODE: u64 = 0x1_0000;
    /// The top of the guest's stack (it grows down towards the code).
    pub const STACK_TOP: u64 = 0x2_0000;
    /// The guest's DMA buffers: one chunk per descriptor of a batch.
    pub const DATA: u64 = 0x10_0000;
    /// The end of the identity map: RAM and the device's MMIO window both lie below.
    pub const MAPPED: u64 = 1 << 30;
}

/// Byte offsets of the boot parameters at [`layout::PARAMS`], each a little-endian u64.
pub mod params {
    /// Chunks to read in the whole run.
    pub const CHUNKS: u64 = 0x00;
    /// Descriptors per doorbell.
    pub const BATCH: u64 = 0x08;
    /// Bytes per chunk.
    pub const CHUNK_BYTES: u64 = 0x10;
    /// The processing delay, in microseconds, asked of the vCPU thread through the SLEEP port.
    pub const DELAY_US: u64 = 0x18;
    /// Guest-physical address of the first DMA buffer.
    pub const DATA: u64 = 0x20;
}

/// I/O ports the guest writes (32-bit `out`); the vCPU thread handles each exit.
pub mod ports {
    /// Sleep this many microseconds on the vCPU thread: the guest's simulated processing.
    pub const SLEEP: u16 = 0x10;
    /// The checksum of this descriptor's chunk is in its `checksum` field: check it.
    pub const REPORT: u16 = 0x11;
    /// The run is over; the value is the number of chunks processed.
    pub const DONE: u16 = 0x12;
    /// The guest saw the device fail; the value is the STATUS register it read.
    pub const PANIC: u16 = 0x13;
    /// Wait until a completion the guest has not taken is published: the guest's `hlt`.
    pub const WAIT: u16 = 0x14;
}

/// What the guest program does besides the seed's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The seed's loop.
    Iotest,
    /// An undefined instruction at boot: with no IDT, the #UD becomes a triple fault, a
    /// `KVM_EXIT_SHUTDOWN` the host reports with the registers. For testing the fault report.
    FaultAtBoot,
}

/// The program's machine code, to be loaded at [`layout::CODE`].
pub fn assemble(program: Program, mmio_base: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let param = |offset: u64| qword_ptr(layout::PARAMS + offset);
    let descriptor_of = |a: &mut CodeAssembler, index: AsmRegister64| -> Result<(), IcedError> {
        // rdi = the address of descriptor `index`.
        a.mov(rdi, index)?;
        a.shl(rdi, blockdev::DESCRIPTOR_SHIFT)?;
        a.lea(rdi, ptr(rbp + rdi + blockdev::DESCRIPTORS as i32))
    };
    let mut batch = a.create_label();
    let mut fill = a.create_label();
    let mut wait = a.create_label();
    let mut take = a.create_label();
    let mut sum = a.create_label();
    let mut batch_done = a.create_label();
    let mut finish = a.create_label();
    let mut device_failed = a.create_label();

    // Boot: registers that hold for the whole run.
    if program == Program::FaultAtBoot {
        a.ud2()?;
    }
    a.mov(rsp, layout::STACK_TOP)?;
    a.mov(rbx, mmio_base)?; // rbx: the device's registers
    a.mov(rbp, layout::TABLE)?; // rbp: the command table
    a.mov(qword_ptr(rbx + REG_TABLE as i32), rbp)?; // MMIO write: where the table is
    a.mov(r12, param(params::CHUNKS))?; // r12: chunks in the run
    a.xor(r13d, r13d)?; // r13: the next chunk to read

    // One batch: sleep, fill the descriptors, ring the doorbell.
    a.set_label(&mut batch)?;
    a.cmp(r13, r12)?;
    a.jae(finish)?;
    a.mov(r14, r12)?;
    a.sub(r14, r13)?;
    a.mov(rax, param(params::BATCH))?;
    a.cmp(r14, rax)?;
    a.cmova(r14, rax)?; // r14: reads in this batch, min(batch, chunks left)
    a.mov(rax, param(params::DELAY_US))?;
    a.out(ports::SLEEP as u32, eax)?; // processing before the submit
    a.mov(rsi, param(params::CHUNK_BYTES))?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut fill)?;
    descriptor_of(&mut a, rcx)?;
    a.lea(rax, ptr(r13 + rcx))?;
    a.imul_2(rax, rsi)?;
    a.mov(qword_ptr(rdi + blockdev::DESC_OFFSET as i32), rax)?; // byte offset in the disk
    a.mov(rax, rcx)?;
    a.imul_2(rax, rsi)?;
    a.add(rax, param(params::DATA))?;
    a.mov(qword_ptr(rdi + blockdev::DESC_ADDR as i32), rax)?; // where the data goes
    a.mov(dword_ptr(rdi + blockdev::DESC_LEN as i32), esi)?;
    a.mov(dword_ptr(rdi + blockdev::DESC_RESULT as i32), 0)?;
    a.inc(rcx)?;
    a.cmp(rcx, r14)?;
    a.jb(fill)?;
    a.mov(dword_ptr(rbp + blockdev::TABLE_CONSUMED as i32), 0)?;
    a.mov(dword_ptr(rbx + REG_DOORBELL as i32), r14d)?; // MMIO write: the doorbell
    a.xor(r15d, r15d)?; // r15: completions taken in this batch

    // Wait for a completion; halt while there is none.
    a.set_label(&mut wait)?;
    a.cmp(r15, r14)?;
    a.jae(batch_done)?;
    a.mov(eax, dword_ptr(rbp + blockdev::TABLE_PRODUCED as i32))?;
    a.cmp(r15d, eax)?;
    a.jb(take)?;
    a.mov(dword_ptr(rbp + blockdev::TABLE_CONSUMED as i32), r15d)?;
    a.out(ports::WAIT as u32, eax)?; // the vCPU thread returns once a completion is published
    a.jmp(wait)?;

    // Take one completion: checksum its chunk, report it, process it.
    a.set_label(&mut take)?;
    a.mov(r9d, dword_ptr(rbp + r15 * 4 + blockdev::TABLE_USED as i32))?; // r9: its descriptor
    descriptor_of(&mut a, r9)?;
    a.mov(rsi, qword_ptr(rdi + blockdev::DESC_ADDR as i32))?;
    a.mov(ecx, dword_ptr(rdi + blockdev::DESC_LEN as i32))?;
    a.shr(rcx, 3)?; // words in the chunk
    a.mov(rdx, qword_ptr(rdi + blockdev::DESC_OFFSET as i32))?;
    a.shr(rdx, 3)?; // the first word's index in the disk
    a.xor(r8d, r8d)?; // r8: the checksum
    a.mov(r10, INDEX_MIX)?;
    a.mov(r11, WORD_MIX)?;
    a.set_label(&mut sum)?;
    // sum += (word ^ index * INDEX_MIX) * WORD_MIX, as backing::checksum_chunk does
    a.mov(rax, rdx)?;
    a.imul_2(rax, r10)?;
    a.xor(rax, qword_ptr(rsi))?;
    a.imul_2(rax, r11)?;
    a.add(r8, rax)?;
    a.add(rsi, 8)?;
    a.inc(rdx)?;
    a.dec(rcx)?;
    a.jnz(sum)?;
    a.mov(qword_ptr(rdi + blockdev::DESC_CHECKSUM as i32), r8)?;
    a.mov(eax, r9d)?;
    a.out(ports::REPORT as u32, eax)?;
    a.mov(rax, param(params::DELAY_US))?;
    a.out(ports::SLEEP as u32, eax)?; // processing after the completion
    a.inc(r15)?;
    a.jmp(wait)?;

    // The batch is done: acknowledge it and check the device did not fail.
    a.set_label(&mut batch_done)?;
    a.mov(eax, dword_ptr(rbx + REG_STATUS as i32))?; // MMIO read
    a.test(eax, STATUS_ERROR)?;
    a.jnz(device_failed)?;
    a.add(r13, r14)?;
    a.jmp(batch)?;

    a.set_label(&mut device_failed)?;
    a.out(ports::PANIC as u32, eax)?;
    a.jmp(device_failed)?;

    a.set_label(&mut finish)?;
    a.mov(eax, r13d)?;
    a.out(ports::DONE as u32, eax)?;
    a.jmp(finish)?;

    a.assemble(layout::CODE)
}
