//! A small append-only log on aioctx, and what the simulated backend shows
//! about it: a record is durable once `append` returns (it fsyncs), and a
//! record written without the fsync is lost at a crash.
//!
//! Run with `cargo run --example sim_wal`; `tests/sim_wal.rs` is its test.

use std::io;

use aioctx::fs::{File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// An append-only log of length-prefixed records.
pub struct Wal {
    file: File,
    end: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path` and finds its end.
    pub async fn open(ctx: &Context, path: &str) -> io::Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(ctx, path)
            .await?;
        let end = file.metadata().await?.len();
        Ok(Wal { file, end })
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

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let ctx = Context::builder()
            .backend(Backend::Sim(SimConfig::new().seed(7)))
            .build()?;
        let records = crash_after_two_writes(&ctx).await?;
        for record in &records {
            println!("survived the crash: {}", String::from_utf8_lossy(record));
        }
        println!(
            "{} record(s) recovered; the unacknowledged write was lost",
            records.len()
        );
        Ok(())
    })
}
