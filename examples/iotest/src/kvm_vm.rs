//! The virtual machine under the KVM guest: `/dev/kvm`, the guest's RAM (an anonymous mapping
//! the block device reads into through [`aioctx::buf::ExternalBuf`]), one vCPU started in long
//! mode, and the report of a guest that faults. Everything here is rust-vmm's `kvm-ioctls`; the
//! guest's program and memory map are in `kvm_guest.rs`, the exit loop in `kvm_run.rs`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use aioctx::buf::ExternalBuf;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::Error;
use super::kvm_guest::layout;

/// Where KVM may put the three pages it needs for real-mode emulation on Intel hosts: above
/// the identity map, clear of RAM and the MMIO window.
const TSS_ADDRESS: usize = 0xfffb_d000;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page-table entry bits: present, writable, user (the guest runs at CPL 3), and (in the page
/// directory) a 2 MiB page.
const PTE_PRESENT_WRITABLE_USER: u64 = 0b111;
const PDE_LARGE: u64 = 1 << 7;

/// Checks that this machine can run the KVM guest: `/dev/kvm` opens, speaks the stable API,
/// and creates a VM. The error says what is missing and what to do.
pub fn probe() -> Result<(), Error> {
    let kvm = open_kvm()?;
    create_vm(&kvm).map(drop)
}

fn open_kvm() -> Result<Kvm, Error> {
    let kvm = Kvm::new().map_err(|err| {
        Error::KvmUnavailable(match err.errno() {
            libc::ENOENT => "/dev/kvm does not exist: the kernel has no KVM module loaded \
                             (kvm_intel or kvm_amd), or this is a VM without nested \
                             virtualisation"
                .to_owned(),
            libc::EACCES | libc::EPERM => "permission denied opening /dev/kvm: add this user \
                                           to the group that owns it (usually kvm), or run as \
                                           root"
                .to_owned(),
            _ => format!("cannot open /dev/kvm: {err}"),
        })
    })?;
    match kvm.get_api_version() {
        12 => Ok(kvm),
        other => Err(Error::KvmUnavailable(format!(
            "/dev/kvm speaks API version {other}, not the stable version 12"
        ))),
    }
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, Error> {
    kvm.create_vm().map_err(|err| {
        Error::KvmUnavailable(format!(
            "KVM refused to create a VM ({err}): another hypervisor may hold the CPU's \
             virtualisation extensions, or the kernel is out of memory"
        ))
    })
}

/// The guest's RAM: an anonymous private mapping from guest-physical 0, mapped into the VM.
///
/// The host touches it only through volatile and atomic accesses of single words (the guest
/// may be running meanwhile) and by lending ranges to ops as [`ExternalBuf`]s. Each lent buffer
/// is counted until its release; the mapping is unmapped only when none is out, and leaked
/// otherwise, so the kernel never writes into memory that has been unmapped.
#[derive(Debug)]
pub struct GuestRam {
    host: *mut u8,
    size: u64,
    /// Buffers lent to ops and not yet released.
    lent: Arc<AtomicUsize>,
}

// SAFETY: the mapping belongs to the process, not a thread; every access goes through the
// volatile and atomic word accessors or through lent buffers, whose contract `lend` keeps.
unsafe impl Send for GuestRam {}
// SAFETY: as for Send: shared access never creates Rust references into the mapping.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// `size` bytes of zeroed RAM (whole pages).
    pub fn new(size: u64) -> io::Result<GuestRam> {
        // SAFETY: a fresh anonymous mapping: no existing memory is touched.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuestRam {
            host: host.cast(),
            size,
            lent: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The host address of `len` bytes at guest-physical `gpa`, if they are all RAM.
    fn host_range(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let end = gpa.checked_add(len)?;
        // SAFETY: `gpa + len <= size`, so the pointer stays inside the mapping.
        (end <= self.size).then(|| unsafe { self.host.add(gpa as usize) })
    }

    fn word<T>(&self, gpa: u64) -> *mut T {
        assert_eq!(
            gpa % align_of::<T>() as u64,
            0,
            "unaligned guest word at {gpa:#x}"
        );
        self.host_range(gpa, size_of::<T>() as u64)
            .unwrap_or_else(|| panic!("guest word at {gpa:#x} is outside RAM"))
            .cast()
    }

    /// Reads the little-endian word at `gpa`, which the caller knows to be RAM.
    pub fn read_u32(&self, gpa: u64) -> u32 {
        // SAFETY: `word` checked the range and alignment; a volatile read tolerates the guest
        // writing the word meanwhile.
        unsafe { self.word::<u32>(gpa).read_volatile() }
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        // SAFETY: as in `read_u32`.
        unsafe { self.word::<u64>(gpa).read_volatile() }
    }

    pub fn write_u32(&self, gpa: u64, value: u32) {
        // SAFETY: as in `read_u32`.
        unsafe { self.word::<u32>(gpa).write_volatile(value) }
    }

    pub fn write_u64(&self, gpa: u64, value: u64) {
        // SAFETY: as in `read_u32`.
        unsafe { self.word::<u64>(gpa).write_volatile(value) }
    }

    /// Stores `value` at `gpa` so that the guest, once it sees it, also sees every store made
    /// before it: the device's way of publishing a completion.
    pub fn store_release_u32(&self, gpa: u64, value: u32) {
        // SAFETY: `word` checked the range and alignment; AtomicU32 has u32's layout, and the
        // mapping outlives this borrow.
        let word = unsafe { AtomicU32::from_ptr(self.word::<u32>(gpa)) };
        // Release: the completion's descriptor and queue entry, written before, are visible
        // to whoever reads this count with Acquire (the guest's plain x86 loads are).
        word.store(value, Ordering::Release);
    }

    /// Copies `bytes` to `gpa` before the guest runs.
    pub fn load(&self, gpa: u64, bytes: &[u8]) {
        let host = self
            .host_range(gpa, bytes.len() as u64)
            .unwrap_or_else(|| panic!("{} bytes at {gpa:#x} do not fit RAM", bytes.len()));
        // SAFETY: the range is inside the mapping, which nothing else writes before boot.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), host, bytes.len()) };
    }

    /// Flips one bit of the byte at `gpa`: the fault `--inject corrupt-chunk` plants.
    pub fn flip_bit(&self, gpa: u64) {
        let byte = self
            .host_range(gpa, 1)
            .unwrap_or_else(|| panic!("{gpa:#x} is outside RAM"));
        // SAFETY: inside the mapping; volatile, as the guest may read it.
        unsafe { byte.write_volatile(byte.read_volatile() ^ 1) };
    }

    /// Lends `len` bytes at `gpa` to an op, or `None` if they are not all RAM. The op reads
    /// straight into guest memory; the buffer counts as lent until it is released.
    pub fn lend(&self, gpa: u64, len: u64) -> Option<ExternalBuf> {
        let host = self.host_range(gpa, len)?;
        // Relaxed: a count read only by `drop`, after every lending thread is done with it
        // (the run joins the vCPU thread and shuts the main context down first).
        self.lent.fetch_add(1, Ordering::Relaxed);
        let lent = Arc::clone(&self.lent);
        // SAFETY: the range is RAM: initialised (zero-filled) and writable. The mapping is not
        // unmapped while the buffer is lent (`drop` leaks it instead). The host makes no
        // reference into it, and the only other agent touching it meanwhile is the guest, which
        // reads a chunk only after the device has published its completion.
        let buf = unsafe { ExternalBuf::new(host, len as usize) };
        Some(buf.on_release(move || {
            // Release: pairs with the Acquire in `drop`, so the unmap follows the op's end.
            lent.fetch_sub(1, Ordering::Release);
        }))
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // Acquire: pairs with the release callbacks' Release.
        let lent = self.lent.load(Ordering::Acquire);
        if lent > 0 {
            eprintln!(
                "iotest: {lent} buffer(s) of guest RAM still lent to the kernel: leaking the \
                 {} MiB mapping rather than unmapping it under them",
                self.size >> 20
            );
            return;
        }
        // SAFETY: mapped in `new` with this size, and no buffer over it is lent.
        unsafe { libc::munmap(self.host.cast(), self.size as usize) };
    }
}

/// A VM with `ram` at guest-physical 0 and one vCPU, about to run `code` in long mode.
#[derive(Debug)]
pub struct Vm {
    pub vcpu: VcpuFd,
    pub ram: Arc<GuestRam>,
    _vm: VmFd,
    _kvm: Kvm,
}

impl Vm {
    /// Creates the VM, maps `ram` into it, writes the page tables and `code`, and sets the
    /// vCPU up in 64-bit user mode (CPL 3) at the code's first instruction.
    pub fn boot(ram: Arc<GuestRam>, code: &[u8]) -> Result<Vm, Error> {
        let refused = |what: &str, err: kvm_ioctls::Error| {
            Error::KvmUnavailable(format!("KVM refused to {what}: {err}"))
        };
        let kvm = open_kvm()?;
        let vm = create_vm(&kvm)?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(|err| refused("place the TSS", err))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.size,
            userspace_addr: ram.host as u64,
        };
        // SAFETY: the region is the live mapping `ram`, which the returned Vm keeps alive (an
        // Arc) at least as long as the VM that maps it.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|err| refused("map guest RAM", err))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|err| refused("create a vCPU", err))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|err| refused("report its CPUID", err))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|err| refused("set the vCPU's CPUID", err))?;

        write_page_tables(&ram);
        ram.load(layout::CODE, code);
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|err| refused("read the vCPU's registers", err))?;
        let code_segment = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x33, // RPL 3
            type_: 0b1011,  // execute/read, accessed
            present: 1,
            dpl: 3, // user mode: see kvm_guest.rs for why
            db: 0,
            s: 1,
            l: 1, // 64-bit code
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data_segment = kvm_segment {
            selector: 0x2b, // RPL 3
            type_: 0b0011,  // read/write, accessed
            l: 0,
            db: 1,
            ..code_segment
        };
        sregs.cs = code_segment;
        sregs.ds = data_segment;
        sregs.es = data_segment;
        sregs.fs = data_segment;
        sregs.gs = data_segment;
        sregs.ss = data_segment;
        sregs.cr3 = layout::PML4;
        sregs.cr4 = CR4_PAE;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA;
        vcpu.set_sregs(&sregs)
            .map_err(|err| refused("enter long mode", err))?;
        let mut regs = vcpu
            .get_regs()
            .map_err(|err| refused("read the vCPU's registers", err))?;
        regs.rip = layout::CODE;
        regs.rsp = layout::STACK_TOP;
        // Interrupts off (the guest never takes one); IOPL 3, so ring 3 may use ports.
        regs.rflags = 0x3002;
        vcpu.set_regs(&regs)
            .map_err(|err| refused("set the vCPU's registers", err))?;
        Ok(Vm {
            vcpu,
            ram,
            _vm: vm,
            _kvm: kvm,
        })
    }

    /// The vCPU's state after `exit`, for an error report: registers, control registers, and
    /// the instruction at RIP.
    pub fn fault_report(&self, exit: &str) -> Error {
        let mut state = String::new();
        match self.vcpu.get_regs() {
            Ok(r) => {
                state.push_str(&format!(
                    "rip {:#018x}  rsp {:#018x}  rflags {:#x}\n\
                     rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n\
                     rsi {:#018x}  rdi {:#018x}  rbp {:#018x}\n\
                     r8  {:#018x}  r9  {:#018x}  r10 {:#018x}  r11 {:#018x}\n\
                     r12 {:#018x}  r13 {:#018x}  r14 {:#018x}  r15 {:#018x}\n",
                    r.rip,
                    r.rsp,
                    r.rflags,
                    r.rax,
                    r.rbx,
                    r.rcx,
                    r.rdx,
                    r.rsi,
                    r.rdi,
                    r.rbp,
                    r.r8,
                    r.r9,
                    r.r10,
                    r.r11,
                    r.r12,
                    r.r13,
                    r.r14,
                    r.r15
                ));
                state.push_str(&self.instruction_at(r.rip));
            }
            Err(err) => state.push_str(&format!("registers unreadable: {err}\n")),
        }
        match self.vcpu.get_sregs() {
            Ok(s) => state.push_str(&format!(
                "cr0 {:#x}  cr2 {:#x}  cr3 {:#x}  cr4 {:#x}  efer {:#x}  cs {:#x} (l={} db={})\n",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.l, s.cs.db
            )),
            Err(err) => state.push_str(&format!("control registers unreadable: {err}\n")),
        }
        Error::GuestFault {
            exit: exit.to_owned(),
            state,
        }
    }

    /// The instruction at `rip`, disassembled, if `rip` is in RAM.
    fn instruction_at(&self, rip: u64) -> String {
        let Some(host) = self.ram.host_range(rip, 16) else {
            return format!("rip {rip:#x} is outside guest RAM\n");
        };
        let mut bytes = [0u8; 16];
        // SAFETY: `host_range` checked the 16 bytes are in the mapping; the vCPU is stopped.
        unsafe { std::ptr::copy_nonoverlapping(host, bytes.as_mut_ptr(), bytes.len()) };
        let mut decoder = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
        let instruction = decoder.decode();
        let mut text = String::new();
        IntelFormatter::new().format(&instruction, &mut text);
        let code: Vec<String> = bytes[..instruction.len().max(1)]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("at rip: {text}  ({})\n", code.join(" "))
    }
}

/// Identity-maps the first GiB with 2 MiB pages: RAM and the MMIO window alike.
fn write_page_tables(ram: &GuestRam) {
    ram.write_u64(layout::PML4, layout::PDPT | PTE_PRESENT_WRITABLE_USER);
    ram.write_u64(layout::PDPT, layout::PD | PTE_PRESENT_WRITABLE_USER);
    let page = 2 << 20;
    for index in 0..layout::MAPPED / page {
        ram.write_u64(
            layout::PD + index * 8,
            (index * page) | PTE_PRESENT_WRITABLE_USER | PDE_LARGE,
        );
    }
}
