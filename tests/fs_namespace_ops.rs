//! The namespace ops (rename with its modes, unlink, rmdir, mkdir, hard
//! link, symlink, statx by path, directory listing, an open directory and
//! its fsync) on every backend: the same scenario on io_uring, the
//! thread-pool fallback and the simulator, each op succeeding, then each bad
//! input answered with the kernel's errno (a missing parent, a name that
//! exists under `NoReplace`, a directory renamed into itself, `rmdir` of a
//! non-empty directory, a path with a NUL byte, a name longer than
//! `NAME_MAX`), and the context usable after every error.

pub mod support;

use std::io;
use std::path::{Path, PathBuf};

use aioctx::fs::{self, Dir, OpenOptions, RenameMode};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// The errno an op failed with; the context must still run an op after it.
async fn errno<T: std::fmt::Debug>(ctx: &Context, result: io::Result<T>) -> i32 {
    let error = result.expect_err("the op must fail");
    ctx.nop()
        .await
        .expect("the context is usable after an error");
    error
        .raw_os_error()
        .unwrap_or_else(|| panic!("no errno in {error:?}"))
}

/// A path with a NUL byte inside is refused before any backend sees it.
async fn refused<T: std::fmt::Debug>(ctx: &Context, result: io::Result<T>) {
    let error = result.expect_err("a NUL byte in a path must be refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error:?}");
    ctx.nop()
        .await
        .expect("the context is usable after an error");
}

async fn write(ctx: &Context, path: &Path, data: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(ctx, path)
        .await
        .unwrap();
    file.write_all_at(data.to_vec(), 0).await.0.unwrap();
    file.close().await.unwrap();
}

async fn read(ctx: &Context, path: &Path) -> Vec<u8> {
    let file = fs::File::open(ctx, path).await.unwrap();
    let len = file.metadata().await.unwrap().len() as usize;
    let (n, data) = file.read_at(Vec::with_capacity(len), 0).await;
    assert_eq!(n.unwrap(), len);
    data
}

async fn names(ctx: &Context, path: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(ctx, path)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| {
            assert_eq!(entry.path(), path.join(entry.file_name()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Every op, and every bad input, under `root` (an empty directory).
async fn scenario(ctx: &Context, root: &Path) {
    let a = root.join("a");
    // mkdir: success, an existing name, a missing parent.
    fs::create_dir(ctx, &a).await.unwrap();
    assert!(fs::metadata(ctx, &a).await.unwrap().is_dir());
    assert_eq!(
        errno(ctx, fs::create_dir(ctx, &a).await).await,
        libc::EEXIST
    );
    let orphan = root.join("missing/x");
    assert_eq!(
        errno(ctx, fs::create_dir(ctx, &orphan).await).await,
        libc::ENOENT
    );

    // rename: success, a missing source, a missing target parent.
    write(ctx, &a.join("f"), b"first").await;
    fs::rename(ctx, a.join("f"), a.join("g")).await.unwrap();
    assert_eq!(read(ctx, &a.join("g")).await, b"first");
    let gone = fs::metadata(ctx, a.join("f")).await;
    assert_eq!(errno(ctx, gone).await, libc::ENOENT);
    let missing = fs::rename(ctx, a.join("f"), a.join("h")).await;
    assert_eq!(errno(ctx, missing).await, libc::ENOENT);
    let no_parent = fs::rename(ctx, a.join("g"), root.join("missing/g")).await;
    assert_eq!(errno(ctx, no_parent).await, libc::ENOENT);

    // Replace, NoReplace, Exchange.
    write(ctx, &a.join("other"), b"second").await;
    let kept = fs::rename_with(ctx, a.join("other"), a.join("g"), RenameMode::NoReplace).await;
    assert_eq!(errno(ctx, kept).await, libc::EEXIST);
    assert_eq!(read(ctx, &a.join("g")).await, b"first");
    fs::rename_with(ctx, a.join("other"), a.join("g"), RenameMode::Exchange)
        .await
        .unwrap();
    assert_eq!(read(ctx, &a.join("g")).await, b"second");
    assert_eq!(read(ctx, &a.join("other")).await, b"first");
    let lonely = fs::rename_with(ctx, a.join("g"), a.join("nobody"), RenameMode::Exchange).await;
    assert_eq!(errno(ctx, lonely).await, libc::ENOENT);
    fs::rename(ctx, a.join("other"), a.join("g")).await.unwrap();
    assert_eq!(read(ctx, &a.join("g")).await, b"first");
    fs::rename_with(ctx, a.join("g"), a.join("f"), RenameMode::NoReplace)
        .await
        .unwrap();

    // A directory into itself; a file over a directory and the reverse.
    fs::create_dir(ctx, a.join("sub")).await.unwrap();
    let into_itself = fs::rename(ctx, &a, a.join("sub/a")).await;
    assert_eq!(errno(ctx, into_itself).await, libc::EINVAL);
    let file_over_dir = fs::rename(ctx, a.join("f"), a.join("sub")).await;
    assert_eq!(errno(ctx, file_over_dir).await, libc::EISDIR);
    let dir_over_file = fs::rename(ctx, a.join("sub"), a.join("f")).await;
    assert_eq!(errno(ctx, dir_over_file).await, libc::ENOTDIR);

    // rmdir and unlink.
    assert_eq!(
        errno(ctx, fs::remove_dir(ctx, &a).await).await,
        libc::ENOTEMPTY
    );
    let on_file = fs::remove_dir(ctx, a.join("f")).await;
    assert_eq!(errno(ctx, on_file).await, libc::ENOTDIR);
    let on_dir = fs::remove_file(ctx, a.join("sub")).await;
    assert_eq!(errno(ctx, on_dir).await, libc::EISDIR);
    let nothing = fs::remove_file(ctx, a.join("nothing")).await;
    assert_eq!(errno(ctx, nothing).await, libc::ENOENT);
    fs::remove_dir(ctx, a.join("sub")).await.unwrap();

    // Hard links.
    fs::hard_link(ctx, a.join("f"), a.join("f2")).await.unwrap();
    let (f, f2) = (
        fs::metadata(ctx, a.join("f")).await.unwrap(),
        fs::metadata(ctx, a.join("f2")).await.unwrap(),
    );
    assert_eq!((f.nlink(), f.ino()), (2, f2.ino()));
    let taken = fs::hard_link(ctx, a.join("f"), a.join("f2")).await;
    assert_eq!(errno(ctx, taken).await, libc::EEXIST);
    let of_dir = fs::hard_link(ctx, &a, root.join("a2")).await;
    assert_eq!(errno(ctx, of_dir).await, libc::EPERM);
    fs::remove_file(ctx, a.join("f2")).await.unwrap();
    assert_eq!(fs::metadata(ctx, a.join("f")).await.unwrap().nlink(), 1);

    // Symlinks: the link itself, and what it leads to.
    fs::symlink(ctx, "f", a.join("s")).await.unwrap();
    assert!(
        fs::symlink_metadata(ctx, a.join("s"))
            .await
            .unwrap()
            .is_symlink()
    );
    let target = fs::metadata(ctx, a.join("s")).await.unwrap();
    assert!(target.is_file() && target.len() == 5);
    assert_eq!(read(ctx, &a.join("s")).await, b"first");
    let exists = fs::symlink(ctx, "f", a.join("s")).await;
    assert_eq!(errno(ctx, exists).await, libc::EEXIST);
    fs::symlink(ctx, "nowhere", a.join("dangling"))
        .await
        .unwrap();
    let dangling = fs::metadata(ctx, a.join("dangling")).await;
    assert_eq!(errno(ctx, dangling).await, libc::ENOENT);

    // Listing.
    assert_eq!(names(ctx, &a).await, ["dangling", "f", "s"]);
    let listed = fs::read_dir(ctx, &a).await.unwrap();
    let s = listed.iter().find(|e| e.file_name() == "s").unwrap();
    assert!(s.file_type().is_symlink());
    let f_entry = listed.iter().find(|e| e.file_name() == "f").unwrap();
    assert!(f_entry.file_type().is_file() && f_entry.ino() == f.ino());
    assert_eq!(
        errno(ctx, fs::read_dir(ctx, a.join("f")).await).await,
        libc::ENOTDIR
    );
    assert_eq!(
        errno(ctx, fs::read_dir(ctx, &orphan).await).await,
        libc::ENOENT
    );

    // A path with a NUL byte, refused by every op before any backend.
    let nul = a.join("nul\0byte");
    refused(ctx, fs::create_dir(ctx, &nul).await).await;
    refused(ctx, fs::rename(ctx, a.join("f"), &nul).await).await;
    refused(ctx, fs::rename(ctx, &nul, a.join("f")).await).await;
    refused(ctx, fs::remove_file(ctx, &nul).await).await;
    refused(ctx, fs::remove_dir(ctx, &nul).await).await;
    refused(ctx, fs::hard_link(ctx, a.join("f"), &nul).await).await;
    refused(ctx, fs::symlink(ctx, &nul, a.join("n")).await).await;
    refused(ctx, fs::metadata(ctx, &nul).await).await;
    refused(ctx, fs::read_dir(ctx, &nul).await).await;
    refused(ctx, fs::File::open(ctx, &nul).await).await;

    // A name longer than NAME_MAX.
    let long = a.join("x".repeat(256));
    assert_eq!(
        errno(ctx, fs::create_dir(ctx, &long).await).await,
        libc::ENAMETOOLONG
    );
    let long_rename = fs::rename(ctx, a.join("f"), &long).await;
    assert_eq!(errno(ctx, long_rename).await, libc::ENAMETOOLONG);
    let long_link = fs::hard_link(ctx, a.join("f"), &long).await;
    assert_eq!(errno(ctx, long_link).await, libc::ENAMETOOLONG);
    assert_eq!(
        errno(ctx, fs::remove_file(ctx, &long).await).await,
        libc::ENAMETOOLONG
    );
    let long_symlink = fs::symlink(ctx, "f", &long).await;
    assert_eq!(errno(ctx, long_symlink).await, libc::ENAMETOOLONG);
    // The longest name is fine.
    let longest = a.join("y".repeat(255));
    fs::create_dir(ctx, &longest).await.unwrap();
    fs::remove_dir(ctx, &longest).await.unwrap();

    // An open directory: the *at forms, its fsync, its listing.
    let dir = Dir::open(ctx, &a).await.unwrap();
    assert!(dir.dir_metadata().await.unwrap().is_dir());
    dir.create_dir("d").await.unwrap();
    assert_eq!(errno(ctx, dir.create_dir("d").await).await, libc::EEXIST);
    let tmp = OpenOptions::new()
        .write(true)
        .create(true)
        .open_at(&dir, "d/tmp")
        .await
        .unwrap();
    tmp.write_all_at(b"new".to_vec(), 0).await.0.unwrap();
    tmp.sync_all().await.unwrap();
    let d = dir.open_dir("d").await.unwrap();
    d.rename("tmp", &dir, "f").await.unwrap();
    dir.sync_all().await.unwrap();
    d.sync_all().await.unwrap();
    assert_eq!(read(ctx, &a.join("f")).await, b"new");
    assert!(dir.metadata("f").await.unwrap().is_file());
    assert!(dir.symlink_metadata("s").await.unwrap().is_symlink());
    dir.hard_link("f", &d, "f3").await.unwrap();
    assert_eq!(dir.metadata("d/f3").await.unwrap().nlink(), 2);
    let mut listed: Vec<_> = d
        .entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.file_name().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["f3"]);
    assert_eq!(errno(ctx, dir.remove_dir("d").await).await, libc::ENOTEMPTY);
    d.remove_file("f3").await.unwrap();
    dir.symlink("d", "to_d").await.unwrap();
    dir.remove_file("to_d").await.unwrap();
    dir.remove_dir("d").await.unwrap();
    let not_a_dir = Dir::open(ctx, a.join("f")).await;
    assert_eq!(errno(ctx, not_a_dir).await, libc::ENOTDIR);
    d.close().await.unwrap();
    tmp.close().await.unwrap();
    fs::sync_dir(ctx, &a).await.unwrap();

    // create_dir_all, and tidying up.
    fs::create_dir_all(ctx, root.join("x/y/z")).await.unwrap();
    fs::create_dir_all(ctx, root.join("x/y/z")).await.unwrap();
    assert!(
        fs::metadata(ctx, root.join("x/y/z"))
            .await
            .unwrap()
            .is_dir()
    );
    for name in ["dangling", "f", "s"] {
        dir.remove_file(name).await.unwrap();
    }
    dir.close().await.unwrap();
    for level in ["x/y/z", "x/y", "x", "a"] {
        fs::remove_dir(ctx, root.join(level)).await.unwrap();
    }
    assert!(names(ctx, root).await.is_empty());
}

/// A fresh directory under the temp dir, removed (with anything left in
/// it) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("aioctx-ns-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn namespace_ops_on_the_suites_backend() {
    let Some(ctx) = support::context() else {
        return;
    };
    let scratch = Scratch::new("suite");
    scenario(&ctx, &scratch.0).await;
    // On the ring every namespace op ran on its opcode; the listings (no
    // opcode) ran as blocking calls.
    if ctx.backend() == "io_uring" {
        let metrics = ctx.metrics();
        assert!(
            !metrics.ring_flags.opcodes_blocking,
            "this kernel has every opcode"
        );
        assert_eq!(metrics.ops_blocking, 6, "the six listings: {metrics:?}");
    }
    ctx.shutdown().await;
}

#[tokio::test]
async fn namespace_ops_on_the_fallback() {
    let ctx = Context::builder()
        .backend(Backend::Fallback)
        .build()
        .unwrap();
    let scratch = Scratch::new("fallback");
    scenario(&ctx, &scratch.0).await;
    ctx.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn namespace_ops_on_the_sim() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    fs::create_dir(&ctx, "/t").await.unwrap();
    scenario(&ctx, Path::new("/t")).await;
    // Relative paths start at the simulator's root.
    fs::create_dir(&ctx, "rel").await.unwrap();
    assert!(fs::metadata(&ctx, "/rel").await.unwrap().is_dir());
}

/// On a kernel that lacks the namespace opcodes (here: a ring told to
/// pretend so), the same ops run as blocking calls: never an error, and
/// never a reason to fall back; the flags and the metrics say so.
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn namespace_ops_on_a_ring_lacking_their_opcodes() {
    let Some(ctx) = support::context() else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let all = ["RENAMEAT", "UNLINKAT", "MKDIRAT", "LINKAT", "SYMLINKAT"];
    ctx.hide_opcodes(&all).unwrap();
    let unknown = ctx.hide_opcodes(&["READ"]).unwrap_err();
    assert_eq!(unknown.kind(), io::ErrorKind::InvalidInput);
    let scratch = Scratch::new("hidden");
    scenario(&ctx, &scratch.0).await;
    let metrics = ctx.metrics();
    assert_eq!(metrics.backend, "io_uring");
    assert!(metrics.ring_flags.opcodes_blocking);
    // The six listings and every namespace op that reached a backend.
    assert!(metrics.ops_blocking > 60, "{metrics:?}");
    ctx.shutdown().await;
}

/// `File::set_len` on a kernel without `IORING_OP_FTRUNCATE` (before 6.9;
/// here a ring told to pretend so) runs as a blocking call: the file gets
/// its new length either way, and the metrics count the blocking call.
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn set_len_on_a_ring_lacking_ftruncate() {
    let Some(ctx) = support::context() else {
        return;
    };
    if !support::on_ring(&ctx) {
        return;
    }
    let scratch = Scratch::new("ftruncate");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .open(&ctx, scratch.0.join("f"))
        .await
        .unwrap();
    file.set_len(4096).await.unwrap();
    assert_eq!(ctx.metrics().ops_blocking, 0, "on its opcode first");
    ctx.hide_opcodes(&["FTRUNCATE"]).unwrap();
    file.set_len(12_345).await.unwrap();
    assert_eq!(file.metadata().await.unwrap().len(), 12_345);
    let metrics = ctx.metrics();
    assert_eq!(metrics.ops_blocking, 1, "{metrics:?}");
    assert!(metrics.ring_flags.opcodes_blocking);
    drop(file);
    ctx.shutdown().await;
}
