//! Invariant 9, user code cannot break the driver: a waker that panics when the
//! driver wakes it must not end the driver. Before the fix the panic ended the
//! ring's driver task, every op in flight resolved with the shutdown error and
//! got its buffer back while the kernel could still write into it, and later
//! ops hung.
//!
//! Each test keeps a read in flight (from a pipe nobody has written yet, or a
//! sim file with a long latency), completes a timeout whose waker panics, then
//! checks that the read still completes with the data, into the buffer it was
//! given, and that the context keeps working.

pub mod support;

use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

use aioctx::fs::File;
use aioctx::sim::{Latency, SimConfig};
use aioctx::{Backend, Context};

/// A waker that panics every time it is woken, and counts how often.
struct PanickingWaker(AtomicUsize);

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a user's waker panics");
    }
}

/// Polls a short timeout once with a panicking waker and waits until the
/// driver has woken (and so panicked in) it.
fn complete_op_with_panicking_waker(ctx: &Context) {
    let panicking = Arc::new(PanickingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(panicking.clone());
    let mut nop = pin!(ctx.timeout(Duration::from_millis(1)));
    assert!(
        nop.as_mut()
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending()
    );
    support::eventually("the driver wakes the panicking waker", || {
        panicking.0.load(Ordering::SeqCst) > 0
    });
    // The op itself completed normally.
    match nop
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result.expect("the timeout fires"),
        Poll::Pending => panic!("woken, but not complete"),
    }
}

/// A read from a pipe stays in flight across the panic, then completes with
/// the data written afterwards.
fn read_survives_panicking_waker(ctx: Context) {
    let (reader, mut writer) = support::pipe();
    let file = File::from_fd(&ctx, reader);
    let read = std::thread::spawn({
        let ctx = ctx.clone();
        move || ctx.block_on(file.read_at(vec![0u8; 1 << 20], 0))
    });
    complete_op_with_panicking_waker(&ctx);
    assert!(!read.is_finished(), "the read must still be in flight");
    assert!(!ctx.is_shutdown(), "a user's panic shut the context down");

    writer.write_all(b"still here").unwrap();
    let (result, buf) = read.join().unwrap();
    assert_eq!(result.expect("the read completes"), 10);
    assert_eq!(&buf[..10], b"still here");
    assert!(
        buf[10..].iter().all(|&b| b == 0),
        "nothing else was written"
    );
    ctx.block_on(ctx.nop()).expect("the context keeps working");
}

#[test]
fn ring_driver_survives_panicking_waker() {
    let Some(ctx) = support::build(Context::builder().backend(Backend::Uring)) else {
        return;
    };
    read_survives_panicking_waker(ctx);
}

#[test]
fn fallback_driver_survives_panicking_waker() {
    let ctx = Context::builder()
        .backend(Backend::Fallback)
        .build()
        .unwrap();
    read_survives_panicking_waker(ctx);
}

#[test]
fn sim_driver_survives_panicking_waker() {
    let ctx = Context::builder()
        .backend(Backend::Sim(
            SimConfig::new().latency(Latency::Fixed(Duration::from_millis(50))),
        ))
        .build()
        .unwrap();
    let sim = ctx.sim().unwrap();
    sim.insert_file("/data", b"durable bytes".to_vec());
    let read = std::thread::spawn({
        let ctx = ctx.clone();
        move || {
            ctx.block_on(async {
                let file = File::open(&ctx, "/data").await?;
                let (result, buf) = file.read_at(vec![0u8; 64], 0).await;
                result.map(|n| buf[..n].to_vec())
            })
        }
    });
    complete_op_with_panicking_waker(&ctx);
    assert!(!ctx.is_shutdown(), "a user's panic shut the context down");
    let data = read.join().unwrap().expect("the read completes");
    assert_eq!(data, b"durable bytes");
    ctx.block_on(ctx.nop()).expect("the context keeps working");
}
