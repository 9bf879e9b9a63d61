//! Fault injection on the ring (cargo feature `fault-injection`): read and
//! write completions that come back as an errno or cut short, as a kernel may
//! post them. `read_exact_at` and `write_all_at` resubmit the remainder after
//! a short transfer and retry `EINTR`; `EAGAIN` and every other error come
//! back with their errno and the buffer; the context stays usable.
//!
//! Run with `cargo test --features fault-injection --test fault_injection_ring`.
#![cfg(feature = "fault-injection")]

pub mod support;

use std::io;

use aioctx::Context;
use aioctx::fault::Fault;
use aioctx::fs::{File, OpenOptions};

/// A context on the suite's backend whose completions take faults (the
/// ring, or the fallback where `AIOCTX_BACKEND=fallback` forces it), or
/// `None` (printing why) where it cannot be built or takes none.
fn ring() -> Option<Context> {
    let ctx = support::context()?;
    if let Err(e) = ctx.inject_faults([]) {
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        eprintln!("skipping: no fault injection on {}", ctx.backend());
        return None;
    }
    Some(ctx)
}

/// A file of 64 KiB of known bytes, open for reading and writing.
struct Fixture {
    path: support::TempPath,
    file: File,
    data: Vec<u8>,
}

fn fixture(ctx: &Context) -> Fixture {
    let path = support::TempPath::new("faults");
    let data: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 8) as u8)
        .collect();
    std::fs::write(&path.0, &data).unwrap();
    let file = ctx
        .block_on(OpenOptions::new().read(true).write(true).open(ctx, &path.0))
        .unwrap();
    Fixture { path, file, data }
}

/// Ops this thread has pushed to the context: each read or write the
/// helpers submit, retries included.
fn ops(ctx: &Context) -> u64 {
    ctx.metrics().ops_foreign
}

#[test]
fn read_exact_at_resubmits_the_remainder_after_short_reads() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    ctx.inject_faults([Fault::Short(100), Fault::Short(1), Fault::Short(4000)])
        .unwrap();
    let before = ops(&ctx);
    let (result, buf) = ctx.block_on(f.file.read_exact_at(Vec::with_capacity(16384), 512));
    result.unwrap();
    assert_eq!(buf.len(), 16384);
    assert!(
        buf[..] == f.data[512..512 + 16384],
        "the pieces add up to the file's bytes"
    );
    assert_eq!(ops(&ctx) - before, 4, "three short reads, then the rest");
    assert_eq!(ctx.pending_faults(), 0);
}

#[test]
fn read_exact_at_retries_eintr() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    ctx.inject_faults([
        Fault::Errno(libc::EINTR),
        Fault::Short(10),
        Fault::Errno(libc::EINTR),
    ])
    .unwrap();
    let before = ops(&ctx);
    let (result, buf) = ctx.block_on(f.file.read_exact_at(vec![0u8; 8192], 4096));
    result.unwrap();
    assert!(buf[..] == f.data[4096..4096 + 8192]);
    assert_eq!(ops(&ctx) - before, 4);
}

#[test]
fn write_all_at_resubmits_after_short_writes_and_retries_eintr() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    ctx.inject_faults([Fault::Short(10), Fault::Errno(libc::EINTR), Fault::Short(1)])
        .unwrap();
    let new: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let before = ops(&ctx);
    let (result, buf) = ctx.block_on(f.file.write_all_at(new.clone(), 1000));
    result.unwrap();
    assert_eq!(buf, new, "the buffer comes back as it went");
    assert_eq!(ops(&ctx) - before, 4, "short, interrupted, short, the rest");
    let mut expected = f.data.clone();
    expected[1000..11_000].copy_from_slice(&new);
    assert!(
        std::fs::read(&f.path.0).unwrap() == expected,
        "the file holds the write once"
    );
}

/// `EAGAIN` is not retried: the kernel posts it for non-blocking I/O only,
/// where resubmitting at once would spin. What was read stays in the buffer.
#[test]
fn eagain_is_returned_with_what_was_transferred() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    ctx.inject_faults([Fault::Short(100), Fault::Errno(libc::EAGAIN)])
        .unwrap();
    let before = ops(&ctx);
    let (result, buf) = ctx.block_on(f.file.read_exact_at(Vec::with_capacity(4096), 0));
    let e = result.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    assert!(
        buf[..] == f.data[..100],
        "the buffer keeps the 100 bytes read"
    );
    assert_eq!(ops(&ctx) - before, 2, "no retry");

    ctx.inject_faults([Fault::Short(10), Fault::Errno(libc::EAGAIN)])
        .unwrap();
    let before = ops(&ctx);
    let (result, buf) = ctx.block_on(f.file.write_all_at(vec![1u8; 64], 0));
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EAGAIN));
    assert_eq!(buf, vec![1u8; 64]);
    assert_eq!(ops(&ctx) - before, 2, "no retry");
}

#[test]
fn other_errors_keep_their_errno_on_every_transfer() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    for errno in [libc::EIO, libc::ENOSPC, libc::EFBIG, libc::ENODATA] {
        let check = |what: &str, result: io::Result<()>| {
            let e = result.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(errno), "{what}: {e}");
        };
        ctx.inject_faults([Fault::Errno(errno); 6]).unwrap();

        let (r, buf) = ctx.block_on(f.file.read_at(Vec::with_capacity(512), 0));
        check("read_at", r.map(drop));
        assert!(
            buf.is_empty() && buf.capacity() >= 512,
            "read_at: the buffer comes back"
        );

        let (r, buf) = ctx.block_on(f.file.write_at(vec![9u8; 512], 0));
        check("write_at", r.map(drop));
        assert_eq!(buf, vec![9u8; 512]);

        let (r, bufs) = ctx.block_on(
            f.file
                .readv_at((0..2).map(|_| Vec::with_capacity(64)).collect(), 0),
        );
        check("readv_at", r.map(drop));
        assert!(bufs.iter().all(Vec::is_empty) && bufs.len() == 2);

        let (r, bufs) = ctx.block_on(f.file.writev_at(vec![vec![9u8; 8], vec![8u8; 8]], 0));
        check("writev_at", r.map(drop));
        assert_eq!(bufs, vec![vec![9u8; 8], vec![8u8; 8]]);

        let (r, _) = ctx.block_on(f.file.read_exact_at(Vec::with_capacity(64), 0));
        check("read_exact_at", r);
        let (r, _) = ctx.block_on(f.file.write_all_at(vec![9u8; 64], 0));
        check("write_all_at", r);
        assert_eq!(ctx.pending_faults(), 0);
    }
    assert!(
        std::fs::read(&f.path.0).unwrap() != f.data,
        "the failed writes did write: only the report is faked"
    );

    // An error after progress: the buffer keeps what was read.
    ctx.inject_faults([Fault::Short(50), Fault::Errno(libc::EIO)])
        .unwrap();
    let (r, buf) = ctx.block_on(f.file.read_exact_at(Vec::with_capacity(4096), 8192));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(buf[..] == f.data[8192..8192 + 50]);
}

#[test]
fn short_transfers_report_their_count() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    ctx.inject_faults([Fault::Short(7), Fault::Short(3), Fault::Short(5)])
        .unwrap();
    let (r, buf) = ctx.block_on(f.file.read_at(Vec::with_capacity(512), 0));
    assert_eq!(r.unwrap(), 7);
    assert!(buf[..] == f.data[..7]);
    let (r, _) = ctx.block_on(f.file.write_at(vec![1u8; 512], 0));
    assert_eq!(r.unwrap(), 3);
    let (r, bufs) = ctx.block_on(
        f.file
            .readv_at(vec![Vec::with_capacity(4), Vec::with_capacity(4)], 0),
    );
    assert_eq!(r.unwrap(), 5);
    assert_eq!(
        (bufs[0].len(), bufs[1].len()),
        (4, 1),
        "the count spreads over the buffers in order"
    );

    // A transfer of nothing ends the loops: end of file for a read, an
    // error for a write.
    ctx.inject_faults([Fault::Short(0), Fault::Short(0)])
        .unwrap();
    let (r, _) = ctx.block_on(f.file.read_exact_at(Vec::with_capacity(64), 0));
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    let (r, _) = ctx.block_on(f.file.write_all_at(vec![1u8; 64], 0));
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WriteZero);
}

#[test]
fn the_context_stays_usable_and_other_ops_are_never_faulted() {
    let Some(ctx) = ring() else { return };
    let f = fixture(&ctx);
    // Ops that are not transfers leave the queue alone.
    ctx.inject_faults([Fault::Errno(libc::EIO)]).unwrap();
    ctx.block_on(ctx.nop()).unwrap();
    ctx.block_on(f.file.sync_all()).unwrap();
    assert_eq!(
        ctx.block_on(f.file.metadata()).unwrap().len(),
        f.data.len() as u64
    );
    let other = ctx.block_on(File::open(&ctx, &f.path.0)).unwrap();
    ctx.block_on(other.close()).unwrap();
    assert_eq!(ctx.pending_faults(), 1);
    let (r, _) = ctx.block_on(f.file.read_at(Vec::with_capacity(8), 0));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));

    // A burst of faults from several threads and the home thread at once.
    let mut faults = Vec::new();
    for i in 0..200 {
        faults.push(match i % 5 {
            0 => Fault::Errno(libc::EINTR),
            1 => Fault::Short(1 + i),
            2 => Fault::Pass,
            3 => Fault::Short(0),
            _ => Fault::Errno(libc::EIO),
        });
    }
    ctx.inject_faults(faults).unwrap();
    let file = std::sync::Arc::new(f.file);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (ctx, file) = (ctx.clone(), file.clone());
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let offset = (t * 50 + i) * 64;
                    let _ = ctx.block_on(file.read_exact_at(Vec::with_capacity(64), offset));
                }
            })
        })
        .collect();
    let home = {
        let file = file.clone();
        ctx.spawn(async move {
            for i in 0..50u64 {
                let _ = file.read_at(Vec::with_capacity(64), i * 64).await;
            }
        })
    };
    for worker in workers {
        worker.join().unwrap();
    }
    home.join().unwrap();
    assert_eq!(
        ctx.pending_faults(),
        0,
        "250 transfers used up the 200 faults"
    );

    // Afterwards everything works as before.
    for offset in [0u64, 4096, 60_000] {
        let (r, buf) = ctx.block_on(file.read_exact_at(Vec::with_capacity(1024), offset));
        r.unwrap();
        assert!(buf[..] == f.data[offset as usize..][..1024]);
    }
    ctx.block_on(ctx.nop()).unwrap();
    support::eventually("every SQE's completion is reaped", || {
        let m = ctx.metrics();
        m.cqes_reaped == m.sqes_submitted
    });
}

#[test]
fn injection_works_on_the_fallback_and_not_on_the_sim() {
    let fallback = Context::builder()
        .backend(aioctx::Backend::Fallback)
        .build()
        .unwrap();
    fallback.inject_faults([Fault::Errno(libc::EIO)]).unwrap();
    assert_eq!(fallback.pending_faults(), 1);
    let sim = Context::builder()
        .backend(aioctx::Backend::Sim(aioctx::sim::SimConfig::new()))
        .build()
        .unwrap();
    let e = sim.inject_faults([Fault::Errno(libc::EIO)]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    let e = sim
        .inject_sync_faults([Fault::Errno(libc::EIO)])
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    assert_eq!(sim.pending_faults(), 0);
}
