//! `tokio::fs::File`: `depth` tasks, each with its own handle, each read a seek and a
//! `read_exact` (both go through the blocking pool). Buffered reads only: tokio::fs reads into
//! its own unaligned buffer, so O_DIRECT fails with EINVAL.

use std::io::{self, SeekFrom};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::harness::group::{RunResult, total_ops};
use crate::harness::measure::{Measurement, Phase, Window};
use crate::harness::testfile::{BLOCK_LEN, BlockOffsets, TestFile};

/// Random 4 KiB buffered reads of `file` by `depth` concurrent tasks.
pub fn random_reads(file: &TestFile, depth: usize, window: Window) -> RunResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let phase = Arc::new(Phase::new());
    runtime.block_on(async {
        let workers: Vec<_> = (0..depth)
            .map(|task| {
                let path = file.path.clone();
                let mut offsets = BlockOffsets::new(file, task as u64);
                let phase = Arc::clone(&phase);
                tokio::spawn(async move {
                    let mut handle = tokio::fs::File::open(&path).await?;
                    let mut buffer = vec![0u8; BLOCK_LEN];
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        handle.seek(SeekFrom::Start(offsets.next_offset())).await?;
                        handle.read_exact(&mut buffer).await?;
                        if phase.is_measuring() {
                            ops += 1;
                        }
                    }
                    io::Result::Ok(ops)
                })
            })
            .collect();
        let elapsed = phase.run_async(window.warmup, window.measure).await;
        let ops = total_ops(workers).await?;
        Ok(Measurement::throughput(ops, elapsed))
    })
}
