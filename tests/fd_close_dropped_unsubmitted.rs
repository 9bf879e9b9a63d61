//! Invariant 9, every resource an op took over is released however the op
//! ends: a `File::close` future dropped before its backend started the close
//! (the home thread busy), or caught by shutdown before it reached the
//! kernel, still closes the fd. Before the fix the ring's close gave the fd
//! to an SQE that was never submitted, and nobody closed it.

pub mod support;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use aioctx::Context;
use aioctx::fs::File;
use aioctx::sim::SimConfig;

/// Whether `fd` is open on `path` (a number reused for another file counts
/// as closed).
fn open_on(fd: i32, path: &std::path::Path) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|target| target == path)
}

/// Keeps the home thread busy (blocked in a task) until the returned sender
/// is dropped or signalled.
fn occupy_home(ctx: &Context) -> mpsc::Sender<()> {
    let (release, wait) = mpsc::channel::<()>();
    let (started, running) = mpsc::channel();
    drop(ctx.spawn(async move {
        started.send(()).unwrap();
        let _ = wait.recv();
    }));
    running.recv().unwrap();
    release
}

/// Polls `future` once from this (foreign) thread, then drops it.
fn poll_once_and_drop<F: Future>(future: F) {
    let mut future = pin!(future);
    let _ = future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()));
}

fn dropped_close_closes_its_fd(ctx: Context) {
    let path = support::TempPath::new("close-dropped");
    std::fs::write(&path.0, b"x").unwrap();
    let file = File::from_fd(&ctx, std::fs::File::open(&path.0).unwrap().into());
    let fd = file.as_raw_fd();
    let release = occupy_home(&ctx);
    poll_once_and_drop(file.close());
    drop(release);
    support::eventually("the dropped close closes its fd", || !open_on(fd, &path.0));
    ctx.block_on(ctx.nop()).expect("the context keeps working");
}

fn close_caught_by_shutdown_closes_its_fd(ctx: Context) {
    let path = support::TempPath::new("close-shutdown");
    std::fs::write(&path.0, b"x").unwrap();
    let file = File::from_fd(&ctx, std::fs::File::open(&path.0).unwrap().into());
    let fd = file.as_raw_fd();
    let release = occupy_home(&ctx);
    let closing = std::thread::spawn({
        let ctx = ctx.clone();
        move || ctx.block_on(file.close())
    });
    // The close is queued behind the busy home thread; shut down meanwhile.
    std::thread::sleep(Duration::from_millis(20));
    let stopper = std::thread::spawn({
        let ctx = ctx.clone();
        move || futures::executor::block_on(ctx.shutdown())
    });
    drop(release);
    stopper.join().unwrap();
    let _ = closing.join().unwrap();
    assert!(
        !open_on(fd, &path.0),
        "shutdown leaked the fd a close took over"
    );
}

#[test]
fn ring_or_fallback_dropped_close_closes_its_fd() {
    let Some(ctx) = support::context() else {
        return;
    };
    dropped_close_closes_its_fd(ctx);
}

#[test]
fn ring_or_fallback_close_caught_by_shutdown_closes_its_fd() {
    let Some(ctx) = support::context() else {
        return;
    };
    close_caught_by_shutdown_closes_its_fd(ctx);
}

#[test]
fn sim_dropped_close_closes_its_fd() {
    let ctx = Context::builder()
        .backend(aioctx::Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    let sim = ctx.sim().unwrap();
    sim.insert_file("/f", b"x".to_vec());
    let file = ctx
        .block_on(File::open(&ctx, "/f"))
        .expect("open in the sim");
    let fd = file.as_raw_fd();
    let devnull = std::path::Path::new("/dev/null");
    assert!(open_on(fd, devnull));
    let release = occupy_home(&ctx);
    poll_once_and_drop(file.close());
    drop(release);
    support::eventually("the dropped close closes its fd", || !open_on(fd, devnull));
}
