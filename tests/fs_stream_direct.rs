//! `FileStream` over an `O_DIRECT` file: `tokio::io::copy` into and out of
//! it works, because the stream's buffers are aligned and its ops shaped to
//! the file's direct-I/O alignment (whole blocks, at block boundaries).
//! Before, it used `Vec` buffers at the caller's offsets, and the copy
//! failed with `EINVAL`. What `O_DIRECT` cannot do (a partial last block)
//! fails with a clear error at `flush`, not with a bare `EINVAL`.
//!
//! On a real file system the files live under the build's target directory
//! (tmpfs, which `/tmp` may be, has no `O_DIRECT`); where the file system
//! refuses `O_DIRECT` anyway, the tests print why and skip.

pub mod support;

use std::io::{self, SeekFrom};
use std::path::PathBuf;

use aioctx::fs::{File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// `len` bytes of a pattern that repeats every 251 bytes, so a block in the
/// wrong place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A path under the build's temp dir (a real disk), removed when dropped.
struct DiskPath(PathBuf);

impl DiskPath {
    fn new(tag: &str) -> DiskPath {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).unwrap();
        let name = support::TempPath::new(tag);
        let path = dir.join(name.0.file_name().unwrap());
        DiskPath(path)
    }
}

impl Drop for DiskPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens `path` with `O_DIRECT` for reading and writing (creating and
/// truncating it), or `None` (printing why) where the file system refuses
/// `O_DIRECT`.
async fn open_direct(ctx: &Context, path: &std::path::Path) -> Option<File> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .direct(true)
        .open(ctx, path)
        .await;
    match opened {
        Ok(file) => Some(file),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            eprintln!(
                "skipping: the file system of {} refuses O_DIRECT ({e})",
                path.display()
            );
            None
        }
        Err(e) => panic!("opening {} with O_DIRECT failed: {e}", path.display()),
    }
}

#[test]
fn tokio_io_copy_into_and_out_of_an_o_direct_file() {
    let Some(ctx) = support::context() else {
        return;
    };
    let source = support::TempPath::new("direct-source");
    let target = DiskPath::new("direct-target");
    let data = pattern(1 << 20);
    std::fs::write(&source.0, &data).unwrap();
    let (c, s, t, expected) = (
        ctx.clone(),
        source.0.clone(),
        target.0.clone(),
        data.clone(),
    );
    ctx.spawn(async move {
        let Some(direct) = open_direct(&c, &t).await else {
            return;
        };
        let source = File::open(&c, &s).await.unwrap();
        // In: buffered reads, direct writes (copy flushes at the end).
        let copied = tokio::io::copy(&mut source.stream(), &mut direct.stream())
            .await
            .unwrap();
        assert_eq!(copied, expected.len() as u64);
        assert!(
            std::fs::read(&t).unwrap() == expected,
            "the copy in differs"
        );
        // Out: direct reads, into memory.
        let mut back = Vec::new();
        let copied = tokio::io::copy(&mut direct.stream(), &mut back)
            .await
            .unwrap();
        assert_eq!(copied, expected.len() as u64);
        assert!(back == expected, "the copy out differs");
        // Reads may start anywhere: the stream reads whole blocks around.
        let mut stream = direct.stream();
        stream.seek(SeekFrom::Start(1000)).await.unwrap();
        let mut some = vec![0u8; 5000];
        stream.read_exact(&mut some).await.unwrap();
        assert!(some == expected[1000..6000]);
        let mut tail = Vec::new();
        stream.seek(SeekFrom::End(-7)).await.unwrap();
        stream.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, expected[expected.len() - 7..]);
    })
    .join()
    .unwrap();
}

#[test]
fn a_partial_last_block_fails_flush_with_a_clear_error() {
    let Some(ctx) = support::context() else {
        return;
    };
    let target = DiskPath::new("direct-partial");
    let t = target.0.clone();
    let c = ctx.clone();
    ctx.spawn(async move {
        let Some(direct) = open_direct(&c, &t).await else {
            return;
        };
        let data = pattern(64 * 1024 + 100);
        let e = tokio::io::copy(&mut &data[..], &mut direct.stream())
            .await
            .unwrap_err();
        assert_partial_block(&e, 100);
        // The whole blocks went in.
        assert!(std::fs::read(&t).unwrap() == data[..64 * 1024]);
        // A write must start at a block boundary.
        let mut stream = direct.stream();
        stream.seek(SeekFrom::Start(100)).await.unwrap();
        let e = stream.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("must start at a multiple"), "{e}");
    })
    .join()
    .unwrap();
}

fn assert_partial_block(e: &io::Error, held: usize) {
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!("holds {held} bytes")) && message.contains("whole block"),
        "{message}"
    );
}

fn sim() -> Context {
    Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .expect("a sim context always builds")
}

/// The same on the simulator, which refuses misaligned `O_DIRECT` ops as
/// the kernel does (to 512 bytes).
#[tokio::test(start_paused = true)]
async fn sim_tokio_io_copy_into_and_out_of_an_o_direct_file() {
    let ctx = sim();
    let sim = ctx.sim().unwrap();
    let data = pattern(300 * 1024);
    sim.insert_file("/source", data.clone());
    let direct = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .direct(true)
        .open(&ctx, "/direct")
        .await
        .unwrap();
    let source = File::open(&ctx, "/source").await.unwrap();
    let copied = tokio::io::copy(&mut source.stream(), &mut direct.stream())
        .await
        .unwrap();
    assert_eq!(copied, data.len() as u64);
    assert!(sim.contents("/direct").unwrap() == data);
    let mut back = Vec::new();
    tokio::io::copy(&mut direct.stream(), &mut back)
        .await
        .unwrap();
    assert!(back == data);
    let mut stream = direct.stream();
    stream.seek(SeekFrom::Start(777)).await.unwrap();
    let mut some = vec![0u8; 3000];
    stream.read_exact(&mut some).await.unwrap();
    assert!(some == data[777..3777]);

    // A partial block: held, reported by flush, kept; completing the block
    // clears it.
    let mut stream = direct.stream();
    stream.seek(SeekFrom::End(0)).await.unwrap();
    stream.write_all(&[7; 700]).await.unwrap();
    assert_partial_block(&stream.flush().await.unwrap_err(), 188);
    assert_partial_block(&stream.flush().await.unwrap_err(), 188);
    stream.write_all(&[8; 324]).await.unwrap();
    stream.flush().await.unwrap();
    let contents = sim.contents("/direct").unwrap();
    assert_eq!(contents.len(), data.len() + 1024);
    assert!(
        contents[data.len()..data.len() + 700]
            .iter()
            .all(|&b| b == 7)
    );
    assert!(contents[data.len() + 700..].iter().all(|&b| b == 8));
}
