//! The simulator answers large inputs as the kernel would, without panicking
//! its task or allocating memory proportional to an offset. Before the fix
//! `set_len(u64::MAX)`, a write near `u64::MAX` and `timeout(Duration::MAX)`
//! overflowed and ended the simulator (every later op hung), and
//! `fallocate(0, i64::MAX)` or a write at `1 << 62` aborted the process
//! trying to allocate.

use std::time::Duration;

use aioctx::fs::{File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

fn sim(config: SimConfig) -> Context {
    Context::builder()
        .backend(Backend::Sim(config))
        .build()
        .expect("a sim context always builds")
}

async fn open(ctx: &Context) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(ctx, "/big")
        .await
        .unwrap()
}

fn errno<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[tokio::test(start_paused = true)]
async fn sim_answers_huge_sizes_as_the_kernel_would() {
    let ctx = sim(SimConfig::new());
    let file = open(&ctx).await;
    assert_eq!(errno(file.set_len(u64::MAX).await), Some(libc::EINVAL));
    let (result, _) = file.write_at(b"x".to_vec(), u64::MAX - 1).await;
    assert_eq!(errno(result), Some(libc::EINVAL));
    // The range end overflows i64: EINVAL, as the kernel's rw_verify_area.
    let (result, _) = file.write_at(b"xy".to_vec(), i64::MAX as u64).await;
    assert_eq!(errno(result), Some(libc::EINVAL));
    // Allocating more than the memory budget: a full disk.
    assert_eq!(
        errno(file.fallocate(0, i64::MAX as u64, 0).await),
        Some(libc::ENOSPC)
    );
    // A range past the largest file.
    assert_eq!(
        errno(file.fallocate(i64::MAX as u64, 2, 0).await),
        Some(libc::EFBIG)
    );
    // A small write far out costs one page, and reads back.
    let far = 1u64 << 62;
    let (n, _) = file.write_at(b"far".to_vec(), far).await;
    assert_eq!(n.unwrap(), 3);
    assert_eq!(file.metadata().await.unwrap().len(), far + 3);
    let (n, data) = file.read_at(Vec::with_capacity(8), far - 2).await;
    assert_eq!(n.unwrap(), 5);
    assert_eq!(data, b"\0\0far");
    // The context is still usable.
    ctx.nop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sim_timeout_of_duration_max_neither_panics_nor_fires() {
    let ctx = sim(SimConfig::new());
    let forever = ctx.timeout(Duration::MAX);
    tokio::select! {
        _ = forever => panic!("a Duration::MAX timeout fired"),
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    ctx.nop().await.expect("the simulator survived");
}

#[tokio::test(start_paused = true)]
async fn sim_writes_past_the_memory_budget_fail_with_enospc() {
    let ctx = sim(SimConfig::new().memory_budget(64 * 1024));
    let file = open(&ctx).await;
    let (n, _) = file.write_at(vec![1u8; 64 * 1024], 0).await;
    assert_eq!(n.unwrap(), 64 * 1024);
    let (result, _) = file.write_at(vec![2u8; 1], 64 * 1024).await;
    assert_eq!(errno(result), Some(libc::ENOSPC));
    // Overwriting held pages costs nothing more.
    let (n, _) = file.write_at(vec![3u8; 4096], 0).await;
    assert_eq!(n.unwrap(), 4096);
    // Freeing pages makes room again.
    file.set_len(4096).await.unwrap();
    let (n, _) = file.write_at(vec![4u8; 4096], 1 << 20).await;
    assert_eq!(n.unwrap(), 4096);
}
