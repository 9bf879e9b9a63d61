//! An `openat` whose future is dropped mid-flight closes the fd it produced:
//! no leak.

pub mod support;

use aioctx::fs::OpenOptions;
use futures::FutureExt;

#[test]
fn dropped_opens_leak_no_fd() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("open");
    std::fs::write(&path.0, b"x").unwrap();
    // Warm up: the first ops may open fds of their own (runtime, eventfd).
    ctx.block_on(ctx.nop()).unwrap();
    let before = support::open_fds();
    for _ in 0..64 {
        let options = OpenOptions::new().read(true).clone();
        let mut open = Box::pin(options.open(&ctx, &path.0));
        // Submit, then drop before (or after) completion without collecting.
        let _ = (&mut open).now_or_never();
        drop(open);
    }
    support::eventually("every dropped open's fd closed", || {
        ctx.block_on(ctx.nop()).unwrap();
        support::open_fds() == before
    });
}
