//! `FileStream` write-behind: a write the stream acknowledged (its
//! `poll_write` returned `Ok(n)`) reaches the file though nobody touches the
//! stream again, and though the stream is dropped without a flush, on every
//! backend: the ring (or the fallback under `AIOCTX_BACKEND=fallback`), the
//! simulator, and the worker rings of `aioctx::runtime`. Before the fix the
//! write was only stored, to be run by the stream's next call: an idle stream
//! left the file empty, and a dropped one lost the write (0 of 200 landed).
//!
//! The ring and fallback tests hold the stream idle (or drop it) and then
//! wait for the bytes to appear in the file, read through the kernel, with
//! only a liveness guard; the simulator's tests let virtual time pass, which
//! runs every op due, and read the simulated file.

pub mod support;

use std::time::Duration;

use aioctx::fs::{FileStream, OpenOptions};
use aioctx::runtime::WorkerRings;
use aioctx::sim::{FaultAction, OpFilter, SimConfig, SimOp};
use aioctx::{Backend, Builder, Context};
use tokio::io::AsyncWriteExt;

/// `rounds` records of 1000 bytes each, every byte telling its record.
fn records(rounds: usize) -> Vec<u8> {
    (0..rounds * 1000).map(|i| (i / 1000 % 251) as u8).collect()
}

/// Creates (or empties) the file at `path` for writing.
async fn create(ctx: &Context, path: &std::path::Path) -> aioctx::fs::File {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(ctx, path)
        .await
        .unwrap()
}

/// Waits, on the calling (non-runtime) thread, until `path` holds exactly
/// `expected`.
fn wait_for_contents(path: &std::path::Path, expected: &[u8]) {
    support::eventually("the acknowledged writes reached the file", || {
        std::fs::read(path).is_ok_and(|data| data == expected)
    });
}

#[test]
fn write_behind_reaches_the_file_while_the_stream_idles() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("stream-idle");
    let p = path.0.clone();
    let data = records(200);
    let written = data.clone();
    let c = ctx.clone();
    let stream: FileStream = ctx
        .spawn(async move {
            let file = create(&c, &p).await;
            let mut stream = file.stream();
            for record in written.chunks(1000) {
                stream.write_all(record).await.unwrap();
            }
            stream
        })
        .join()
        .unwrap();
    // The stream idles, held here, never polled again.
    wait_for_contents(&path.0, &data);
    drop(stream);
}

#[test]
fn a_dropped_stream_still_writes_what_it_acknowledged() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("stream-dropped-offsets");
    let p = path.0.clone();
    let data = records(200);
    let written = data.clone();
    let c = ctx.clone();
    ctx.spawn(async move {
        use tokio::io::AsyncSeekExt;
        let file = create(&c, &p).await;
        // A stream per record, each dropped right after its write was
        // acknowledged, without a flush.
        for (i, record) in written.chunks(1000).enumerate() {
            let mut stream = file.stream();
            stream
                .seek(std::io::SeekFrom::Start(i as u64 * 1000))
                .await
                .unwrap();
            stream.write_all(record).await.unwrap();
        }
    })
    .join()
    .unwrap();
    wait_for_contents(&path.0, &data);
}

#[test]
fn worker_rings_write_what_a_dropped_stream_acknowledged() {
    let rings = WorkerRings::with_builder(Builder::default().backend(support::backend()));
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = support::TempPath::new("stream-worker");
    let p = path.0.clone();
    let data = records(50);
    let written = data.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let ctx = aioctx::current().expect("every runtime thread has a ring");
            let file = create(&ctx, &p).await;
            let mut stream = file.stream();
            for record in written.chunks(1000) {
                stream.write_all(record).await.unwrap();
            }
            drop(stream);
        })
        .await
        .unwrap()
    });
    wait_for_contents(&path.0, &data);
    drop(runtime);
}

fn sim(config: SimConfig) -> Context {
    Context::builder()
        .backend(Backend::Sim(config))
        .build()
        .expect("a sim context always builds")
}

/// Opens `/f` on the simulator, writes `data` through a stream in records
/// of 1000 bytes, and returns the stream.
async fn sim_stream_wrote(ctx: &Context, data: &[u8]) -> FileStream {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .open(ctx, "/f")
        .await
        .unwrap();
    let mut stream = file.stream();
    for record in data.chunks(1000) {
        stream.write_all(record).await.unwrap();
    }
    stream
}

#[tokio::test(start_paused = true)]
async fn sim_write_behind_reaches_the_file_while_the_stream_idles() {
    let ctx = sim(SimConfig::new());
    let data = records(20);
    let stream = sim_stream_wrote(&ctx, &data).await;
    // Virtual time passes: every op due runs; the stream is never polled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ctx.sim().unwrap().contents("/f").unwrap(), data);
    drop(stream);
}

#[tokio::test(start_paused = true)]
async fn sim_a_dropped_stream_still_writes_what_it_acknowledged() {
    let ctx = sim(SimConfig::new());
    let data = records(20);
    drop(sim_stream_wrote(&ctx, &data).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ctx.sim().unwrap().contents("/f").unwrap(), data);
}

/// The simulator cuts the stream's last write short: the remainder is
/// still written, though the stream is dropped (and, in the idle case,
/// though nobody polls it).
#[tokio::test(start_paused = true)]
async fn sim_a_short_write_of_a_dropped_stream_still_writes_its_remainder() {
    for drop_it in [true, false] {
        let data = records(20);
        let config = SimConfig::new().fault(OpFilter::op(SimOp::Write), 20, FaultAction::Short(3));
        let ctx = sim(config);
        let stream = sim_stream_wrote(&ctx, &data).await;
        if drop_it {
            drop(stream);
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(stream);
        }
        assert_eq!(
            ctx.sim().unwrap().contents("/f").unwrap(),
            data,
            "dropped: {drop_it}"
        );
    }
}

/// The same on the ring and the fallback, with the kernel's answer cut
/// short by fault injection.
#[cfg(feature = "fault-injection")]
#[test]
fn a_short_write_of_a_dropped_stream_still_writes_its_remainder() {
    let Some(ctx) = support::context() else {
        return;
    };
    if ctx.inject_faults([]).is_err() {
        eprintln!("skipping: no fault injection on {}", ctx.backend());
        return;
    }
    let path = support::TempPath::new("stream-short");
    let p = path.0.clone();
    let data = records(4);
    let written = data.clone();
    let c = ctx.clone();
    ctx.spawn(async move {
        let file = create(&c, &p).await;
        let mut stream = file.stream();
        // The stream's one write reports 10 bytes: the rest is resubmitted.
        c.inject_faults([aioctx::fault::Fault::Short(10)]).unwrap();
        stream.write_all(&written).await.unwrap();
        drop(stream);
    })
    .join()
    .unwrap();
    wait_for_contents(&path.0, &data);
}

/// A write the stream acknowledged and the simulator then failed: its
/// error comes back from the stream's next call, here `flush`.
#[tokio::test(start_paused = true)]
async fn sim_a_failed_write_is_reported_by_the_next_call() {
    let config =
        SimConfig::new().fault(OpFilter::op(SimOp::Write), 1, FaultAction::Errno(libc::EIO));
    let ctx = sim(config);
    let file = support::open_rw(&ctx, "/f").await;
    let mut stream = file.stream();
    stream.write_all(b"lost").await.unwrap();
    let e = stream.flush().await.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Reported once: the stream goes on.
    stream.write_all(b"kept").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(ctx.sim().unwrap().contents("/f").unwrap(), b"\0\0\0\0kept");
}

/// A read after an unflushed write sees it: the stream waits for the write
/// before any later call, however the seed orders the ops (latencies drawn
/// from a range, so a read submitted at once could overtake the write).
/// Needs `test-util` for `sim::explore`: on in this repository through the
/// self dev-dependency, asked for explicitly in the published crate.
#[cfg(feature = "test-util")]
#[test]
fn a_read_after_an_unflushed_write_sees_it() {
    use aioctx::sim::{self, Latency};
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let config = SimConfig::new().latency(Latency::Uniform {
        min: Duration::from_micros(10),
        max: Duration::from_millis(3),
    });
    let explored = sim::explore(0..50)
        .config(config)
        .run(|ctx: Context| async move {
            let file = support::open_rw(&ctx, "/f").await;
            let mut stream = file.stream();
            for round in 0..5u8 {
                let data = [round; 3000];
                stream.write_all(&data).await.map_err(|e| e.to_string())?;
                stream
                    .seek(std::io::SeekFrom::Current(-3000))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut back = [0xffu8; 3000];
                stream
                    .read_exact(&mut back)
                    .await
                    .map_err(|e| e.to_string())?;
                if back != data {
                    return Err(format!("round {round}: read {:?}...", &back[..8]));
                }
                // Over it again, then on past it, unflushed.
                stream
                    .seek(std::io::SeekFrom::Current(-1000))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .unwrap();
    assert_eq!(explored.seeds, 50);
}
