//! Worker rings: each thread of a Tokio multi-thread runtime submits into a
//! ring of its own. Ops from tasks that stay on their worker cross no
//! thread; tasks stolen mid-flight, dropped mid-flight, or alive at the
//! runtime's shutdown still resolve, with data right and every fd back.

pub mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aioctx::fs::File;
use aioctx::runtime::WorkerRings;
use aioctx::{Backend, Builder};

fn rings() -> WorkerRings {
    WorkerRings::with_builder(Builder::default().backend(support::backend()))
}

fn data_file(tag: &str) -> support::TempPath {
    let path = support::TempPath::new(tag);
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path.0, data).unwrap();
    path
}

#[test]
fn tasks_read_through_their_workers_rings_without_crossing_threads() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-reads");
    let p = path.0.clone();
    let main = rings.clone();
    runtime.block_on(async move {
        // `block_on` runs here, on the test's thread: it asks for a ring of
        // its own; spawned tasks run on the workers, which are bound.
        let ctx = main.thread_context().unwrap();
        let file = File::open(&ctx, &p).await.unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|task| {
                let file = file.clone();
                tokio::spawn(async move {
                    for i in 0..50u64 {
                        let offset = ((task * 50 + i) * 512) % 60000;
                        let (n, buf) = file.read_at(vec![0u8; 512], offset).await;
                        assert_eq!(n.unwrap(), 512);
                        let expect: Vec<u8> =
                            (offset..offset + 512).map(|b| (b % 251) as u8).collect();
                        assert_eq!(buf, expect);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let total = rings.total_metrics();
    if total.backend == "io_uring-worker" {
        assert!(total.ops_local >= 64 * 50, "{total:?}");
        assert_eq!(total.kicks_sent, 0, "no ring was kicked: {total:?}");
    }
}

/// Batch ops from the workers' tasks go into their workers' rings too: each
/// batch resolves once, with every member's data.
#[test]
fn batches_from_worker_tasks_complete_on_their_rings() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-batches");
    let p = path.0.clone();
    let main = rings.clone();
    runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let file = File::open(&ctx, &p).await.unwrap();
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let file = file.clone();
                tokio::spawn(async move {
                    for round in 0..20u64 {
                        let offsets: Vec<u64> = (0..16u64)
                            .map(|i| ((task * 320 + round * 16 + i) * 512) % 60000)
                            .collect();
                        let reads = offsets.iter().map(|&at| (vec![0u8; 512], at));
                        let results = file.read_batch(reads).await;
                        assert_eq!(results.len(), offsets.len());
                        for ((n, buf), &at) in results.into_iter().zip(&offsets) {
                            assert_eq!(n.unwrap(), 512);
                            let expect: Vec<u8> = (at..at + 512).map(|b| (b % 251) as u8).collect();
                            assert_eq!(buf, expect);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let total = rings.total_metrics();
    if total.backend == "io_uring-worker" {
        assert_eq!(total.kicks_sent, 0, "no ring was kicked: {total:?}");
        assert!(total.sqes_submitted >= 8 * 20 * 16, "{total:?}");
    }
}

/// A worker ring of 4 entries takes 8 ops in flight: ops past them wait in
/// its backlog. Once the kernel has 8, the next flush finds the in-flight
/// limit full and enters nothing; its reap frees the slots, and the backlog
/// must go in then, for no completion is left to signal the eventfd and
/// bring another turn. Singles and batches, from one task at once.
#[test]
fn a_backlog_behind_a_full_in_flight_limit_goes_in_once_the_reap_frees_slots() {
    let rings =
        WorkerRings::with_builder(Builder::default().backend(support::backend()).entries(4));
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = support::TempPath::new("worker-backlog");
    let p = path.0.clone();
    runtime
        .block_on(runtime.spawn(async move {
            let ctx = aioctx::current().unwrap();
            let file = aioctx::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .open(&ctx, &p)
                .await
                .unwrap();
            for round in 0..20u64 {
                for n in [8u64, 9, 16] {
                    let writes = (0..n).map(|i| file.write_at(vec![1u8; 8192], i * 8192 + round));
                    let what = format!("round {round}: {n} writes at once");
                    for (result, _) in
                        support::resolves(&what, futures::future::join_all(writes)).await
                    {
                        assert_eq!(result.unwrap(), 8192);
                    }
                }
                let writes = (0..16u64).map(|i| (vec![2u8; 4096], i * 4096 + round));
                let what = format!("round {round}: a batch of 16");
                for (result, _) in support::resolves(&what, file.write_batch(writes)).await {
                    assert_eq!(result.unwrap(), 4096);
                }
            }
        }))
        .unwrap();
}

#[test]
fn a_parked_worker_gets_its_completions() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let (reader, mut writer) = support::pipe();
    let main = rings.clone();
    runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let pipe = File::from_fd(&ctx, reader);
        let read = tokio::spawn(async move { pipe.read_at(vec![0u8; 16], 0).await });
        // Every worker goes idle and parks; the read's completion must still
        // reach its task, with no other traffic to carry it.
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::io::Write::write_all(&mut writer, b"late").unwrap();
        })
        .await
        .unwrap();
        let (n, buf) = read.await.unwrap();
        assert_eq!(n.unwrap(), 4);
        assert_eq!(&buf[..4], b"late");
    });
}

#[test]
fn tasks_stolen_mid_flight_dropped_mid_flight_and_at_shutdown_all_resolve() {
    let rings = rings();
    // Tokio's process-wide signal pipe comes with the first runtime that
    // enables signals: made before counting.
    drop(rings.runtime_builder().build().unwrap());
    // On a non-ring backend every thread shares one context, which lives as
    // long as `rings` (its home runtime's epoll and eventfd with it): made
    // before counting too. (On the ring, outside a runtime, this is an error
    // and makes nothing.)
    let _shared = rings.thread_context();
    let fds = support::open_fds();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-stolen");
    let p = path.0.clone();
    let main = rings.clone();
    let writers = runtime.block_on(async move {
        let ctx = main.thread_context().unwrap();
        let file = File::open(&ctx, &p).await.unwrap();
        let busy = Arc::new(AtomicBool::new(true));
        // A task that hogs its worker, so the others' tasks get stolen.
        let hog = {
            let busy = busy.clone();
            tokio::spawn(async move {
                while busy.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for i in 0..16 {
            let (reader, writer) = support::pipe();
            writers.push(writer);
            let pipe = File::from_fd(&ctx, reader);
            let file = file.clone();
            readers.push(tokio::spawn(async move {
                let read = pipe.read_at(vec![0u8; 8], 0);
                if i % 2 == 0 {
                    // Dropped mid-flight after a first poll.
                    let mut read = Box::pin(read);
                    let _ = futures::poll!(read.as_mut());
                    tokio::task::yield_now().await;
                    drop(read);
                    let (n, _) = file.read_at(vec![0u8; 64], 0).await;
                    n.unwrap()
                } else {
                    let (n, _) = read.await;
                    n.unwrap()
                }
            }));
        }
        for writer in writers.iter_mut().skip(1).step_by(2) {
            std::io::Write::write_all(writer, b"12345678").unwrap();
        }
        for reader in readers {
            let n = reader.await.unwrap();
            assert!(n == 8 || n == 64);
        }
        busy.store(false, Ordering::Relaxed);
        hog.await.unwrap();
        // Reads left in flight at the runtime's shutdown.
        for _ in 0..8 {
            let (reader, writer) = support::pipe();
            writers.push(writer);
            let pipe = File::from_fd(&ctx, reader);
            tokio::spawn(async move { pipe.read_at(vec![0u8; 8], 0).await });
        }
        tokio::task::yield_now().await;
        writers
    });
    drop(runtime);
    drop(writers);
    support::eventually("every fd is closed", || support::open_fds() <= fds);
}

/// A file outlives the ring it was opened on (a blocking thread's ring
/// closes when its thread goes idle, `close_thread` closes a worker's):
/// its reads and its `close` go to the calling thread's ring, and the close
/// succeeds.
#[test]
fn a_file_closes_after_the_ring_it_was_opened_on_has_closed() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-close-after-ring");
    let p = path.0.clone();
    let closer = rings.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let ctx = aioctx::current().unwrap();
            if ctx.backend() != "io_uring-worker" {
                return eprintln!("skipping: one shared context on {}", ctx.backend());
            }
            let file = File::open(&ctx, &p).await.unwrap();
            // The ring the file was opened on closes; this thread's next op
            // makes it a new one.
            closer.close_thread();
            assert!(ctx.is_shutdown());
            let (n, _) =
                support::resolves("a read after the close", file.read_at(vec![0u8; 100], 0)).await;
            assert_eq!(n.unwrap(), 100);
            support::resolves("the file's close", file.close())
                .await
                .expect("the file closes on this thread's ring");
        })
        .await
        .unwrap();
    });
}

#[test]
fn block_in_place_keeps_the_threads_ring_usable() {
    let rings = rings();
    let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
    let path = data_file("worker-block-in-place");
    let p = path.0.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let ctx = aioctx::current().unwrap();
            let file = File::open(&ctx, &p).await.unwrap();
            let (n, _) = file.read_at(vec![0u8; 100], 0).await;
            assert_eq!(n.unwrap(), 100);
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(5)));
            let (n, buf) = file.read_at(vec![0u8; 100], 100).await;
            assert_eq!(n.unwrap(), 100);
            assert_eq!(buf[0], 100, "byte 100 of the file");
        })
        .await
        .unwrap();
    });
}

#[test]
fn fallback_and_sim_backends_share_one_context() {
    for backend in [
        Backend::Fallback,
        Backend::Sim(aioctx::sim::SimConfig::new()),
    ] {
        let rings = WorkerRings::with_builder(Builder::default().backend(backend));
        let runtime = rings.runtime_builder().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let a = tokio::spawn(async { aioctx::current().unwrap().backend() })
                .await
                .unwrap();
            let ctx = rings.thread_context().unwrap();
            ctx.nop().await.unwrap();
            assert_eq!(a, ctx.backend());
        });
        assert_eq!(rings.metrics().len(), 1, "one shared context");
    }
}
