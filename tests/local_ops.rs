//! The home-thread path (`aioctx::local`): ops made by a `LocalRing` on their
//! ring's home thread skip the `Send` protocol, and keep every guarantee of
//! an ordinary op: data read back, buffers kept until the kernel is done
//! with them (invariant 4), every future resolved at shutdown (invariant 7),
//! no fd leaked. Off the home thread, and on the other backends, a
//! `LocalRing` makes ordinary ops with the same results.

pub mod support;

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use aioctx::fs::File;
use aioctx::local::LocalRing;
use aioctx::sim::SimConfig;
use aioctx::{Backend, Builder, Context};
use futures::FutureExt;
use support::Tracked;

/// The tests of this file count the process's fds: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn local_ops_on_the_home_thread_take_the_home_path_and_read_back_what_they_wrote() {
    let _serial = serial();
    let Some(local) = support::build_local(Builder::default()) else {
        return;
    };
    let ctx = local.context().clone();
    let path = support::TempPath::new("local-round-trip");
    let fds = support::open_fds();
    local.block_on(async {
        let ring = LocalRing::new(&ctx);
        assert_eq!(ring.is_home_path(), ctx.backend() == "io_uring");
        ring.nop().await.unwrap();
        let file = support::open_rw(&ctx, path.0.to_str().unwrap()).await;
        let file = ring.file(&file); // the handle goes; the local file keeps it open
        assert_eq!(file.is_home_path(), ring.is_home_path());
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let (n, _) = file.write_at(data.clone(), 4096).await;
        assert_eq!(n.unwrap(), data.len());
        file.sync_data().await.unwrap();
        file.sync_all().await.unwrap();
        // 32 reads in flight at once, from as many tasks, as a service would.
        let reads: Vec<_> = (0..32u64)
            .map(|i| {
                let file = file.clone();
                tokio::task::spawn_local(async move {
                    let offset = 4096 + (i * 256) % 8192;
                    let (n, buf) = file.read_at(Vec::with_capacity(256), offset).await;
                    (offset, n.unwrap(), buf)
                })
            })
            .collect();
        for read in reads {
            let (offset, n, buf) = read.await.unwrap();
            assert_eq!(n, 256);
            let at = (offset - 4096) as usize;
            assert_eq!(buf, data[at..at + 256], "read at {offset}");
        }
        // Past the end: 0 bytes, not an error.
        let (n, _) = file.read_at(Vec::with_capacity(16), 1 << 20).await;
        assert_eq!(n.unwrap(), 0);
    });
    let m = ctx.metrics();
    assert_eq!(m.ops_foreign, 0, "every op went straight into the ring");
    assert!(m.ops_local >= 37, "{m:?}");
    assert_eq!(support::open_fds(), fds, "the local file closed its fd");
}

/// A local task's ops are turned by the home `LocalSet`'s turn task, so
/// their completions wake the task inside the `LocalSet` (no unpark of the
/// runtime): one local turn per NOP here, one op in flight at a time.
#[test]
fn local_tasks_ops_are_turned_inside_the_local_set() {
    let _serial = serial();
    let Some(local) = support::build_local(Builder::default()) else {
        return;
    };
    let ctx = local.context().clone();
    const NOPS: u64 = 200;
    let home_path = local.block_on(async {
        let ring = LocalRing::new(&ctx);
        let task = tokio::task::spawn_local({
            let ring = ring.clone();
            async move {
                for _ in 0..NOPS {
                    ring.nop().await.unwrap();
                }
            }
        });
        task.await.unwrap();
        ring.is_home_path()
    });
    let m = ctx.metrics();
    if home_path {
        // Every NOP's turn, bar a few the driver's eventfd-woken turns may
        // have taken first.
        assert!(m.local_turns >= NOPS / 2, "{m:?}");
        assert!(m.local_turns <= m.turns, "{m:?}");
    } else {
        assert_eq!(m.local_turns, 0, "{m:?}");
    }
}

/// Invariant 4 on the home path: a local read dropped while in the kernel
/// keeps its buffer until the op's CQE, and the ring carries on.
#[test]
fn a_local_read_dropped_in_flight_keeps_its_buffer_until_the_kernel_is_done() {
    let _serial = serial();
    let Some(local) = support::build_local(Builder::default()) else {
        return;
    };
    let ctx = local.context().clone();
    let fds = support::open_fds();
    let (reader, writer) = std::io::pipe().unwrap();
    local.block_on(async {
        let ring = LocalRing::new(&ctx);
        let file = ring.file(&File::from_fd(&ctx, OwnedFd::from(reader)));
        let (buf, freed) = Tracked::new(64);
        let mut read = file.read_at(buf, 0);
        // Submitted; the pipe is empty, so the read waits in the kernel.
        assert!((&mut read).now_or_never().is_none());
        // Into the kernel at the driver's next turn.
        assert!(support::yields_until(|| ctx.metrics().sqes_submitted > 0).await);
        let before = ctx.metrics();
        assert!(before.ops_local >= 1);
        drop(read);
        // Freed at once only if the drop's cancel brought the read's CQE
        // back already (the home thread may enter and reap on the spot). On
        // the fallback a call still queued is rightly taken back at once.
        if freed.load(Ordering::SeqCst) && ctx.backend() == "io_uring" {
            assert!(
                ctx.metrics().cqes_reaped > before.cqes_reaped,
                "the buffer was freed before the kernel gave it back"
            );
        }
        // Until the kernel answers the cancel, the buffer is the driver's.
        // The driver runs when this task yields; then it is freed.
        assert!(
            support::yields_until(|| freed.load(Ordering::SeqCst)).await,
            "the dropped read's buffer was never freed"
        );
        assert!(
            ctx.metrics().cancels_sent >= 1,
            "the read was cancelled in the kernel"
        );
        // The ring carries on.
        ring.nop().await.unwrap();
    });
    drop(writer);
    assert_eq!(support::open_fds(), fds);
}

/// Invariant 7 on the home path: a local op in flight when its context shuts
/// down resolves, with the shutdown error (or as cancelled).
#[test]
fn a_local_op_in_flight_resolves_when_its_context_shuts_down() {
    let _serial = serial();
    // The first runtime makes Tokio's process-wide fds (its signal socket
    // pair): made here, before the count.
    drop(support::build_local(Builder::default()));
    let fds = support::open_fds();
    let Some(local) = support::build_local(Builder::default()) else {
        return;
    };
    let ctx = local.context().clone();
    let (reader, writer) = std::io::pipe().unwrap();
    let stopper = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            support::eventually("the read is in flight", || ctx.metrics().ops_local >= 1);
            futures::executor::block_on(ctx.shutdown());
        })
    };
    let read = local.block_on(async {
        let ring = LocalRing::new(&ctx);
        let file = ring.file(&File::from_fd(&ctx, OwnedFd::from(reader)));
        file.read_at(Vec::with_capacity(8), 0).await.0
    });
    let e = read.expect_err("a read of an empty pipe that never got data");
    assert!(
        aioctx::is_shutdown(&e) || e.raw_os_error() == Some(libc::ECANCELED),
        "{e}"
    );
    drop(writer);
    // The shutdown finishes once the home thread lets its runtime go.
    drop(local);
    stopper.join().unwrap();
    drop(ctx);
    // On the fallback a pool thread's read of the pipe ends at the EOF of
    // the writer's drop, and lets go of the pipe then.
    support::eventually("the ring and the pipe are closed", || {
        support::open_fds() == fds
    });
}

#[test]
fn a_local_ring_off_its_home_thread_makes_ordinary_ops() {
    let _serial = serial();
    let Some(ctx) = support::context() else {
        return;
    };
    let ring = LocalRing::new(&ctx);
    assert!(
        !ring.is_home_path(),
        "this thread is not the context's home"
    );
    let before = ctx.metrics().ops_foreign;
    futures::executor::block_on(ring.nop()).unwrap();
    assert_eq!(ctx.metrics().ops_foreign, before + 1, "through the inbox");
}

#[test]
fn a_local_ring_on_the_simulator_makes_ordinary_ops_with_the_same_results() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let set = tokio::task::LocalSet::new();
    set.block_on(&rt, async {
        let ctx = Context::builder()
            .backend(Backend::Sim(SimConfig::new().seed(7)))
            .build()
            .unwrap();
        let ring = LocalRing::new(&ctx);
        assert!(!ring.is_home_path(), "the simulator has no home path");
        let file = support::open_rw(&ctx, "/local").await;
        let file = ring.file(&file);
        let (n, _) = file.write_at(b"simulated".to_vec(), 0).await;
        assert_eq!(n.unwrap(), 9);
        let (n, buf) = file.read_at(Vec::with_capacity(9), 0).await;
        assert_eq!(n.unwrap(), 9);
        assert_eq!(buf, b"simulated");
    });
}

#[test]
fn local_ring_current_needs_a_current_context() {
    let _serial = serial();
    let e = LocalRing::current().expect_err("no context is current on a test thread");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}
