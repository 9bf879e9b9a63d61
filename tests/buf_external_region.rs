//! `ExternalBuf` over an anonymous mmap, as an emulator hands guest RAM to an op: reads land in
//! the mapping and writes send it, on the ring, the fallback and the simulator; and a read
//! dropped in flight leaves the mapping untouched once its future is gone, with the release
//! callback saying when the backend has let go of the region.

pub mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use aioctx::buf::ExternalBuf;
use aioctx::fs::{File, OpenOptions};
use aioctx::sim::{Latency, SimConfig};
use aioctx::{Backend, Context};
use futures::FutureExt;

/// How long a test waits for a release that must come: a guard against hangs, not a timing
/// assertion.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// A private anonymous mapping, unmapped when dropped. The tests drop it only after every
/// buffer over it has been released.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fill: u8) -> Mapping {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let ptr = ptr.cast::<u8>();
        // SAFETY: the mapping is `len` writable bytes, and no buffer exists over it yet.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Mapping { ptr, len }
    }

    /// A buffer over `len` bytes at `at`, and the receiver its release sends on.
    fn buf(&self, at: usize, len: usize) -> (ExternalBuf, Receiver<()>) {
        assert!(at + len <= self.len);
        let (released, on_release) = mpsc::channel();
        // SAFETY: the mapping outlives every buffer (each test waits for the releases before
        // dropping it), is initialised, and the tests read it only with `snapshot` while no op
        // owns a buffer over the bytes read, or after the release.
        let buf = unsafe { ExternalBuf::new(self.ptr.add(at), len) }.on_release(move || {
            // The test may have stopped listening after a failure; nothing to report then.
            let _ = released.send(());
        });
        (buf, on_release)
    }

    /// A copy of the mapping's bytes.
    fn snapshot(&self) -> Vec<u8> {
        let mut copy = vec![0u8; self.len];
        // SAFETY: see `buf`: no op writes the mapping while a test takes a snapshot, or the
        // region is owned by the kernel alone (whose writes a copy may then miss, which the
        // tests' assertions would report).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, copy.as_mut_ptr(), self.len) };
        copy
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; every buffer over it has been released.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn released(receiver: &Receiver<()>) {
    receiver
        .recv_timeout(RELEASE_DEADLINE)
        .expect("the release callback runs once the backend lets go of the buffer");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A context on `backend`, or `None` (after printing why) where this machine lacks io_uring.
fn context_on(backend: Backend) -> Option<Context> {
    let name = format!("{backend:?}");
    match Context::builder().backend(backend).build() {
        Ok(ctx) => Some(ctx),
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            eprintln!("skipping the {name} backend: io_uring is unavailable here ({err})");
            None
        }
        Err(err) => panic!("building a {name} context failed: {err}"),
    }
}

/// Reads, vectored reads and writes through `ExternalBuf`s over one mapping, checked against
/// what std reads and writes.
fn round_trip_through_a_mapping(ctx: &Context) {
    let data = pattern(16 * 1024);
    let source = support::TempPath::new("external-src");
    std::fs::write(&source.0, &data).unwrap();
    let target = support::TempPath::new("external-dst");
    let mapping = Mapping::new(32 * 1024, 0xAA);

    let file = ctx.block_on(File::open(ctx, &source.0)).unwrap();
    let (buf, release) = mapping.buf(4096, 8192);
    let (n, buf) = ctx.block_on(file.read_at(buf, 1000));
    assert_eq!(n.unwrap(), 8192, "{}", ctx.backend());
    drop(buf);
    released(&release);
    let seen = mapping.snapshot();
    assert_eq!(&seen[4096..12288], &data[1000..9192], "{}", ctx.backend());
    assert!(
        seen[..4096].iter().all(|&b| b == 0xAA),
        "bytes before the buffer untouched"
    );
    assert!(
        seen[12288..].iter().all(|&b| b == 0xAA),
        "bytes after the buffer untouched"
    );

    let (first, release_first) = mapping.buf(16384, 100);
    let (second, release_second) = mapping.buf(20480, 300);
    let (n, bufs) = ctx.block_on(file.readv_at(vec![first, second], 50));
    assert_eq!(n.unwrap(), 400, "{}", ctx.backend());
    drop(bufs);
    released(&release_first);
    released(&release_second);
    let seen = mapping.snapshot();
    assert_eq!(&seen[16384..16484], &data[50..150]);
    assert_eq!(&seen[20480..20780], &data[150..450]);

    let out = ctx
        .block_on(
            OpenOptions::new()
                .write(true)
                .create(true)
                .open(ctx, &target.0),
        )
        .unwrap();
    let (whole, release_whole) = mapping.buf(4096, 8192);
    let (n, whole) = ctx.block_on(out.write_at(whole, 0));
    assert_eq!(n.unwrap(), 8192);
    let (tail, release_tail) = mapping.buf(16384, 100);
    let (n, bufs) = ctx.block_on(out.writev_at(vec![whole, tail], 8192));
    assert_eq!(n.unwrap(), 8292);
    drop(bufs);
    released(&release_whole);
    released(&release_tail);
    let written = std::fs::read(&target.0).unwrap();
    assert_eq!(&written[..8192], &data[1000..9192]);
    assert_eq!(&written[8192..16384], &data[1000..9192]);
    assert_eq!(&written[16384..], &data[50..150]);
}

#[test]
fn external_buf_reads_and_writes_an_mmap_on_the_ring() {
    let Some(ctx) = context_on(Backend::Uring) else {
        return;
    };
    assert_eq!(ctx.backend(), "io_uring");
    round_trip_through_a_mapping(&ctx);
}

#[test]
fn external_buf_reads_and_writes_an_mmap_on_the_fallback() {
    let ctx = context_on(Backend::Fallback).expect("the fallback always builds");
    assert_eq!(ctx.backend(), "fallback");
    round_trip_through_a_mapping(&ctx);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn external_buf_reads_and_writes_an_mmap_on_the_sim() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new().seed(3)))
        .build()
        .unwrap();
    let data = pattern(8192);
    ctx.sim().unwrap().insert_file("/disk", data.clone());
    let mapping = Mapping::new(16384, 0xAA);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ctx, "/disk")
        .await
        .unwrap();

    let (buf, release) = mapping.buf(4096, 4096);
    let (n, buf) = file.read_at(buf, 100).await;
    assert_eq!(n.unwrap(), 4096);
    drop(buf);
    released(&release);
    assert_eq!(&mapping.snapshot()[4096..8192], &data[100..4196]);

    let (first, _) = mapping.buf(0, 10);
    let (second, _) = mapping.buf(8192, 20);
    let (n, _) = file.readv_at(vec![first, second], 5000).await;
    assert_eq!(n.unwrap(), 30);
    let seen = mapping.snapshot();
    assert_eq!(&seen[..10], &data[5000..5010]);
    assert_eq!(&seen[8192..8212], &data[5010..5030]);

    let (source, _) = mapping.buf(4096, 4096);
    let (n, _) = file.write_at(source, 10_000).await;
    assert_eq!(n.unwrap(), 4096);
    let contents = ctx.sim().unwrap().contents("/disk").unwrap();
    assert_eq!(&contents[10_000..], &data[100..4196]);
}

/// A read from a pipe nobody writes, polled once so it is in flight, then dropped. Returns the
/// pipe's write end and the release receiver.
fn drop_a_pipe_read_in_flight(
    ctx: &Context,
    mapping: &Mapping,
) -> (File, std::fs::File, Receiver<()>) {
    let (reader, writer) = support::pipe();
    let file = File::from_fd(ctx, reader);
    let (buf, release) = mapping.buf(0, mapping.len);
    let mut read = file.read_at(buf, 0);
    assert!((&mut read).now_or_never().is_none(), "nothing to read yet");
    support::eventually("the read started", || {
        let m = ctx.metrics();
        // The fallback counts a call's dwell once a pool thread runs it.
        m.sqes_submitted >= 1 && (ctx.backend() != "fallback" || m.dwell.count >= 1)
    });
    drop(read);
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "{}: the region is untouched when the drop returns",
        ctx.backend()
    );
    (file, writer, release)
}

#[test]
fn external_buf_dropped_in_flight_on_the_ring_is_released_after_the_cancel_untouched() {
    let Some(ctx) = context_on(Backend::Uring) else {
        return;
    };
    let mapping = Mapping::new(4096, 0xAA);
    let (file, mut writer, release) = drop_a_pipe_read_in_flight(&ctx, &mapping);
    // The driver cancels the read; its CQE (ECANCELED) is what lets the buffer go.
    released(&release);
    assert!(ctx.metrics().cancels_sent >= 1, "the driver sent a cancel");
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "untouched at the release"
    );
    // Data written now is still in the pipe: the cancelled read consumed nothing, and nothing
    // lands in the region.
    writer.write_all(b"late data").unwrap();
    let (n, data) = ctx.block_on(file.read_at(Vec::with_capacity(64), 0));
    assert_eq!(n.unwrap(), 9);
    assert_eq!(&data[..], b"late data");
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "untouched after"
    );
}

#[test]
fn external_buf_dropped_in_flight_on_the_fallback_is_released_at_shutdown_untouched() {
    let ctx = context_on(Backend::Fallback).expect("the fallback always builds");
    let mapping = Mapping::new(4096, 0xAA);
    let (_file, mut writer, release) = drop_a_pipe_read_in_flight(&ctx, &mapping);
    // A blocking read cannot be cancelled; with no data in the pipe it cannot have returned,
    // so the pool still holds the buffer.
    assert_eq!(
        release.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout),
        "released while the blocking read still runs"
    );
    // Shutdown resolves the pending op, which lets the buffer go; the pool thread keeps only
    // its own bounce buffer.
    futures::executor::block_on(ctx.shutdown());
    released(&release);
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "untouched at the release"
    );
    // The blocked read now returns into its bounce buffer, not the region.
    writer.write_all(b"late data").unwrap();
    support::eventually("the blocked read took the data", || {
        pipe_bytes_pending(&writer) == 0
    });
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "untouched after"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn external_buf_dropped_in_flight_on_the_sim_is_released_when_the_op_completes() {
    let ctx = Context::builder()
        .backend(Backend::Sim(
            SimConfig::new().latency(Latency::Fixed(Duration::from_millis(5))),
        ))
        .build()
        .unwrap();
    ctx.sim().unwrap().insert_file("/disk", vec![0x55; 4096]);
    let file = File::open(&ctx, "/disk").await.unwrap();
    let mapping = Mapping::new(4096, 0xAA);
    let (buf, release) = mapping.buf(0, 4096);
    let mut read = file.read_at(buf, 0);
    assert!(
        (&mut read).now_or_never().is_none(),
        "5 ms of virtual time to go"
    );
    drop(read);
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0xAA),
        "untouched when the drop returns"
    );
    assert!(
        release.try_recv().is_err(),
        "the simulator still holds the buffer"
    );
    // The simulator does not cancel: the op completes at its deadline, and only then is the
    // buffer let go.
    tokio::time::sleep(Duration::from_millis(10)).await;
    release.try_recv().expect("released once the op completed");
    assert!(
        mapping.snapshot().iter().all(|&b| b == 0x55),
        "the simulator completed the dropped read before letting the buffer go"
    );
}

/// Bytes waiting in the pipe `writer` writes to.
fn pipe_bytes_pending(writer: &std::fs::File) -> i32 {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(writer.as_raw_fd(), libc::FIONREAD, &mut pending) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    pending
}
