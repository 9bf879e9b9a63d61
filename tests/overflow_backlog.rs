//! Invariant 6, nothing is dropped when the SQ is full: sixteen times the ring
//! size in flight at once from several threads, all complete with the right
//! data.

pub mod support;

use std::sync::Arc;

use aioctx::Context;
use aioctx::fs::File;

const ENTRIES: u32 = 8;
const CHUNK: usize = 512;

#[test]
fn sixteen_times_the_ring_in_flight() {
    let Some(ctx) = support::build(Context::builder().entries(ENTRIES)) else {
        return;
    };
    let path = support::TempPath::new("overflow");
    let per_thread = (ENTRIES as usize * 16) / 4;
    let total = 4 * per_thread;
    let data: Vec<u8> = (0..total * CHUNK)
        .map(|i| (i / CHUNK) as u8 ^ (i as u8))
        .collect();
    std::fs::write(&path.0, &data).unwrap();
    let file = Arc::new(ctx.block_on(File::open(&ctx, &path.0)).unwrap());
    let data = Arc::new(data);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (ctx, file, data) = (ctx.clone(), file.clone(), data.clone());
            std::thread::spawn(move || {
                ctx.block_on(async {
                    let reads = (0..per_thread).map(|i| {
                        let chunk = t * per_thread + i;
                        file.read_at(Vec::with_capacity(CHUNK), (chunk * CHUNK) as u64)
                    });
                    for (i, (n, buf)) in futures::future::join_all(reads)
                        .await
                        .into_iter()
                        .enumerate()
                    {
                        let chunk = t * per_thread + i;
                        assert_eq!(n.unwrap(), CHUNK);
                        assert_eq!(&buf[..], &data[chunk * CHUNK..][..CHUNK]);
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let m = ctx.metrics();
    // Only the ring has an SQ to overflow; the other backends queue.
    if ctx.backend() == "io_uring" {
        assert!(m.backlogged > 0, "the backlog was exercised: {m:?}");
    }
}
