//! Invariant 8 for `O_DIRECT`: a read or write whose buffer address, length
//! or offset is misaligned fails with an error that says which of the three,
//! its value and the alignment it breaks (kind `InvalidInput`, a
//! `Misaligned` payload keeping the errno), on every backend, and the
//! context and the file stay usable. Before, each was a bare `EINVAL`.

pub mod support;

use std::io;

use aioctx::buf::{AlignedBuf, IoBuf};
use aioctx::fs::{File, Misaligned, MisalignedPart, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// The `Misaligned` behind `error`, after checking what every such error
/// promises: kind `InvalidInput`, a message naming `what`, the errno kept
/// as the payload's and as the source.
fn misaligned(error: &io::Error, what: &str) -> (MisalignedPart, u64, u64) {
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    let message = error.to_string();
    assert!(message.contains(what), "{message:?} does not name {what:?}");
    let m = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Misaligned>())
        .unwrap_or_else(|| panic!("no Misaligned payload: {error:?}"));
    assert_eq!(m.raw_os_error(), libc::EINVAL);
    let source = std::error::Error::source(m)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .expect("the errno as the source");
    assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
    assert!(m.alignment >= 512, "{message}");
    assert_ne!(m.value % m.alignment, 0, "{message}");
    assert!(
        message.contains(&format!("is not a multiple of {}", m.alignment)),
        "{message}"
    );
    (m.part, m.value, m.alignment)
}

/// An aligned read still works: the context and the file survived.
async fn still_usable(file: &File) {
    let (n, buf) = file.read_at(AlignedBuf::with_capacity(4096), 0).await;
    assert_eq!(n.unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 7));
}

/// Every misaligned part of every read and write, on `file` (opened with
/// `O_DIRECT`, at least 8 KiB of 7s).
async fn each_misaligned_part_is_named(file: &File) {
    use MisalignedPart::{BufferAddress, BufferLength, Offset};

    // Reads: the offset, the buffer's address, its length.
    let (err, _) = file.read_at(AlignedBuf::with_capacity(4096), 3).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "read refused (EINVAL): the offset 3");
    assert_eq!((part, value), (Offset, 3));
    still_usable(file).await;

    let one_in = AlignedBuf::with_capacity(8192).slice(1..4097);
    let address = one_in.stable_ptr() as u64;
    let (err, _) = file.read_at(one_in, 0).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "the buffer's address");
    assert_eq!((part, value), (BufferAddress { index: 0 }, address));
    still_usable(file).await;

    let (err, _) = file.read_at(AlignedBuf::with_capacity(100), 0).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "the buffer's length 100");
    assert_eq!((part, value), (BufferLength { index: 0 }, 100));
    still_usable(file).await;

    // Writes: the same three.
    let (err, _) = file.write_at(AlignedBuf::zeroed(4096), 1000).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "write refused (EINVAL): the offset 1000");
    assert_eq!((part, value), (Offset, 1000));
    still_usable(file).await;

    let one_in = AlignedBuf::zeroed(8192).slice(1..4097);
    let address = one_in.stable_ptr() as u64;
    let (err, _) = file.write_at(one_in, 0).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "the buffer's address");
    assert_eq!((part, value), (BufferAddress { index: 0 }, address));
    still_usable(file).await;

    let (err, _) = file.write_at(AlignedBuf::zeroed(100), 0).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "the buffer's length 100");
    assert_eq!((part, value), (BufferLength { index: 0 }, 100));
    still_usable(file).await;

    // Vectored ops name the buffer.
    let bufs = vec![
        AlignedBuf::with_capacity(4096),
        AlignedBuf::with_capacity(100),
    ];
    let (err, _) = file.readv_at(bufs, 0).await;
    let (part, value, _) = misaligned(&err.unwrap_err(), "buffer 1's length 100");
    assert_eq!((part, value), (BufferLength { index: 1 }, 100));
    still_usable(file).await;

    let bufs = vec![
        AlignedBuf::zeroed(8192).slice(0..4096),
        AlignedBuf::zeroed(8192).slice(3..515),
    ];
    let (err, _) = file.writev_at(bufs, 0).await;
    let (part, _, _) = misaligned(&err.unwrap_err(), "buffer 1's address");
    assert_eq!(part, BufferAddress { index: 1 });
    still_usable(file).await;

    // An `EINVAL` the crate refuses before any backend sees it (an offset
    // the kernel would read as "the current position") keeps its bare
    // errno, misaligned or not.
    let (err, _) = file
        .read_at(AlignedBuf::with_capacity(4096), u64::MAX)
        .await;
    assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    still_usable(file).await;
}

#[test]
fn ring_or_fallback_names_the_misaligned_part() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("direct-misaligned");
    std::fs::write(&path.0, vec![7u8; 16 * 4096]).unwrap();
    let mut options = OpenOptions::new();
    options.read(true).write(true).direct(true);
    let file = match ctx.block_on(options.open(&ctx, &path.0)) {
        Ok(file) => file,
        Err(e) => return eprintln!("skipping: O_DIRECT unsupported in the temp dir ({e})"),
    };
    ctx.block_on(each_misaligned_part_is_named(&file));
    // A registered buffer (`READ_FIXED` on the ring) at a misaligned offset.
    let fixed = ctx.block_on(async {
        let pool = ctx.register_buffers(1, 4096).await.unwrap();
        let (err, _) = file.read_fixed_at(pool.get().await, 3).await;
        err.unwrap_err()
    });
    let (part, value, _) = misaligned(&fixed, "the offset 3");
    assert_eq!((part, value), (MisalignedPart::Offset, 3));
    ctx.block_on(still_usable(&file));
    // Without O_DIRECT the same unaligned ops simply work.
    let plain = ctx.block_on(File::open(&ctx, &path.0)).unwrap();
    let (n, _) = ctx.block_on(plain.read_at(AlignedBuf::with_capacity(100), 3));
    assert_eq!(n.unwrap(), 100);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sim_names_the_misaligned_part() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
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
    each_misaligned_part_is_named(&file).await;
    let err = file
        .read_at(AlignedBuf::with_capacity(4096), 3)
        .await
        .0
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the simulator's logical block size"),
        "{err}"
    );
    ctx.shutdown().await;
}
