//! Invariant 8, input the kernel would misread is refused before it gets
//! there: io_uring reads offset `-1` (`u64::MAX`) as "the current file
//! position", so before the fix `read_at(buf, u64::MAX)` returned the file's
//! first bytes and `write_at` overwrote them. Every offset above `i64::MAX`
//! is now `EINVAL` on every backend, and the file is untouched.

pub mod support;

use aioctx::fs::{File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

const BAD_OFFSETS: [u64; 3] = [u64::MAX, i64::MAX as u64 + 1, u64::MAX - 4095];

fn assert_einval<T: std::fmt::Debug>(what: &str, offset: u64, result: std::io::Result<T>) {
    match result {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EINVAL),
            "{what} at {offset:#x}: {e}"
        ),
        Ok(value) => panic!("{what} at {offset:#x} succeeded: {value:?}"),
    }
}

async fn refuses_offsets_past_i64(file: &File) {
    for offset in BAD_OFFSETS {
        let (result, _) = file.read_at(Vec::with_capacity(4), offset).await;
        assert_einval("read_at", offset, result);
        let (result, _) = file.write_at(b"XXXX".to_vec(), offset).await;
        assert_einval("write_at", offset, result);
        let (result, _) = file.readv_at(vec![Vec::with_capacity(4)], offset).await;
        assert_einval("readv_at", offset, result);
        let (result, _) = file.writev_at(vec![b"XXXX".to_vec()], offset).await;
        assert_einval("writev_at", offset, result);
        assert_einval("fallocate", offset, file.fallocate(offset, 4096, 0).await);
        assert_einval("set_len", offset, file.set_len(offset).await);
        let (result, _) = file.read_exact_at(Vec::with_capacity(4), offset).await;
        assert_einval("read_exact_at", offset, result);
        let (result, _) = file.write_all_at(b"XXXX".to_vec(), offset).await;
        assert_einval("write_all_at", offset, result);
    }
    let (n, data) = file.read_at(Vec::with_capacity(16), 0).await;
    assert_eq!(n.unwrap(), 8, "the file keeps its size");
    assert_eq!(data, b"original", "nothing was written at the start");
}

#[test]
fn ring_or_fallback_refuses_offsets_past_i64() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("offsets");
    std::fs::write(&path.0, b"original").unwrap();
    ctx.block_on(async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ctx, &path.0)
            .await
            .unwrap();
        refuses_offsets_past_i64(&file).await;
    });
    assert_eq!(std::fs::read(&path.0).unwrap(), b"original");
}

#[test]
fn sim_refuses_offsets_past_i64() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    ctx.sim().unwrap().insert_file("/f", b"original".to_vec());
    ctx.block_on(async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ctx, "/f")
            .await
            .unwrap();
        refuses_offsets_past_i64(&file).await;
    });
}
