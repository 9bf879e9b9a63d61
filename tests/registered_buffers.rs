//! Registered buffers: data round trips on every backend, a buffer dropped
//! in flight goes back to its pool only after the kernel's CQE, and a
//! registration the kernel refuses falls back to unregistered use.

pub mod support;

use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::task::{Context as TaskContext, Waker};

use aioctx::fs::{File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

fn round_trip(ctx: &Context, path: &str, expect_registered: bool) {
    round_trip_with(ctx, path, expect_registered, 4);
}

fn round_trip_with(ctx: &Context, path: &str, expect_registered: bool, count: usize) {
    ctx.block_on(async {
        let pool = ctx.register_buffers(count, 8192).await.unwrap();
        assert_eq!(pool.is_registered(), expect_registered, "{}", ctx.backend());
        assert_eq!((pool.count(), pool.available()), (count, count));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(ctx, path)
            .await
            .unwrap();
        let mut buf = pool.get().await;
        buf.extend_from_slice(&[0xAB; 4096]);
        buf.extend_from_slice(&[0xCD; 4096]);
        let (n, buf) = file.write_fixed_at(buf, 4096).await;
        assert_eq!(n.unwrap(), 8192);
        drop(buf);
        assert_eq!(pool.available(), count, "the buffer went back");
        let mut buf = pool.try_get().expect("a free buffer");
        buf.clear();
        let (n, buf) = file.read_fixed_at(buf, 4096).await;
        assert_eq!(n.unwrap(), 8192);
        assert!(buf[..4096].iter().all(|&b| b == 0xAB));
        assert!(buf[4096..].iter().all(|&b| b == 0xCD));
        // The same buffers work with the plain ops too.
        let (n, buf) = file.read_at(buf, 0).await;
        assert_eq!(n.unwrap(), 8192);
        assert!(buf[..4096].iter().all(|&b| b == 0));
    });
}

#[test]
fn ring_or_fallback_fixed_round_trip() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("fixed");
    let registered = ctx.backend() == "io_uring";
    round_trip(&ctx, path.0.to_str().unwrap(), registered);
}

#[test]
fn sim_fixed_round_trip() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    round_trip(&ctx, "/fixed", false);
}

#[test]
fn a_buffer_dropped_in_flight_returns_after_the_cqe() {
    let Some(ctx) = support::build(Context::builder().backend(Backend::Uring)) else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let pool = ctx.block_on(ctx.register_buffers(2, 4096)).unwrap();
    assert!(pool.is_registered());
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh fds on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    let (reader, mut writer) = unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let pipe = File::from_fd(&ctx, reader);
    let submitted = ctx.metrics().sqes_submitted;
    {
        let mut read = Box::pin(pipe.read_fixed_at(pool.try_get().unwrap(), 0));
        assert!(
            read.as_mut()
                .poll(&mut TaskContext::from_waker(Waker::noop()))
                .is_pending()
        );
        support::eventually("the read is in the kernel", || {
            ctx.metrics().sqes_submitted > submitted
        });
        // Keep the driver from reaping while the future is dropped.
        let (release, wait) = mpsc::channel::<()>();
        let (busy, running) = mpsc::channel();
        drop(ctx.spawn(async move {
            busy.send(()).unwrap();
            let _ = wait.recv();
        }));
        running.recv().unwrap();
        drop(read);
        assert_eq!(pool.available(), 1, "back before the kernel let go of it");
        drop(release);
    }
    support::eventually("the cancelled read's buffer returns", || {
        pool.available() == 2
    });
    assert!(ctx.metrics().cancels_sent >= 1);
    // The pipe's data is still there: the cancelled read took none.
    writer.write_all(b"x").unwrap();
    let (n, _) = ctx.block_on(pipe.read_at(Vec::with_capacity(4), 0));
    assert_eq!(n.unwrap(), 1);
}

/// Run in a child process (see the next test): with `CAP_IPC_LOCK` dropped
/// and a small `RLIMIT_MEMLOCK`, the kernel refuses the registration; the
/// pool falls back to unregistered buffers, which still work.
#[test]
fn memlock_refusal_child() {
    if std::env::var_os("AIOCTX_MEMLOCK_CHILD").is_none() {
        return;
    }
    drop_ipc_lock_capability();
    let limit = libc::rlimit {
        rlim_cur: 64 * 1024,
        rlim_max: 64 * 1024,
    };
    // SAFETY: setrlimit(2) with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    // A small ring: the ring's own memory counts against the limit too.
    let ctx = Context::builder()
        .backend(Backend::Uring)
        .entries(8)
        .registered_buffer_slots(64)
        .registered_file_slots(0)
        .build()
        .unwrap();
    let path = support::TempPath::new("memlock");
    // 32 buffers of 8 KiB: four times the limit.
    let probe = ctx.block_on(ctx.register_buffers(32, 8192)).unwrap();
    if probe.is_registered() {
        println!("NOT REFUSED");
        return;
    }
    drop(probe);
    round_trip_with(&ctx, path.0.to_str().unwrap(), false, 32);
    println!("REFUSAL FELL BACK");
}

#[test]
fn a_pool_the_buffer_table_cannot_hold_is_used_unregistered() {
    let Some(ctx) = support::build(
        Context::builder()
            .backend(Backend::Uring)
            .registered_buffer_slots(2),
    ) else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let path = support::TempPath::new("table-full");
    // Four buffers, two slots: the ring refuses, the pool still works.
    round_trip_with(&ctx, path.0.to_str().unwrap(), false, 4);
    // A pool that fits is registered.
    round_trip_with(&ctx, path.0.to_str().unwrap(), true, 2);
}

#[test]
fn a_refused_registration_falls_back_to_unregistered_buffers() {
    if !support::build(Context::builder().backend(Backend::Uring))
        .is_some_and(|c| support::on_ring(&c))
    {
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "memlock_refusal_child", "--nocapture"])
        .env("AIOCTX_MEMLOCK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.contains("NOT REFUSED") {
        return eprintln!(
            "skipping: this kernel does not refuse registered buffers past RLIMIT_MEMLOCK \
             without CAP_IPC_LOCK"
        );
    }
    assert!(
        output.status.success() && stdout.contains("REFUSAL FELL BACK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Clears `CAP_IPC_LOCK` from this process's capabilities, so io_uring
/// accounts registered memory against `RLIMIT_MEMLOCK`.
fn drop_ipc_lock_capability() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget(2) into a header and two data structs, as version 3 wants.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(ret, 0, "capget");
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: capset(2) with the structs capget filled, minus one bit.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(ret, 0, "capset");
}
