//! A small append-only log on aioctx, and what the simulated backend shows
//! about it: a record is durable once `append` returns (it fsyncs), and a
//! record written without the fsync is lost at a crash.
//!
//! It also carries a deliberately wrong variant,
//! [`Wal::append_acking_before_fsync`], which acknowledges a record as soon
//! as its fsync is *submitted*. Most runs cannot tell the two apart; seed
//! exploration ([`aioctx::sim::explore`]) finds a seed where a crash lands
//! between the acknowledgement and the fsync's completion and loses an
//! acknowledged record, and replays that run exactly.
//!
//! Run with `cargo run --release --example sim_wal`. Its tests are at the
//! end of this file; `cargo test` runs them (the example is declared with
//! `test = true`).

use std::io;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use aioctx::fs::{File, OpenOptions};
use aioctx::ops::Fsync;
use aioctx::sim::{self, Latency, SimConfig};
use aioctx::{Backend, Context, Op};

/// An append-only log of length-prefixed records.
pub struct Wal {
    file: File,
    end: u64,
    /// The wrong variant's fsync, submitted but not yet waited for.
    unsynced: Option<Op<Fsync>>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and finds its end. The log's
    /// name is made durable (its directory fsynced) before any record is
    /// acknowledged: an fsync of the log itself would not keep a new log's
    /// name through a crash.
    pub async fn open(ctx: &Context, path: &str) -> io::Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(ctx, path)
            .await?;
        let dir = std::path::Path::new(path).parent().unwrap_or("/".as_ref());
        aioctx::fs::sync_dir(ctx, dir).await?;
        let end = file.metadata().await?.len();
        Ok(Wal {
            file,
            end,
            unsynced: None,
        })
    }

    /// Writes a record without waiting for it to be durable: not acknowledged.
    pub async fn write(&mut self, record: &[u8]) -> io::Result<()> {
        let mut frame = (record.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(record);
        let len = frame.len() as u64;
        let (written, _) = self.file.write_at(frame, self.end).await;
        if written? as u64 != len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short log write"));
        }
        self.end += len;
        Ok(())
    }

    /// Appends a record and makes it durable: once this returns, the record
    /// survives a crash (it is acknowledged).
    pub async fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.write(record).await?;
        self.file.sync_data().await
    }

    /// **Deliberately wrong**, to show exploration finding it: writes the
    /// record, submits its fsync, and returns (acknowledges) before the
    /// fsync has completed; the next append waits for it. A crash in between
    /// loses a record the caller was told is durable.
    pub async fn append_acking_before_fsync(&mut self, record: &[u8]) -> io::Result<()> {
        if let Some(previous) = self.unsynced.take() {
            previous.await?;
        }
        self.write(record).await?;
        let mut sync = self.file.sync_data();
        // The first poll hands the fsync to the backend.
        match futures::poll!(&mut sync) {
            Poll::Ready(result) => result?,
            Poll::Pending => self.unsynced = Some(sync),
        }
        Ok(())
    }

    /// Every complete record in the log, in order.
    pub async fn records(&self) -> io::Result<Vec<Vec<u8>>> {
        let (n, data) = self
            .file
            .read_at(Vec::with_capacity(self.end as usize), 0)
            .await;
        let data = &data[..n?];
        let mut records = Vec::new();
        let mut at = 0;
        while at + 4 <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if at + 4 + len > data.len() {
                break; // a torn tail
            }
            records.push(data[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        Ok(records)
    }
}

/// Appends one acknowledged and one unacknowledged record, crashes, and
/// returns what the log holds after recovery.
pub async fn crash_after_two_writes(ctx: &Context) -> io::Result<Vec<Vec<u8>>> {
    let mut wal = Wal::open(ctx, "/wal").await?;
    wal.append(b"acknowledged").await?;
    wal.write(b"in flight").await?;
    ctx.sim().expect("a sim context").crash();
    let wal = Wal::open(ctx, "/wal").await?;
    wal.records().await
}

/// Which append the exploration scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// [`Wal::append`]: acknowledges after the fsync.
    Correct,
    /// [`Wal::append_acking_before_fsync`]: the planted bug.
    AcksBeforeFsync,
}

/// The simulator the exploration runs the log on: latencies from 20 µs to
/// 2 ms, one crash somewhere in the first 30 ms, writes in flight torn at
/// 512-byte sectors, unsynced writes kept or lost per file by the seed.
pub fn exploration_config() -> SimConfig {
    SimConfig::new()
        .latency(Latency::Uniform {
            min: Duration::from_micros(20),
            max: Duration::from_millis(2),
        })
        .crash_at_random(Duration::ZERO..Duration::from_millis(30))
        .torn_writes(512)
        .reorder_unsynced_writes(true)
}

/// The exploration's scenario: a writer appends records and notes each one
/// acknowledged before the crash; the simulator crashes when the seed says;
/// then the log is reopened, and every acknowledged record must be in it,
/// in order, at its start.
pub async fn acknowledged_records_survive_a_crash(
    ctx: Context,
    variant: Variant,
) -> Result<(), String> {
    let sim = ctx.sim().expect("a sim context");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn({
        let (ctx, sim, acknowledged) = (ctx.clone(), sim.clone(), acknowledged.clone());
        async move {
            let mut wal = Wal::open(&ctx, "/wal").await?;
            for n in 0u32.. {
                let record = format!("record {n}: {}", "x".repeat(n as usize % 50)).into_bytes();
                match variant {
                    Variant::Correct => wal.append(&record).await?,
                    Variant::AcksBeforeFsync => wal.append_acking_before_fsync(&record).await?,
                }
                if sim.crashes().is_empty() {
                    acknowledged.lock().unwrap().push(record);
                }
            }
            io::Result::Ok(())
        }
    });
    sim.crashed().await;
    // The process died with the power: its writer goes.
    writer.abort();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let recovered: io::Result<_> = async { Wal::open(&ctx, "/wal").await?.records().await }.await;
    let recovered = recovered.map_err(|e| format!("recovery failed: {e}"))?;
    for (n, record) in acknowledged.iter().enumerate() {
        if recovered.get(n) != Some(record) {
            return Err(format!(
                "acknowledged record {n} lost: {} acknowledged before the crash at {:?}, {} recovered",
                acknowledged.len(),
                sim.crashes()[0],
                recovered.len()
            ));
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let ctx = Context::builder()
            .backend(Backend::Sim(
                SimConfig::new().seed(7).reorder_unsynced_writes(false),
            ))
            .build()?;
        let records = crash_after_two_writes(&ctx).await?;
        for record in &records {
            println!("survived the crash: {}", String::from_utf8_lossy(record));
        }
        println!(
            "{} record(s) recovered; the unacknowledged write was lost",
            records.len()
        );
        io::Result::Ok(())
    })?;

    for variant in [Variant::Correct, Variant::AcksBeforeFsync] {
        let started = Instant::now();
        let outcome = sim::explore(0..1000)
            .config(exploration_config())
            .run(|ctx| acknowledged_records_survive_a_crash(ctx, variant));
        let took = started.elapsed();
        match outcome {
            Ok(explored) => println!(
                "{variant:?}: {} seeds passed ({} ops) in {took:.2?}",
                explored.seeds, explored.ops
            ),
            Err(failure) => println!("{variant:?}: found in {took:.2?}:\n{failure}"),
        }
    }
    Ok(())
}

/// The simulated backend's crash semantics through this log: an
/// acknowledged (fsynced) record survives a crash, an unacknowledged one is
/// lost; and seed exploration over it: the planted bug (a record
/// acknowledged before its fsync completes) is found and replays exactly,
/// and the correct log survives every seed tried.
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use aioctx::sim::{self, SimConfig};
    use aioctx::{Backend, Context};

    use super::{
        Variant, Wal, acknowledged_records_survive_a_crash, crash_after_two_writes,
        exploration_config,
    };

    #[tokio::test(start_paused = true)]
    async fn acknowledged_record_survives_unacknowledged_is_lost() {
        // Unsynced data all lost, whatever the seed.
        let ctx = Context::builder()
            .backend(Backend::Sim(
                SimConfig::new().reorder_unsynced_writes(false),
            ))
            .build()
            .unwrap();
        assert_eq!(ctx.backend(), "sim");
        let records = crash_after_two_writes(&ctx).await.unwrap();
        assert_eq!(records, vec![b"acknowledged".to_vec()]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_crash_both_records_are_there() {
        let ctx = Context::builder()
            .backend(Backend::Sim(SimConfig::new()))
            .build()
            .unwrap();
        let mut wal = Wal::open(&ctx, "/wal").await.unwrap();
        wal.append(b"one").await.unwrap();
        wal.write(b"two").await.unwrap();
        let records = wal.records().await.unwrap();
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    const SEEDS: u64 = 1000;

    #[test]
    fn exploration_finds_the_planted_bug_and_replays_it() {
        let scenario = |ctx| acknowledged_records_survive_a_crash(ctx, Variant::AcksBeforeFsync);
        let failure = sim::explore(0..SEEDS)
            .config(exploration_config())
            .run(scenario)
            .expect_err("a crash between the acknowledgement and the fsync loses a record");
        eprintln!("{failure}");
        assert!(!failure.panicked);
        assert!(failure.error.contains("acknowledged record"), "{failure}");
        assert_eq!(failure.crashes.len(), 1);
        // The same seed, twice in a row: the same log, the same crash, the same
        // failure.
        for _ in 0..2 {
            let again = failure.replay(scenario).expect_err("the failure replays");
            assert_eq!(again.seed, failure.seed);
            assert_eq!(again.error, failure.error);
            assert_eq!(again.completions, failure.completions);
            assert_eq!(again.crashes, failure.crashes);
        }
    }

    #[test]
    fn the_correct_log_survives_every_seed() {
        let started = Instant::now();
        let explored = sim::explore(0..SEEDS)
            .config(exploration_config())
            .run(|ctx| acknowledged_records_survive_a_crash(ctx, Variant::Correct))
            .unwrap();
        // Informational (tests assert behaviour, not speed).
        eprintln!(
            "{} seeds, {} ops, in {:.2?}",
            explored.seeds,
            explored.ops,
            started.elapsed()
        );
        assert_eq!(explored.seeds, SEEDS);
    }
}
