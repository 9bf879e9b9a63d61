//! Worker rings register the files their ops use: each ring puts a file in
//! its own table the first time its thread makes an op on it, and names it
//! by that slot from then on (`Metrics::fixed_file_ops`). A slot is only
//! ever named in the ring that registered the file: not by an op that moved
//! to another thread's ring, not by the ring that took over a closed ring's
//! place. The table lets go of the file when the file's last handle and op
//! go, so its fd, its `flock`s and a pipe's read end are released as for a
//! file no table held.

pub mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use aioctx::fs::File;
use aioctx::runtime::WorkerRings;
use aioctx::{Builder, Metrics};

fn rings_with(builder: Builder) -> WorkerRings {
    WorkerRings::with_builder(builder.backend(support::backend()))
}

fn rings() -> WorkerRings {
    rings_with(Builder::default())
}

/// A file of 64 KiB whose byte `i` is `(i % 251) ^ seed`.
fn data_file(tag: &str, seed: u8) -> support::TempPath {
    let path = support::TempPath::new(tag);
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 ^ seed).collect();
    std::fs::write(&path.0, data).unwrap();
    path
}

fn expected(seed: u8, offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect()
}

/// Whether another open of `path` can take an exclusive `flock` now.
fn can_lock(path: &Path) -> bool {
    let other = std::fs::File::open(path).unwrap();
    // SAFETY: flock(2) on an fd we own.
    unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether the rings run on io_uring (the fallback shares one context, with
/// no table); says so when they do not.
fn on_rings(metrics: &Metrics) -> bool {
    let on_rings = metrics.backend == "io_uring-worker";
    if !on_rings {
        eprintln!(
            "no worker rings on {}: files are named by fd",
            metrics.backend
        );
    }
    on_rings
}

#[test]
fn every_read_on_a_workers_ring_names_the_file_by_its_slot() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-regfile-reads", 0);
    let p = path.0.clone();
    let main = rings.clone();
    const TASKS: u64 = 16;
    const READS: u64 = 40;
    runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let file = File::open(&ctx, &p).await.unwrap();
        // The test's thread has a ring of its own too.
        let (n, buf) = file.read_at(vec![0u8; 512], 1000).await;
        assert_eq!(n.unwrap(), 512);
        assert_eq!(buf, expected(0, 1000, 512));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let file = file.clone();
                tokio::spawn(async move {
                    for i in 0..READS {
                        let offset = ((task * READS + i) * 512) % 60000;
                        let (n, buf) = file.read_at(vec![0u8; 512], offset).await;
                        assert_eq!(n.unwrap(), 512);
                        assert_eq!(buf, expected(0, offset, 512));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let total = rings.total_metrics();
    if on_rings(&total) {
        // Every read was made and polled on its ring's thread; the open was
        // no file's op.
        assert_eq!(total.fixed_file_ops, TASKS * READS + 1, "{total:?}");
    } else {
        assert_eq!(total.fixed_file_ops, 0, "{total:?}");
    }
}

#[test]
fn without_a_file_table_reads_name_the_file_by_fd() {
    let rings = rings_with(Builder::default().registered_file_slots(0));
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-regfile-no-table", 7);
    let p = path.0.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let ctx = aioctx::current().unwrap();
            let file = File::open(&ctx, &p).await.unwrap();
            for offset in [0, 4096, 60000] {
                let (n, buf) = file.read_at(vec![0u8; 256], offset).await;
                assert_eq!(n.unwrap(), 256);
                assert_eq!(buf, expected(7, offset, 256));
            }
        })
        .await
        .unwrap();
    });
    let total = rings.total_metrics();
    assert_eq!(total.fixed_file_ops, 0, "{total:?}");
}

/// A table of one slot: the first file a ring uses takes it, the second
/// finds the table full and is named by its fd, and each read gets its own
/// file's data.
#[test]
fn a_full_table_leaves_the_next_file_named_by_fd() {
    let rings = rings_with(Builder::default().registered_file_slots(1));
    let runtime = rings.runtime_builder().worker_threads(1).build().unwrap();
    let (a, b) = (
        data_file("worker-regfile-full-a", 0x1a),
        data_file("worker-regfile-full-b", 0x1b),
    );
    let (pa, pb) = (a.0.clone(), b.0.clone());
    let main = rings.clone();
    runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let (a, b) = (
            File::open(&ctx, &pa).await.unwrap(),
            File::open(&ctx, &pb).await.unwrap(),
        );
        for offset in [0, 512, 4096] {
            let (n, buf) = a.read_at(vec![0u8; 128], offset).await;
            assert_eq!(n.unwrap(), 128);
            assert_eq!(buf, expected(0x1a, offset, 128), "file a's data");
            let (n, buf) = b.read_at(vec![0u8; 128], offset).await;
            assert_eq!(n.unwrap(), 128);
            assert_eq!(buf, expected(0x1b, offset, 128), "file b's data");
        }
    });
    let total = rings.total_metrics();
    if on_rings(&total) {
        // a's three reads named the one slot; b's three named the fd.
        assert_eq!(total.fixed_file_ops, 3, "{total:?}");
    } else {
        assert_eq!(total.fixed_file_ops, 0, "{total:?}");
    }
}

/// An op made on a worker and first polled on another thread goes to that
/// thread's ring, which has another file in the slot the worker's ring gave
/// this one: it must name its file by fd there, or it reads the other file.
#[test]
fn an_op_polled_off_its_workers_thread_names_its_file_by_fd() {
    let rings = rings_with(Builder::default());
    let runtime = rings.runtime_builder().worker_threads(1).build().unwrap();
    let (a, b) = (
        data_file("worker-regfile-moved-a", 0x0a),
        data_file("worker-regfile-moved-b", 0x0b),
    );
    let (pa, pb) = (a.0.clone(), b.0.clone());
    let main = rings.clone();
    runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        // The test thread's ring: file b first, in its table's first slot.
        let b = File::open(&ctx, &pb).await.unwrap();
        let (n, _) = b.read_at(vec![0u8; 64], 0).await;
        assert_eq!(n.unwrap(), 64);
        let a = File::open(&ctx, &pa).await.unwrap();
        // The task hands back an op unpolled, on purpose.
        #[allow(clippy::async_yields_async)]
        let read = tokio::spawn(async move {
            // The worker's ring: file a first, in its table's first slot.
            let (n, buf) = a.read_at(vec![0u8; 64], 0).await;
            assert_eq!(n.unwrap(), 64);
            assert_eq!(buf, expected(0x0a, 0, 64));
            // Made here, polled on the test's thread.
            a.read_at(vec![0u8; 64], 128)
        })
        .await
        .unwrap();
        let (n, buf) = read.await;
        assert_eq!(n.unwrap(), 64);
        assert_eq!(buf, expected(0x0a, 128, 64), "file a's data, not b's");
    });
    let total = rings.total_metrics();
    if on_rings(&total) {
        // b's read, a's first read; the moved read named its file by fd.
        assert_eq!(total.fixed_file_ops, 2, "{total:?}");
    }
}

/// A worker's ring closes and the next ring of its thread takes over its
/// view index, with other files in its table's first slots: it registers
/// the file anew rather than naming the closed ring's slot.
#[test]
fn a_ring_that_takes_over_a_closed_rings_place_registers_the_file_anew() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(1).build().unwrap();
    let (a, b) = (
        data_file("worker-regfile-reuse-a", 0x1a),
        data_file("worker-regfile-reuse-b", 0x1b),
    );
    let (pa, pb) = (a.0.clone(), b.0.clone());
    let closer = rings.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let ctx = aioctx::current().unwrap();
            let a = File::open(&ctx, &pa).await.unwrap();
            // The worker's first ring: file a in its table's first slot.
            let (n, buf) = a.read_at(vec![0u8; 64], 0).await;
            assert_eq!(n.unwrap(), 64);
            assert_eq!(buf, expected(0x1a, 0, 64));
            // The ring closes; the thread's next op makes a new one, which
            // takes the lowest free view index: the closed ring's.
            closer.close_thread();
            let ctx = aioctx::current().unwrap();
            let b = File::open(&ctx, &pb).await.unwrap();
            let (n, buf) = b.read_at(vec![0u8; 64], 0).await;
            assert_eq!(n.unwrap(), 64);
            assert_eq!(buf, expected(0x1b, 0, 64));
            // a's view of this index recorded the closed ring's slot, which
            // is b's in the new ring.
            for offset in [256, 512] {
                let (n, buf) =
                    support::resolves("a's read", a.read_at(vec![0u8; 64], offset)).await;
                assert_eq!(n.unwrap(), 64);
                assert_eq!(buf, expected(0x1a, offset, 64), "file a's data, not b's");
            }
        })
        .await
        .unwrap();
    });
    let total = rings.total_metrics();
    if on_rings(&total) {
        // The closed ring has left the metrics: b's read and a's two reads
        // after the close, all through slots of the new ring.
        assert_eq!(total.fixed_file_ops, 3, "{total:?}");
    }
}

/// The tables let go of a file with its last handle: `close` releases its
/// `flock` at once, a drop as soon as the backend has closed the fd.
#[test]
fn flock_is_released_at_close_and_at_drop_after_worker_reads() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-regfile-flock", 0);
    for close in [true, false] {
        let p = path.0.clone();
        let main = rings.clone();
        let before = rings.total_metrics().fixed_file_ops;
        let file = runtime.block_on(async move {
            let ctx = main.thread_context().unwrap();
            let file = File::open(&ctx, &p).await.unwrap();
            // SAFETY: flock(2) on the file's own fd.
            assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
            let reads: Vec<_> = (0..8u64)
                .map(|i| {
                    let file = file.clone();
                    tokio::spawn(async move {
                        let (n, _) = file.read_at(vec![0u8; 64], i * 64).await;
                        assert_eq!(n.unwrap(), 64);
                    })
                })
                .collect();
            for read in reads {
                read.await.unwrap();
            }
            file
        });
        assert!(!can_lock(&path.0), "the lock is held");
        if on_rings(&rings.total_metrics()) {
            let registered = rings.total_metrics().fixed_file_ops - before;
            assert_eq!(registered, 8, "this round's reads named a slot");
        }
        if close {
            runtime.block_on(file.close()).unwrap();
            assert!(can_lock(&path.0), "close released the lock");
        } else {
            drop(file);
            support::eventually("the drop releases the lock", || can_lock(&path.0));
        }
    }
}

/// Files dropped while their reads are in flight: a read that completes
/// takes its ring's view, and with it the table's hold on the file, with
/// it (the pipe's read end closes: writes fail with `EPIPE`); reads left in
/// flight at the runtime's shutdown resolve, and every fd is closed.
#[test]
fn files_dropped_with_reads_in_flight_leave_no_fd_behind() {
    let rings = rings();
    // Tokio's process-wide signal pipe comes with the first runtime that
    // enables signals: made before counting. On a non-ring backend the one
    // shared context lives as long as `rings`: made before counting too.
    drop(rings.runtime_builder().build().unwrap());
    let _shared = rings.thread_context();
    let fds = support::open_fds();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let main = rings.clone();
    let (writers, on_ring) = runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let mut writers = Vec::new();
        let mut completing = Vec::new();
        for i in 0..16 {
            let (reader, writer) = support::pipe();
            let pipe = File::from_fd(&ctx, reader);
            let read = tokio::spawn(async move {
                let read = pipe.read_at(vec![0u8; 8], 0);
                // The handle goes; the read holds the file.
                drop(pipe);
                read.await
            });
            if i % 2 == 0 {
                completing.push((read, writer));
            } else {
                // Left in flight at the shutdown.
                writers.push(writer);
            }
        }
        tokio::task::yield_now().await;
        for (read, mut writer) in completing {
            writer.write_all(b"12345678").unwrap();
            let (n, buf) = support::resolves("a pipe read", read).await.unwrap();
            assert_eq!(n.unwrap(), 8);
            assert_eq!(buf, b"12345678");
            // Nothing holds the read end any more: no ring's table either.
            let released = support::yields_until(|| {
                writer
                    .write(b"x")
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EPIPE))
            })
            .await;
            assert!(released, "the read end was closed");
        }
        (writers, on_rings(&main.total_metrics()))
    });
    if on_ring {
        // Every read was made and first polled in its task, on a worker.
        assert_eq!(rings.total_metrics().fixed_file_ops, 16, "registered");
    }
    drop(runtime);
    drop(writers);
    support::eventually("every fd is closed", || support::open_fds() <= fds);
}
