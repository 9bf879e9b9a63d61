//! Invariant 8, errors are `std::io::Error` with the kernel's errno: bad
//! input fails clearly and leaves the context usable.

pub mod support;

use aioctx::buf::AlignedBuf;
use aioctx::fs::{File, Misaligned, OpenOptions};

#[test]
fn bad_fd_is_ebadf() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("ebadf");
    std::fs::write(&path.0, b"data").unwrap();
    // A read-only file cannot be written: EBADF from the kernel.
    let file = ctx.block_on(File::open(&ctx, &path.0)).unwrap();
    let (err, _) = ctx.block_on(file.write_at(b"x".to_vec(), 0));
    assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EBADF));
    ctx.block_on(ctx.nop()).unwrap();
}

#[test]
fn misaligned_direct_io_is_einval() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("einval");
    std::fs::write(&path.0, vec![7u8; 16 * 4096]).unwrap();
    let file = match ctx.block_on(
        OpenOptions::new()
            .read(true)
            .direct(true)
            .open(&ctx, &path.0),
    ) {
        Ok(file) => file,
        Err(e) => return eprintln!("skipping: O_DIRECT unsupported in the temp dir ({e})"),
    };
    // The kernel's EINVAL, kept in a payload that names the misaligned part
    // (`tests/errors_direct_misaligned.rs` checks every part).
    let einval = |err: std::io::Error| {
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        let misaligned = err.get_ref().unwrap().downcast_ref::<Misaligned>().unwrap();
        assert_eq!(misaligned.raw_os_error(), libc::EINVAL);
    };
    // Misaligned offset.
    let (err, _) = ctx.block_on(file.read_at(AlignedBuf::with_capacity(4096), 3));
    einval(err.unwrap_err());
    // Misaligned buffer address (a slice one byte in).
    use aioctx::buf::IoBuf;
    let (err, _) = ctx.block_on(file.read_at(AlignedBuf::with_capacity(8192).slice(1..4097), 0));
    einval(err.unwrap_err());
    // The context and the file still work.
    let (n, buf) = ctx.block_on(file.read_at(AlignedBuf::with_capacity(4096), 4096));
    assert_eq!(n.unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 7));
}

#[test]
fn reading_past_eof() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("eof");
    std::fs::write(&path.0, b"short").unwrap();
    let file = ctx.block_on(File::open(&ctx, &path.0)).unwrap();
    let (n, _) = ctx.block_on(file.read_at(Vec::with_capacity(8), 100));
    assert_eq!(n.unwrap(), 0);
    let (err, buf) = ctx.block_on(file.read_exact_at(Vec::with_capacity(8), 0));
    assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(&buf[..], b"short");
    let missing = ctx.block_on(File::open(&ctx, "/nonexistent/aioctx"));
    assert_eq!(missing.unwrap_err().raw_os_error(), Some(libc::ENOENT));
    ctx.block_on(ctx.nop()).unwrap();
}
