//! Registered files: a close takes the file out of the ring's table before
//! closing its fd, so `flock`s and a deleted file's disk space are released
//! at close as for any file; a slot reused by another file serves that file.

pub mod support;

use std::os::fd::AsRawFd;

use aioctx::Context;
use aioctx::fs::{File, OpenOptions};

fn ring() -> Option<Context> {
    support::build(Context::builder().backend(aioctx::Backend::Uring)).filter(support::on_ring)
}

async fn open_registered(ctx: &Context, path: &std::path::Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .register(true)
        .open(ctx, path)
        .await
        .unwrap();
    assert!(file.is_registered(), "the ring has a file table");
    file
}

fn try_lock(path: &std::path::Path) -> bool {
    let other = std::fs::File::open(path).unwrap();
    // SAFETY: flock(2) on an fd we own.
    unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[test]
fn flock_is_released_at_close_and_at_drop() {
    let Some(ctx) = ring() else { return };
    let path = support::TempPath::new("regfile-flock");
    for close in [true, false] {
        let file = ctx.block_on(open_registered(&ctx, &path.0));
        // SAFETY: flock(2) on the file's own fd.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert!(!try_lock(&path.0), "the lock is held");
        // The file's ops run through its slot.
        let (n, _) = ctx.block_on(file.write_at(b"registered".to_vec(), 0));
        assert_eq!(n.unwrap(), 10);
        if close {
            ctx.block_on(file.close()).unwrap();
            assert!(try_lock(&path.0), "close released the lock");
        } else {
            drop(file);
            support::eventually("the drop releases the lock", || try_lock(&path.0));
        }
    }
}

#[test]
fn a_deleted_files_space_is_freed_at_close() {
    let Some(ctx) = ring() else { return };
    let dir = std::env::current_dir().unwrap().join("target");
    let path = dir.join(format!("aioctx-regfile-space-{}", std::process::id()));
    let free = || {
        // SAFETY: a zeroed statvfs is a valid out-parameter.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: statvfs(3) into our struct.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    };
    const SIZE: usize = 64 << 20;
    let file = ctx.block_on(async {
        let file = open_registered(&ctx, &path).await;
        let (result, _) = file.write_all_at(vec![1u8; SIZE], 0).await;
        result.unwrap();
        file.sync_all().await.unwrap();
        file
    });
    std::fs::remove_file(&path).unwrap();
    let before = free();
    ctx.block_on(file.close()).unwrap();
    support::eventually("the blocks are freed", || {
        free() >= before + SIZE as u64 / 2
    });
}

#[test]
fn a_reused_slot_serves_its_new_file() {
    let Some(ctx) = ring() else { return };
    let (a, b) = (
        support::TempPath::new("slot-a"),
        support::TempPath::new("slot-b"),
    );
    std::fs::write(&a.0, b"file a").unwrap();
    std::fs::write(&b.0, b"file b").unwrap();
    ctx.block_on(async {
        let first = open_registered(&ctx, &a.0).await;
        first.close().await.unwrap();
        // The freed slot goes to the next registration.
        let second = open_registered(&ctx, &b.0).await;
        let (n, data) = second.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(n.unwrap(), 6);
        assert_eq!(data, b"file b");
    });
}

#[test]
fn fallback_and_sim_use_the_file_unregistered() {
    let fallback = Context::builder()
        .backend(aioctx::Backend::Fallback)
        .build()
        .unwrap();
    let path = support::TempPath::new("regfile-fallback");
    let file = fallback.block_on(async {
        OpenOptions::new()
            .write(true)
            .create(true)
            .register(true)
            .open(&fallback, &path.0)
            .await
            .unwrap()
    });
    assert!(!file.is_registered());
    let (n, _) = fallback.block_on(file.write_at(b"x".to_vec(), 0));
    assert_eq!(n.unwrap(), 1);
}
