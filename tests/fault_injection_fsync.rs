//! An fsync that fails, as the user sees it, on the kernel and on the
//! simulator (cargo feature `fault-injection`): the same sequence (write,
//! fsync, write, fsync failing with `EIO`, fsync again, read back) on the
//! thread-pool fallback and the ring, with the failure injected into the
//! fsync's completion, and on the simulator, with the failure injected into
//! its writeback. Both report `EIO` once and then success, and both still
//! read the data back; the simulator also shows what the kernel did to it
//! (dropped it: gone after a crash), which no injection into a completion
//! can.
//!
//! Run with `cargo test --features fault-injection --test fault_injection_fsync`.
#![cfg(feature = "fault-injection")]

pub mod support;

use std::path::{Path, PathBuf};

use aioctx::fault::Fault;
use aioctx::fs::{self, OpenOptions};
use aioctx::sim::{FaultAction, OpFilter, SimConfig, SimOp};
use aioctx::{Backend, Context};

/// What the user sees of the sequence: each fsync's result (its errno),
/// then what reads return.
type Seen = (Vec<Result<(), Option<i32>>>, Vec<u8>);

/// The sequence, in `dir`; `arm` runs just before the fsync that fails.
async fn sequence(ctx: &Context, dir: &Path, arm: impl FnOnce()) -> Seen {
    let path = dir.join("log");
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(ctx, &path)
        .await
        .unwrap();
    fs::sync_dir(ctx, dir).await.unwrap();
    let mut syncs = Vec::new();
    log.write_all_at(b"first".to_vec(), 0).await.0.unwrap();
    syncs.push(log.sync_all().await.map_err(|e| e.raw_os_error()));
    log.write_all_at(b"+second".to_vec(), 5).await.0.unwrap();
    arm();
    syncs.push(log.sync_all().await.map_err(|e| e.raw_os_error()));
    syncs.push(log.sync_data().await.map_err(|e| e.raw_os_error()));
    let (n, data) = log.read_at(Vec::with_capacity(64), 0).await;
    n.unwrap();
    log.close().await.unwrap();
    (syncs, data)
}

fn expected() -> Seen {
    (
        vec![Ok(()), Err(Some(libc::EIO)), Ok(())],
        b"first+second".to_vec(),
    )
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let path = std::env::temp_dir().join(format!("aioctx-fsync-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir(&path).unwrap();
    Scratch(path)
}

/// On a real kernel: the failure injected into the second fsync's
/// completion.
async fn on_kernel(ctx: Context, tag: &str) -> Seen {
    let dir = scratch(tag);
    let seen = sequence(&ctx, &dir.0, || {
        ctx.inject_sync_faults([Fault::Errno(libc::EIO)]).unwrap();
    })
    .await;
    assert_eq!(ctx.pending_faults(), 0, "the fault hit the fsync");
    ctx.shutdown().await;
    seen
}

#[tokio::test]
async fn a_failed_fsync_looks_the_same_on_the_fallback_and_the_sim() {
    let fallback = Context::builder()
        .backend(Backend::Fallback)
        .build()
        .unwrap();
    let kernel = on_kernel(fallback, "fallback").await;
    assert_eq!(kernel, expected());

    let config = SimConfig::new().fault(
        OpFilter::op(SimOp::Fsync).path("/db/log"),
        2,
        FaultAction::Errno(libc::EIO),
    );
    let ctx = Context::builder()
        .backend(Backend::Sim(config))
        .build()
        .unwrap();
    fs::create_dir(&ctx, "/db").await.unwrap();
    fs::sync_dir(&ctx, "/").await.unwrap();
    let simulated = sequence(&ctx, Path::new("/db"), || {}).await;
    assert_eq!(
        simulated, kernel,
        "the sim and the kernel agree on what the user sees"
    );
    // And what the simulator shows beyond: the data the failed fsync did
    // not write is gone after a crash, although the retry succeeded.
    let sim = ctx.sim().unwrap();
    sim.crash();
    assert_eq!(sim.contents("/db/log").unwrap(), b"first");
    let report = &sim.crash_reports()[0];
    assert_eq!(report.files[0].dropped, vec![0..512], "{report}");
}

#[tokio::test]
async fn a_failed_fsync_looks_the_same_on_the_suites_backend() {
    let Some(ctx) = support::context() else {
        return;
    };
    let kernel = on_kernel(ctx, "suite").await;
    assert_eq!(kernel, expected());
}
