//! The floor for a cross-thread wake-up: two std threads playing ping-pong over two eventfds.
//! One round trip is two wakes of a blocked thread, the same count as a foreign thread's
//! `block_on(nop)` against an idle context (the kick there, the completion back).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::thread;
use std::time::Instant;

use crate::affinity;
use crate::group::RunResult;
use crate::measure::{Latencies, Window};

/// Value that tells the echo thread to return (any other value is a ping).
const STOP: u64 = 2;

fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn signal(mut fd: &File, value: u64) -> io::Result<()> {
    fd.write_all(&value.to_ne_bytes())
}

fn wait(mut fd: &File) -> io::Result<u64> {
    let mut value = [0u8; 8];
    fd.read_exact(&mut value)?;
    Ok(u64::from_ne_bytes(value))
}

/// Measures eventfd ping-pong round trips (p50/p99) over `window`, the two threads pinned to
/// different CPUs.
pub fn ping_pong(window: Window) -> RunResult {
    let cpus = affinity::wake_cpus();
    let _pinned = cpus
        .map(|(caller, _)| affinity::pin_current_thread(caller))
        .transpose()?;
    let ping = eventfd()?;
    let pong = eventfd()?;
    let echo = {
        let ping = ping.try_clone()?;
        let pong = pong.try_clone()?;
        thread::Builder::new()
            .name("eventfd-echo".into())
            .spawn(move || -> io::Result<()> {
                affinity::pin_for_life(cpus.map(|(_, responder)| responder))?;
                while wait(&ping)? != STOP {
                    signal(&pong, 1)?;
                }
                Ok(())
            })?
    };
    let result = (|| {
        let warmup_end = Instant::now() + window.warmup;
        while Instant::now() < warmup_end {
            signal(&ping, 1)?;
            wait(&pong)?;
        }
        let mut latencies = Latencies::with_capacity(1 << 16);
        let start = Instant::now();
        let mut round_trips = 0;
        while start.elapsed() < window.measure {
            let sent = Instant::now();
            signal(&ping, 1)?;
            wait(&pong)?;
            latencies.record_since(sent);
            round_trips += 1;
        }
        Ok(latencies.into_measurement(round_trips, start.elapsed()))
    })();
    signal(&ping, STOP)?;
    echo.join().expect("eventfd echo thread panicked")?;
    result
}
