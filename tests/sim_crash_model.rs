//! The simulator's crash model: torn writes leave whole sectors only,
//! unsynced changes survive per file up to a seed-drawn point, a planned
//! crash lands where the seed says, and random faults hit what the seed
//! says; each the same on every run of a seed.

pub mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aioctx::sim::{FaultAction, Latency, OpFilter, SimConfig, SimOp};
use aioctx::{Backend, Context};
use tokio_test::{assert_pending, assert_ready, task};

const LATENCY: Duration = Duration::from_millis(4);

fn sim(config: SimConfig) -> Context {
    Context::builder()
        .backend(Backend::Sim(config.latency(Latency::Fixed(LATENCY))))
        .build()
        .expect("a sim context always builds")
}

/// Runs `body` on a fresh paused runtime.
fn paused<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(body)
}

/// A 16 KiB write of 0xAB over 16 KiB of durable 0x11, in flight at a
/// crash: returns the file after the crash, and the write's errno.
fn torn_16k(seed: u64, sector: u32, offset: u64) -> (Vec<u8>, Option<i32>) {
    paused(async {
        let ctx = sim(SimConfig::new().seed(seed).torn_writes(sector));
        let sim = ctx.sim().unwrap();
        sim.insert_file("/f", vec![0x11; 32 * 1024]);
        let file = support::open_rw(&ctx, "/f").await;
        let mut write = task::spawn(file.write_at(vec![0xAB; 16 * 1024], offset));
        assert_pending!(write.poll());
        tokio::time::advance(LATENCY / 2).await;
        sim.crash();
        let after = sim.contents("/f").unwrap();
        tokio::time::advance(LATENCY).await;
        let (n, _) = assert_ready!(write.poll());
        (after, n.err().and_then(|e| e.raw_os_error()))
    })
}

/// How many bytes of the write persisted, checking that they are a prefix
/// of whole sectors of the file (the first and last sector of an unaligned
/// write count whole: the bytes it did not cover never change).
fn persisted(after: &[u8], sector: usize, offset: usize) -> usize {
    assert_eq!(
        after.len(),
        32 * 1024,
        "a torn write does not change the size here"
    );
    let written = offset..offset + 16 * 1024;
    let mut kept = 0;
    let mut ended = false;
    for (i, chunk) in after.chunks(sector).enumerate() {
        let span = i * sector..(i + 1) * sector;
        let in_write = |at: usize| written.contains(&at);
        let new = span
            .clone()
            .filter(|&at| in_write(at) && chunk[at - span.start] == 0xAB)
            .count();
        let covered = span.clone().filter(|&at| in_write(at)).count();
        assert!(
            new == 0 || new == covered,
            "sector {i} is partly written ({new} of {covered} bytes)"
        );
        for at in span.clone().filter(|&at| !in_write(at)) {
            assert_eq!(
                chunk[at - span.start],
                0x11,
                "a byte outside the write changed"
            );
        }
        if covered > 0 {
            if new > 0 {
                assert!(
                    !ended,
                    "sector {i} persisted after one that did not: not a prefix"
                );
                kept += new;
            } else {
                ended = true;
            }
        }
    }
    kept
}

#[test]
fn a_crash_during_a_16k_write_leaves_a_whole_sector_prefix() {
    let mut lengths = BTreeSet::new();
    for seed in 0..64 {
        let (after, errno) = torn_16k(seed, 512, 0);
        assert_eq!(errno, Some(libc::EIO), "seed {seed}: the torn write fails");
        let kept = persisted(&after, 512, 0);
        assert_eq!(kept % 512, 0);
        lengths.insert(kept);
        assert_eq!(
            torn_16k(seed, 512, 0).0,
            after,
            "seed {seed} tore differently twice"
        );
    }
    // The seed picks the point: many different ones over 64 seeds.
    assert!(lengths.len() >= 10, "{lengths:?}");
}

#[test]
fn unaligned_and_4k_sector_writes_tear_at_sector_boundaries() {
    let mut lengths = BTreeSet::new();
    for seed in 0..32 {
        let (after, _) = torn_16k(seed, 4096, 1000);
        let kept = persisted(&after, 4096, 1000);
        // Stops: 0, then 4096 - 1000 (the first boundary), then every 4 KiB,
        // then the whole 16 KiB.
        assert!(
            kept == 0 || kept == 16 * 1024 || (kept + 1000).is_multiple_of(4096),
            "seed {seed}: {kept} bytes"
        );
        lengths.insert(kept);
    }
    assert!(lengths.len() >= 3, "{lengths:?}");
}

/// Opens (creating) `path` and makes its name durable, so a crash can only
/// take its data.
async fn durable_file(ctx: &Context, path: &str) -> aioctx::fs::File {
    let file = support::open_rw(ctx, path).await;
    aioctx::fs::sync_dir(ctx, "/").await.unwrap();
    file
}

/// Writes four sectors of `a` (a1..a4, one byte value each) and two of `b`,
/// none synced, in the order a1, b1, a2, b2, a3, a4, then crashes: returns
/// what each file kept.
fn reordered(seed: u64) -> (Vec<u8>, Vec<u8>) {
    paused(async {
        let ctx = sim(SimConfig::new().seed(seed).reorder_unsynced_writes(true));
        let sim = ctx.sim().unwrap();
        let (a, b) = (
            durable_file(&ctx, "/a").await,
            durable_file(&ctx, "/b").await,
        );
        let writes = [
            (&a, 0, 1),
            (&b, 0, 1),
            (&a, 1, 2),
            (&b, 1, 2),
            (&a, 2, 3),
            (&a, 3, 4),
        ];
        for (file, sector, byte) in writes {
            file.write_at(vec![byte; 512], sector * 512)
                .await
                .0
                .unwrap();
        }
        sim.crash();
        (sim.contents("/a").unwrap(), sim.contents("/b").unwrap())
    })
}

/// Which sectors of a file kept their write: checks that each sector holds
/// its write or zeros (never part of one), and that the length is one the
/// file had.
fn kept_sectors(file: &[u8], sectors: usize) -> Vec<bool> {
    assert_eq!(file.len() % 512, 0, "a length the file had");
    assert!(file.len() <= sectors * 512);
    file.chunks(512)
        .enumerate()
        .map(|(i, sector)| {
            let written = (i + 1) as u8;
            assert!(
                sector.iter().all(|&b| b == written) || sector.iter().all(|&b| b == 0),
                "sector {i} is neither its write nor zeros"
            );
            sector[0] == written
        })
        .collect()
}

#[test]
fn each_file_keeps_a_seed_drawn_subset_of_its_unsynced_sectors() {
    let mut subsets = BTreeSet::new();
    let mut across = BTreeSet::new();
    for seed in 0..64 {
        let (a, b) = reordered(seed);
        assert_eq!(reordered(seed), (a.clone(), b.clone()), "seed {seed}");
        let (a, b) = (kept_sectors(&a, 4), kept_sectors(&b, 2));
        subsets.insert(a.clone());
        across.insert((
            a.first().copied().unwrap_or(false),
            b.first().copied().unwrap_or(false),
        ));
    }
    // Within a file, not only prefixes: a later sector kept while an
    // earlier one was lost.
    assert!(
        subsets
            .iter()
            .any(|kept| kept.windows(2).any(|w| !w[0] && w[1])),
        "{subsets:?}"
    );
    assert!(subsets.len() >= 8, "{subsets:?}");
    // Across files, in no order: b1 (written after a1) kept while a1 is
    // lost, and the other way round.
    assert!(
        across.contains(&(false, true)) && across.contains(&(true, false)),
        "{across:?}"
    );
}

#[test]
fn what_was_fsynced_always_survives_reordering() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..32 {
        let (a, b) = paused(async {
            let ctx = sim(SimConfig::new().seed(seed).reorder_unsynced_writes(true));
            let sim = ctx.sim().unwrap();
            let file = durable_file(&ctx, "/log").await;
            file.write_at(b"hello world".to_vec(), 0).await.0.unwrap();
            file.sync_data().await.unwrap();
            file.set_len(5).await.unwrap();
            file.write_at(b"!".to_vec(), 5).await.0.unwrap();
            sim.crash();
            let after = sim.contents("/log").unwrap();
            // After the crash, what is there is durable.
            sim.crash();
            (after, sim.contents("/log").unwrap())
        });
        // One of the lengths it had (11, 5, 6), over the synced bytes or the
        // rewritten sector ("hello!" and zeros): "hello" always.
        assert!([11, 5, 6].contains(&a.len()), "seed {seed}: {a:?}");
        let rewritten = a.get(5) == Some(&b'!');
        if rewritten {
            assert!(
                a[..5] == *b"hello" && a[6..].iter().all(|&b| b == 0),
                "seed {seed}: {a:?}"
            );
        } else {
            assert_eq!(a, b"hello world"[..a.len()], "seed {seed}");
        }
        assert_eq!(a, b);
        outcomes.insert(a);
    }
    assert!(outcomes.len() >= 3, "{outcomes:?}");
}

/// A log writer appending until the planned crash: returns the crash
/// instant and the durable records' count.
fn planned_crash(seed: u64) -> (Vec<Duration>, usize) {
    paused(async {
        let window = Duration::from_millis(10)..Duration::from_millis(60);
        let ctx = sim(SimConfig::new().seed(seed).crash_at_random(window.clone()));
        let sim = ctx.sim().unwrap();
        let writer = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                let file = support::open_rw(&ctx, "/log").await;
                for i in 0u64.. {
                    file.write_at(vec![1], i).await.0.unwrap();
                    file.sync_data().await.unwrap();
                }
            }
        });
        sim.crashed().await;
        writer.abort();
        let crashes = sim.crashes();
        assert_eq!(crashes.len(), 1);
        assert!(window.contains(&crashes[0]), "{crashes:?}");
        sim.crashed().await; // resolves at once from now on
        (crashes, sim.contents("/log").unwrap_or_default().len())
    })
}

#[test]
fn a_planned_crash_lands_where_the_seed_says() {
    let runs: Vec<_> = (0..16).map(planned_crash).collect();
    for (seed, run) in runs.iter().enumerate() {
        assert_eq!(&planned_crash(seed as u64), run, "seed {seed}");
    }
    let instants: BTreeSet<_> = runs.iter().map(|(crashes, _)| crashes[0]).collect();
    let durable: BTreeSet<_> = runs.iter().map(|&(_, n)| n).collect();
    assert!(instants.len() >= 15 && durable.len() >= 4, "{runs:?}");
}

/// Which of 64 writes a 1-in-4 random fault fails, for `seed`.
fn random_faults(seed: u64) -> Vec<usize> {
    paused(async {
        let ctx = sim(SimConfig::new().seed(seed).random_fault(
            OpFilter::op(SimOp::Write),
            4,
            FaultAction::Errno(libc::EIO),
        ));
        let file = support::open_rw(&ctx, "/f").await;
        let mut failed = Vec::new();
        for i in 0..64 {
            let (n, _) = file.write_at(vec![1], i).await;
            match n {
                Ok(1) => {}
                Err(e) if e.raw_os_error() == Some(libc::EIO) => failed.push(i as usize),
                other => panic!("{other:?}"),
            }
        }
        // Reads are never hit.
        file.read_at(Vec::with_capacity(64), 0).await.0.unwrap();
        failed
    })
}

#[test]
fn random_faults_land_where_the_seed_says() {
    let first = random_faults(1);
    assert_eq!(random_faults(1), first);
    assert!((4..=32).contains(&first.len()), "1 in 4 of 64: {first:?}");
    assert_ne!(random_faults(2), first);
}
