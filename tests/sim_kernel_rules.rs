//! The simulator answers as the kernel would where a test on the sim must
//! catch what the ring would refuse: misaligned `O_DIRECT` I/O fails with
//! `EINVAL`, `fallocate` runs the modes the ring supports and refuses the
//! rest with `EOPNOTSUPP`, and a removed file's space comes back at its
//! last close, not before.

use std::time::Duration;

use aioctx::buf::{AlignedBuf, IoBuf};
use aioctx::fs::{File, Misaligned, OpenOptions};
use aioctx::sim::{Latency, SimConfig};
use aioctx::{Backend, Context};

fn sim() -> Context {
    Context::builder()
        .backend(Backend::Sim(
            SimConfig::new().latency(Latency::Fixed(Duration::from_millis(1))),
        ))
        .build()
        .expect("a sim context always builds")
}

fn errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> Option<i32> {
    result.unwrap_err().raw_os_error()
}

/// The errno of a refused `O_DIRECT` op: kept in its `Misaligned` payload,
/// which names the part (`tests/errors_direct_misaligned.rs` checks which).
fn direct_errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> Option<i32> {
    let error = result.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Misaligned>())
        .map(Misaligned::raw_os_error)
}

fn aligned(len: usize, byte: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::with_capacity(len);
    buf.extend_from_slice(&vec![byte; len]);
    buf
}

#[tokio::test(start_paused = true)]
async fn misaligned_direct_io_is_einval_on_the_sim() {
    let ctx = sim();
    ctx.sim()
        .unwrap()
        .insert_file("/disk", vec![7u8; 16 * 4096]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .direct(true)
        .open(&ctx, "/disk")
        .await
        .unwrap();
    // Misaligned offset, length, buffer address: reads.
    assert_eq!(
        direct_errno(file.read_at(AlignedBuf::with_capacity(4096), 3).await.0),
        Some(libc::EINVAL)
    );
    assert_eq!(
        direct_errno(file.read_at(AlignedBuf::with_capacity(100), 0).await.0),
        Some(libc::EINVAL)
    );
    let one_in = AlignedBuf::with_capacity(8192).slice(1..4097);
    assert_eq!(
        direct_errno(file.read_at(one_in, 0).await.0),
        Some(libc::EINVAL)
    );
    // And writes, which leave the file alone.
    assert_eq!(
        direct_errno(file.write_at(aligned(4096, 1), 100).await.0),
        Some(libc::EINVAL)
    );
    assert_eq!(
        direct_errno(file.write_at(aligned(1000, 1), 0).await.0),
        Some(libc::EINVAL)
    );
    let one_in = aligned(8192, 1).slice(1..4097);
    assert_eq!(
        direct_errno(file.write_at(one_in, 0).await.0),
        Some(libc::EINVAL)
    );
    assert_eq!(
        ctx.sim().unwrap().contents("/disk").unwrap(),
        vec![7u8; 16 * 4096]
    );
    // Aligned I/O works, and the file is still usable.
    let (n, _) = file.write_at(aligned(4096, 9), 4096).await;
    assert_eq!(n.unwrap(), 4096);
    let (n, buf) = file.read_at(AlignedBuf::with_capacity(8192), 0).await;
    assert_eq!(n.unwrap(), 8192);
    assert!(buf[..4096].iter().all(|&b| b == 7) && buf[4096..].iter().all(|&b| b == 9));
    // Without O_DIRECT, the same misaligned I/O is fine.
    let buffered = File::open(&ctx, "/disk").await.unwrap();
    let (n, _) = buffered.read_at(Vec::with_capacity(100), 3).await;
    assert_eq!(n.unwrap(), 100);
}

async fn file_of(ctx: &Context, data: &[u8]) -> File {
    ctx.sim().unwrap().insert_file("/f", data.to_vec());
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctx, "/f")
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn fallocate_modes_as_the_kernel_runs_them() {
    use libc::{
        FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH, FALLOC_FL_ZERO_RANGE as ZERO,
    };
    let ctx = sim();
    let sim = ctx.sim().unwrap();

    // Mode 0 allocates and extends; KEEP_SIZE allocates only.
    let file = file_of(&ctx, b"abcdefgh").await;
    file.fallocate(4, 8, 0).await.unwrap();
    assert_eq!(sim.contents("/f").unwrap(), b"abcdefgh\0\0\0\0");
    file.fallocate(0, 100, KEEP).await.unwrap();
    assert_eq!(file.metadata().await.unwrap().len(), 12);

    // PUNCH_HOLE | KEEP_SIZE zeroes the range and keeps the size, even past
    // the end.
    let file = file_of(&ctx, b"abcdefgh").await;
    file.fallocate(2, 100, PUNCH | KEEP).await.unwrap();
    assert_eq!(sim.contents("/f").unwrap(), b"ab\0\0\0\0\0\0");

    // ZERO_RANGE zeroes and extends; with KEEP_SIZE it only zeroes.
    let file = file_of(&ctx, b"abcdefgh").await;
    file.fallocate(6, 4, ZERO).await.unwrap();
    assert_eq!(sim.contents("/f").unwrap(), b"abcdef\0\0\0\0");
    let file = file_of(&ctx, b"abcdefgh").await;
    file.fallocate(1, 100, ZERO | KEEP).await.unwrap();
    assert_eq!(sim.contents("/f").unwrap(), b"a\0\0\0\0\0\0\0");

    // What the kernel refuses: a hole punched without KEEP_SIZE, modes the
    // simulator does not run, an empty range.
    let file = file_of(&ctx, b"abcdefgh").await;
    for mode in [
        PUNCH,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
        libc::FALLOC_FL_UNSHARE_RANGE,
    ] {
        assert_eq!(
            errno(file.fallocate(0, 4096, mode).await),
            Some(libc::EOPNOTSUPP),
            "mode {mode:#x}"
        );
    }
    assert_eq!(errno(file.fallocate(0, 0, 0).await), Some(libc::EINVAL));
    assert_eq!(
        sim.contents("/f").unwrap(),
        b"abcdefgh",
        "refused modes change nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_files_space_comes_back_at_its_last_close() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new().memory_budget(64 * 1024)))
        .build()
        .unwrap();
    let create = |path: &'static str| {
        let ctx = ctx.clone();
        async move {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .open(&ctx, path)
                .await
                .unwrap();
            let (written, _) = file.write_all_at(vec![1u8; 48 * 1024], 0).await;
            (file, written)
        }
    };
    let (first, written) = create("/first").await;
    written.unwrap();
    aioctx::fs::remove_file(&ctx, "/first").await.unwrap();
    // Still open: its space is still taken.
    let (second, written) = create("/second").await;
    assert_eq!(errno(written), Some(libc::ENOSPC));
    first.close().await.unwrap();
    let (written, _) = second.write_all_at(vec![2u8; 48 * 1024], 0).await;
    written.unwrap();
}
