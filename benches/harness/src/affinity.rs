//! CPU pinning for the `wake` benchmark. A cross-thread wake costs very different amounts when
//! the two threads share a CPU (a context switch, ~2 us here) and when they sit on different,
//! idle CPUs (an inter-processor wake of a halted vCPU, ~20-35 us here); left to the scheduler,
//! different mechanisms land in different regimes and their ratio means nothing. So every `wake`
//! row pins the caller to one CPU and the thread it wakes to another.

use std::io;
use std::mem;

/// The two CPUs the `wake` rows use, caller first: the first two this process may run on, or
/// `None` on a single-CPU machine (then nothing is pinned).
pub fn wake_cpus() -> Option<(usize, usize)> {
    let allowed = current_mask().ok()?;
    // SAFETY: `CPU_ISSET` reads a bit of an initialised `cpu_set_t`, for an index below its size.
    let mut cpus =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) });
    Some((cpus.next()?, cpus.next()?))
}

fn current_mask() -> io::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero `cpu_set_t` is a valid (empty) set.
    let mut mask: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `mask` is a valid, writable `cpu_set_t` of the size passed; 0 means this thread.
    let result =
        unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut mask) };
    if result == 0 {
        Ok(mask)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mask(mask: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `mask` is a valid `cpu_set_t` of the size passed; 0 means this thread.
    let result = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), mask) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restores the thread's previous CPU mask when dropped.
#[derive(Debug)]
pub struct Pinned {
    previous: libc::cpu_set_t,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_mask(&self.previous);
    }
}

/// Pins the calling thread to `cpu` until the returned guard is dropped.
pub fn pin_current_thread(cpu: usize) -> io::Result<Pinned> {
    let previous = current_mask()?;
    // SAFETY: an all-zero `cpu_set_t` is a valid (empty) set.
    let mut only: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `CPU_SET` writes a bit of an initialised `cpu_set_t`; `wake_cpus` only returns
    // indices below `CPU_SETSIZE`.
    unsafe { libc::CPU_SET(cpu, &mut only) };
    set_mask(&only)?;
    Ok(Pinned { previous })
}

/// Pins the calling thread to `cpu` for good (for threads that exit after the run); does
/// nothing for `None`.
pub fn pin_for_life(cpu: Option<usize>) -> io::Result<()> {
    if let Some(cpu) = cpu {
        mem::forget(pin_current_thread(cpu)?);
    }
    Ok(())
}
