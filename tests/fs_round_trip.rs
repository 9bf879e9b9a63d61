//! Write random data at random offsets, read it back: buffered and O_DIRECT,
//! from the home thread, a foreign thread and an entered future, plain and
//! vectored.

pub mod support;

use aioctx::Context;
use aioctx::buf::AlignedBuf;
use aioctx::fs::{File, OpenOptions};
use support::{Rng, TempPath};

const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 64;

async fn open_rw(ctx: &Context, path: &TempPath, direct: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .direct(direct)
        .open(ctx, &path.0)
        .await
}

/// Writes and reads back `rounds` random aligned blocks; returns whether
/// O_DIRECT was available (buffered always is).
async fn round_trips(ctx: Context, direct: bool, seed: u64) -> bool {
    let path = TempPath::new("rt");
    let file = match open_rw(&ctx, &path, direct).await {
        Ok(file) => file,
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
            eprintln!("skipping O_DIRECT: the temp dir's filesystem refuses it ({e})");
            return false;
        }
        Err(e) => panic!("open: {e}"),
    };
    file.set_len(FILE_BLOCKS * BLOCK as u64).await.unwrap();
    let mut rng = Rng::new(seed);
    for _ in 0..16 {
        let blocks = 1 + (rng.next_u64() % 4) as usize;
        let offset = (rng.next_u64() % (FILE_BLOCKS - 4)) * BLOCK as u64;
        let mut data = AlignedBuf::zeroed(blocks * BLOCK);
        rng.fill(&mut data);
        let expected = data.to_vec();
        let (written, _) = file.write_all_at(data, offset).await;
        written.unwrap();
        let (read, back) = file
            .read_exact_at(AlignedBuf::with_capacity(blocks * BLOCK), offset)
            .await;
        read.unwrap();
        assert_eq!(&back[..], &expected[..], "offset {offset}");
    }
    // Vectored: two buffers out, three back.
    let mut a = AlignedBuf::zeroed(BLOCK);
    let mut b = AlignedBuf::zeroed(2 * BLOCK);
    rng.fill(&mut a);
    rng.fill(&mut b);
    let expected = [a.to_vec(), b.to_vec()].concat();
    let (n, _) = file.writev_at(vec![a, b], 8 * BLOCK as u64).await;
    assert_eq!(n.unwrap(), 3 * BLOCK);
    let bufs = (0..3).map(|_| AlignedBuf::with_capacity(BLOCK)).collect();
    let (n, bufs) = file.readv_at(bufs, 8 * BLOCK as u64).await;
    assert_eq!(n.unwrap(), 3 * BLOCK);
    assert_eq!(
        bufs.iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>(),
        expected
    );
    file.sync_data().await.unwrap();
    assert_eq!(
        file.metadata().await.unwrap().len(),
        FILE_BLOCKS * BLOCK as u64
    );
    file.close().await.unwrap();
    true
}

#[test]
fn from_the_home_thread() {
    let Some(ctx) = support::context() else {
        return;
    };
    for direct in [false, true] {
        let inner = ctx.clone();
        ctx.spawn(round_trips(inner, direct, 1)).join().unwrap();
    }
}

#[test]
fn from_a_foreign_thread() {
    let Some(ctx) = support::context() else {
        return;
    };
    for direct in [false, true] {
        let inner = ctx.clone();
        std::thread::spawn(move || inner.block_on(round_trips(inner.clone(), direct, 2)))
            .join()
            .unwrap();
    }
}

#[test]
fn from_an_entered_future() {
    let Some(ctx) = support::context() else {
        return;
    };
    for direct in [false, true] {
        ctx.enter(round_trips(ctx.clone(), direct, 3))
            .join()
            .unwrap();
    }
}

#[test]
fn owned_buffer_types_round_trip() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = TempPath::new("types");
    ctx.block_on(async {
        let file = open_rw(&ctx, &path, false).await.unwrap();
        let (r, _) = file.write_all_at(b"hello, world".to_vec(), 0).await;
        r.unwrap();
        let (r, v) = file.read_at(Vec::with_capacity(5), 0).await;
        assert_eq!((r.unwrap(), &v[..]), (5, &b"hello"[..]));
        let (r, boxed) = file.read_at(vec![0u8; 5].into_boxed_slice(), 7).await;
        assert_eq!((r.unwrap(), &boxed[..]), (5, &b"world"[..]));
        let (r, bytes) = file.read_at(bytes::BytesMut::with_capacity(12), 0).await;
        assert_eq!((r.unwrap(), &bytes[..]), (12, &b"hello, world"[..]));
        // A slice writes only its range.
        use aioctx::buf::IoBuf;
        let (r, _) = file.write_at(b"HELLO".to_vec().slice(1..4), 1).await;
        assert_eq!(r.unwrap(), 3);
        let (_, v) = file.read_at(Vec::with_capacity(12), 0).await;
        assert_eq!(&v[..], b"hELLo, world");
    });
}
