//! A file dropped while its ops are in flight: the ops still see an open fd
//! and return their data, and the fd is closed once the last of them is done.
//! (On the ring a read pushed into the SQ reaches the kernel at the driver's
//! next turn; if dropping the file closed the fd first, the read would fail
//! with `EBADF`, or worse, read another file that took the number.)

pub mod support;

use aioctx::fs::File;
use futures::FutureExt;
use support::TempPath;

#[test]
fn ops_keep_a_dropped_files_fd_open_until_they_complete() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = TempPath::new("dropped");
    std::fs::write(&path.0, b"still here").unwrap();
    let fds_before = support::open_fds();
    let reads = ctx.block_on({
        let ctx = ctx.clone();
        let path = path.0.clone();
        async move {
            let file = File::open(&ctx, &path).await.unwrap();
            // Submitted by their first poll, then the file goes.
            let mut reads: Vec<_> = (0..4).map(|_| file.read_at(vec![0u8; 16], 0)).collect();
            for read in &mut reads {
                assert!(
                    read.now_or_never().is_none(),
                    "completed before the file was dropped"
                );
            }
            drop(file);
            let mut results = Vec::new();
            for read in reads {
                let (n, buf) = read.await;
                results.push(buf[..n.unwrap()].to_vec());
            }
            results
        }
    });
    for read in reads {
        assert_eq!(read, b"still here");
    }
    support::eventually("the dropped file's fd is closed", || {
        support::open_fds() == fds_before
    });
}
